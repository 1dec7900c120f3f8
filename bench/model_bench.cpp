// SPDX-License-Identifier: Apache-2.0
// bench/model_bench.cpp: speed of grpo's native transformer policy (the fast path of
// include/grpo/model/transformer.hpp, float, all threads) on the main job's shapes, for the issue-4
// comparison with the same architecture in PyTorch eager (bench/peer_model.py, driven by
// bench/run_model.sh). Cases per model size:
//   generate/<size>/b<B>: B sampled rows at once (issue 14: batch 1 and 64, and the main job's 128): prompts of
//                       7 tokens x G completions, B = 1 (1 x 1), 64 (8 x 8: the trainer's groups of 8, one
//                       micro-batch) and 128 (16 x 8: the main job's step); 48 new tokens each (no stop token,
//                       so every row runs to the end), temperature 1, with the KV cache; prefill included.
//                       One untimed warm-up call first (as peer_model.py does), so workspaces are grown.
//                       Counter: generated tokens/s (B x 48 per iteration).
//   train_step/<size>:  forward + loss + backward over 64 rows of 7 prompt + 48 completion tokens (the
//                       main job's micro-batch), the loss a per-row-weighted sum of completion log-probs
//                       (token_logprobs and its backward, as the trainer uses them); gradients zeroed each
//                       step; the optimizer is NOT included (peer_model.py excludes it as well).
//                       Counter: fed tokens/s (64 x 54 per iteration, the trainer's training tokens).
// Sizes: "main" is the main job's model (examples/configs/default.toml [model], vocabulary 64 of the
// built-in tokenizer); "large" is hidden 512, 8 layers, 8 heads (4 key/value heads).
// Threads: GRPO_BENCH_THREADS, else every hardware thread. Kernels: GRPO_BENCH_ISA (generic, avx2 or avx512), else
// the best this CPU runs; the counter `isa` reports them (0 generic, 1 avx2, 2 avx512).
// `model_bench --export DIR` writes, for each size, DIR/<size>/{config.json, model.safetensors} (the
// seeded float weights the benchmark times), DIR/<size>/shapes.json (the shapes above) and
// DIR/<size>/check.json (a fixed small batch with our float and double logits) for the peer's checks.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "grpo/logits.hpp"
#include "grpo/model/model.hpp"

namespace {

using namespace grpo;
using namespace grpo::model;

struct model_size {
  const char* name;
  transformer_config config;
};

transformer_config make_config(std::int64_t hidden, std::int64_t intermediate, std::int64_t layers, std::int64_t heads,
                               std::int64_t kv_heads) {
  transformer_config c;
  c.vocab_size = 64;
  c.hidden_size = hidden;
  c.intermediate_size = intermediate;
  c.num_hidden_layers = layers;
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv_heads;
  c.max_position_embeddings = 96;
  return c;
}

const std::vector<model_size>& sizes() {
  static const std::vector<model_size> all = {{"main", make_config(128, 352, 3, 4, 2)},
                                              {"large", make_config(512, 1408, 8, 8, 4)}};
  return all;
}

// The main job's shapes (train_config defaults: 128 completions per step in groups of 8, micro-batches
// of 64, max_completion_length 48; arithmetic prompts "<bos>57+68=" are 7 tokens).
constexpr std::int64_t prompt_length = 7, new_tokens = 48;
constexpr std::int64_t train_rows = 64;
constexpr std::uint64_t weight_seed = 1;

// Generation batches: rows = prompts x group_size, sampled together.
struct generation_shape {
  std::int64_t rows, prompts, group_size;
};
constexpr generation_shape generation_shapes[] = {{1, 1, 1}, {64, 8, 8}, {128, 16, 8}};

std::size_t thread_count() {
  if (const char* env = std::getenv("GRPO_BENCH_THREADS"); env != nullptr && *env != '\0')
    return static_cast<std::size_t>(std::strtoul(env, nullptr, 10));
  return std::max(1u, std::thread::hardware_concurrency());
}

isa bench_isa() {
  const char* env = std::getenv("GRPO_BENCH_ISA");
  if (env == nullptr || *env == '\0') return best_isa();
  if (const auto kernels = isa_from_name(env)) return *kernels;
  throw std::invalid_argument("GRPO_BENCH_ISA: expected generic, avx2 or avx512, got " + std::string(env));
}

transformer_options bench_options() { return transformer_options(thread_count(), bench_isa()); }

parameters<float> seeded_weights(const transformer_config& config) {
  parameters<float> w(config);
  initialize(w, weight_seed);
  return w;
}

std::vector<token_id> random_tokens(std::mt19937_64& gen, std::int64_t n, std::int64_t vocab) {
  std::vector<token_id> out(static_cast<std::size_t>(n));
  for (auto& t : out) t = static_cast<token_id>(gen() % static_cast<std::uint64_t>(vocab));
  return out;
}

std::vector<std::vector<token_id>> bench_prompts(std::int64_t count, std::int64_t vocab) {
  std::mt19937_64 gen(2);
  std::vector<std::vector<token_id>> prompts;
  for (std::int64_t i = 0; i < count; ++i) prompts.push_back(random_tokens(gen, prompt_length, vocab));
  return prompts;
}

sequence_batch train_batch(std::int64_t vocab) {
  std::mt19937_64 gen(3);
  sequence_batch batch;
  for (std::int64_t i = 0; i < train_rows; ++i) {
    batch.prompts.push_back(random_tokens(gen, prompt_length, vocab));
    batch.completions.push_back(random_tokens(gen, new_tokens, vocab));
  }
  return batch;
}

void generate_case(benchmark::State& state, const transformer_config& config, const generation_shape& shape) {
  transformer<float> model(seeded_weights(config), bench_options());
  const auto prompts = bench_prompts(shape.prompts, config.vocab_size);
  sampling_options options;
  options.temperature = 1.0;
  options.max_new_tokens = new_tokens;
  std::uint64_t seed = 0;
  model.generate(prompts, options, seed, shape.group_size);  // warm-up: buffers grown, pages touched (not timed)
  for (auto _ : state) {
    auto out = model.generate(prompts, options, ++seed, shape.group_size);
    benchmark::DoNotOptimize(out.data());
  }
  const double tokens = static_cast<double>(shape.rows * new_tokens);
  state.counters["tokens_per_second"] =
      benchmark::Counter(tokens * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["threads"] = static_cast<double>(model.pool()->size());
  state.counters["isa"] = static_cast<double>(model.kernels());
}

void train_step_case(benchmark::State& state, const transformer_config& config) {
  transformer<float> model(seeded_weights(config), bench_options());
  parameters<float> grads(config);
  const auto batch = train_batch(config.vocab_size);
  const auto& b = model.backend();
  const auto rows = static_cast<std::int64_t>(batch.rows()), t = batch.max_completion_length();
  const auto ids = completion_ids(b, batch);
  // d loss / d log-prob: a per-row weight (an advantage) over the token count, as a token-mean loss.
  std::mt19937_64 gen(4);
  std::vector<double> weights(static_cast<std::size_t>(rows * t));
  for (std::int64_t r = 0; r < rows; ++r) {
    const double advantage = grpo::detail::uniform01(gen) * 2.0 - 1.0;
    for (std::int64_t i = 0; i < t; ++i)
      weights[static_cast<std::size_t>(r * t + i)] = advantage / static_cast<double>(rows * t);
  }
  const auto d_logprobs = make_tensor(b, weights, shape::vector(rows * t));
  const auto d_entropy = full(b, shape::vector(rows * t), 0.0);
  const auto step = [&] {
    grads.set_zero();
    auto logits = model.forward(batch, true);
    const auto lp = token_logprobs(logits, ids, 1.0);
    token_logprobs_backward(logits, ids, 1.0, lp, d_logprobs, d_entropy, logits.raw());
    model.backward(logits, grads);
  };
  step();  // warm-up: workspaces grown, pages touched (not timed)
  for (auto _ : state) {
    step();
    benchmark::DoNotOptimize(grads.data());
  }
  const double tokens = static_cast<double>(train_rows * (prompt_length + new_tokens - 1));
  state.counters["tokens_per_second"] =
      benchmark::Counter(tokens * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["threads"] = static_cast<double>(model.pool()->size());
  state.counters["isa"] = static_cast<double>(model.kernels());
}

// ---- --export ------------------------------------------------------------------------------------------------

void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) throw io_error(path.string() + ": write failed");
}

template <class Range>
std::string json_list(const Range& values) {
  std::string out = "[";
  bool first = true;
  for (const auto& v : values) {
    if (!first) out += ", ";
    first = false;
    if constexpr (std::is_floating_point_v<std::decay_t<decltype(v)>>)
      out += grpo::detail::json::number(static_cast<double>(v));
    else
      out += std::to_string(v);
  }
  return out + "]";
}

// A fixed batch of rows of different lengths, with our logits in float (the benchmarked path) and in double
// (the same weights, exactly converted), each [R * T, V] with zero rows at padding.
void export_check(const transformer_config& config, const parameters<float>& weights,
                  const std::filesystem::path& path) {
  std::mt19937_64 gen(5);
  sequence_batch batch;
  for (const auto& [p, c] : std::vector<std::pair<int, int>>{{7, 20}, {3, 9}, {12, 40}}) {
    batch.prompts.push_back(random_tokens(gen, p, config.vocab_size));
    batch.completions.push_back(random_tokens(gen, c, config.vocab_size));
  }
  transformer<float> model_f(weights, transformer_options(thread_count()));
  transformer<double> model_d(convert<double>(weights), transformer_options(thread_count()));
  const auto logits_f = model_f.forward(batch, false).to_host();
  const auto logits_d = model_d.forward(batch, false).to_host();
  std::ostringstream out;
  out << "{\n  \"prompts\": [";
  for (std::size_t r = 0; r < batch.rows(); ++r) out << (r ? ", " : "") << json_list(batch.prompts[r]);
  out << "],\n  \"completions\": [";
  for (std::size_t r = 0; r < batch.rows(); ++r) out << (r ? ", " : "") << json_list(batch.completions[r]);
  out << "],\n  \"logits_float\": " << json_list(logits_f) << ",\n  \"logits_double\": " << json_list(logits_d)
      << "\n}\n";
  write_text(path, out.str());
}

void export_all(const std::filesystem::path& root) {
  for (const auto& size : sizes()) {
    const auto dir = root / size.name;
    const auto weights = seeded_weights(size.config);
    save_pretrained(weights, dir);
    std::ostringstream shapes;
    shapes << "{\"generation\": [";
    for (const auto& g : generation_shapes)
      shapes << (&g == generation_shapes ? "" : ", ") << "{\"rows\": " << g.rows << ", \"prompts\": " << g.prompts
             << ", \"group_size\": " << g.group_size << "}";
    shapes << "], \"prompt_length\": " << prompt_length << ", \"new_tokens\": " << new_tokens
           << ", \"train_rows\": " << train_rows << ", \"parameters\": " << size.config.parameter_count() << "}\n";
    write_text(dir / "shapes.json", shapes.str());
    export_check(size.config, weights, dir / "check.json");
    std::printf("exported %s (%lld parameters) to %s\n", size.name,
                static_cast<long long>(size.config.parameter_count()), dir.string().c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string_view(argv[1]) == "--export") {
    try {
      export_all(argv[2]);
      return 0;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "model_bench --export: %s\n", e.what());
      return 1;
    }
  }
  for (const auto& size : sizes()) {
    const transformer_config config = size.config;
    for (const auto& shape : generation_shapes)
      benchmark::RegisterBenchmark(
          (std::string("generate/") + size.name + "/b" + std::to_string(shape.rows)).c_str(),
          [config, shape](benchmark::State& s) { generate_case(s, config, shape); })
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
    benchmark::RegisterBenchmark((std::string("train_step/") + size.name).c_str(),
                                 [config](benchmark::State& s) { train_step_case(s, config); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
