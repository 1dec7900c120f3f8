// SPDX-License-Identifier: Apache-2.0
// grpo/train/update.hpp: the third room of a GRPO step: the policy update on one generation
// batch. For each of mu iterations (GRPO's inner loop, DeepSeekMath Algorithm 1), every
// micro-batch runs forward, the clipped surrogate with its KL and entropy terms from the logits
// (logits_policy_loss.hpp, with the whole batch's denominators), and backward; then one optimizer
// update (all-reduce, global-norm clipping, AdamW). With mu = 1 the old log-probs are the current
// ones held constant (ratio 1), as in TRL; with mu > 1 they are computed once, before the first
// update. The reference log-probs of the KL term come from the policy's frozen copy.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "grpo/aggregation.hpp"
#include "grpo/concepts.hpp"
#include "grpo/logits_policy_loss.hpp"
#include "grpo/loss_settings.hpp"
#include "grpo/policy_loss.hpp"
#include "grpo/tensor.hpp"
#include "grpo/train/batching.hpp"
#include "grpo/train/communicator.hpp"

namespace grpo::train {

/// The end of every optimizer step: gradients summed over ranks (the time it took added to
/// `communication_seconds`), clipped to max_grad_norm (<= 0: only measured), one AdamW update at
/// `lr`. Returns the global norm before clipping.
template <trainable_policy P>
double apply_update(P& policy, communicator& comm, double max_grad_norm, double lr, double& communication_seconds) {
  const auto t0 = std::chrono::steady_clock::now();
  policy.all_reduce_gradients(comm);
  communication_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double norm = policy.clip_grad_norm(max_grad_norm);
  policy.optimizer_step(lr);
  return norm;
}

/// What one GRPO update measured on this rank; reduce_over_ranks makes it the whole batch's.
struct update_result {
  policy_loss_metrics totals{};   ///< the last iteration's metrics, summed over micro-batches
  double loss = 0;                ///< the last iteration's loss
  double first_loss = 0;          ///< the first iteration's loss (differs from `loss` when mu > 1)
  double grad_norm = 0;           ///< before clipping, of the last update (the same on every rank)
  double train_tokens = 0;        ///< fed tokens, every iteration counted
  double logprob_diff_max = 0;    ///< |trainer - sampler| log-prob before any update
  double logprob_diff_sum = 0;
  double logprob_diff_count = 0;
  double seconds = 0;
  double communication_seconds = 0;  ///< summing the gradients over ranks

  double logprob_diff_mean() const { return logprob_diff_count > 0 ? logprob_diff_sum / logprob_diff_count : 0.0; }
};

/// The sums of every rank's results (the losses and metrics are each rank's share of the whole
/// batch's, with global denominators), the largest log-prob difference and the slowest time.
inline void reduce_over_ranks(communicator& comm, update_result& u) {
  if (comm.world_size() == 1) return;
  std::vector<double> sums{u.loss, u.first_loss, u.totals.pg_loss, u.totals.kl_mean, u.totals.entropy_mean,
                           u.totals.clip_fraction_low, u.totals.clip_fraction_high, u.totals.ratio_mean,
                           u.train_tokens, u.logprob_diff_sum, u.logprob_diff_count};
  comm.all_reduce_sum(std::span<double>(sums));
  u.loss = sums[0];
  u.first_loss = sums[1];
  u.totals.pg_loss = sums[2];
  u.totals.kl_mean = sums[3];
  u.totals.entropy_mean = sums[4];
  u.totals.clip_fraction_low = sums[5];
  u.totals.clip_fraction_high = sums[6];
  u.totals.ratio_mean = sums[7];
  u.train_tokens = sums[8];
  u.logprob_diff_sum = sums[9];
  u.logprob_diff_count = sums[10];
  for (double* largest : {&u.logprob_diff_max, &u.seconds, &u.communication_seconds}) {
    const auto all = all_gather(comm, std::vector<double>{*largest});
    *largest = *std::max_element(all.begin(), all.end());
  }
}

/// The trainer's inputs of one update (all on the policy's backend).
template <tensor_backend B>
struct update_batch {
  std::span<const micro_batch> micro_batches;
  std::span<const tensor<B>> masks;                   ///< each micro-batch's final mask [R, T]
  std::span<const double> advantages;                 ///< [rollout rows]
  std::span<const sampled_completion> completions;    ///< [rollout rows], for the sampler's log-probs
  loss_denominators denominators;                     ///< of the whole generation batch
  /// Whether any rank has rows to train on. When none has, no update happens; otherwise every
  /// rank updates, those without rows with zero gradients, so that all take part in every
  /// collective.
  bool any_rows = true;
};

/// num_iterations updates of `policy` on `batch` with the resolved loss at `temperature`.
template <trainable_policy P>
update_result grpo_update(P& policy, const update_batch<typename P::backend_type>& batch,
                          const resolved_loss_settings& loss, double temperature, std::int64_t num_iterations,
                          double lr, double max_grad_norm, communicator& comm) {
  using B = typename P::backend_type;
  const B& b = policy.backend();
  const auto& mbs = batch.micro_batches;
  std::vector<std::optional<tensor<B>>> old(mbs.size()), ref(mbs.size());
  for (std::size_t c = 0; c < mbs.size(); ++c) {
    if (num_iterations > 1) old[c] = policy.logprobs(mbs[c].batch, temperature);
    if (policy.has_reference() && loss.policy.beta > 0) ref[c] = policy.reference_logprobs(mbs[c].batch, temperature);
  }

  update_result out;
  const auto t0 = std::chrono::steady_clock::now();
  for (std::int64_t it = 0; it < num_iterations && batch.any_rows; ++it) {
    policy.zero_grad();
    out.totals = {};
    out.loss = 0;
    for (std::size_t c = 0; c < mbs.size(); ++c) {
      const auto& sb = mbs[c].batch;
      const auto r = static_cast<std::int64_t>(sb.rows()), t = sb.max_completion_length();
      if (t == 0) continue;
      std::vector<std::int64_t> ids(static_cast<std::size_t>(r * t), 0);
      std::vector<double> a(static_cast<std::size_t>(r));
      for (std::size_t i = 0; i < sb.rows(); ++i) {
        for (std::size_t j = 0; j < sb.completions[i].size(); ++j)
          ids[i * static_cast<std::size_t>(t) + j] = sb.completions[i][j];
        a[i] = batch.advantages[mbs[c].rows[i]];
      }
      const auto logits = policy.forward(sb);
      auto grad = full(b, logits.shape(), 0.0);
      logits_policy_loss_inputs<B> in{.advantages = make_tensor(b, a, shape::vector(r)),
                                      .mask = batch.masks[c],
                                      .old_logprobs = old[c],
                                      .ref_logprobs = ref[c]};
      const auto result = policy_loss_from_logits(logits, make_index(b, ids, shape::vector(r * t)), temperature, in,
                                                  loss.policy, batch.denominators, grad.raw());
      policy.backward(grad);
      if (it == 0) {
        // The trainer's log-probs before any update must be the sampler's (same weights, same
        // temperature): a mismatch would bias every ratio and advantage-weighted gradient.
        const auto lp = result.tokens.logprobs.to_host();
        for (std::size_t i = 0; i < sb.rows(); ++i) {
          const auto& behaviour = batch.completions[mbs[c].rows[i]].full_logprobs;
          for (std::size_t j = 0; j < behaviour.size(); ++j) {
            const double d = std::abs(lp[i * static_cast<std::size_t>(t) + j] - behaviour[j]);
            out.logprob_diff_max = std::max(out.logprob_diff_max, d);
            out.logprob_diff_sum += d;
            out.logprob_diff_count += 1;
          }
        }
      }
      out.loss += result.policy.loss.item();
      const auto& pm = result.policy.metrics;
      out.totals.pg_loss += pm.pg_loss;
      out.totals.kl_mean += pm.kl_mean;
      out.totals.entropy_mean += pm.entropy_mean;
      out.totals.clip_fraction_low += pm.clip_fraction_low;
      out.totals.clip_fraction_high += pm.clip_fraction_high;
      out.totals.ratio_mean += pm.ratio_mean;
      for (std::size_t i = 0; i < sb.rows(); ++i)
        if (!sb.completions[i].empty())
          out.train_tokens += static_cast<double>(sb.prompts[i].size() + sb.completions[i].size()) - 1;
    }
    if (it == 0) out.first_loss = out.loss;
    out.grad_norm = apply_update(policy, comm, max_grad_norm, lr, out.communication_seconds);
  }
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

}  // namespace grpo::train
