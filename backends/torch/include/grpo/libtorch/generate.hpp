// SPDX-License-Identifier: Apache-2.0
// grpo/libtorch/generate.hpp: batched sampling from a causal_lm with a key/value cache. Prompts of
// different lengths are left-padded, with per-row position ids and padding keys masked, so every
// row computes what it would alone. Each distinct prompt is prefilled once and its cache copied to
// its group_size rows. The model runs on its device, and so does the sampling (device_sampling.hpp:
// grpo::model::sample_token's temperature, top-k, top-p, greedy and both log-probs over all rows at
// once, or sample_token itself on the CPU) with each row's own host std::mt19937_64, seeded from
// grpo::model::row_seed(seed, row) and advanced as sample_token advances it, so the sampling is the
// native model's and a seed draws the same tokens on any device (up to rounding at a boundary, see
// sample_tokens). Per step only [rows] uniforms go to an accelerator and [rows] ids and log-probs
// come back. Rows that stop are dropped from the batch (their cache rows removed), so they
// cost nothing afterwards.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include "grpo/concepts.hpp"
#include "grpo/error.hpp"
#include "grpo/libtorch/causal_lm.hpp"
#include "grpo/libtorch/config.hpp"
#include "grpo/libtorch/device_sampling.hpp"
#include "grpo/model/sampling.hpp"

namespace grpo::libtorch {
inline namespace GRPO_LIBTORCH_NAMESPACE {

namespace detail {

/// One row being sampled.
struct sampling_row {
  std::int64_t index = 0;          ///< the row of the result (prompt k, copy g: k * group_size + g)
  std::int64_t prompt_length = 0;  ///< p
  std::int64_t padding = 0;        ///< left padding slots in the cache
  std::mt19937_64 gen;
  bool done = false;
};

/// Draws one token for each active row from its logits (row i of `logits`, [A, V] on the model's
/// device) with the row's generator and appends it to that row's completion.
inline void draw_tokens(const at::Tensor& logits, std::vector<sampling_row*>& active, const sampling_options& options,
                        std::vector<sampled_completion>& out) {
  std::vector<std::mt19937_64*> generators;
  for (auto* row : active) generators.push_back(&row->gen);
  const auto draws = sample_tokens(logits, generators, options);
  for (std::size_t i = 0; i < active.size(); ++i) {
    sampling_row& row = *active[i];
    auto& completion = out[static_cast<std::size_t>(row.index)];
    GRPO_CHECK(std::isfinite(draws.lse[i]), value_error, "generate: the logits of row ", row.index, " at position ",
               row.prompt_length + static_cast<std::int64_t>(completion.tokens.size()),
               " are not finite (NaN or Inf in the weights?)");
    const auto& token = draws.tokens[i];
    completion.tokens.push_back(token.id);
    completion.logprobs.push_back(token.logprob);
    completion.full_logprobs.push_back(token.full_logprob);
    completion.stopped =
        std::find(options.stop_tokens.begin(), options.stop_tokens.end(), token.id) != options.stop_tokens.end();
    row.done = completion.stopped || static_cast<std::int64_t>(completion.tokens.size()) >= options.max_new_tokens;
  }
}

inline at::Tensor device_ids(const std::vector<std::int64_t>& values, std::vector<std::int64_t> sizes,
                             at::Device device) {
  auto host = at::empty(sizes, at::TensorOptions().dtype(at::kLong));
  std::copy(values.begin(), values.end(), host.data_ptr<std::int64_t>());
  return host.to(device);
}

}  // namespace detail

/// Samples group_size completions of each prompt from `model` with the compute-dtype weights `w`;
/// rows [k G, (k+1) G) answer prompts[k], and row r draws from std::mt19937_64(row_seed(seed, options.first_row + r)).
/// A completion ends after a stop token (included, stopped = true) or max_new_tokens tokens.
/// \throws config_error naming "options.*" or "group_size"; shape_error naming "prompts" for an
///         empty prompt, a token id outside [0, vocab_size), or prompt + max_new_tokens beyond
///         max_position_embeddings; value_error for non-finite logits.
inline std::vector<sampled_completion> generate(const causal_lm& model, const causal_lm_weights& w,
                                                std::span<const std::vector<token_id>> prompts,
                                                const sampling_options& options, std::uint64_t seed,
                                                std::int64_t group_size = 1) {
  const auto& c = model.config();
  model::validate(options, c.vocab_size);
  GRPO_CHECK(group_size >= 1, config_error, "group_size: must be >= 1, got ", group_size);
  std::int64_t longest = 0;
  for (std::size_t k = 0; k < prompts.size(); ++k) {
    const auto& prompt = prompts[k];
    GRPO_CHECK(!prompt.empty(), shape_error, "prompts: row ", k, " is empty (a prompt needs at least one token)");
    for (std::size_t i = 0; i < prompt.size(); ++i)
      GRPO_CHECK(prompt[i] >= 0 && prompt[i] < c.vocab_size, shape_error, "prompts: row ", k, ", element ", i, " is ",
                 prompt[i], ", out of range [0, ", c.vocab_size, ")");
    const auto p = static_cast<std::int64_t>(prompt.size());
    GRPO_CHECK(p + options.max_new_tokens <= c.max_position_embeddings, shape_error, "prompts: row ", k, " has ", p,
               " tokens; with options.max_new_tokens ", options.max_new_tokens,
               " that exceeds max_position_embeddings ", c.max_position_embeddings);
    longest = std::max(longest, p);
  }
  const auto count = static_cast<std::int64_t>(prompts.size());
  const std::int64_t rows = count * group_size;
  std::vector<sampled_completion> out(static_cast<std::size_t>(rows));
  if (rows == 0 || options.max_new_tokens == 0) return out;

  const at::NoGradGuard no_grad;
  const auto device = model.options().device;
  // Prefill: prompts left-padded to the longest; padding slots get position 0 and are masked.
  std::vector<std::int64_t> ids(static_cast<std::size_t>(count * longest), 0), positions(ids.size(), 0),
      valid(ids.size(), 0);
  for (std::int64_t k = 0; k < count; ++k) {
    const auto& prompt = prompts[static_cast<std::size_t>(k)];
    const auto padding = longest - static_cast<std::int64_t>(prompt.size());
    for (std::int64_t j = padding; j < longest; ++j) {
      const auto i = static_cast<std::size_t>(k * longest + j);
      ids[i] = prompt[static_cast<std::size_t>(j - padding)];
      positions[i] = j - padding;
      valid[i] = 1;
    }
  }
  auto cache = model.make_cache(count, longest + options.max_new_tokens - 1);
  const auto hidden = model.hidden_states(w, detail::device_ids(ids, {count, longest}, device),
                                          detail::device_ids(positions, {count, longest}, device),
                                          detail::device_ids(valid, {count, longest}, device).to(at::kBool), &cache);
  auto logits = model.logits(w, hidden.select(1, longest - 1));
  if (group_size > 1) {
    const auto copies =
        at::arange(count, at::TensorOptions().dtype(at::kLong).device(device)).repeat_interleave(group_size);
    for (auto& t : cache.keys) t = t.index_select(0, copies);
    for (auto& t : cache.values) t = t.index_select(0, copies);
    logits = logits.index_select(0, copies);
  }

  std::vector<detail::sampling_row> states(static_cast<std::size_t>(rows));
  std::vector<detail::sampling_row*> active;
  for (std::int64_t r = 0; r < rows; ++r) {
    auto& s = states[static_cast<std::size_t>(r)];
    s.index = r;
    s.prompt_length = static_cast<std::int64_t>(prompts[static_cast<std::size_t>(r / group_size)].size());
    s.padding = longest - s.prompt_length;
    s.gen.seed(model::row_seed(seed, options.first_row + static_cast<std::uint64_t>(r)));
    active.push_back(&s);
  }
  while (true) {
    detail::draw_tokens(logits, active, options, out);
    std::vector<std::int64_t> keep;
    for (std::size_t i = 0; i < active.size(); ++i)
      if (!active[i]->done) keep.push_back(static_cast<std::int64_t>(i));
    if (keep.empty()) break;
    if (keep.size() < active.size()) {
      const auto index = detail::device_ids(keep, {static_cast<std::int64_t>(keep.size())}, device);
      for (auto& t : cache.keys) t = t.index_select(0, index);
      for (auto& t : cache.values) t = t.index_select(0, index);
      std::vector<detail::sampling_row*> still;
      for (const auto i : keep) still.push_back(active[static_cast<std::size_t>(i)]);
      active = std::move(still);
    }
    // Feed each row's last token at its own position; keys before its padding stay masked.
    const auto batch = static_cast<std::int64_t>(active.size()), keys = cache.length + 1;
    std::vector<std::int64_t> next(active.size()), position(active.size()), key_valid(active.size() * keys, 0);
    for (std::size_t i = 0; i < active.size(); ++i) {
      const auto& tokens = out[static_cast<std::size_t>(active[i]->index)].tokens;
      next[i] = tokens.back();
      position[i] = active[i]->prompt_length + static_cast<std::int64_t>(tokens.size()) - 1;
      std::fill(key_valid.begin() + static_cast<std::ptrdiff_t>(i * keys + active[i]->padding),
                key_valid.begin() + static_cast<std::ptrdiff_t>((i + 1) * keys), 1);
    }
    const auto h = model.hidden_states(w, detail::device_ids(next, {batch, 1}, device),
                                       detail::device_ids(position, {batch, 1}, device),
                                       detail::device_ids(key_valid, {batch, keys}, device).to(at::kBool), &cache);
    logits = model.logits(w, h.select(1, 0));
  }
  return out;
}

}  // namespace GRPO_LIBTORCH_NAMESPACE
}  // namespace grpo::libtorch
