// SPDX-License-Identifier: Apache-2.0
// grpo/model/policy.hpp: the native transformer as a grpo::policy and grpo::logits_policy, so a
// trainer written against the concepts (and grpo::policy_rollout_engine) drives it unchanged.
// Log-probs are log softmax(z / T)[token] at the policy's temperature, as TRL, veRL and OpenRLHF
// compute them in the trainer; sample() reports the behaviour log-probs of the sampler (see
// sampling.hpp for what they are under top-k/top-p truncation).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "grpo/backend.hpp"
#include "grpo/concepts.hpp"
#include "grpo/logits.hpp"
#include "grpo/model/transformer.hpp"
#include "grpo/reference_backend.hpp"
#include "grpo/tensor.hpp"
#include "grpo/validate.hpp"

namespace grpo::model {

/// The completion tokens of a batch as the [R * T] ids of its logits rows (0 at padding), for
/// token_logprobs and token_logprobs_backward.
template <tensor_backend B>
index_tensor<B> completion_ids(const B& backend, const sequence_batch& batch) {
  const auto t = static_cast<std::size_t>(batch.max_completion_length());
  std::vector<std::int64_t> ids(batch.rows() * t, 0);
  for (std::size_t r = 0; r < batch.rows(); ++r)
    std::copy(batch.completions[r].begin(), batch.completions[r].end(),
              ids.begin() + static_cast<std::ptrdiff_t>(r * t));
  return make_index(backend, ids, shape::vector(static_cast<std::int64_t>(ids.size())));
}

/// Adapter holding a reference to a transformer (which must outlive it).
template <class T = float>
class transformer_policy {
 public:
  using backend_type = reference_backend<T>;

  /// \throws config_error naming "temperature" unless it is finite and > 0.
  explicit transformer_policy(transformer<T>& model, double temperature = 1.0)
      : model_(&model), temperature_(temperature) {
    grpo::detail::expect_positive(temperature, "temperature");
  }

  const backend_type& backend() const { return model_->backend(); }
  transformer<T>& model() { return *model_; }
  double temperature() const { return temperature_; }

  /// [R * T, V] logits of every completion position, zero rows at padding. Keeps the activations,
  /// so model().backward() can follow.
  tensor<backend_type> completion_logits(const sequence_batch& batch) { return model_->forward(batch, true); }

  /// [R, T] log softmax(z / temperature)[completion token], zero at padding. Runs the forward
  /// without keeping activations (it replaces those of an earlier completion_logits).
  tensor<backend_type> completion_logprobs(const sequence_batch& batch) {
    const auto logits = model_->forward(batch, false);
    const auto rows = static_cast<std::int64_t>(batch.rows()), t = batch.max_completion_length();
    const auto mask = make_tensor(backend(), batch.completion_mask(), shape::vector(rows * t));
    const auto result = token_logprobs(logits, completion_ids(backend(), batch), temperature_);
    return reshape(result.logprobs * mask, shape::matrix(rows, t));
  }

  /// One completion per prompt (row r seeded from (seed, r)); the behaviour log-probs are the
  /// sampler's.
  std::vector<completion> sample(std::span<const std::vector<token_id>> prompts, const sampling_options& options,
                                 std::uint64_t seed) {
    auto sampled = model_->generate(prompts, options, seed, 1);
    std::vector<completion> out;
    out.reserve(sampled.size());
    for (auto& s : sampled) out.push_back(std::move(static_cast<completion&>(s)));
    return out;
  }

 private:
  transformer<T>* model_;
  double temperature_;
};

static_assert(policy<transformer_policy<float>>);
static_assert(logits_policy<transformer_policy<float>>);
static_assert(rollout_engine<policy_rollout_engine<transformer_policy<float>>>);

}  // namespace grpo::model
