// SPDX-License-Identifier: Apache-2.0
// grpo/train/cold_start.hpp: R1's cold start (arXiv:2501.12948, Sec. 2.3.1): supervised
// fine-tuning on worked demonstrations before RL, so the policy already writes the
// <think>...</think><answer>...</answer> format GRPO rewards. The demonstrations are a fixed set
// drawn once from the task's training split, visited epoch by epoch, each epoch in its own
// seeded order; a step is the token-mean cross-entropy (sft_loss) of one batch of them. Optionally
// only the demonstrations whose answer the task's verifier accepts are kept (rejection sampling).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "grpo/concepts.hpp"
#include "grpo/detail/random.hpp"
#include "grpo/distillation.hpp"
#include "grpo/error.hpp"
#include "grpo/tasks/rewards.hpp"
#include "grpo/tasks/task.hpp"
#include "grpo/tensor.hpp"
#include "grpo/train/codec.hpp"
#include "grpo/train/communicator.hpp"
#include "grpo/train/update.hpp"

namespace grpo::train {

/// The endless stream of demonstrations: epochs over `count` problems drawn with `seed`'s
/// stream 4 (with `verified_only`, those of them whose demonstration's answer task.check accepts),
/// epoch e shuffled with stream 5000 + e (Fisher-Yates).
class demonstration_stream {
 public:
  /// \throws config_error naming "sft.steps" when the task has no demonstrations (user data), and
  /// "sft.verified_only" when the verifier rejects every one.
  demonstration_stream(const tasks::task& task, std::int64_t count, std::uint64_t seed, bool verified_only = false)
      : seed_(seed) {
    std::mt19937_64 rng(grpo::detail::mix_seed(seed, 4));
    for (std::int64_t i = 0; i < count; ++i) {
      tasks::problem p = task.sample_train(rng);
      GRPO_CHECK(!p.demonstration.empty(), config_error,
                 "sft.steps: the task has no demonstrations (user data); set sft.steps = 0 and start from model.init");
      if (!verified_only || task.check(p.prompt, tasks::extract_answer(p.demonstration)) == true)
        problems_.push_back(std::move(p));
    }
    GRPO_CHECK(!problems_.empty(), config_error, "sft.verified_only: the verifier rejects all ", count,
               " demonstrations drawn; raise sft.examples or turn it off");
  }

  /// The distinct demonstrations one epoch visits.
  std::size_t size() const { return problems_.size(); }

  /// Demonstration `index` of the stream.
  const tasks::problem& at(std::int64_t index) {
    const std::size_t n = problems_.size();
    const auto epoch = static_cast<std::uint64_t>(index) / n, position = static_cast<std::size_t>(index) % n;
    if (epoch != order_epoch_ || order_.empty()) {
      order_.resize(n);
      for (std::size_t i = 0; i < n; ++i) order_[i] = i;
      std::mt19937_64 rng(grpo::detail::mix_seed(seed_, 5000 + epoch));
      for (std::size_t i = n; i > 1; --i) std::swap(order_[i - 1], order_[grpo::detail::uniform_below(rng, i)]);
      order_epoch_ = epoch;
    }
    return problems_[order_[position]];
  }

 private:
  std::uint64_t seed_;
  std::vector<tasks::problem> problems_;
  std::vector<std::size_t> order_;
  std::uint64_t order_epoch_ = 0;
};

/// What one cold-start step measured, over the whole batch (every rank's share).
struct sft_step_result {
  double loss = 0;
  double grad_norm = 0;
  double tokens = 0;  ///< target tokens
  double communication_seconds = 0;
};

/// One SFT step on `problems` (this rank's share of the batch): prompt and demonstration through
/// the codec (the target ends with the end-of-turn token, so the policy learns to stop),
/// cross-entropy over the whole batch's target tokens (counted over every rank, so the shares add
/// up to the token mean of the batch), backward, and the optimizer update at `lr`.
template <trainable_policy P>
sft_step_result sft_step(P& policy, const text_codec& codec, const std::vector<const tasks::problem*>& problems,
                         double lr, double max_grad_norm, communicator& comm) {
  using B = typename P::backend_type;
  const B& b = policy.backend();
  sequence_batch batch;
  for (const tasks::problem* p : problems) {
    batch.prompts.push_back(codec.encode_prompt(p->prompt));
    batch.completions.push_back(codec.encode_completion(p->demonstration));
  }
  const auto logits = policy.forward(batch);
  const auto rows = static_cast<std::int64_t>(batch.rows()), t = batch.max_completion_length();
  std::vector<std::int64_t> targets(static_cast<std::size_t>(rows * t), 0);
  for (std::size_t r = 0; r < batch.rows(); ++r)
    for (std::size_t i = 0; i < batch.completions[r].size(); ++i)
      targets[r * static_cast<std::size_t>(t) + i] = batch.completions[r][i];
  const auto mask_values = batch.completion_mask();
  sft_step_result out;
  for (const double m : mask_values) out.tokens += m;
  std::vector<double> tokens{out.tokens};
  comm.all_reduce_sum(std::span<double>(tokens));
  out.tokens = tokens[0];
  loss_denominators den;
  den.tokens = std::max(out.tokens, 1.0);
  auto result = sft_loss(logits, make_index(b, targets, shape::vector(rows * t)),
                               make_tensor(b, mask_values, shape::vector(rows * t)), den);
  policy.zero_grad();
  policy.backward(tensor<B>(b, std::move(result.grad_logits)));
  std::vector<double> loss{result.loss.item()};
  comm.all_reduce_sum(std::span<double>(loss));
  out.loss = loss[0];
  out.grad_norm = apply_update(policy, comm, max_grad_norm, lr, out.communication_seconds);
  return out;
}

}  // namespace grpo::train
