// SPDX-License-Identifier: Apache-2.0
// grpo/logits_policy_loss.hpp: the whole GRPO / PPO-clip policy loss driven from logits: log-probs
// and entropies of the sampled tokens (logits.hpp), the loss and its gradient with respect to them
// (policy_loss.hpp), then the chain rule into the logits in one more pass:
//   d loss / d z_v = (1/T) [ g_logp (1[v = id] - p_v) - g_H p_v (log p_v + H) ]
// with g_logp = d loss / d logp and g_H = d loss / d H = -entropy_coef W. Nothing N x V is
// allocated beyond the gradient, which may overwrite the logits themselves (Liger's fused linear
// GRPO keeps the same property by chunking; here the row primitives are already O(N)).
#pragma once

#include <optional>
#include <utility>

#include "grpo/aggregation.hpp"
#include "grpo/error.hpp"
#include "grpo/logits.hpp"
#include "grpo/policy_loss.hpp"
#include "grpo/tensor.hpp"
#include "grpo/validate.hpp"

namespace grpo {

/// Everything policy_loss takes except the log-probs and entropies, which come from the logits.
template <tensor_backend B>
struct logits_policy_loss_inputs {
  tensor<B> advantages;                         ///< [B] or [B,T]
  tensor<B> mask;                               ///< [B,T] 0/1, the final mask
  std::optional<tensor<B>> old_logprobs{};      ///< [B,T]; absent: ratio 1 (on-policy)
  std::optional<tensor<B>> ref_logprobs{};      ///< [B,T]; required when beta > 0
  std::optional<tensor<B>> rollout_logprobs{};  ///< [B,T]; enables the IS correction
};

template <logits_backend B>
struct logits_policy_loss_result {
  policy_loss_result<B> policy;     ///< loss, per-token loss, grad_logprobs [B,T], metrics
  token_logprob_result<B> tokens;   ///< logprobs, entropy, lse, each [B*T]
};

/// The policy loss of a batch of B sequences of T completion tokens from their logits.
/// \param logits       [B*T, V], row b*T + t predicting completion token t of sequence b.
/// \param ids          [B*T] the sampled tokens (ids of masked positions must still be in [0, V)).
/// \param temperature  the sampling temperature: logits are divided by it (TRL, veRL, OpenRLHF).
/// \param grad_logits  receives d loss / d logits [B*T, V]; it may be logits.raw() itself, the
///                     gradient then overwriting the logits in place.
/// The entropies always feed the entropy metric and, when options.entropy_coef != 0, the bonus.
/// \throws everything token_logprobs and policy_loss throw; shape_error naming "logits" when
///         B*T does not match the mask.
template <logits_backend B>
logits_policy_loss_result<B> policy_loss_from_logits(const tensor<B>& logits, const index_tensor<B>& ids,
                                                     double temperature, const logits_policy_loss_inputs<B>& inputs,
                                                     const policy_loss_options& options,
                                                     const loss_denominators& denominators,
                                                     typename B::tensor_type& grad_logits) {
  detail::expect_rank(inputs.mask, 2, "mask");
  const auto token_shape = inputs.mask.shape();
  const auto n = token_shape.numel();
  GRPO_CHECK(logits.shape().rank == 2 && logits.shape().dims[0] == n, shape_error, "logits: expected [", n,
             ", V] for a mask of shape ", to_string(token_shape), ", got ", to_string(logits.shape()));
  auto tokens = token_logprobs(logits, ids, temperature);
  auto policy = policy_loss(policy_loss_inputs<B>{.logprobs = reshape(tokens.logprobs, token_shape),
                                                  .advantages = inputs.advantages,
                                                  .mask = inputs.mask,
                                                  .old_logprobs = inputs.old_logprobs,
                                                  .ref_logprobs = inputs.ref_logprobs,
                                                  .rollout_logprobs = inputs.rollout_logprobs,
                                                  .entropy = reshape(tokens.entropy, token_shape)},
                            options, denominators);
  const auto flat = shape::vector(n);
  const auto d_entropy = policy.grad_entropy ? reshape(*policy.grad_entropy, flat) : full(logits.backend(), flat, 0.0);
  token_logprobs_backward(logits, ids, temperature, tokens, reshape(policy.grad_logprobs, flat), d_entropy, grad_logits);
  return {std::move(policy), std::move(tokens)};
}

}  // namespace grpo
