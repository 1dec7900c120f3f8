// SPDX-License-Identifier: Apache-2.0
// Helpers of the causal-LM policy tests (causal_lm_test.cpp, causal_lm_training_test.cpp): the fixture.json files
// of tests/data/hf/models written by tests/fixtures/make_model_fixtures.py, scratch copies of the model
// directories, random batches, and the SFT loss that drives backward().
#pragma once

#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <charconv>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "grpo/detail/json.hpp"
#include "grpo/distillation.hpp"
#include "grpo/libtorch/causal_lm_policy.hpp"
#include "scratch_path.hpp"
#include "torch_support.hpp"

namespace grpo::testing {

namespace json = grpo::detail::json;
using libtorch::causal_lm_options;
using libtorch::causal_lm_policy;

inline const std::filesystem::path models = std::filesystem::path(GRPO_TEST_DATA_DIR) / "hf" / "models";

// ---- fixture.json --------------------------------------------------------------------------------

inline const json::value& member(const json::value& v, const std::string& key) {
  for (const auto& m : v.members)
    if (m.key == key) return m.value;
  FAIL("fixture: no member " << key);
  return v;
}

inline std::vector<token_id> ids_of(const json::value& v) {
  std::vector<token_id> out;
  for (const auto& item : v.items) {
    std::uint64_t x = 0;
    REQUIRE(json::to_uint64(item, x));
    out.push_back(static_cast<token_id>(x));
  }
  return out;
}

inline std::vector<double> numbers_of(const json::value& v) {
  std::vector<double> out;
  for (const auto& item : v.items) {
    double x = 0.0;
    std::from_chars(item.text.data(), item.text.data() + item.text.size(), x);
    out.push_back(x);
  }
  return out;
}

inline json::value read_fixture(const std::string& name) {
  std::ifstream in(models / name / "fixture.json", std::ios::binary);
  REQUIRE(in.good());
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return json::parse(text, name);
}

// The fixture's pairs as one batch, and their log-probs at T = 1 and 0.7 laid out [R, T].
struct scored_pairs {
  sequence_batch batch;
  std::vector<double> logprobs, logprobs_t07, mask;
};

inline scored_pairs pairs_of_logprobs(const json::value& fixture, bool with_t07 = false) {
  scored_pairs out;
  const auto& pairs = member(fixture, "pairs").items;
  for (const auto& pair : pairs) {
    out.batch.prompts.push_back(ids_of(member(pair, "prompt_ids")));
    out.batch.completions.push_back(ids_of(member(pair, "completion_ids")));
  }
  const auto t = static_cast<std::size_t>(out.batch.max_completion_length());
  out.logprobs.assign(pairs.size() * t, 0.0);
  out.logprobs_t07 = out.logprobs;
  for (std::size_t r = 0; r < pairs.size(); ++r) {
    const auto a = numbers_of(member(pairs[r], "logprobs"));
    std::copy(a.begin(), a.end(), out.logprobs.begin() + static_cast<std::ptrdiff_t>(r * t));
    if (!with_t07) continue;
    const auto b = numbers_of(member(pairs[r], "logprobs_t07"));
    std::copy(b.begin(), b.end(), out.logprobs_t07.begin() + static_cast<std::ptrdiff_t>(r * t));
  }
  out.mask = out.batch.completion_mask();
  return out;
}

inline scored_pairs pairs_of(const json::value& fixture) { return pairs_of_logprobs(fixture, true); }

inline causal_lm_policy load(const std::string& name, at::ScalarType master = at::kFloat,
                             std::optional<at::ScalarType> compute = std::nullopt) {
  causal_lm_options options;
  options.master_dtype = master;
  options.compute_dtype = compute;
  return causal_lm_policy::load(models / name, options);
}

inline std::filesystem::path scratch(const std::string& name) {
  const auto dir = grpo::testing::scratch_path("grpo_causal_lm_test_" + name);
  std::filesystem::create_directories(dir);
  return dir;
}

// A copy of a fixture model directory to edit.
inline std::filesystem::path copy_model(const std::string& name, const std::string& as) {
  const auto dir = scratch(as);
  for (const auto& entry : std::filesystem::directory_iterator(models / name))
    std::filesystem::copy_file(entry.path(), dir / entry.path().filename());
  return dir;
}

inline std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

inline void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

inline void replace_in(const std::filesystem::path& path, const std::string& from, const std::string& to) {
  auto text = read_text(path);
  const auto at = text.find(from);
  REQUIRE(at != std::string::npos);
  write_text(path, text.replace(at, from.size(), to));
}

// Rows of mixed lengths, ids below the smallest fixture vocabulary (288).
inline sequence_batch random_batch(std::uint32_t seed, const std::vector<std::pair<int, int>>& lengths) {
  std::mt19937 gen(seed);
  sequence_batch batch;
  for (const auto& [p, c] : lengths) {
    std::vector<token_id> prompt(static_cast<std::size_t>(p)), completion(static_cast<std::size_t>(c));
    for (auto& t : prompt) t = static_cast<token_id>(gen() % 280);
    for (auto& t : completion) t = static_cast<token_id>(gen() % 280);
    batch.prompts.push_back(prompt);
    batch.completions.push_back(completion);
  }
  return batch;
}

// The [R * T] completion tokens of a batch (0 at padding), the ids of forward()'s logits rows.
inline index_tensor<libtorch::backend> completion_ids(const libtorch::backend& b, const sequence_batch& batch) {
  const auto t = static_cast<std::size_t>(batch.max_completion_length());
  std::vector<std::int64_t> ids(batch.rows() * t, 0);
  for (std::size_t r = 0; r < batch.rows(); ++r)
    std::copy(batch.completions[r].begin(), batch.completions[r].end(),
              ids.begin() + static_cast<std::ptrdiff_t>(r * t));
  return make_index(b, ids, shape::vector(static_cast<std::int64_t>(ids.size())));
}

// The SFT loss of a batch (mean over completion tokens) and d loss / d logits.
inline distillation_result<libtorch::backend> sft(causal_lm_policy& policy, const sequence_batch& batch,
                                                  const tensor<libtorch::backend>& logits) {
  const auto& b = policy.backend();
  const auto mask = batch.completion_mask();
  const auto targets = completion_ids(b, batch);
  loss_denominators denominators;
  denominators.tokens = std::accumulate(mask.begin(), mask.end(), 0.0);
  return sft_loss(logits, targets, make_tensor(b, mask, shape::vector(static_cast<std::int64_t>(mask.size()))),
                  denominators);
}

inline std::vector<std::vector<double>> weights_of(const causal_lm_policy& policy) {
  std::vector<std::vector<double>> out;
  for (const auto& [name, t] : policy.model().named_parameters()) out.push_back(host(t));
  return out;
}

}  // namespace grpo::testing
