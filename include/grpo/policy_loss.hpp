// SPDX-License-Identifier: Apache-2.0
// grpo/policy_loss.hpp: the clipped policy-gradient loss of PPO, GRPO, DAPO and GSPO, with the KL penalty to a
// reference policy, the entropy bonus and the rollout-vs-trainer importance-sampling (IS) correction, and its
// exact gradient with respect to the trainer log-probs. Per token, with r the token or sequence ratio:
//   L = rho * max(-min(r, delta) A, -clip(r, 1 - eps_low, 1 + eps_high) A) [A < 0 with dual clip: min(., -c A)]
//       + beta * KL - entropy_coef * H;        loss = sum_{i,t} W_{i,t} L_{i,t}   (W from aggregation.hpp)
// PPO-clip: Schulman et al. 2017, Eq. 7; GRPO: Shao et al. 2024, Eq. 3; clip-higher: DAPO, Yu et al. 2025, Sec. 3.1;
// GSPO ratio: Zheng et al. 2025, Eq. 7; dual clip: Ye et al. 2020; delta: INTELLECT-2 (TRL `delta`). Matches TRL's
// GRPO loss except that every log-ratio is clamped (as veRL and OpenRLHF do) and dual clip is opt-in (veRL: always on).
#pragma once

#include <cmath>
#include <concepts>
#include <cstdint>
#include <optional>
#include <utility>

#include "grpo/aggregation.hpp"
#include "grpo/config.hpp"
#include "grpo/error.hpp"
#include "grpo/tensor.hpp"
#include "grpo/validate.hpp"

namespace grpo {

/// The variant of the loss. Defaults follow TRL's GRPOConfig, except the IS correction (TRL: sequence level,
/// mask mode) and the log-ratio bound (TRL: none; veRL and OpenRLHF: 20).
struct policy_loss_options {
  /// token: r_t = exp(l_t) with l_t = clamp(logp_t - old_t, -bound, bound) (PPO, GRPO, DAPO);
  /// sequence: s_i = exp(clamp(sum_t m (logp - old) / max(|o_i|, 1), -bound, bound)) used for every token of row i
  /// (GSPO, Zheng et al. 2025, Eq. 7; TRL importance_sampling_level="sequence").
  ratio_level level = ratio_level::token;
  double epsilon_low = 0.2;   ///< clip(r, 1 - epsilon_low, 1 + epsilon_high); 0 <= epsilon_low < 1
  double epsilon_high = 0.2;  ///< "clip-higher" (DAPO) when > epsilon_low; >= 0
  /// Two-sided cap: the unclipped term uses min(r, delta) (INTELLECT-2, TRL `delta`); must be > 1. It only bites
  /// for A < 0 when delta > 1 + epsilon_high, which TRL recommends.
  std::optional<double> delta{};
  /// c > 1: for A < 0, L = min(L, -c A) (Ye et al. 2020, dual-clip PPO; veRL clip_ratio_c, OpenRLHF dual_clip).
  std::optional<double> dual_clip{};
  /// Every log-ratio (policy, IS, KL) is clamped to [-bound, bound] before exp, so nothing overflows; the
  /// gradient is 0 where the clamp is active.
  double log_ratio_bound = 20.0;
  double beta = 0.0;                   ///< KL coefficient, >= 0; beta > 0 needs ref_logprobs
  kl_estimator kl = kl_estimator::k3;  ///< KL(pi || ref) estimator (see policy_loss)
  double entropy_coef = 0.0;           ///< L -= entropy_coef * H_t; any finite value; != 0 needs entropy
  /// Level of the rollout (inference engine) vs trainer IS weight, active iff rollout_logprobs is given.
  /// token: rho_t = exp(clamp(old_t - rollout_t, +-bound)); sequence: rho_i = exp(clamp(sum_t m (old - rollout),
  /// +-bound)), the product of the token ratios as in TRL (not their geometric mean).
  ratio_level is_level = ratio_level::token;
  /// truncate: min(rho, is_cap) (TIS); mask: rho * 1[rho <= is_cap] (MIS).
  is_correction_mode is_mode = is_correction_mode::truncate;
  double is_cap = 3.0;  ///< C_max (TRL default 3.0); > 0
  loss_aggregation aggregation = loss_aggregation::token_mean;
};

/// The inputs of one (micro-)batch of B sequences of T tokens. Only logprobs is differentiated; every other input
/// is a constant (a stop-gradient, as in TRL). The optional members have default initializers so that designated
/// initialization naming only some of them is free of -Wmissing-field-initializers.
template <tensor_backend B>
struct policy_loss_inputs {
  tensor<B> logprobs;    ///< [B,T] trainer log-probs of the sampled tokens (the differentiable input)
  tensor<B> advantages;  ///< [B] (broadcast over tokens) or [B,T]
  tensor<B> mask;        ///< [B,T] 0/1, the FINAL mask (after truncation masking, rejection, ...)
  /// [B,T] log-probs of the policy that sampled (pi_old). Absent: the values of logprobs, held constant, so the
  /// ratio is 1 but its gradient is d r / d logp = 1, as TRL's exp(logp - logp.detach()).
  std::optional<tensor<B>> old_logprobs{};
  std::optional<tensor<B>> ref_logprobs{};      ///< [B,T] reference policy; required when beta > 0
  std::optional<tensor<B>> rollout_logprobs{};  ///< [B,T] inference-engine log-probs; enables the IS correction
  std::optional<tensor<B>> entropy{};           ///< [B,T] H_t; required when entropy_coef != 0; also reported
};

/// Diagnostics. Each is a sum over valid tokens (mask = 1) divided by denominators.tokens, so that with the full
/// batch's denominators the micro-batches' values add up to the full-batch value.
struct policy_loss_metrics {
  double pg_loss = 0;             ///< mean of the IS-weighted policy term rho * pg (the loss for token-mean, beta 0)
  double kl_mean = 0;             ///< mean per-token KL estimate (0 when no ref_logprobs)
  double entropy_mean = 0;        ///< mean entropy (0 when no entropy)
  double clip_fraction_low = 0;   ///< share of tokens with r < 1 - epsilon_low and A < 0
  double clip_fraction_high = 0;  ///< share of tokens with r > 1 + epsilon_high and A > 0
  double clip_fraction_dual = 0;  ///< share of tokens where the dual clip replaced the loss
  double ratio_mean = 0;          ///< mean of r (token ratio, or the sequence ratio repeated over the row)
  double is_weight_mean = 0;      ///< mean of rho after truncation/masking (rho = 1 without correction, so 1 for a
                                  ///< full batch with valid tokens)
  double is_masked_fraction = 0;  ///< share of tokens zeroed by mask mode (rho > is_cap)
  double is_truncated_fraction = 0;  ///< share of tokens capped by truncate mode (rho > is_cap)
};

template <tensor_backend B>
struct policy_loss_result {
  tensor<B> loss;                         ///< rank 0: the aggregated scalar
  tensor<B> per_token_loss;               ///< [B,T] L_t before aggregation (0 where mask = 0)
  tensor<B> grad_logprobs;                ///< [B,T] d loss / d logprobs
  std::optional<tensor<B>> grad_entropy;  ///< [B,T] d loss / d entropy = -entropy_coef W, when entropy was given
  policy_loss_metrics metrics;
};

/// Throws config_error naming the first invalid option: epsilon_low in [0, 1), epsilon_high >= 0,
/// delta and dual_clip (when set) finite and > 1, log_ratio_bound > 0, beta >= 0, entropy_coef
/// finite, is_cap > 0.
inline void validate(const policy_loss_options& o) {
  using detail::expect_non_negative;
  using detail::expect_positive;
  expect_non_negative(o.epsilon_low, "epsilon_low");
  GRPO_CHECK(o.epsilon_low < 1.0, config_error,
             "epsilon_low: must be < 1 so that the clip interval [1 - epsilon_low, 1 + epsilon_high] stays positive, "
             "got ",
             o.epsilon_low);
  expect_non_negative(o.epsilon_high, "epsilon_high");
  if (o.delta)
    GRPO_CHECK(std::isfinite(*o.delta) && *o.delta > 1.0, config_error, "delta: must be a finite value > 1, got ",
               *o.delta);
  if (o.dual_clip)
    GRPO_CHECK(std::isfinite(*o.dual_clip) && *o.dual_clip > 1.0, config_error,
               "dual_clip: must be a finite value > 1, got ", *o.dual_clip);
  expect_positive(o.log_ratio_bound, "log_ratio_bound");
  expect_non_negative(o.beta, "beta");
  GRPO_CHECK(std::isfinite(o.entropy_coef), config_error, "entropy_coef: must be finite, got ", o.entropy_coef);
  expect_positive(o.is_cap, "is_cap");
}

namespace detail {

/// The checks of policy_loss that read no tensor element: options, denominators, required inputs, shapes.
template <tensor_backend B>
void validate_policy_loss_layout(const policy_loss_inputs<B>& in, const policy_loss_options& o,
                                 const loss_denominators& d) {
  grpo::validate(o);
  GRPO_CHECK(o.beta == 0.0 || in.ref_logprobs.has_value(), config_error,
             "ref_logprobs: required when beta > 0 (beta = ", o.beta, ")");
  GRPO_CHECK(o.entropy_coef == 0.0 || in.entropy.has_value(), config_error,
             "entropy: required when entropy_coef != 0 (entropy_coef = ", o.entropy_coef, ")");
  validate(d);

  expect_rank(in.logprobs, 2, "logprobs");
  const shape s = in.logprobs.shape();
  const shape rows = shape::vector(s.dims[0]);
  GRPO_CHECK(in.advantages.shape() == rows || in.advantages.shape() == s, shape_error, "advantages: expected shape ",
             to_string(rows), " or ", to_string(s), ", got ", to_string(in.advantages.shape()));
  expect_shape(in.mask, s, "mask");
  if (in.old_logprobs) expect_shape(*in.old_logprobs, s, "old_logprobs");
  if (in.ref_logprobs) expect_shape(*in.ref_logprobs, s, "ref_logprobs");
  if (in.rollout_logprobs) expect_shape(*in.rollout_logprobs, s, "rollout_logprobs");
  if (in.entropy) expect_shape(*in.entropy, s, "entropy");
}

/// Every check of policy_loss: the layout, then the values (finite inputs, a 0/1 mask).
template <tensor_backend B>
void validate_policy_loss(const policy_loss_inputs<B>& in, const policy_loss_options& o, const loss_denominators& d) {
  validate_policy_loss_layout(in, o, d);
  expect_finite(in.logprobs, "logprobs");
  expect_finite(in.advantages, "advantages");
  expect_mask(in.mask, "mask");
  if (in.old_logprobs) expect_finite(*in.old_logprobs, "old_logprobs");
  if (in.ref_logprobs) expect_finite(*in.ref_logprobs, "ref_logprobs");
  if (in.rollout_logprobs) expect_finite(*in.rollout_logprobs, "rollout_logprobs");
  if (in.entropy) expect_finite(*in.entropy, "entropy");
}

/// A backend's fused policy loss (backend.hpp, "optional fused paths"): the whole of policy_loss in one
/// pass over the [B,T] inputs, called after the layout checks. It returns nullopt when an input holds a value
/// the value checks reject (NaN, Inf, a mask entry other than 0 or 1); those checks then name it.
template <class B>
concept has_fused_policy_loss = requires(const B& b, const policy_loss_inputs<B>& in, const policy_loss_options& o,
                                         const loss_denominators& d) {
  { fused_policy_loss(b, in, o, d) } -> std::same_as<std::optional<policy_loss_result<B>>>;
};

/// The values of x as a constant of differentiation: the backend's optional stop_gradient hook
/// (LibTorch: detach) where it has one, x itself where nothing differentiates through the ops.
/// Without it, autograd of the composite loss would see old = logp and a ratio gradient of 0
/// where the analytic gradient (and TRL's exp(logp - logp.detach())) has 1.
template <tensor_backend B>
tensor<B> held_constant(const tensor<B>& x) {
  if constexpr (requires(const B& b, const typename B::tensor_type& t) {
                  { stop_gradient(b, t) } -> std::same_as<typename B::tensor_type>;
                }) {
    return {x.backend(), stop_gradient(x.backend(), x.raw())};
  } else {
    return x;
  }
}

/// exp(clamp(x, -bound, bound)) and d/dx of the clamp: 1 on the closed interval, 0 outside.
template <tensor_backend B>
struct bounded_exp {
  tensor<B> value;
  tensor<B> inside;
};

template <tensor_backend B>
bounded_exp<B> exp_bounded(const tensor<B>& x, double bound) {
  return {exp(clamp(x, -bound, bound)), less_equal(abs(x), bound)};
}

}  // namespace detail

/// The policy loss of one (micro-)batch, its per-token values, its gradient and diagnostics.
///
/// Shapes: logprobs, mask and every optional input [B,T]; advantages [B] or [B,T]. W = aggregation_weights(mask,
/// options.aggregation, denominators): pass the FULL batch's denominators (denominators_from_mask of the final
/// mask) to every micro-batch, and the micro-batches' losses and gradients add up exactly to the full batch's.
///
/// Per token (see policy_loss_options for r, rho): unclipped = min(r, delta) A (r A without delta),
/// clipped = clamp(r, 1 - epsilon_low, 1 + epsilon_high) A, pg = -min(unclipped, clipped); with dual clip and
/// A < 0, pg = min(pg, -c A). KL with x = clamp(ref - logp, -bound, bound) (Schulman 2020, "Approximating KL
/// divergence"): k1 = -x, k2 = x^2 / 2, k3 = expm1(x) - x. L = rho pg + beta KL - entropy_coef H, and as in TRL
/// the IS weight multiplies the policy term only. per_token_loss is L where mask = 1 and 0 elsewhere;
/// loss = sum(W L).
///
/// Gradient: the exact derivative of the computed function with respect to logprobs, old/ref/rollout log-probs,
/// advantages and rho being constants. At the kinks one branch is taken, consistently with the clip fractions:
/// the log-ratio clamps pass the gradient on the closed interval [-bound, bound] (0 outside); the clip interval
/// [1 - epsilon_low, 1 + epsilon_high] and min(r, delta) for r <= delta are closed too; when unclipped == clipped
/// the unclipped branch is taken; the dual clip takes over (gradient 0) only where -c A < pg strictly.
/// Sequence level couples a row's tokens: d loss / d logp_{i,t'} = (sum_t W_{i,t} rho_{i,t} dpg_t / ds_i) s_i
/// m_{i,t'} / max(|o_i|, 1). The KL terms' gradients per token, inside the bound:
///   k1: d/dlogp = 1. On-policy its expectation vanishes: k1 contributes no KL gradient in expectation.
///   k2: logp - ref, the gradient of KL(pi || ref) on-policy (biased off-policy).
///   k3: 1 - exp(ref - logp), whose expectation is -E[(pi_ref / pi) grad logp]: the gradient of the *forward*
///       KL(ref || pi), not of the reverse KL it estimates (verl #2953); TRL, veRL low_var_kl and OpenRLHF use it.
/// Unlike veRL and OpenRLHF the KL value is not clamped to [-10, 10]; x is clamped to +-bound, so k3 <= e^bound.
///
/// Throws config_error for options out of range (epsilon_low outside [0, 1), epsilon_high < 0, delta or
/// dual_clip <= 1, log_ratio_bound or is_cap <= 0, beta < 0, entropy_coef not finite), beta > 0 without
/// ref_logprobs, entropy_coef != 0 without entropy, or invalid denominators; shape_error for a shape that does not
/// match logprobs [B,T]; value_error for NaN/Inf in any input (padding included) or a mask that is not 0/1.
///
/// Numerics: ratios are at most e^bound, so every term is finite for finite inputs. On a float backend each
/// elementwise step rounds to float while the reductions (loss, sequence log-ratios, metrics) accumulate in double.
template <tensor_backend B>
policy_loss_result<B> policy_loss(const policy_loss_inputs<B>& inputs, const policy_loss_options& options,
                                  const loss_denominators& denominators) {
  if constexpr (detail::has_fused_policy_loss<B>) {
    detail::validate_policy_loss_layout(inputs, options, denominators);
    if (auto fused = fused_policy_loss(inputs.logprobs.backend(), inputs, options, denominators))
      return std::move(*fused);
  }
  detail::validate_policy_loss(inputs, options, denominators);
  const auto& logp = inputs.logprobs;
  const auto& mask = inputs.mask;
  const auto old = inputs.old_logprobs ? *inputs.old_logprobs : detail::held_constant(logp);
  const std::int64_t cols = logp.shape().dims[1];
  const double bound = options.log_ratio_bound;
  const auto adv = inputs.advantages.shape().rank == 1 ? expand_rows(inputs.advantages, cols) : inputs.advantages;
  const auto weights = aggregation_weights(mask, options.aggregation, denominators);
  const auto lengths = maximum(sum_rows(mask), 1.0);  // [B] max(|o_i|, 1)
  const auto row_mean = [&](const tensor<B>& x) { return sum_rows(mask * x) / lengths; };
  const auto masked_mean = [&](const tensor<B>& x) { return sum(mask * x).item() / denominators.tokens; };

  // Sequence level keeps the [B] per-row ratio for the gradient and broadcasts it over the row for the loss.
  const bool sequence = options.level == ratio_level::sequence;
  const auto ratio_parts = detail::exp_bounded(sequence ? row_mean(logp - old) : logp - old, bound);
  const auto ratio = sequence ? expand_rows(ratio_parts.value, cols) : ratio_parts.value;

  const double low = 1.0 - options.epsilon_low;
  const double high = 1.0 + options.epsilon_high;
  const auto unclipped_ratio = options.delta ? minimum(ratio, *options.delta) : ratio;
  const auto unclipped = unclipped_ratio * adv;
  const auto clipped = clamp(ratio, low, high) * adv;
  // minimum() keeps its first argument on a tie, hence less_equal for the branch taken.
  auto pg = -minimum(unclipped, clipped);
  const auto unclipped_slope =
      options.delta ? less_equal(ratio, *options.delta) : full(logp.backend(), logp.shape(), 1.0);
  const auto clipped_slope = greater_equal(ratio, low) * less_equal(ratio, high);
  auto dpg_dratio = -adv * where(less_equal(unclipped, clipped), unclipped_slope, clipped_slope);
  auto dual_active = full(logp.backend(), logp.shape(), 0.0);
  if (options.dual_clip) {
    const auto cap = adv * (-*options.dual_clip);
    dual_active = less(adv, 0.0) * less(cap, pg);
    pg = where(dual_active, cap, pg);
    dpg_dratio = where(dual_active, 0.0, dpg_dratio);
  }

  // The rollout IS weight depends on old and rollout only: a constant for the gradient.
  auto rho = full(logp.backend(), logp.shape(), 1.0);
  policy_loss_metrics metrics;
  if (inputs.rollout_logprobs) {
    const auto& rollout = *inputs.rollout_logprobs;
    const auto raw = options.is_level == ratio_level::sequence
                         ? expand_rows(exp(clamp(sum_rows(mask * (old - rollout)), -bound, bound)), cols)
                         : exp(clamp(old - rollout, -bound, bound));
    const auto above_cap = greater(raw, options.is_cap);
    if (options.is_mode == is_correction_mode::truncate) {
      rho = minimum(raw, options.is_cap);
      metrics.is_truncated_fraction = masked_mean(above_cap);
    } else {
      rho = where(above_cap, 0.0, raw);
      metrics.is_masked_fraction = masked_mean(above_cap);
    }
  }

  auto per_token = rho * pg;
  auto grad_policy = weights * rho * dpg_dratio;  // d loss / d r per token
  const auto dratio = ratio_parts.value * ratio_parts.inside;  // d ratio / d (unclamped log-ratio)
  auto grad = sequence ? expand_rows(sum_rows(grad_policy) * dratio / lengths, cols) * mask : grad_policy * dratio;
  metrics.pg_loss = masked_mean(per_token);

  if (inputs.ref_logprobs) {
    const auto x_raw = *inputs.ref_logprobs - logp;
    const auto inside = less_equal(abs(x_raw), bound);
    const auto x = clamp(x_raw, -bound, bound);
    // kl and d kl / d logp (dx / dlogp = -inside).
    const auto [kl, dkl] = [&]() -> std::pair<tensor<B>, tensor<B>> {
      switch (options.kl) {
        case kl_estimator::k1: return {-x, inside};
        case kl_estimator::k2: return {square(x) * 0.5, -x * inside};
        case kl_estimator::k3: {
          const auto e = expm1(x);
          return {e - x, -e * inside};
        }
      }
      detail::fail<config_error>("kl_estimator: unknown value");
    }();
    per_token = per_token + kl * options.beta;
    grad = grad + weights * dkl * options.beta;
    metrics.kl_mean = masked_mean(kl);
  }

  std::optional<tensor<B>> grad_entropy;
  if (inputs.entropy) {
    per_token = per_token - *inputs.entropy * options.entropy_coef;
    grad_entropy = weights * -options.entropy_coef;
    metrics.entropy_mean = masked_mean(*inputs.entropy);
  }

  per_token = where(mask, per_token, 0.0);
  metrics.clip_fraction_low = masked_mean(less(ratio, low) * less(adv, 0.0));
  metrics.clip_fraction_high = masked_mean(greater(ratio, high) * greater(adv, 0.0));
  metrics.clip_fraction_dual = masked_mean(dual_active);
  metrics.ratio_mean = masked_mean(ratio);
  metrics.is_weight_mean = masked_mean(rho);
  auto loss = aggregate(per_token, weights);
  return {std::move(loss), std::move(per_token), std::move(grad), std::move(grad_entropy), metrics};
}

/// Applies a TRL `loss_type` preset: sets options.aggregation to aggregation_of(type) and returns the constant C
/// to put in the denominators (denominators_from_mask(mask, C)):
///   grpo    -> seq-mean-token-mean, C = 1 (TRL divides by the micro-batch's row count: pass the full batch's B)
///   bnpo    -> token-mean, C = 1 (TRL divides by the micro-batch's token count; pass that as N_tokens to match it)
///   dr_grpo -> seq-mean-token-sum-norm, C = max_completion_length (Dr. GRPO, Liu et al. 2025, Eq. 2)
///   dapo    -> token-mean, C = 1, N_tokens over the whole generation batch (TRL's num_items_in_batch)
/// GSPO (level = sequence) is meant for grpo: with a token-sum mode each row's sequence term counts |o_i| times,
/// as TRL warns. Throws config_error if max_completion_length < 1.
inline double apply_loss_type(policy_loss_options& options, loss_type type, std::int64_t max_completion_length) {
  GRPO_CHECK(max_completion_length >= 1, config_error, "max_completion_length: must be >= 1, got ",
             max_completion_length);
  options.aggregation = aggregation_of(type);
  return type == loss_type::dr_grpo ? static_cast<double>(max_completion_length) : 1.0;
}

}  // namespace grpo
