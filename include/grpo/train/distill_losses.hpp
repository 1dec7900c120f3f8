// SPDX-License-Identifier: Apache-2.0
// grpo/train/distill_losses.hpp: the per-batch losses of `grpo distill` (distill.hpp) through a
// trainable policy: on-policy (GKD, Agarwal et al. 2024, arXiv:2306.13649: D_beta between teacher
// and student on the student's samples), SFT on verified traces (R1, arXiv:2501.12948 Sec. 2.4)
// and the sparse forward KL on a teacher's top-k log-probs. Each takes the fused loss's analytic
// d loss / d student logits to the student's backward: no N x V temporary beyond the logits and
// that gradient (the top-1 agreement metric reads logits to the host only up to 2^24 elements).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "grpo/concepts.hpp"
#include "grpo/distillation.hpp"
#include "grpo/tensor.hpp"
#include "grpo/train/topk_file.hpp"

namespace grpo::train {

/// What one distillation loss measured over a batch (its share when called per micro-batch).
struct distill_loss_result {
  double loss = 0;       ///< the loss, divided by the batch's token count
  double kl = 0;         ///< the KL estimate of the mode (see distiller::step), likewise divided
  double agreement = 0;  ///< positions where the student's top-1 token is the teacher's (a count)
  double tokens = 0;     ///< valid positions
};

namespace detail {

/// The [R*T] completion ids of a batch (0 at padding).
inline std::vector<std::int64_t> completion_ids(const sequence_batch& batch) {
  const auto t = static_cast<std::size_t>(batch.max_completion_length());
  std::vector<std::int64_t> ids(batch.rows() * t, 0);
  for (std::size_t r = 0; r < batch.rows(); ++r)
    for (std::size_t i = 0; i < batch.completions[r].size(); ++i) ids[r * t + i] = batch.completions[r][i];
  return ids;
}

/// Each row's top-1 id, read on the host (a metric only; skipped, all -1, beyond 2^24 elements so
/// that a large vocabulary does not pay an N x V host copy for it).
template <tensor_backend B>
std::vector<std::int64_t> row_argmax(const tensor<B>& logits) {
  const auto rows = logits.shape().dims[0], v = logits.shape().dims[1];
  std::vector<std::int64_t> out(static_cast<std::size_t>(rows), -1);
  if (rows * v > (std::int64_t{1} << 24)) return out;
  const auto z = logits.to_host();
  for (std::int64_t n = 0; n < rows; ++n) {
    const auto* row = z.data() + n * v;
    out[static_cast<std::size_t>(n)] = std::max_element(row, row + v) - row;
  }
  return out;
}

inline double count_matches(const std::vector<std::int64_t>& a, const std::vector<std::int64_t>& b,
                            const std::vector<double>& mask) {
  double n = 0;
  for (std::size_t i = 0; i < mask.size(); ++i) n += mask[i] != 0 && a[i] >= 0 && a[i] == b[i] ? 1 : 0;
  return n;
}

/// The teacher's logits on the student's backend: the same tensor when the backends are one type,
/// else through the host.
template <tensor_backend To, tensor_backend From>
tensor<To> on_backend(const To& b, const tensor<From>& t) {
  if constexpr (std::is_same_v<To, From>) return t;
  else return make_tensor(b, t.to_host(), t.shape());
}

}  // namespace detail

/// On-policy distillation loss of `batch` (the student's own samples): teacher and student logits
/// of every completion position, D_beta(teacher || student) per token (options.beta: 0 forward
/// KL, 1 reverse KL, else JSD_beta; GKD Eq. 1), summed over valid positions and divided by
/// denominators.tokens; backpropagated into the student's gradient accumulators. kl is the
/// sampled estimate of the reverse KL, sum (log q - log p)(token) / denominators.tokens.
template <trainable_policy S, trainable_policy T>
distill_loss_result on_policy_loss(S& student, T& teacher, const sequence_batch& batch,
                                   const distillation_options& options, const loss_denominators& denominators) {
  using B = typename S::backend_type;
  const B& b = student.backend();
  const auto n = static_cast<std::int64_t>(batch.rows()) * batch.max_completion_length();
  distill_loss_result out;
  if (n == 0) return out;
  const auto teacher_logits = detail::on_backend(b, teacher.forward(batch));
  const auto logits = student.forward(batch);
  const auto mask_values = batch.completion_mask();
  const auto mask = make_tensor(b, mask_values, shape::vector(n));
  const auto ids_host = detail::completion_ids(batch);
  const auto ids = make_index(b, ids_host, shape::vector(n));
  const double inv_t = 1.0 / options.temperature;
  const tensor<B> student_lp(b, row_softmax_stats(b, logits.raw(), ids.raw(), inv_t).logprob);
  const tensor<B> teacher_lp(b, row_softmax_stats(b, teacher_logits.raw(), ids.raw(), inv_t).logprob);
  out.kl = sum(where(mask, student_lp - teacher_lp, 0.0)).item() / denominators.tokens;
  out.agreement = detail::count_matches(detail::row_argmax(logits), detail::row_argmax(teacher_logits), mask_values);
  auto result = distillation_loss(logits, teacher_logits, mask, options, denominators);
  out.loss = result.loss.item();
  out.tokens = result.token_count;
  student.backward(tensor<B>(b, std::move(result.grad_logits)));
  return out;
}

/// SFT loss (at T = 1, as R1's distilled models) of the student on traces: rows of `batch` are
/// teacher completions, teacher_logprobs[r] their log-probs. kl is the sampled estimate of the
/// forward KL, sum (log p - log q)(token) / denominators.tokens; agreement counts the positions
/// where the student's top-1 is the teacher's token. Backpropagated into the student.
template <trainable_policy S>
distill_loss_result traces_loss(S& student, const sequence_batch& batch,
                                std::span<const std::vector<double>> teacher_logprobs,
                                const loss_denominators& denominators) {
  using B = typename S::backend_type;
  const B& b = student.backend();
  const auto t = static_cast<std::size_t>(batch.max_completion_length());
  const auto n = static_cast<std::int64_t>(batch.rows() * t);
  distill_loss_result out;
  if (n == 0) return out;
  const auto logits = student.forward(batch);
  const auto mask_values = batch.completion_mask();
  const auto ids = detail::completion_ids(batch);
  out.agreement = detail::count_matches(detail::row_argmax(logits), ids, mask_values);
  auto result = sft_loss(logits, make_index(b, ids, shape::vector(n)), make_tensor(b, mask_values, shape::vector(n)),
                         denominators);
  const auto nll = result.per_token_loss.to_host();
  for (std::size_t r = 0; r < batch.rows(); ++r)
    for (std::size_t i = 0; i < batch.completions[r].size(); ++i)
      out.kl += (teacher_logprobs[r][i] + nll[r * t + i]) / denominators.tokens;
  out.loss = result.loss.item();
  out.tokens = result.token_count;
  student.backward(tensor<B>(b, std::move(result.grad_logits)));
  return out;
}

/// Sparse forward-KL loss of the student on sequences `rows` of a top-k file (topk_distillation_loss;
/// with renormalize, the proper KL of the renormalized teacher). kl is the loss itself; agreement
/// counts positions where the student's top-1 is the teacher's. Backpropagated into the student.
template <trainable_policy S>
distill_loss_result topk_loss(S& student, const topk_sequences& data, std::span<const std::size_t> rows,
                              const distillation_options& options, bool renormalize,
                              const loss_denominators& denominators) {
  using B = typename S::backend_type;
  const B& b = student.backend();
  sequence_batch batch;
  for (const auto r : rows) {
    batch.prompts.push_back(data.prompts[r]);
    batch.completions.push_back(data.completions[r]);
  }
  const auto t = static_cast<std::size_t>(batch.max_completion_length());
  const auto n = static_cast<std::int64_t>(batch.rows() * t);
  distill_loss_result out;
  if (n == 0) return out;
  const auto k = static_cast<std::size_t>(data.k);
  // Padding rows: all mass on the first of K distinct ids (masked out; a finite entry per row
  // keeps the renormalization defined).
  std::vector<std::int64_t> ids(static_cast<std::size_t>(n) * k), teacher_top(static_cast<std::size_t>(n), -1);
  std::vector<double> logprobs(ids.size(), -INFINITY);
  for (std::size_t row = 0; row < static_cast<std::size_t>(n); ++row)
    for (std::size_t j = 0; j < k; ++j) {
      ids[row * k + j] = static_cast<std::int64_t>(j);
      if (j == 0) logprobs[row * k] = 0.0;
    }
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const auto first = static_cast<std::size_t>(data.offsets[rows[i]]);
    for (std::size_t p = 0; p < data.completions[rows[i]].size(); ++p)
      for (std::size_t j = 0; j < k; ++j) {
        ids[(i * t + p) * k + j] = data.ids[(first + p) * k + j];
        logprobs[(i * t + p) * k + j] = data.logprobs[(first + p) * k + j];
        if (j == 0) teacher_top[i * t + p] = data.ids[(first + p) * k];
      }
  }
  const auto logits = student.forward(batch);
  const auto mask_values = batch.completion_mask();
  out.agreement = detail::count_matches(detail::row_argmax(logits), teacher_top, mask_values);
  const auto matrix = shape::matrix(n, data.k);
  auto result = topk_distillation_loss(logits, make_index(b, ids, matrix), make_tensor(b, logprobs, matrix),
                                       make_tensor(b, mask_values, shape::vector(n)), options, denominators,
                                       renormalize);
  out.loss = out.kl = result.loss.item();
  out.tokens = result.token_count;
  student.backward(tensor<B>(b, std::move(result.grad_logits)));
  return out;
}

}  // namespace grpo::train
