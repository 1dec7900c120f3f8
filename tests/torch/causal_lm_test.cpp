// SPDX-License-Identifier: Apache-2.0
// grpo/libtorch/causal_lm_policy.hpp on the tiny Llama / Qwen2 / Qwen3 checkpoints of tests/data/hf/models
// (tests/fixtures/make_model_fixtures.py): log-probs at T = 1 and 0.7 against transformers' fp32 numbers (1e-4),
// greedy continuations against transformers' generate, for every layout (4.x and 5.x configs, BF16 weights,
// shards); the [R*T, V] logits layout; batched sampling equal to smaller batches row by row, reproducible seeds,
// truncated behaviour log-probs, full log-probs against logprobs(); save_pretrained round trips; the load errors;
// SmolLM2-135M-Instruct against transformers when GRPO_SMOLLM2_DIR names it. Training: causal_lm_training_test.cpp.
#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "causal_lm_support.hpp"
#include "grpo/libtorch/causal_lm_policy.hpp"
#include "test_support.hpp"
#include "torch_support.hpp"

using namespace grpo;
using namespace grpo::libtorch;
using namespace grpo::testing;

TEST_CASE("causal_lm: log-probs and greedy tokens match transformers for every tiny model and layout") {
  for (const char* name : {"tiny-llama", "tiny-llama-sharded", "tiny-qwen2", "tiny-qwen2-bf16", "tiny-qwen3"}) {
    INFO(name);
    auto policy = load(name);
    const auto fixture = read_fixture(name);
    const auto pairs = pairs_of(fixture);
    const auto lp = host(policy.logprobs(pairs.batch, 1.0).raw());
    grpo::testing::require_same(lp, pairs.logprobs, 1e-4, 0.0);
    const auto lp07 = host(policy.logprobs(pairs.batch, 0.7).raw());
    grpo::testing::require_same(lp07, pairs.logprobs_t07, 1e-4, 0.0);

    const auto& greedy = member(fixture, "greedy");
    std::vector<std::vector<token_id>> prompts;
    for (const auto& p : member(greedy, "prompt_ids").items) prompts.push_back(ids_of(p));
    sampling_options options;
    options.temperature = 0.0;
    options.max_new_tokens = 8;
    options.stop_tokens = ids_of(member(greedy, "stop_tokens"));
    const auto sampled = policy.generate(prompts, options, 5);
    const auto& expected = member(greedy, "tokens").items;
    REQUIRE(sampled.size() == expected.size());
    for (std::size_t r = 0; r < sampled.size(); ++r) {
      CHECK(sampled[r].tokens == ids_of(expected[r]));
      CHECK(std::all_of(sampled[r].logprobs.begin(), sampled[r].logprobs.end(), [](double x) { return x == 0.0; }));
    }
  }
}

TEST_CASE("causal_lm: forward lays logits out [R*T, V] with zero padding rows, backward checks its input") {
  auto policy = load("tiny-qwen3");
  const auto batch = random_batch(3, {{4, 5}, {1, 2}, {3, 0}, {6, 1}});
  const auto logits = host(policy.forward(batch).raw());
  const auto vocab = policy.vocab_size();
  REQUIRE(logits.size() == static_cast<std::size_t>(4 * 5 * vocab));
  const auto mask = batch.completion_mask();
  for (std::size_t row = 0; row < mask.size(); ++row) {
    const auto begin = logits.begin() + static_cast<std::ptrdiff_t>(row) * vocab;
    const bool zero = std::all_of(begin, begin + vocab, [](double x) { return x == 0.0; });
    CHECK(zero == (mask[row] == 0.0));
  }
  // The same logits give logprobs(): log softmax at the completion tokens.
  const auto& b = policy.backend();
  const auto from_logits = token_logprobs(policy.forward(batch), completion_ids(b, batch), 1.0).logprobs.raw() *
                           at::tensor(mask, at::kDouble).to(b.dtype);
  grpo::testing::require_same(host(from_logits), host(policy.logprobs(batch, 1.0).raw()), 1e-6, 0.0);

  policy.forward(batch);
  require_error(
      [&] {
        policy.backward(wrap(b, at::zeros({19, vocab})));
      },
      {"d_logits", "[20, " + std::to_string(vocab) + "]"});
  policy.backward(wrap(b, at::zeros({20, vocab})));
  require_error([&] { policy.backward(wrap(b, at::zeros({20, vocab}))); }, {"backward", "forward"});
  require_error([&] { policy.logprobs(random_batch(1, {{0, 2}}), 1.0); }, {"batch.prompts", "empty"});
  auto bad = random_batch(1, {{2, 2}});
  bad.completions[0][1] = static_cast<token_id>(vocab);
  require_error([&] { policy.forward(bad); }, {"batch.completions", "row 0, element 1"});
  require_error([&] { policy.logprobs(random_batch(1, {{100, 29}}), 1.0); }, {"batch", "max_position_embeddings"});
  require_error([&] { policy.logprobs(batch, 0.0); }, {"temperature"});
}

TEST_CASE("causal_lm: batched generation equals smaller batches row by row, and seeds reproduce") {
  auto policy = load("tiny-llama");
  const std::vector<std::vector<token_id>> prompts = {{5, 9, 33}, {7}, {100, 200, 31, 44, 51, 8, 9}, {12, 13}};
  sampling_options options;
  options.temperature = 1.0;
  options.max_new_tokens = 7;
  // A token that row 0 draws third, as a stop token: then at least row 0 stops early.
  options.stop_tokens = {policy.generate(prompts, options, 42, 2)[0].tokens[2]};
  const auto all = policy.generate(prompts, options, 42, 2);
  REQUIRE(all.size() == 8);
  bool some_stopped = false;
  for (const auto& c : all) some_stopped = some_stopped || c.stopped;
  for (std::size_t k = 1; k <= prompts.size(); ++k) {
    // Rows [0, 2k) of the full call are the whole result of the first k prompts: row r keeps its seed.
    const std::vector<std::vector<token_id>> first(prompts.begin(), prompts.begin() + static_cast<std::ptrdiff_t>(k));
    const auto part = policy.generate(first, options, 42, 2);
    for (std::size_t r = 0; r < part.size(); ++r) {
      INFO("k " << k << ", row " << r);
      CHECK(part[r].tokens == all[r].tokens);
      CHECK(part[r].stopped == all[r].stopped);
      grpo::testing::require_same(part[r].full_logprobs, all[r].full_logprobs, 1e-5, 0.0);
    }
  }
  const auto again = policy.generate(prompts, options, 42, 2);
  const auto other = policy.generate(prompts, options, 43, 2);
  bool differs = false;
  for (std::size_t r = 0; r < all.size(); ++r) {
    CHECK(again[r].tokens == all[r].tokens);
    CHECK(again[r].logprobs == all[r].logprobs);
    differs = differs || other[r].tokens != all[r].tokens;
    CHECK(all[r].logprobs == all[r].full_logprobs);  // nothing truncated
    CHECK((all[r].stopped || all[r].tokens.size() == 7));
  }
  CHECK(differs);
  CHECK(some_stopped);

  // Greedy: each prompt alone (no padding) gives the tokens it gets in the left-padded batch.
  options.temperature = 0.0;
  const auto batched = policy.generate(prompts, options, 0);
  for (std::size_t k = 0; k < prompts.size(); ++k) {
    const std::vector<std::vector<token_id>> alone = {prompts[k]};
    CHECK(policy.generate(alone, options, 0)[0].tokens == batched[k].tokens);
  }
  require_error([&] { policy.generate(prompts, options, 0, 0); }, {"group_size"});
  options.top_p = 1.5;
  require_error([&] { policy.generate(prompts, options, 0); }, {"options.top_p"});
  options.top_p = 1.0;
  options.max_new_tokens = 125;
  require_error([&] { policy.generate(prompts, options, 0); }, {"prompts", "row 2", "max_position_embeddings"});
  options.max_new_tokens = 0;
  CHECK(policy.generate(prompts, options, 0)[0].tokens.empty());
}

TEST_CASE("causal_lm: truncated behaviour log-probs and full log-probs against logprobs()") {
  auto policy = load("tiny-qwen2");
  const std::vector<std::vector<token_id>> prompts = {{5, 9, 33}, {7}, {100, 200, 31, 44, 51}};
  sampling_options options;
  options.temperature = 0.8;
  options.max_new_tokens = 6;
  for (const auto& [top_k, top_p] :
       std::vector<std::pair<std::int64_t, double>>{{0, 1.0}, {5, 1.0}, {0, 0.7}, {20, 0.9}}) {
    INFO("top_k " << top_k << ", top_p " << top_p);
    options.top_k = top_k;
    options.top_p = top_p;
    const auto sampled = policy.generate(prompts, options, 7, 3);
    sequence_batch batch;
    bool truncated = false;
    for (std::size_t r = 0; r < sampled.size(); ++r) {
      batch.prompts.push_back(prompts[r / 3]);
      batch.completions.push_back(sampled[r].tokens);
      for (std::size_t i = 0; i < sampled[r].tokens.size(); ++i) {
        if (top_k == 0 && top_p == 1.0) {
          CHECK(sampled[r].logprobs[i] == sampled[r].full_logprobs[i]);
        } else {
          CHECK(sampled[r].logprobs[i] >= sampled[r].full_logprobs[i]);
          truncated = truncated || sampled[r].logprobs[i] > sampled[r].full_logprobs[i] + 1e-9;
        }
      }
    }
    CHECK((truncated || (top_k == 0 && top_p == 1.0)));
    const auto scored = host(policy.logprobs(batch, options.temperature).raw());
    const auto t = static_cast<std::size_t>(batch.max_completion_length());
    for (std::size_t r = 0; r < sampled.size(); ++r)
      for (std::size_t i = 0; i < sampled[r].tokens.size(); ++i)
        CHECK(std::fabs(scored[r * t + i] - sampled[r].full_logprobs[i]) < 1e-5);
  }
}

TEST_CASE("causal_lm: save_pretrained reloads to identical logits, with the tokenizer files") {
  auto policy = load("tiny-qwen2");
  const auto batch = random_batch(5, {{3, 4}, {5, 2}});
  // Change the weights first, so the saved ones are not the fixture's.
  policy.forward(batch);
  policy.backward(wrap(policy.backend(), at::ones({8, policy.vocab_size()})));
  policy.optimizer_step(1e-2);
  const auto dir = scratch("saved");
  policy.save_pretrained(dir);
  for (const char* file : {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
                           "tokenizer_config.json", "chat_template.jinja"})
    CHECK(std::filesystem::exists(dir / file));
  CHECK(read_text(dir / "tokenizer.json") == read_text(models / "tiny-qwen2" / "tokenizer.json"));
  auto reloaded = causal_lm_policy::load(dir);
  CHECK(host(reloaded.forward(batch).raw()) == host(policy.forward(batch).raw()));
  CHECK(reloaded.model().config() == policy.model().config());
  CHECK(hf::checkpoint::open(dir).names().size() == 1 + 2 * 12 + 1);  // tied: no lm_head.weight
  CHECK(policy.describe().find("Qwen2ForCausalLM") != std::string::npos);
}

TEST_CASE("causal_lm: load errors name the file and the field or tensor") {
  require_error([] { causal_lm_policy::load(scratch("empty")); }, {"config.json", "cannot open"});
  {
    const auto dir = copy_model("tiny-llama", "no_weights");
    std::filesystem::remove(dir / "model.safetensors");
    require_error([&] { causal_lm_policy::load(dir); }, {dir.string(), "model.safetensors"});
  }
  {
    const auto dir = copy_model("tiny-llama", "truncated");
    std::filesystem::resize_file(dir / "model.safetensors", 100000);
    require_error([&] { causal_lm_policy::load(dir); }, {(dir / "model.safetensors").string()});
  }
  {
    const auto dir = copy_model("tiny-llama", "wrong_shape");
    replace_in(dir / "config.json", "\"intermediate_size\": 64", "\"intermediate_size\": 48");
    require_error([&] { causal_lm_policy::load(dir); },
                  {(dir / "model.safetensors").string(), "model.layers.0.mlp.gate_proj.weight", "[64,32]", "[48,32]",
                   "intermediate_size"});
  }
  {
    const auto dir = copy_model("tiny-qwen2", "unexpected");
    auto file = safetensors::file::read(dir / "model.safetensors");
    safetensors::writer writer;
    for (const auto& name : file.names()) {
      const auto view = file.at(name);
      writer.add(name, view.type, view.shape, view.data);
    }
    const std::vector<float> extra = {1.0f, 2.0f};
    writer.add("model.layers.0.mlp.gate_proj.bias", extra, {2});
    writer.write(dir / "model.safetensors");
    require_error([&] { causal_lm_policy::load(dir); },
                  {(dir / "model.safetensors").string(), "unexpected tensor", "model.layers.0.mlp.gate_proj.bias"});
  }
  {
    const auto dir = copy_model("tiny-qwen2", "missing_bias");
    auto file = safetensors::file::read(dir / "model.safetensors");
    safetensors::writer writer;
    for (const auto& name : file.names())
      if (name != "model.layers.1.self_attn.k_proj.bias") {
        const auto view = file.at(name);
        writer.add(name, view.type, view.shape, view.data);
      }
    writer.write(dir / "model.safetensors");
    require_error([&] { causal_lm_policy::load(dir); },
                  {dir.string(), "model.layers.1.self_attn.k_proj.bias", "missing", "Qwen2ForCausalLM"});
  }
  {
    const auto dir = copy_model("tiny-qwen2", "f64");
    auto file = safetensors::file::read(dir / "model.safetensors");
    safetensors::writer writer;
    for (const auto& name : file.names())
      writer.add(name, file.to_doubles(name), file.at(name).shape,
                 name == "model.norm.weight" ? safetensors::dtype::f64 : safetensors::dtype::f32);
    writer.write(dir / "model.safetensors");
    require_error([&] { causal_lm_policy::load(dir); },
                  {(dir / "model.safetensors").string(), "model.norm.weight", "F64"});
  }
  {
    const auto dir = copy_model("tiny-llama", "mistral");
    replace_in(dir / "config.json", "LlamaForCausalLM", "MistralForCausalLM");
    require_error([&] { causal_lm_policy::load(dir); }, {(dir / "config.json").string(), "field \"architectures\""});
  }
  {
    const auto dir = copy_model("tiny-qwen3", "yarn");
    replace_in(dir / "config.json", "\"rope_type\": \"default\"", "\"rope_type\": \"yarn\"");
    require_error([&] { causal_lm_policy::load(dir); },
                  {(dir / "config.json").string(), "field \"rope_parameters\"", "yarn"});
  }
  {
    const auto dir = copy_model("tiny-llama", "dtype");
    replace_in(dir / "config.json", "\"torch_dtype\": \"float32\"", "\"torch_dtype\": \"int8\"");
    require_error([&] { causal_lm_policy::load(dir); }, {(dir / "config.json").string(), "field \"torch_dtype\""});
  }
  causal_lm_options options;
  options.master_dtype = at::kBFloat16;
  require_error([&] { causal_lm_policy::load(models / "tiny-llama", options); }, {"master_dtype"});
}

// SmolLM2-135M-Instruct (not in the repository: set GRPO_SMOLLM2_DIR to a converted model directory)
// against tests/data/hf/smollm2_fixture.json: ChatML log-probs and transformers' greedy answer.
TEST_CASE("causal_lm: SmolLM2-135M-Instruct against transformers (with GRPO_SMOLLM2_DIR)") {
  const char* dir = std::getenv("GRPO_SMOLLM2_DIR");
  if (dir == nullptr || !std::filesystem::exists(std::filesystem::path(dir) / "model.safetensors")) {
    WARN("GRPO_SMOLLM2_DIR not set: SmolLM2 check skipped");
    return;
  }
  auto policy = causal_lm_policy::load(dir);
  std::ifstream in(std::filesystem::path(GRPO_TEST_DATA_DIR) / "hf" / "smollm2_fixture.json", std::ios::binary);
  const auto fixture = json::parse(std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()),
                                   "smollm2_fixture.json");
  const auto pairs = pairs_of_logprobs(fixture);
  grpo::testing::require_same(host(policy.logprobs(pairs.batch, 1.0).raw()), pairs.logprobs, 1e-4, 0.0);
  const auto& greedy = member(fixture, "greedy");
  sampling_options options;
  options.temperature = 0.0;
  options.max_new_tokens = 24;
  options.stop_tokens = ids_of(member(greedy, "stop_tokens"));
  const std::vector<std::vector<token_id>> prompts = {ids_of(member(greedy, "prompt_ids").items[0])};
  CHECK(policy.generate(prompts, options, 0)[0].tokens == ids_of(member(greedy, "tokens").items[0]));
}
