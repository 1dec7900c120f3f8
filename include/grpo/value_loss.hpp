// SPDX-License-Identifier: Apache-2.0
// grpo/value_loss.hpp: the PPO critic's clipped value loss and its gradient with respect to the
// values: v_clip = clamp(v, v_old - c, v_old + c), L_t = 1/2 max((v - R)^2, (v_clip - R)^2),
// reduced with grpo::aggregation_weights. The squared-error term of PPO (Schulman et al. 2017,
// Eq. 9) with the value clipping of OpenAI baselines' ppo2, as veRL `compute_value_loss` and
// OpenRLHF `ValueLoss` (both c = 0.5) compute it; here the denominators are explicit inputs, so
// the losses and gradients of micro-batches add up to those of the whole batch.
#pragma once

#include <optional>

#include "grpo/aggregation.hpp"
#include "grpo/config.hpp"
#include "grpo/error.hpp"
#include "grpo/tensor.hpp"
#include "grpo/validate.hpp"

namespace grpo {

struct value_loss_options {
  std::optional<double> clip_range = 0.5;  ///< c; nullopt: no clipping, L = 1/2 (v - R)^2
  loss_aggregation aggregation = loss_aggregation::token_mean;
};

template <tensor_backend B>
struct value_loss_result {
  tensor<B> loss;         ///< rank 0
  tensor<B> grad_values;  ///< [B, T] d loss / d values; 0 where mask = 0
  double clip_fraction;   ///< valid tokens where the clipped term is strictly larger, / denominators.tokens
};

/// Clipped value loss.
///
/// \param values, old_values, returns  [B, T], finite. old_values are the critic's values at
///                                     rollout time, returns the targets (GAE's A + V).
/// \param mask                         [B, T], 0 or 1.
/// \param denominators                 N_tokens, N_seqs, C of the whole batch (aggregation.hpp).
/// The gradient follows the larger term: v - R where the unclipped term is at least as large
/// (ties included: inside the clip range the two are equal), else 0, since the clipped term wins
/// only where v is outside [v_old - c, v_old + c] and the clamp is constant. clip_fraction
/// divides by denominators.tokens (not the local token count), so the shards of a batch sum to
/// the batch's fraction; it is 0 without clipping.
/// Throws shape_error (shapes differ from values' [B, T]), value_error (non-finite inputs, mask
/// not 0/1), config_error (clip_range not a finite value >= 0, invalid denominators).
template <tensor_backend B>
value_loss_result<B> value_loss(const tensor<B>& values, const tensor<B>& old_values, const tensor<B>& returns,
                                const tensor<B>& mask, const value_loss_options& options,
                                const loss_denominators& denominators) {
  detail::expect_rank(values, 2, "values");
  detail::expect_shape(old_values, values.shape(), "old_values");
  detail::expect_shape(returns, values.shape(), "returns");
  detail::expect_shape(mask, values.shape(), "mask");
  if (options.clip_range) detail::expect_non_negative(*options.clip_range, "clip_range");
  validate(denominators);
  detail::expect_finite(values, "values");
  detail::expect_finite(old_values, "old_values");
  detail::expect_finite(returns, "returns");
  detail::expect_mask(mask, "mask");

  const auto weights = aggregation_weights(mask, options.aggregation, denominators);
  const auto residual = values - returns;
  if (!options.clip_range) return {aggregate(0.5 * square(residual), weights), weights * residual, 0.0};

  const double c = *options.clip_range;
  const auto clipped = minimum(maximum(values, old_values - c), old_values + c);
  const auto clipped_error = clipped - returns;
  const auto clipped_larger = greater(square(clipped_error), square(residual));
  const auto per_token = 0.5 * where(clipped_larger, square(clipped_error), square(residual));
  // The clipped term can only be strictly larger where v_clip != v, i.e. v outside the range,
  // where the clamp is constant: the gradient there is 0.
  const auto d_per_token = where(clipped_larger, 0.0, residual);
  const double clip_fraction = sum(clipped_larger * mask).item() / denominators.tokens;
  return {aggregate(per_token, weights), weights * d_per_token, clip_fraction};
}

}  // namespace grpo
