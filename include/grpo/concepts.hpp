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
// concept trainable_policy<P> (what grpo::train::trainer<P> drives; a policy that can also learn) {
//   P::backend_type                       a logits_backend; p.backend() returns it (its device is the
//                                         policy's: every tensor below lives there)
//   p.vocab_size() -> int64               V
//   p.forward(batch) -> tensor [R*T, V]   logits of every completion position (row r*T + i predicts
//       completion[r][i]; padding rows zero), keeping what one backward needs
//   p.backward(d_logits)                  d_logits: tensor [R*T, V] of the same backend; adds
//       d sum(d_logits * logits) / d weights of the last forward to the gradient accumulators
//   p.logprobs(batch, temperature) -> tensor [R, T]   log softmax(z / T)[completion token], zero at
//       padding, no activations kept (old log-probs for mu > 1)
//   p.freeze_reference()                  keeps a frozen copy of the current weights (the KL term's
//       reference); p.has_reference(); p.reference_logprobs(batch, temperature) -> tensor [R, T]
//   p.generate(prompts, options, seed, group_size) -> vector<sampled_completion>
//       group_size completions per prompt (rows [kG, (k+1)G) answer prompt k; row r drawn from
//       row_seed(seed, options.first_row + r)) with a key/value cache, and the behaviour log-probs
//   p.zero_grad(); p.all_reduce_gradients(communicator&); p.clip_grad_norm(max_norm) -> double
//       (the global L2 norm before clipping, PyTorch's clip_grad_norm_; value_error when not finite)
//   p.reset_optimizer(adamw_options)      fresh AdamW moments and step count with these settings
//   p.optimizer_step(lr)                  one AdamW update of the weights on the policy's device
//   p.save_pretrained(dir)                a Hugging Face model directory (config.json,
//       model.safetensors, and the tokenizer files the policy was loaded with)
//   p.save_state(dir) / p.load_state(dir, adamw_options)   everything an exact resume needs
//       (weights, optimizer moments and step count, the frozen reference), as files in dir
//   p.describe() -> string                one line for logs (architecture, parameters, device)
// }
// Every policy is a rollout engine through policy_rollout_engine<P>. Minimal conforming examples of
// each concept are in tests/concepts_test.cpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "grpo/backend.hpp"
#include "grpo/error.hpp"
#include "grpo/tensor.hpp"
#include "grpo/train/adamw_options.hpp"
#include "grpo/train/communicator.hpp"

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
  /// The index of this call's first row in the whole batch: row r draws from
  /// row_seed(seed, first_row + r), so a batch split across data-parallel ranks samples exactly
  /// what one process sampling it whole would.
  std::uint64_t first_row = 0;
};

/// One sampled completion.
struct completion {
  std::vector<token_id> tokens;
  std::vector<double> logprobs;  ///< behaviour log-prob of each token under the sampler
  bool stopped = false;          ///< ended on a stop token (false: truncated at max_new_tokens)
};

/// A completion drawn by a policy that can also score: besides the behaviour log-probs (under the
/// distribution actually sampled from, truncated by top-k/top-p; 0 when greedy), the log-probs under
/// the full softmax(z / T) (T = 1 when greedy), which is what the trainer recomputes from the logits
/// of the same tokens (TRL issue #6789 is about the difference).
struct sampled_completion : completion {
  std::vector<double> full_logprobs;
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

template <class P>
concept trainable_policy =
    requires(P& p, const P& cp, const sequence_batch& batch, double temperature,
             std::span<const std::vector<token_id>> prompts, const sampling_options& options, std::uint64_t seed,
             std::int64_t group_size, const tensor<typename P::backend_type>& d_logits, train::communicator& comm,
             const train::adamw_options& adam, const std::filesystem::path& dir) {
      typename P::backend_type;
      requires logits_backend<typename P::backend_type>;
      { cp.backend() } -> std::convertible_to<const typename P::backend_type&>;
      { cp.vocab_size() } -> std::convertible_to<std::int64_t>;
      { p.forward(batch) } -> std::same_as<tensor<typename P::backend_type>>;
      p.backward(d_logits);
      { p.logprobs(batch, temperature) } -> std::same_as<tensor<typename P::backend_type>>;
      p.freeze_reference();
      { cp.has_reference() } -> std::convertible_to<bool>;
      { p.reference_logprobs(batch, temperature) } -> std::same_as<tensor<typename P::backend_type>>;
      { p.generate(prompts, options, seed, group_size) } -> std::same_as<std::vector<sampled_completion>>;
      p.zero_grad();
      p.all_reduce_gradients(comm);
      { p.clip_grad_norm(temperature) } -> std::convertible_to<double>;
      p.reset_optimizer(adam);
      p.optimizer_step(temperature);
      cp.save_pretrained(dir);
      cp.save_state(dir);
      p.load_state(dir, adam);
      { cp.describe() } -> std::convertible_to<std::string>;
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
