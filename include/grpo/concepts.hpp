// SPDX-License-Identifier: Apache-2.0
// grpo/concepts.hpp: the concepts a trainer is written against: policy, rollout engine, reward
// function (the tensor backend is in backend.hpp, the advantage estimator in advantages.hpp).
// They fix what the GRPO loop needs from each piece and nothing more, so a native transformer, a
// LibTorch module or a remote inference engine can each plug in.
//
// concept policy<P> {
//   P::backend_type                       a tensor_backend; P::backend() returns it
//   p.completion_logprobs(batch) -> tensor<backend_type> [R, T]
//       per-token log pi(completion token | prompt, earlier tokens) for each of the R rows of a
//       sequence_batch; T is the longest completion, shorter rows are zero-padded (completion_mask
//       gives the valid positions)
//   p.sample(prompts, options, seed) -> std::vector<completion>
//       one completion per prompt, drawn with the sampling options, reproducible for a seed
// }
// concept logits_policy<P> refines it with p.completion_logits(batch) -> tensor [R*T, V], so the
//   loss can be driven from logits (entropy bonus, fused log-prob paths).
// concept rollout_engine<E> {
//   e.generate(prompts, group_size, options, seed) -> rollout_batch
//       group_size completions per prompt with the behaviour log-probs the engine sampled them
//       with (for the importance-sampling correction) and whether each stopped or was truncated
// }
// concept reward_function<F> {
//   f(prompt, completion) -> std::optional<double>    std::nullopt means "unscorable": the
//       completion is left out of its group's statistics and gets advantage 0
// }
// Every policy is a rollout engine through policy_rollout_engine<P>. Minimal conforming examples of
// each concept are in tests/concepts_test.cpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "grpo/backend.hpp"
#include "grpo/error.hpp"
#include "grpo/tensor.hpp"

namespace grpo {

using token_id = std::int32_t;

/// Rows of (prompt, completion) token sequences to be scored.
struct sequence_batch {
  std::vector<std::vector<token_id>> prompts;
  std::vector<std::vector<token_id>> completions;

  std::size_t rows() const { return completions.size(); }
  /// T: the longest completion.
  std::int64_t max_completion_length() const {
    std::size_t longest = 0;
    for (const auto& c : completions) longest = std::max(longest, c.size());
    return static_cast<std::int64_t>(longest);
  }
  /// [R * T] row-major 0/1 mask of valid completion positions (T = max_completion_length()).
  std::vector<double> completion_mask() const {
    const auto t = static_cast<std::size_t>(max_completion_length());
    std::vector<double> mask(rows() * t, 0.0);
    for (std::size_t r = 0; r < rows(); ++r)
      for (std::size_t i = 0; i < completions[r].size(); ++i) mask[r * t + i] = 1.0;
    return mask;
  }
};

/// How completions are drawn (names follow TRL's GRPOConfig / vLLM SamplingParams).
struct sampling_options {
  double temperature = 1.0;
  std::int64_t top_k = 0;      ///< 0: no top-k truncation
  double top_p = 1.0;          ///< 1: no nucleus truncation
  std::int64_t max_new_tokens = 256;
  std::vector<token_id> stop_tokens;
};

/// One sampled completion.
struct completion {
  std::vector<token_id> tokens;
  std::vector<double> logprobs;  ///< behaviour log-prob of each token under the sampler
  bool stopped = false;          ///< ended on a stop token (false: truncated at max_new_tokens)
};

/// group_size completions for each of P prompts, grouped: rows [kG, (k+1)G) answer prompt k.
struct rollout_batch {
  std::vector<completion> completions;
  std::vector<std::int64_t> prompt_index;  ///< the prompt each completion answers
};

template <class P>
concept policy = requires(P& p, const sequence_batch& batch, std::span<const std::vector<token_id>> prompts,
                          const sampling_options& options, std::uint64_t seed) {
  typename P::backend_type;
  requires tensor_backend<typename P::backend_type>;
  { p.backend() } -> std::convertible_to<const typename P::backend_type&>;
  { p.completion_logprobs(batch) } -> std::same_as<tensor<typename P::backend_type>>;
  { p.sample(prompts, options, seed) } -> std::same_as<std::vector<completion>>;
};

template <class P>
concept logits_policy = policy<P> && requires(P& p, const sequence_batch& batch) {
  { p.completion_logits(batch) } -> std::same_as<tensor<typename P::backend_type>>;
};

template <class E>
concept rollout_engine = requires(E& e, std::span<const std::vector<token_id>> prompts, std::int64_t group_size,
                                  const sampling_options& options, std::uint64_t seed) {
  { e.generate(prompts, group_size, options, seed) } -> std::same_as<rollout_batch>;
};

template <class F>
concept reward_function = requires(const F& f, std::string_view prompt, std::string_view completion_text) {
  { f(prompt, completion_text) } -> std::convertible_to<std::optional<double>>;
};

/// A policy used as its own rollout engine: each prompt repeated group_size times, each copy
/// sampled with its own seed derived from (seed, row), so a batch is reproducible row by row.
template <policy P>
class policy_rollout_engine {
 public:
  explicit policy_rollout_engine(P& model) : model_(&model) {}

  rollout_batch generate(std::span<const std::vector<token_id>> prompts, std::int64_t group_size,
                         const sampling_options& options, std::uint64_t seed) {
    GRPO_CHECK(group_size > 0, config_error, "group_size: must be > 0, got ", group_size);
    std::vector<std::vector<token_id>> repeated;
    rollout_batch out;
    for (std::size_t k = 0; k < prompts.size(); ++k)
      for (std::int64_t g = 0; g < group_size; ++g) {
        repeated.push_back(prompts[k]);
        out.prompt_index.push_back(static_cast<std::int64_t>(k));
      }
    out.completions = model_->sample(std::span<const std::vector<token_id>>(repeated), options, seed);
    GRPO_CHECK(out.completions.size() == repeated.size(), error, "policy.sample: returned ", out.completions.size(),
               " completions for ", repeated.size(), " prompts");
    return out;
  }

 private:
  P* model_;
};

/// A reward function's verdict as a score: NaN when unscorable (what the advantage estimators
/// read as "leave out of the statistics, advantage 0").
template <reward_function F>
double score(const F& f, std::string_view prompt, std::string_view completion_text) {
  const std::optional<double> value = f(prompt, completion_text);
  if (!value) return std::numeric_limits<double>::quiet_NaN();
  GRPO_CHECK(std::isfinite(*value), value_error, "reward: a reward function returned ", *value,
             " (return std::nullopt for unscorable completions)");
  return *value;
}

}  // namespace grpo
