// SPDX-License-Identifier: Apache-2.0
// The native transformer on Hugging Face checkpoints (load_pretrained through grpo/hf's config and
// checkpoint readers): the tiny Llama / Qwen2 models of tests/data/hf/models, made and scored by
// transformers (tests/fixtures/make_model_fixtures.py), give transformers' fp32 log-probs at T = 1
// and 0.7 within 1e-4 and its greedy continuations, in float and double, for the 4.x and 5.x
// config layouts, sharded and BF16 weights; Qwen3 and other architectures the model lacks are
// refused by name; save_pretrained round trips; grpo's own directories still load; SmolLM2-135M-
// Instruct against transformers when GRPO_SMOLLM2_DIR names a converted directory.
#include <algorithm>
#include <bit>
#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include "grpo/detail/json.hpp"
#include "grpo/hf/model_config.hpp"
#include "grpo/model/native_policy.hpp"
#include "grpo/model/parameters.hpp"
#include "grpo/safetensors.hpp"
#include "test_support.hpp"

using namespace grpo;
using namespace grpo::model;
using grpo::testing::require_error;

namespace {

namespace json = grpo::detail::json;

const std::filesystem::path hf_data = std::filesystem::path(GRPO_TEST_DATA_DIR) / "hf";
const std::filesystem::path models = hf_data / "models";

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

// `text` with its one occurrence of `from` replaced by `to`.
std::string replaced(std::string text, const std::string& from, const std::string& to) {
  const auto at = text.find(from);
  REQUIRE(at != std::string::npos);
  REQUIRE(text.find(from, at + 1) == std::string::npos);
  return text.replace(at, from.size(), to);
}

std::filesystem::path scratch(const std::string& name) {
  const auto dir = grpo::testing::scratch_path("grpo_model_hf_test_" + name);
  std::filesystem::create_directories(dir);
  return dir;
}

// A copy of a fixture model directory to edit.
std::filesystem::path copy_model(const std::string& name, const std::string& as) {
  const auto dir = scratch(as);
  for (const auto& entry : std::filesystem::directory_iterator(models / name))
    std::filesystem::copy_file(entry.path(), dir / entry.path().filename());
  return dir;
}

// ---- fixture.json (make_model_fixtures.py: pairs with log-probs, greedy continuations) -------

const json::value& member(const json::value& v, const std::string& key) {
  for (const auto& m : v.members)
    if (m.key == key) return m.value;
  FAIL("fixture: no member " << key);
  return v;
}

std::vector<token_id> ids_of(const json::value& v) {
  std::vector<token_id> out;
  for (const auto& item : v.items) {
    std::uint64_t x = 0;
    REQUIRE(json::to_uint64(item, x));
    out.push_back(static_cast<token_id>(x));
  }
  return out;
}

std::vector<double> numbers_of(const json::value& v) {
  std::vector<double> out;
  for (const auto& item : v.items) out.push_back(std::stod(item.text));
  return out;
}

json::value read_fixture(const std::filesystem::path& path) { return json::parse(read_text(path), path.string()); }

// The fixture's pairs as one batch, with the log-probs of `field` laid out [R, T] (0 at padding),
// as logprobs() returns them.
struct scored_pairs {
  sequence_batch batch;
  std::vector<double> logprobs;
};

scored_pairs pairs_of(const json::value& fixture, const std::string& field) {
  scored_pairs out;
  const auto& pairs = member(fixture, "pairs").items;
  for (const auto& pair : pairs) {
    out.batch.prompts.push_back(ids_of(member(pair, "prompt_ids")));
    out.batch.completions.push_back(ids_of(member(pair, "completion_ids")));
  }
  const auto t = static_cast<std::size_t>(out.batch.max_completion_length());
  out.logprobs.assign(pairs.size() * t, 0.0);
  for (std::size_t r = 0; r < pairs.size(); ++r) {
    const auto values = numbers_of(member(pairs[r], field));
    std::copy(values.begin(), values.end(), out.logprobs.begin() + static_cast<std::ptrdiff_t>(r * t));
  }
  return out;
}

double max_abs_difference(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double out = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) out = std::max(out, std::fabs(a[i] - b[i]));
  return out;
}

// The policy's log-probs of the fixture's pairs at T = 1 and 0.7 against transformers' (1e-4, as
// the LibTorch backend's test); returns the largest difference.
template <class T>
double check_logprobs(native_policy<T>& policy, const json::value& fixture) {
  double worst = 0.0;
  for (const auto& [field, temperature] : {std::pair<std::string, double>{"logprobs", 1.0}, {"logprobs_t07", 0.7}}) {
    const auto pairs = pairs_of(fixture, field);
    const auto got = policy.logprobs(pairs.batch, temperature).to_host();
    const double difference = max_abs_difference(got, pairs.logprobs);
    INFO("T = " << temperature << ": max |native - transformers| = " << difference);
    grpo::testing::require_close(got, pairs.logprobs, 1e-4, 0.0);
    worst = std::max(worst, difference);
  }
  return worst;
}

// Greedy decoding (temperature 0) of the fixture's prompts equals transformers' generate.
template <class T>
void check_greedy(native_policy<T>& policy, const json::value& greedy) {
  std::vector<std::vector<token_id>> prompts;
  for (const auto& p : member(greedy, "prompt_ids").items) prompts.push_back(ids_of(p));
  sampling_options options;
  options.temperature = 0.0;
  options.max_new_tokens = static_cast<std::int64_t>(std::stoll(member(greedy, "max_new_tokens").text));
  options.stop_tokens = ids_of(member(greedy, "stop_tokens"));
  const auto sampled = policy.generate(prompts, options, 5, 1);
  const auto& expected = member(greedy, "tokens").items;
  REQUIRE(sampled.size() == expected.size());
  for (std::size_t r = 0; r < sampled.size(); ++r) {
    INFO("greedy row " << r);
    CHECK(sampled[r].tokens == ids_of(expected[r]));
  }
}

template <class T>
native_policy<T> load_policy(const std::filesystem::path& dir) {
  return native_policy<T>(load_pretrained<T>(dir), transformer_options{2}, dir);
}

template <class T>
void check_model(const std::filesystem::path& dir, const json::value& fixture) {
  auto policy = load_policy<T>(dir);
  const double difference = check_logprobs(policy, fixture);
  CAPTURE(dir.filename().string(), sizeof(T), difference);
  CHECK(difference <= 1e-4);
  check_greedy(policy, member(fixture, "greedy"));
}

}  // namespace

TEST_CASE("native model: log-probs and greedy tokens match transformers on the tiny Llama and Qwen2 checkpoints",
          "[model][hf]") {
  // tiny-llama: untied, GQA 4/2, rope_theta 500, 4.x config; -sharded: four shards and an index;
  // tiny-qwen2: q/k/v biases (no attention_bias field: Qwen2 always has them), tied, 4.x config;
  // -bf16: BF16 weights (widened exactly; the fixture ran them in fp32) and a 5.x config.
  for (const char* name : {"tiny-llama", "tiny-llama-sharded", "tiny-qwen2", "tiny-qwen2-bf16"}) {
    INFO(name);
    const auto fixture = read_fixture(models / name / "fixture.json");
    check_model<float>(models / name, fixture);
    check_model<double>(models / name, fixture);
  }
  const auto qwen2 = read_config(models / "tiny-qwen2" / "config.json");
  CHECK(qwen2.attention_bias);
  CHECK(qwen2.tie_word_embeddings);
  CHECK(qwen2.num_key_value_heads == 1);
  // The BF16 checkpoint is tiny-qwen2 rounded to bfloat16 (to nearest even, as torch rounds):
  // widened exactly, each weight is that rounding of the F32 checkpoint's.
  const auto f32 = load_pretrained<float>(models / "tiny-qwen2");
  const auto bf16 = load_pretrained<float>(models / "tiny-qwen2-bf16");
  REQUIRE(bf16.config() == f32.config());
  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < f32.size(); ++i) {
    const auto bits = std::bit_cast<std::uint32_t>(f32.data()[i]);
    const auto rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) & 0xFFFF0000u;
    mismatches += std::bit_cast<float>(rounded) != bf16.data()[i];
  }
  CHECK(mismatches == 0);
}

TEST_CASE("native model: a transformers 5.x config.json loads with its rope_parameters.rope_theta", "[model][hf]") {
  // tiny-llama's config rewritten in the 5.x layout: a reader that ignored "rope_parameters" would
  // run RoPE with theta 10000 instead of 500, and the log-probs would differ (checked below).
  const auto dir = copy_model("tiny-llama", "rope_parameters");
  auto text = replaced(read_text(dir / "config.json"), "\"rope_theta\": 500.0,",
                       "\"rope_parameters\": {\"rope_theta\": 500.0, \"rope_type\": \"default\"},");
  text = replaced(text, "\"torch_dtype\": \"float32\"", "\"dtype\": \"float32\"");
  write_text(dir / "config.json", text);
  REQUIRE(read_config(dir / "config.json").rope_theta == 500.0);
  const auto fixture = read_fixture(dir / "fixture.json");
  check_model<float>(dir, fixture);

  // The test can fail: the same weights with theta 10000 are far from transformers' numbers.
  write_text(dir / "config.json",
             replaced(text, "\"rope_theta\": 500.0, \"rope_type\"", "\"rope_theta\": 10000.0, \"rope_type\""));
  auto wrong = load_policy<float>(dir);
  const auto pairs = pairs_of(fixture, "logprobs");
  CHECK(max_abs_difference(wrong.logprobs(pairs.batch, 1.0).to_host(), pairs.logprobs) > 1e-2);

  // Both layouts at once must agree.
  write_text(dir / "config.json", replaced(text, "\"dtype\"", "\"rope_theta\": 499.0, \"dtype\""));
  require_error([&] { (void)load_pretrained<float>(dir); },
                {(dir / "config.json").string(), "rope_theta", "differs from rope_parameters.rope_theta"});
  std::filesystem::remove_all(dir);
}

TEST_CASE("native model: architectures it cannot run are refused, naming the file and field", "[model][hf]") {
  // Qwen3: per-head q/k RMSNorm (and head_dim 16 != 32 / 4).
  const auto qwen3 = (models / "tiny-qwen3" / "config.json").string();
  require_error([&] { (void)load_pretrained<float>(models / "tiny-qwen3"); },
                {qwen3, "field \"model_type\"", "Qwen3ForCausalLM", "q_norm", "LibTorch"});
  require_error([&] { (void)read_config(models / "tiny-qwen3" / "config.json"); }, {qwen3, "Qwen3ForCausalLM"});

  const auto llama = read_text(models / "tiny-llama" / "config.json");
  // A Llama's attention_bias also puts a bias on o_proj.
  require_error(
      [&] {
        (void)config_from_json(replaced(llama, "\"attention_bias\": false", "\"attention_bias\": true"), "llama.json");
      },
      {"llama.json", "field \"attention_bias\"", "o_proj"});
  // An explicit head_dim other than hidden_size / num_attention_heads.
  require_error([&] { (void)config_from_json(replaced(llama, "\"head_dim\": 8", "\"head_dim\": 16"), "llama.json"); },
                {"llama.json", "field \"head_dim\"", "must equal hidden_size / num_attention_heads (8)", "got 16"});
  // RoPE theta in (0, 1]: valid for hf::model_config, not for the native model.
  require_error(
      [&] { (void)config_from_json(replaced(llama, "\"rope_theta\": 500.0", "\"rope_theta\": 0.5"), "llama.json"); },
      {"llama.json", "field \"rope_theta\"", "> 1", "0.5"});
  // What hf::parse_model_config refuses comes through with its own message.
  require_error(
      [&] {
        (void)config_from_json(replaced(llama, "\"mlp_bias\": false", "\"mlp_bias\": true"), "llama.json");
      },
      {"llama.json", "field \"mlp_bias\""});
  require_error(
      [&] {
        const std::string scaling = R"("rope_scaling": {"rope_type": "llama3", "factor": 8.0}, "rope_theta": 500.0)";
        (void)config_from_json(replaced(llama, "\"rope_theta\": 500.0", scaling), "llama.json");
      },
      {"llama.json", "field \"rope_scaling\"", "llama3"});
}

TEST_CASE("native model: checkpoint errors name the tensor and file", "[model][hf]") {
  // A shard missing from a sharded directory.
  const auto sharded = copy_model("tiny-llama-sharded", "missing_shard");
  std::filesystem::remove(sharded / "model-00003-of-00004.safetensors");
  require_error([&] { (void)load_pretrained<float>(sharded); }, {"model-00003-of-00004.safetensors"});
  std::filesystem::remove_all(sharded);

  // A config that does not match the shards: tied embeddings ignore lm_head.weight, as
  // transformers does; q/k/v biases the shards lack are missing, named with the directory.
  const auto dir = copy_model("tiny-llama-sharded", "mismatch");
  const auto config = read_text(dir / "config.json");
  write_text(dir / "config.json",
             replaced(config, "\"tie_word_embeddings\": false", "\"tie_word_embeddings\": true"));
  const auto tied = load_pretrained<float>(dir);
  CHECK(tied.layout().find("lm_head.weight") == nullptr);
  write_text(dir / "config.json",
             replaced(replaced(config, "\"model_type\": \"llama\"", "\"model_type\": \"qwen2\""), "LlamaForCausalLM",
                      "Qwen2ForCausalLM"));
  require_error([&] { (void)load_pretrained<float>(dir); },
                {"model.layers.0.self_attn.q_proj.bias", "missing", dir.string()});
  // Fewer layers: the shard holding layer 1 has tensors the architecture lacks.
  write_text(dir / "config.json", replaced(config, "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1"));
  require_error([&] { (void)load_pretrained<float>(dir); }, {"model.layers.1.", "unexpected tensor", ".safetensors"});
  std::filesystem::remove_all(dir);

  // F64 weights (what no Hugging Face checkpoint holds) are refused by hf::checkpoint.
  const auto f64 = scratch("f64");
  parameters<double> weights(read_config(models / "tiny-llama" / "config.json"));
  safetensors::writer out;
  add_tensors(out, weights);
  out.write(f64 / "model.safetensors");
  std::filesystem::copy_file(models / "tiny-llama" / "config.json", f64 / "config.json");
  require_error([&] { (void)load_pretrained<double>(f64); }, {"model.embed_tokens.weight", "F64"});
  std::filesystem::remove_all(f64);
}

TEST_CASE("native model: save_pretrained writes a directory that load_pretrained and hf::read_model_config read",
          "[model][hf]") {
  for (const char* name : {"tiny-llama", "tiny-qwen2", "tiny-qwen2-bf16"}) {
    INFO(name);
    const auto loaded = load_pretrained<float>(models / name);
    const auto dir = scratch(std::string("save_") + name);
    save_pretrained(loaded, dir);
    CHECK(load_pretrained<float>(dir) == loaded);
    // The double path stores F32: exact here, as every weight came from a float.
    const auto wide = load_pretrained<double>(models / name);
    save_pretrained(wide, dir);
    CHECK(load_pretrained<double>(dir) == wide);

    const auto saved = hf::read_model_config(dir / "config.json");
    const auto original = hf::read_model_config(models / name / "config.json");
    CHECK(saved.architecture == original.architecture);
    CHECK(saved.attention_bias == original.attention_bias);
    CHECK_FALSE(saved.o_proj_bias);
    CHECK(saved.tie_word_embeddings == original.tie_word_embeddings);
    CHECK(saved.head_dim == original.head_dim);
    CHECK(saved.rope_theta == original.rope_theta);
    CHECK(saved.dtype == "float32");
    // A tied model stores no lm_head.weight, as transformers saves it.
    CHECK(safetensors::file::read(dir / "model.safetensors").contains("lm_head.weight") ==
          !original.tie_word_embeddings);

    // The policy saves its source's tokenizer files beside the weights, and scores as before.
    native_policy<float> policy(load_pretrained<float>(models / name), transformer_options{2}, models / name);
    policy.save_pretrained(dir);
    CHECK(std::filesystem::exists(dir / "tokenizer.json"));
    CHECK(std::filesystem::exists(dir / "generation_config.json"));
    auto reloaded = load_policy<float>(dir);
    check_logprobs(reloaded, read_fixture(models / name / "fixture.json"));
    std::filesystem::remove_all(dir);
  }
}

TEST_CASE("native model: grpo's own directories (built-in models, training checkpoints) still load", "[model][hf]") {
  for (const bool bias : {false, true}) {
    INFO("attention_bias " << bias);
    transformer_config config;  // the built-in tiny model: tied, GQA 4/2
    config.attention_bias = bias;
    parameters<float> weights(config);
    initialize(weights, 7);
    const auto dir = scratch("builtin");
    save_pretrained(weights, dir);
    CHECK(load_pretrained<float>(dir) == weights);
    const auto hf_config = hf::read_model_config(dir / "config.json");
    CHECK(hf_config.architecture == (bias ? hf::architecture::qwen2 : hf::architecture::llama));
    CHECK(from_hf(hf_config) == config);

    // A training checkpoint (native_policy::save_state) is a model directory too.
    native_policy<float> policy(weights, transformer_options{1});
    policy.freeze_reference();
    std::filesystem::create_directories(dir / "checkpoint");
    policy.save_state(dir / "checkpoint");
    CHECK(load_pretrained<float>(dir / "checkpoint") == weights);
    std::filesystem::remove_all(dir);
  }
}

// SmolLM2-135M-Instruct (not in the repository: set GRPO_SMOLLM2_DIR to a converted model directory,
// cmake/setup-smollm2.sh) against tests/data/hf/smollm2_fixture.json: ChatML log-probs and
// transformers' greedy answer.
TEST_CASE("native model: SmolLM2-135M-Instruct against transformers (with GRPO_SMOLLM2_DIR)", "[model][hf]") {
  const char* dir = std::getenv("GRPO_SMOLLM2_DIR");
  if (dir == nullptr || !std::filesystem::exists(std::filesystem::path(dir) / "config.json")) {
    WARN("GRPO_SMOLLM2_DIR not set: SmolLM2 check skipped");
    return;
  }
  const auto fixture = read_fixture(hf_data / "smollm2_fixture.json");
  const auto pairs = pairs_of(fixture, "logprobs");
  const auto start = std::chrono::steady_clock::now();
  auto policy = load_policy<float>(dir);
  const auto loaded = std::chrono::steady_clock::now();
  const auto got = policy.logprobs(pairs.batch, 1.0).to_host();
  const auto scored = std::chrono::steady_clock::now();
  const double difference = max_abs_difference(got, pairs.logprobs);
  const auto seconds = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
  CAPTURE(difference, seconds(start, loaded), seconds(loaded, scored));
  grpo::testing::require_close(got, pairs.logprobs, 1e-4, 0.0);
  check_greedy(policy, member(fixture, "greedy"));
}
