// SPDX-License-Identifier: Apache-2.0
// grpo/advantages.hpp: advantage estimators over outcome scores [B] and per-token rewards [B, T].
// GRPO (Shao et al. 2024, DeepSeekMath 4.1.2): A = (r - mean_g) / (std_g + eps); RLOO (Ahmadian et
// al. 2024): A = r - mean of the others; REINFORCE++ and its baseline (Hu et al. 2025, arXiv
// 2501.03262): returns or centred scores, then global masked whitening; GAE (Schulman et al. 2016,
// Eq. 16); multi-reward sums (TRL, GDPO). NaN-aware like TRL, but groups with < 2 scorable members
// or std < std_floor get exactly 0, where veRL gives a singleton its raw score.
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

#include "grpo/config.hpp"
#include "grpo/error.hpp"
#include "grpo/reference_backend.hpp"
#include "grpo/tensor.hpp"
#include "grpo/validate.hpp"

namespace grpo {

/// Group structure of a batch of B completions: consecutive groups of `group_size` rows, or one
/// explicit id per row. Ids need not be dense or sorted: rows with equal ids form a group, so
/// {7, 3, 7, 3} is two groups of two. Only ids >= 0 are accepted.
struct group_layout {
  std::int64_t group_size = 0;          ///< G > 0: rows [kG, (k+1)G) form group k; G must divide B
  std::vector<std::int64_t> group_ids;  ///< one id per row; used instead of group_size when non-empty

  static group_layout consecutive(std::int64_t size) { return {size, {}}; }
  static group_layout from_ids(std::vector<std::int64_t> ids) { return {0, std::move(ids)}; }
};

/// Options of grpo_advantages (TRL `scale_rewards`, and the epsilon of its std + epsilon).
struct grpo_advantage_options {
  reward_scale scale = reward_scale::group;  ///< group | batch | none (Dr. GRPO)
  double epsilon = 1e-4;                     ///< A = (r - mean) / (std + epsilon); TRL's default
  double std_floor = 1e-6;                   ///< std < std_floor: the group is constant, its A = 0
};

/// Advantages [B] and the statistics a trainer logs with them.
template <tensor_backend B>
struct advantage_result {
  tensor<B> advantages;      ///< [B]
  double zero_std_fraction;  ///< share of groups that are constant or have < 2 scorable members
  double reward_mean;        ///< over the scorable (non-NaN) scores; NaN when there is none
  double reward_std;         ///< unbiased, over the scorable scores; NaN when there are < 2
};

/// Options of RLOO. RLOO does not divide by the std, so the floor only decides which groups are
/// constant: their advantages are set to exactly 0 rather than to rounding residue.
struct rloo_options {
  double std_floor = 1e-6;
};

/// Options of masked whitening (veRL / TRL `masked_whiten`).
struct whiten_options {
  bool unbiased = true;   ///< Bessel's correction of the variance (veRL, TRL); false: population (OpenRLHF)
  double epsilon = 1e-8;  ///< added to the variance under the square root; must be > 0
  bool shift_mean = true; ///< false keeps the mean: x / sqrt(var + eps)
};

namespace detail {

inline constexpr double quiet_nan = std::numeric_limits<double>::quiet_NaN();

/// Dense group ids 0..count-1 of a batch, checked against the batch size.
struct resolved_groups {
  std::vector<std::int64_t> ids;
  std::int64_t count = 0;
};

inline resolved_groups resolve_groups(const group_layout& layout, std::int64_t batch) {
  resolved_groups out;
  out.ids.resize(static_cast<std::size_t>(batch));
  if (!layout.group_ids.empty()) {
    GRPO_CHECK(static_cast<std::int64_t>(layout.group_ids.size()) == batch, shape_error, "group_ids: expected ",
               batch, " ids (one per row of the batch), got ", layout.group_ids.size());
    for (std::size_t i = 0; i < layout.group_ids.size(); ++i)
      GRPO_CHECK(layout.group_ids[i] >= 0, config_error, "group_ids: element ", i, " is ", layout.group_ids[i],
                 " (ids must be >= 0)");
    // Rank of each id among the distinct ids, so any non-negative labels (prompt indices of a
    // filtered batch, say) give dense segments with no empty group.
    std::vector<std::int64_t> distinct = layout.group_ids;
    std::sort(distinct.begin(), distinct.end());
    distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
    for (std::size_t i = 0; i < out.ids.size(); ++i)
      out.ids[i] = std::lower_bound(distinct.begin(), distinct.end(), layout.group_ids[i]) - distinct.begin();
    out.count = static_cast<std::int64_t>(distinct.size());
    return out;
  }
  GRPO_CHECK(layout.group_size > 0, config_error, "group_size: must be > 0 when group_ids is empty, got ",
             layout.group_size);
  GRPO_CHECK(batch % layout.group_size == 0, config_error, "group_size: ", layout.group_size,
             " does not divide the batch of ", batch);
  out.count = batch / layout.group_size;
  // Group by group: a 64-bit division per row would cost more than the advantages themselves.
  auto id = out.ids.begin();
  for (std::int64_t g = 0; g < out.count; ++g) id = std::fill_n(id, layout.group_size, g);
  return out;
}

/// Finite or NaN (NaN marks an unscorable completion); Inf is an error. A backend that counts
/// non-finite values where they live (validate.hpp) skips the download when there are none.
template <tensor_backend B>
void expect_no_inf(const tensor<B>& t, std::string_view name) {
  if constexpr (counts_not_finite<B>) {
    if (count_not_finite(t.backend(), t.raw()) == 0) return;
  }
  const auto values = t.to_host();
  for (std::size_t i = 0; i < values.size(); ++i)
    GRPO_CHECK(!std::isinf(values[i]), value_error, name, ": element ", i, " is ", values[i],
               " (Inf is not allowed; NaN marks an unscorable completion)");
}

inline void expect_unit_interval(double value, std::string_view name) {
  GRPO_CHECK(std::isfinite(value) && value >= 0.0 && value <= 1.0, config_error, name, ": must be in [0, 1], got ",
             value);
}

inline void validate(const grpo_advantage_options& options) {
  GRPO_CHECK(options.scale == reward_scale::group || options.scale == reward_scale::batch ||
                 options.scale == reward_scale::none,
             config_error, "scale: unknown reward_scale value ", static_cast<int>(options.scale));
  expect_non_negative(options.epsilon, "epsilon");
  expect_non_negative(options.std_floor, "std_floor");
}

inline void validate(const whiten_options& options) { expect_positive(options.epsilon, "epsilon"); }

/// Per-group statistics of scores [N] with NaN = unscorable, in two passes (mean, then the sum of
/// squared deviations): E[x^2] - E[x]^2 would cancel catastrophically and leave a residue std
/// for constant groups, which the floor would then have to catch far more often.
template <tensor_backend B>
struct group_statistics {
  tensor<B> valid;      ///< [N] 1 where the score is scorable
  tensor<B> count;      ///< [S] scorable members per group
  tensor<B> deviation;  ///< [N] score - group mean; 0 where unscorable
  tensor<B> std_dev;    ///< [S] unbiased; 0 for groups with < 2 scorable members
  tensor<B> keep;       ///< [S] 1 where the group carries a signal: count >= 2, std >= floor, std > 0
};

template <tensor_backend B>
group_statistics<B> group_stats(const tensor<B>& scores, const index_tensor<B>& ids, std::int64_t groups,
                                double std_floor) {
  const auto valid = 1.0 - is_nan(scores);
  const auto count = sum_segments(valid, ids, groups);
  const auto mean = sum_segments(where(valid, scores, 0.0), ids, groups) / maximum(count, 1.0);
  auto deviation = where(valid, scores - gather(mean, ids), 0.0);
  auto std_dev = sqrt(sum_segments(square(deviation), ids, groups) / maximum(count - 1.0, 1.0));
  // std == 0 is constant even when std_floor is 0, so that epsilon = 0 never divides 0 by 0.
  auto keep = greater_equal(count, 2.0) * greater_equal(std_dev, std_floor) * greater(std_dev, 0.0);
  return {valid, count, std::move(deviation), std::move(std_dev), std::move(keep)};
}

/// Mean and unbiased std of the scorable entries (two passes), NaN where undefined.
struct moments {
  double count = 0.0, mean = quiet_nan, std_dev = quiet_nan;
};

template <tensor_backend B>
moments scorable_moments(const tensor<B>& scores, const tensor<B>& valid) {
  moments m;
  m.count = sum(valid).item();
  if (m.count < 1.0) return m;
  m.mean = sum(where(valid, scores, 0.0)).item() / m.count;
  if (m.count < 2.0) return m;
  m.std_dev = std::sqrt(sum(square(where(valid, scores - m.mean, 0.0))).item() / (m.count - 1.0));
  return m;
}

template <tensor_backend B>
double zero_std_share(const group_statistics<B>& stats, std::int64_t groups) {
  return groups == 0 ? 0.0 : 1.0 - sum(stats.keep).item() / static_cast<double>(groups);
}

/// A backend's fused GRPO advantages (backend.hpp, "optional fused paths"): grpo_core in one sweep over the
/// scores, given validated scores [B], dense group ids [B] in [0, groups) and validated options; nullopt where the
/// backend leaves these scores to the generic path (LibTorch: a device, dtype or autograd it does not fuse).
template <class B>
concept has_fused_grpo_advantages =
    requires(const B& b, const typename B::tensor_type& scores, std::span<const std::int64_t> ids,
             std::int64_t groups, const grpo_advantage_options& options) {
      { fused_grpo_advantages(b, scores, ids, groups, options) } -> std::same_as<std::optional<advantage_result<B>>>;
    };

/// grpo_advantages on validated input with resolved groups.
template <tensor_backend B>
advantage_result<B> grpo_core(const tensor<B>& scores, const resolved_groups& groups,
                              const grpo_advantage_options& options) {
  if constexpr (has_fused_grpo_advantages<B>) {
    if (auto fused = fused_grpo_advantages(scores.backend(), scores.raw(), std::span<const std::int64_t>(groups.ids),
                                           groups.count, options))
      return std::move(*fused);
  }
  const auto ids = make_index(scores.backend(), groups.ids, scores.shape());
  const auto stats = group_stats(scores, ids, groups.count, options.std_floor);
  const auto batch = scorable_moments(scores, stats.valid);
  const auto keep = gather(stats.keep, ids);
  auto advantages = [&] {
    switch (options.scale) {
      case reward_scale::group: {
        // Dropped groups divide by 1 instead of std + epsilon, so no 0/0 is ever formed.
        const auto denominator = gather(where(stats.keep, stats.std_dev + options.epsilon, 1.0), ids);
        return where(keep, stats.deviation / denominator, 0.0);
      }
      case reward_scale::batch:
        if (batch.count >= 2.0 && batch.std_dev >= options.std_floor && batch.std_dev > 0.0)
          return where(keep, stats.deviation / (batch.std_dev + options.epsilon), 0.0);
        return full(scores.backend(), scores.shape(), 0.0);
      case reward_scale::none: return where(keep, stats.deviation, 0.0);
    }
    fail<config_error>("scale: unknown reward_scale value");
  }();
  return {std::move(advantages), zero_std_share(stats, groups.count), batch.mean, batch.std_dev};
}

template <tensor_backend B>
tensor<B> whiten_core(const tensor<B>& x, const tensor<B>& mask, const whiten_options& options) {
  const double count = sum(mask).item();
  if (count < 1.0) return full(x.backend(), x.shape(), 0.0);
  const double mean = sum(where(mask, x, 0.0)).item() / count;
  // One masked value has no spread: its variance is 0 with or without Bessel's correction.
  const double divisor = options.unbiased ? count - 1.0 : count;
  const double variance = count < 2.0 ? 0.0 : sum(square(where(mask, x - mean, 0.0))).item() / divisor;
  const double scale = 1.0 / std::sqrt(variance + options.epsilon);
  return where(mask, (options.shift_mean ? x - mean : x) * scale, 0.0);
}

}  // namespace detail

/// GRPO advantages of outcome scores (Shao et al. 2024, DeepSeekMath, section 4.1.2, outcome
/// supervision): A_i = (r_i - mean_g) / (std_g + epsilon) with mean_g and the unbiased std_g over
/// the scorable members of i's group.
///
/// \param scores  [B]; NaN marks an unscorable completion: it is left out of its group's (and the
///                batch's) count, mean and std, and its advantage is 0.
/// \param groups  consecutive groups of G, or explicit ids.
/// Scale modes: group divides by the group std; batch keeps the GROUP mean but divides by the std
/// of every scorable score of the batch (TRL "batch"); none only centres (Dr. GRPO, Liu et al.
/// 2025). In every mode a group with fewer than 2 scorable members, or whose std is below
/// std_floor (or exactly 0), gets advantages of exactly 0, so rounding residue of a constant group
/// never becomes a signal (NeMo-RL #4161); in batch mode, a batch std below the floor gives all 0.
/// Differences: veRL's `grpo` gives a singleton group its raw score (mean 0, std 1) and TRL gives
/// it NaN -> 0 (as here); neither has a floor. Sums accumulate in double (the backend's
/// reductions); the per-group means and stds are then held in the backend's storage type.
/// Throws shape_error if scores is not rank 1 or group_ids does not have B entries; value_error
/// "scores" on Inf; config_error on group_size <= 0 or not dividing B, a negative group id,
/// epsilon < 0 or std_floor < 0.
template <tensor_backend B>
advantage_result<B> grpo_advantages(const tensor<B>& scores, const group_layout& groups,
                                    const grpo_advantage_options& options = {}) {
  detail::expect_rank(scores, 1, "scores");
  detail::validate(options);
  const auto resolved = detail::resolve_groups(groups, scores.shape().dims[0]);
  detail::expect_no_inf(scores, "scores");
  return detail::grpo_core(scores, resolved, options);
}

/// RLOO advantages (Ahmadian et al. 2024, "Back to basics", with the leave-one-out baseline of
/// Kool et al. 2019): A_i = r_i - mean of the other scorable members of i's group
/// = n/(n-1) (r_i - mean_g).
///
/// \param scores [B], NaN = unscorable (excluded from n and the mean, advantage 0).
/// A group with fewer than 2 scorable members, or whose std is below options.std_floor, gets 0.
/// Differences: veRL's `rloo` (and OpenRLHF) give a singleton its raw score; veRL's
/// `rloo_vectorized` gives 0, as here. zero_std_fraction, reward_mean and reward_std are as in
/// grpo_advantages. Throws as grpo_advantages (std_floor < 0 is a config_error).
template <tensor_backend B>
advantage_result<B> rloo_advantages(const tensor<B>& scores, const group_layout& groups,
                                    const rloo_options& options = {}) {
  detail::expect_rank(scores, 1, "scores");
  detail::expect_non_negative(options.std_floor, "std_floor");
  const auto resolved = detail::resolve_groups(groups, scores.shape().dims[0]);
  detail::expect_no_inf(scores, "scores");
  const auto ids = make_index(scores.backend(), resolved.ids, scores.shape());
  const auto stats = detail::group_stats(scores, ids, resolved.count, options.std_floor);
  const auto batch = detail::scorable_moments(scores, stats.valid);
  const auto factor = gather(where(stats.keep, stats.count / maximum(stats.count - 1.0, 1.0), 0.0), ids);
  return {stats.deviation * factor, detail::zero_std_share(stats, resolved.count), batch.mean, batch.std_dev};
}

/// Masked whitening: (x - mean) / sqrt(var + epsilon), with the mean and variance over every
/// position of the whole tensor where mask = 1 (veRL and TRL `masked_whiten`, Bessel by default);
/// masked-out positions get 0. shift_mean = false keeps the mean: x / sqrt(var + epsilon).
///
/// \param x     any shape, finite everywhere.
/// \param mask  same shape as x, 0 or 1.
/// With no masked-in position the result is all 0; with one, its variance is taken as 0. OpenRLHF
/// divides by sqrt(max(var, epsilon)) with the population variance (unbiased = false).
/// Throws shape_error (mask shape), value_error (non-finite x, mask not 0/1), config_error
/// (epsilon not > 0).
template <tensor_backend B>
tensor<B> masked_whiten(const tensor<B>& x, const tensor<B>& mask, const whiten_options& options = {}) {
  detail::expect_shape(mask, x.shape(), "mask");
  detail::validate(options);
  detail::expect_finite(x, "x");
  detail::expect_mask(mask, "mask");
  return detail::whiten_core(x, mask, options);
}

/// REINFORCE++ advantages (Hu et al. 2025, arXiv 2501.03262): the discounted return
/// G_t = r_t + gamma G_{t'} of per-token rewards, then global masked whitening.
///
/// \param token_rewards  [B, T] finite (e.g. the score on the last valid token minus a KL penalty).
/// \param mask           [B, T], 0 or 1.
/// \param gamma          discount in [0, 1].
/// Returns [B, T], 0 where mask = 0. A masked-out token is transparent: its reward is ignored and
/// the return passes through it undiscounted, so t' is the next masked-in token (as GAE does with
/// veRL semantics). Only holes inside a row differ from the frameworks: veRL resets the running
/// return at a masked token and OpenRLHF discounts across it.
/// Throws shape_error (ranks, shapes), value_error (non-finite rewards, mask not 0/1),
/// config_error (gamma outside [0, 1], whiten epsilon not > 0).
template <tensor_backend B>
tensor<B> reinforce_pp_advantages(const tensor<B>& token_rewards, const tensor<B>& mask, double gamma = 1.0,
                                  const whiten_options& options = {}) {
  detail::expect_rank(token_rewards, 2, "token_rewards");
  detail::expect_shape(mask, token_rewards.shape(), "mask");
  detail::expect_unit_interval(gamma, "gamma");
  detail::validate(options);
  detail::expect_finite(token_rewards, "token_rewards");
  detail::expect_mask(mask, "mask");
  const auto returns =
      reverse_scan_rows(where(mask, token_rewards, 0.0), where(mask, gamma, full(mask.backend(), mask.shape(), 1.0)));
  return detail::whiten_core(returns, mask, options);
}

/// REINFORCE++-baseline advantages (Hu et al. 2025, arXiv 2501.03262): the centred score
/// s_i - mean_g broadcast over row i's tokens, then global masked whitening.
///
/// \param scores  [B], NaN = unscorable.  \param mask [B, T], 0 or 1.
/// Rows that are unscorable or whose group has fewer than 2 scorable members have no baseline:
/// they get 0 and are left out of the whitening statistics (veRL keeps a singleton's raw score).
/// Constant groups stay in (centred value 0), as in veRL and OpenRLHF, so after whitening their
/// tokens get -mean / std like every other token.
/// Throws as grpo_advantages for scores and groups, and shape_error / value_error for the mask.
template <tensor_backend B>
tensor<B> reinforce_pp_baseline_advantages(const tensor<B>& scores, const group_layout& groups,
                                           const tensor<B>& mask, const whiten_options& options = {}) {
  detail::expect_rank(scores, 1, "scores");
  detail::expect_rank(mask, 2, "mask");
  GRPO_CHECK(mask.shape().dims[0] == scores.shape().dims[0], shape_error, "mask: expected ", scores.shape().dims[0],
             " rows (one per score), got shape ", to_string(mask.shape()));
  detail::validate(options);
  const auto resolved = detail::resolve_groups(groups, scores.shape().dims[0]);
  detail::expect_no_inf(scores, "scores");
  detail::expect_mask(mask, "mask");
  const auto ids = make_index(scores.backend(), resolved.ids, scores.shape());
  const auto stats = detail::group_stats(scores, ids, resolved.count, 0.0);
  const auto has_baseline = gather(greater_equal(stats.count, 2.0), ids) * stats.valid;
  const auto cols = mask.shape().dims[1];
  return detail::whiten_core(expand_rows(stats.deviation, cols), mask * expand_rows(has_baseline, cols), options);
}

/// Advantages and value targets of GAE.
template <tensor_backend B>
struct gae_result {
  tensor<B> advantages;  ///< [B, T], whitened when requested; 0 where mask = 0
  tensor<B> returns;     ///< [B, T] unwhitened advantages + values; 0 where mask = 0
};

/// Generalized advantage estimation (Schulman et al. 2016, Eq. 16):
/// delta_t = r_t + gamma V_{t'} - V_t, A_t = delta_t + gamma lambda A_{t'}, where t' is the next
/// masked-in token (V and A are 0 past the last one): masked-out tokens carry the next value and
/// the running advantage through, so observation tokens of a multi-turn rollout are skipped (veRL
/// `compute_gae_advantage_return`). returns = A + V before whitening; A is then masked-whitened
/// when `whiten` is true. Unlike veRL, both outputs are 0 at masked-out positions.
///
/// \param token_rewards, values, mask  [B, T]; rewards and values finite, mask 0 or 1.
/// \param gamma, lambda                in [0, 1].
/// Throws shape_error, value_error, config_error naming the argument.
template <tensor_backend B>
gae_result<B> gae_advantages(const tensor<B>& token_rewards, const tensor<B>& values, const tensor<B>& mask,
                             double gamma, double lambda, bool whiten = true, const whiten_options& options = {}) {
  detail::expect_rank(token_rewards, 2, "token_rewards");
  detail::expect_shape(values, token_rewards.shape(), "values");
  detail::expect_shape(mask, token_rewards.shape(), "mask");
  detail::expect_unit_interval(gamma, "gamma");
  detail::expect_unit_interval(lambda, "lambda");
  detail::validate(options);
  detail::expect_finite(token_rewards, "token_rewards");
  detail::expect_finite(values, "values");
  detail::expect_mask(mask, "mask");
  const auto carry = 1.0 - mask;
  // next_value[t] = V at the first masked-in token after t: a scan that keeps V where mask = 1
  // and passes the later value through where mask = 0, shifted by one token.
  const auto next_value = shift_left(reverse_scan_rows(mask * values, carry));
  const auto delta = where(mask, token_rewards + gamma * next_value - values, 0.0);
  const auto advantages = reverse_scan_rows(delta, where(mask, gamma * lambda, carry));
  auto returns = where(mask, advantages + values, 0.0);
  if (whiten) return {detail::whiten_core(advantages, mask, options), std::move(returns)};
  return {where(mask, advantages, 0.0), std::move(returns)};
}

/// Advantages from several reward functions.
///
/// \param rewards   [B, K]: rewards[i, k] of function k on row i; NaN = that function could not
///                  score that row. Inf is an error.
/// \param weights   K finite weights (any sign).
/// sum_then_normalize (TRL's default): R_i = nansum_k w_k r_ik, NaN when every function is NaN
/// on row i; then grpo_advantages(R, groups, options).
/// normalize_then_sum (GDPO, TRL): z_ik = per-function group z-score (grpo_advantages with scale
/// group on column k: NaN, singleton and constant groups give 0), R_i = sum_k w_k z_ik, then
/// A = (R - mean) / (std_batch(R) + epsilon), with options.scale ignored as in TRL. Rows where
/// every function is NaN get 0 and are left out of the batch std. The mean subtracted is R's
/// group mean, which is 0 up to rounding because each function's z-scores sum to 0 in every
/// group; that equals TRL's batch mean but keeps groups without a signal at exactly 0.
/// zero_std_fraction is over the groups of R (the combined value each mode normalizes), while
/// reward_mean and reward_std describe the weighted raw reward nansum_k w_k r_ik in both modes.
/// Throws shape_error (rewards not [B, K] with K >= 1, weights of the wrong size), value_error
/// (Inf rewards), config_error (non-finite weights, and as grpo_advantages).
template <tensor_backend B>
advantage_result<B> multi_reward_advantages(const tensor<B>& rewards, std::span<const double> weights,
                                            const group_layout& groups, reward_combination combination,
                                            const grpo_advantage_options& options = {}) {
  detail::expect_rank(rewards, 2, "rewards");
  const auto rows = rewards.shape().dims[0], functions = rewards.shape().dims[1];
  GRPO_CHECK(functions >= 1, shape_error, "rewards: expected at least one reward function (column), got shape ",
             to_string(rewards.shape()));
  GRPO_CHECK(static_cast<std::int64_t>(weights.size()) == functions, shape_error, "weights: expected ", functions,
             " weights (one per reward function), got ", weights.size());
  for (std::size_t k = 0; k < weights.size(); ++k)
    GRPO_CHECK(std::isfinite(weights[k]), config_error, "weights: element ", k, " is ", weights[k],
               " (weights must be finite)");
  GRPO_CHECK(combination == reward_combination::sum_then_normalize ||
                 combination == reward_combination::normalize_then_sum,
             config_error, "combination: unknown reward_combination value ", static_cast<int>(combination));
  detail::validate(options);
  const auto resolved = detail::resolve_groups(groups, rows);
  detail::expect_no_inf(rewards, "rewards");

  const auto& backend = rewards.backend();
  std::vector<double> tiled(static_cast<std::size_t>(rows * functions));
  for (std::size_t i = 0; i < tiled.size(); ++i) tiled[i] = weights[i % weights.size()];
  const auto weight_matrix = make_tensor(backend, tiled, rewards.shape());
  const auto valid = 1.0 - is_nan(rewards);
  const auto scorable_row = greater(sum_rows(valid), 0.0);
  const auto weighted_sum = [&](const tensor<B>& per_function) {
    return where(scorable_row, sum_rows(where(valid, per_function, 0.0) * weight_matrix), detail::quiet_nan);
  };
  const auto raw = weighted_sum(rewards);
  if (combination == reward_combination::sum_then_normalize) return detail::grpo_core(raw, resolved, options);

  // Every (group, function) pair is one segment of the flattened [B * K] rewards, so all the
  // per-function z-scores come from one pass of group statistics.
  detail::resolved_groups cells{std::vector<std::int64_t>(tiled.size()), resolved.count * functions};
  for (std::size_t i = 0; i < cells.ids.size(); ++i)
    cells.ids[i] = resolved.ids[i / static_cast<std::size_t>(functions)] * functions +
                   static_cast<std::int64_t>(i) % functions;
  const auto flat = reshape(rewards, shape::vector(rows * functions));
  const auto z = detail::grpo_core(flat, cells, {reward_scale::group, options.epsilon, options.std_floor});
  auto result =
      detail::grpo_core(weighted_sum(reshape(z.advantages, rewards.shape())), resolved,
                        {reward_scale::batch, options.epsilon, options.std_floor});
  const auto raw_moments = detail::scorable_moments(raw, 1.0 - is_nan(raw));
  result.reward_mean = raw_moments.mean;
  result.reward_std = raw_moments.std_dev;
  return result;
}

/// concept advantage_estimator<E, B>: an outcome-advantage estimator is a small copyable object
/// holding its options, whose `e.compute(scores, groups)` maps scores [B] (NaN = unscorable) and
/// a group_layout to an advantage_result<B> (advantages [B] plus the logged statistics). Trainers
/// take one as a template argument to switch between GRPO and RLOO without a runtime branch.
template <class E, class B>
concept advantage_estimator =
    tensor_backend<B> && std::copy_constructible<E> &&
    requires(const E& e, const tensor<B>& scores, const group_layout& groups) {
      { e.compute(scores, groups) } -> std::same_as<advantage_result<B>>;
    };

/// grpo_advantages as an advantage_estimator.
struct grpo_estimator {
  grpo_advantage_options options;
  template <tensor_backend B>
  advantage_result<B> compute(const tensor<B>& scores, const group_layout& groups) const {
    return grpo_advantages(scores, groups, options);
  }
};

/// rloo_advantages as an advantage_estimator.
struct rloo_estimator {
  rloo_options options;
  template <tensor_backend B>
  advantage_result<B> compute(const tensor<B>& scores, const group_layout& groups) const {
    return rloo_advantages(scores, groups, options);
  }
};

static_assert(advantage_estimator<grpo_estimator, reference_backend<double>>);
static_assert(advantage_estimator<rloo_estimator, reference_backend<double>>);

}  // namespace grpo
