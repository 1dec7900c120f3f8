// SPDX-License-Identifier: Apache-2.0
// grpo/distillation.hpp: token-level distillation losses on student logits [N, V] with their gradient, in
// O(N) memory beyond the logits and the gradient buffer; P = softmax(z_t / T), Q = softmax(z_s / T), no T^2.
//   dense: sum_n m_n D_beta(P_n, Q_n) / N_tokens; D_0 = KL(P||Q), D_1 = KL(Q||P), else JSD_beta (GKD, Eq. 1)
//   top-k: sum_n m_n sum_j p_j (log p_j - log q_{id_j}) / N_tokens on a teacher server's K log-probs (veRL)
//   SFT:   -sum_n m_n log q_n[target_n] / N_tokens (DeepSeek-R1's distilled models, arXiv:2501.12948 Sec. 2.4)
// GKD is Agarwal et al. 2024; N_tokens counts the whole batch's valid tokens, as TRL's num_items_in_batch, Liger.
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "grpo/aggregation.hpp"
#include "grpo/backend.hpp"
#include "grpo/error.hpp"
#include "grpo/logits.hpp"
#include "grpo/tensor.hpp"
#include "grpo/validate.hpp"

namespace grpo {

/// Options of the dense and top-k distillation losses.
struct distillation_options {
  /// Student and teacher logits are both divided by T. There is no T^2 factor (Hinton et al.'s
  /// gradient-scale correction), as in TRL's GKD and Liger.
  double temperature = 1.0;
  /// 0: forward KL(P_teacher || Q_student); 1: reverse KL(Q || P); in between: the generalized
  /// Jensen-Shannon divergence JSD_beta with mixture M = beta P + (1 - beta) Q. The end points are
  /// defined as the two KLs, not as limits of JSD_beta (which vanishes at both ends).
  double beta = 0.0;
};

/// What every distillation loss returns.
template <tensor_backend B>
struct distillation_result {
  tensor<B> loss;                       ///< rank 0: sum_n m_n loss_n / denominators.tokens
  tensor<B> per_token_loss;             ///< [N] loss_n, 0 where mask = 0
  typename B::tensor_type grad_logits;  ///< [N, V] d loss / d student logits (0 in masked rows)
  double token_count;                   ///< valid tokens in this call, sum_n m_n (for logging)
};

namespace detail {

/// Checks mask [rows] is 0/1 and returns its host copy.
template <tensor_backend B>
std::vector<double> expect_row_mask(const tensor<B>& mask, std::int64_t rows) {
  expect_shape(mask, shape::vector(rows), "mask");
  expect_mask(mask, "mask");
  return mask.to_host();
}

/// The [N, V] buffer a distillation loss writes its gradient into: the caller's, checked to have the logits' shape s,
/// else an empty tensor, which the row primitive replaces by one it allocates (logits_backend: an out of another
/// shape is allocated). No zero fill: the primitives write every element, and a fill is one more pass over N x V.
template <logits_backend B>
typename B::tensor_type gradient_buffer(const B& b, shape s, std::optional<typename B::tensor_type> given) {
  if (!given) return fill(b, shape::vector(0), 0.0);
  const auto given_shape = shape_of(b, *given);
  GRPO_CHECK(given_shape == s, shape_error, "grad_logits: expected shape ", to_string(s), " (that of the logits), got ",
             to_string(given_shape));
  return std::move(*given);
}

/// Masks the per-row losses and reduces them by the global token count.
template <tensor_backend B>
distillation_result<B> finish_distillation(const tensor<B>& per_row, const tensor<B>& mask,
                                           const std::vector<double>& host_mask, const loss_denominators& d,
                                           typename B::tensor_type grad) {
  auto per_token = where(mask, per_row, 0.0);
  auto loss = sum(per_token) / d.tokens;
  double count = 0.0;
  for (double m : host_mask) count += m;
  return {std::move(loss), std::move(per_token), std::move(grad), count};
}

}  // namespace detail

/// Dense distillation: per row the divergence D_beta between teacher P = softmax(z_t / T) and
/// student Q = softmax(z_s / T) (see distillation_options::beta), summed over valid rows and
/// divided by denominators.tokens, the valid-token count of the whole batch. Every micro-batch of
/// a step divided by the same count sums to the full-batch loss and gradient.
/// \param student_logits  [N, V], finite.
/// \param teacher_logits  [N, V], finite (no gradient flows to it).
/// \param mask            [N] of 0/1; rows with 0 contribute neither loss nor gradient.
/// \param options         temperature > 0 (finite, with a finite inverse), beta in [0, 1].
/// \param denominators    only .tokens is used; finite and > 0.
/// \param grad_logits     optional [N, V] buffer the gradient is written into and returned in (any dtype the backend
///        writes; every element is written, so it need not be initialized; it must not share storage with an
///        input); by default the row primitive allocates it as it does an out of another shape (backend.hpp:
///        the backend's compute dtype; LibTorch's row primitives use the logits' compute dtype and device). A
///        fused caller passes one in the logits' own dtype (bf16 logits, bf16 gradient).
/// \throws shape_error naming "student_logits", "teacher_logits", "mask" or "grad_logits"; config_error naming
///         "options.temperature", "options.beta" or "denominators.tokens"; value_error naming
///         "student_logits" / "teacher_logits" (NaN or Inf) or "mask" (not 0/1).
/// Memory: O(N) beyond the logits and grad_logits. The finiteness checks are one extra pass over
/// each logits tensor.
template <logits_backend B>
distillation_result<B> distillation_loss(const tensor<B>& student_logits, const tensor<B>& teacher_logits,
                                         const tensor<B>& mask, const distillation_options& options,
                                         const loss_denominators& denominators,
                                         std::optional<typename B::tensor_type> grad_logits = std::nullopt) {
  detail::expect_logits_shape(student_logits, "student_logits");
  const auto s = student_logits.shape();
  GRPO_CHECK(teacher_logits.shape() == s, shape_error, "teacher_logits: expected shape ", to_string(s),
             " (that of student_logits), got ", to_string(teacher_logits.shape()));
  const auto host_mask = detail::expect_row_mask(mask, s.dims[0]);
  const double inv_t = detail::inverse_temperature(options.temperature, "options.temperature");
  GRPO_CHECK(options.beta >= 0.0 && options.beta <= 1.0, config_error, "options.beta: must be in [0, 1], got ",
             options.beta);
  validate(denominators);
  detail::expect_finite_logits(student_logits, "student_logits");
  detail::expect_finite_logits(teacher_logits, "teacher_logits");

  const auto& b = student_logits.backend();
  const auto weights = mask / denominators.tokens;
  auto grad = detail::gradient_buffer(b, s, std::move(grad_logits));
  const tensor<B> per_row(
      b, row_divergence(b, student_logits.raw(), teacher_logits.raw(), inv_t, options.beta, weights.raw(), grad));
  return detail::finish_distillation(per_row, mask, host_mask, denominators, std::move(grad));
}

/// Top-k (sparse-teacher) distillation: the forward KL restricted to the teacher's K ids per row,
///   loss_n = sum_j p_j (log p_j - log q_{id_j}),  p_j = exp(teacher_logprobs[n, j]),
/// with q = softmax(z_s / T); masked and divided by denominators.tokens like distillation_loss.
/// Without renormalization p keeps the teacher's own mass on the K ids (sum_j p_j <= 1), so the
/// loss is not a KL and can be negative; its gradient is (1/T) (sum_j p_j q_v - sum_j p_j 1[v = id_j]).
/// With renormalize = true, p_j <- p_j / sum_j p_j (log-space: log p_j - logsumexp_j log p_j), and
/// the loss is the proper KL(P' || Q) >= 0 of the renormalized teacher P' (0 off the K ids) against
/// the full-vocabulary student. At K = V both variants equal the dense forward KL.
/// \param student_logits    [N, V], finite.
/// \param teacher_ids       [N, K], K >= 1, ids in [0, V), no id twice in a row.
/// \param teacher_logprobs  [N, K] log-probs of the teacher at temperature T, as a teacher server
///        returns them: <= 0, not NaN; -Inf means probability 0. With renormalize each row needs
///        at least one finite entry.
/// \param options           temperature as in distillation_loss; beta must be 0 (forward KL only).
/// \param grad_logits       as in distillation_loss.
/// \throws shape_error naming "student_logits", "teacher_ids", "teacher_logprobs", "mask" or "grad_logits";
///         config_error naming "options.temperature", "options.beta" or "denominators.tokens";
///         value_error naming "student_logits", "teacher_ids" (duplicate), "teacher_logprobs" or "mask".
/// Memory: O(N K) beyond the logits and grad_logits.
template <logits_backend B>
distillation_result<B> topk_distillation_loss(const tensor<B>& student_logits, const index_tensor<B>& teacher_ids,
                                              const tensor<B>& teacher_logprobs, const tensor<B>& mask,
                                              const distillation_options& options,
                                              const loss_denominators& denominators, bool renormalize = false,
                                              std::optional<typename B::tensor_type> grad_logits = std::nullopt) {
  detail::expect_logits_shape(student_logits, "student_logits");
  const auto s = student_logits.shape();
  const auto rows = s.dims[0];
  const auto id_shape = teacher_ids.shape();
  GRPO_CHECK(id_shape.rank == 2 && id_shape.dims[0] == rows && id_shape.dims[1] >= 1, shape_error,
             "teacher_ids: expected shape [", rows, ", K] with K >= 1, got ", to_string(id_shape));
  const auto k = id_shape.dims[1];
  GRPO_CHECK(teacher_logprobs.shape() == id_shape, shape_error, "teacher_logprobs: expected shape ",
             to_string(id_shape), " (that of teacher_ids), got ", to_string(teacher_logprobs.shape()));
  const auto host_mask = detail::expect_row_mask(mask, rows);
  const double inv_t = detail::inverse_temperature(options.temperature, "options.temperature");
  GRPO_CHECK(options.beta == 0.0, config_error,
             "options.beta: the top-k loss is the forward KL only and needs beta = 0, got ", options.beta);
  validate(denominators);
  const auto ids = detail::expect_ids(teacher_ids, id_shape, s.dims[1], "teacher_ids");
  for (std::int64_t n = 0; n < rows; ++n) {
    std::set<std::int64_t> seen;
    for (std::int64_t j = 0; j < k; ++j) {
      const auto id = ids[static_cast<std::size_t>(n * k + j)];
      GRPO_CHECK(seen.insert(id).second, value_error, "teacher_ids: row ", n, " holds id ", id,
                 " more than once (the sparse KL would count it twice)");
    }
  }
  const auto logprobs = teacher_logprobs.to_host();
  for (std::int64_t n = 0; n < rows; ++n) {
    bool any_finite = false;
    for (std::int64_t j = 0; j < k; ++j) {
      const auto i = static_cast<std::size_t>(n * k + j);
      GRPO_CHECK(logprobs[i] <= 0.0, value_error, "teacher_logprobs: element ", detail::element_name(id_shape, i),
                 " is ", logprobs[i], " (log-probabilities must be <= 0 and not NaN)");
      any_finite = any_finite || std::isfinite(logprobs[i]);
    }
    GRPO_CHECK(!renormalize || any_finite, value_error, "teacher_logprobs: row ", n,
               " is -inf everywhere, so it has no probability mass to renormalize");
  }
  detail::expect_finite_logits(student_logits, "student_logits");

  const auto& b = student_logits.backend();
  // -Inf (probability 0) becomes -1e30, whose exp is exactly 0 and which stays finite in every
  // storage type down to bf16 (where -FLT_MAX would round back to -Inf): p log p and the gradient
  // term p 1[v = id] are then 0 instead of 0 * Inf = NaN on any backend.
  auto log_p = where(is_finite(teacher_logprobs), teacher_logprobs, -1e30);
  if (renormalize) {
    // The row-wise log-sum-exp of the [N, K] log-probs, stable by the primitive's running maximum.
    const auto first = make_index(b, std::vector<std::int64_t>(static_cast<std::size_t>(rows), 0), shape::vector(rows));
    const tensor<B> lse(b, row_softmax_stats(b, log_p.raw(), first.raw(), 1.0).lse);
    log_p = log_p - expand_rows(lse, k);
  }
  const auto weights = mask / denominators.tokens;
  auto grad = detail::gradient_buffer(b, s, std::move(grad_logits));
  const tensor<B> per_row(
      b, row_sparse_forward_kl(b, student_logits.raw(), teacher_ids.raw(), log_p.raw(), inv_t, weights.raw(), grad));
  return detail::finish_distillation(per_row, mask, host_mask, denominators, std::move(grad));
}

/// SFT cross-entropy on teacher traces: loss_n = -log softmax(z_n / T)[target_n], masked and
/// divided by denominators.tokens (the R1 distilled models are trained this way, at T = 1).
/// \param logits       [N, V], finite.
/// \param targets      [N] ids in [0, V) where mask = 1; where mask = 0 they are not read and may
///        hold anything (for example -100, Hugging Face's ignore index).
/// \param mask         [N] of 0/1.
/// \param temperature  T > 0, finite, with a finite inverse.
/// \param grad_logits  as in distillation_loss.
/// \throws shape_error naming "logits", "targets", "mask" or "grad_logits"; config_error naming "temperature" or
///         "denominators.tokens"; value_error naming "logits" (NaN or Inf) or "mask".
/// Memory: O(N) beyond the logits and grad_logits.
template <logits_backend B>
distillation_result<B> sft_loss(const tensor<B>& logits, const index_tensor<B>& targets, const tensor<B>& mask,
                                const loss_denominators& denominators, double temperature = 1.0,
                                std::optional<typename B::tensor_type> grad_logits = std::nullopt) {
  detail::expect_logits_shape(logits, "logits");
  const auto s = logits.shape();
  const auto rows = s.dims[0];
  const auto host_mask = detail::expect_row_mask(mask, rows);
  auto host_targets = detail::expect_ids(targets, shape::vector(rows), s.dims[1], "targets", &host_mask);
  const double inv_t = detail::inverse_temperature(temperature, "temperature");
  validate(denominators);
  detail::expect_finite_logits(logits, "logits");

  const auto& b = logits.backend();
  // Ignored rows get id 0 so the primitives, which range-check every row, accept them.
  for (std::size_t n = 0; n < host_targets.size(); ++n)
    if (host_mask[n] == 0.0) host_targets[n] = 0;
  const auto safe_targets = make_index(b, host_targets, shape::vector(rows));
  const auto stats = row_softmax_stats(b, logits.raw(), safe_targets.raw(), inv_t);
  const auto d_logprobs = -(mask / denominators.tokens);
  const auto no_entropy = full(b, shape::vector(rows), 0.0);
  auto grad = detail::gradient_buffer(b, s, std::move(grad_logits));
  row_softmax_backward(b, logits.raw(), safe_targets.raw(), inv_t, stats.lse, stats.entropy, d_logprobs.raw(),
                       no_entropy.raw(), grad);
  const auto per_row = -tensor<B>(b, stats.logprob);
  return detail::finish_distillation(per_row, mask, host_mask, denominators, std::move(grad));
}

}  // namespace grpo
