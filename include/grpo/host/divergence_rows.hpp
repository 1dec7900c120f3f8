// SPDX-License-Identifier: Apache-2.0
// grpo/host/divergence_rows.hpp: the fp32 row kernel of grpo::logits_backend's row_divergence on the host, one row per
// call (grpo::cccl's host systems: cccl/host_divergence.hpp; grpo::libtorch's CPU path: libtorch/host_rows.hpp).
// Per row, between teacher P = softmax(s zt) and student Q = softmax(s zs) (include/grpo/backend.hpp; Agarwal et al.
// 2024, "On-Policy Distillation of Language Models", Eq. 1):
//   1. lse of both rows by softmax_rows.hpp's streaming pass;
//   2. one pass over the entries in fp32 lanes (simd_math's exp and log): log p, log q, the entry's term and
//      d = d term / d log q, the sums of the terms and of d per block of 1024 merged in double; q and d are kept in
//      a caller's scratch buffer of 2 V floats;
//   3. g = w s (d - q sum d), streamed from that buffer, so g may be the student row.
// log m = log(beta p + (1 - beta) q) is taken directly where the mixture is a normal float; below FLT_MIN an entry
// contributes at most about 1e-36 and is dropped. A row the kernel cannot reproduce (a NaN or +-Inf anywhere, a row
// all -inf, a scale <= 0 or not finite, a weight not finite) is reported by a false return and left to the caller.
// Also the forward KL to a sparse teacher (K ids and log-probs per row; the top-k distillation of include/grpo/
// distillation.hpp): the student's lse by the same streaming pass, then g = w s (P q_v - sum_j p_j 1[v = id_j]) with
// P = sum_j p_j, the entries at the ids in double as the reference computes them.
#pragma once

#include <algorithm>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstdint>

#include "grpo/host/isa.hpp"
#include "grpo/host/simd_math.hpp"
#include "grpo/host/softmax_rows.hpp"

namespace grpo::host_kernels {
inline namespace GRPO_HOST_ISA_NAMESPACE {
namespace detail {

/// The bits of x where keep, else +0: a product 0 * -inf (an entry of probability 0) becomes 0, not NaN.
GRPO_HOST_ALWAYS_INLINE float masked(float x, bool keep) {
  return std::bit_cast<float>(std::bit_cast<std::uint32_t>(x) & (0u - static_cast<std::uint32_t>(keep)));
}

/// One entry: log p and log q relative to the rows' lse (as softmax_gradient_row: s (z - c) - r0), its term and d.
struct divergence_terms {
  enum kind { forward_kl, reverse_kl, jsd };
  kind divergence;  // from the double beta: 0, 1 or in between (a beta near 1 may round to 1.0f)
  float sf, ct, rt, cs, rs;
  float beta, one_minus_beta;
  GRPO_HOST_ALWAYS_INLINE void entry(float zt, float zs, float& q, float& term, float& d) const {
    const float log_p = sf * (zt - ct) - rt, log_q = sf * (zs - cs) - rs;
    const float p = exp_f32(log_p);
    q = exp_f32(log_q);
    const bool has_p = p != 0.0f, has_q = q != 0.0f;
    if (divergence == forward_kl) {  // KL(P || Q); a row constant, so the branch is hoisted out of the loop
      term = masked(p * (log_p - log_q), has_p);
      d = -p;
    } else if (divergence == reverse_kl) {  // KL(Q || P)
      term = masked(q * (log_q - log_p), has_q);
      d = masked(term + q, has_q);
    } else {
      const float mixture = beta * p + one_minus_beta * q;
      const bool normal = mixture >= FLT_MIN;
      const float log_m = log_f32(mixture);
      const float tail_q = masked(one_minus_beta * q * (log_q - log_m), has_q && normal);
      term = masked(beta * p * (log_p - log_m), has_p && normal) + tail_q;
      d = tail_q;
    }
  }
};

/// Pass 2 for one row: writes q and d to q_out, d_out [V] and returns the row's {sum term, sum d} in double.
GRPO_HOST_ALWAYS_INLINE void divergence_pass(const divergence_terms& row, const float* zt, const float* zs,
                                             std::int64_t vocab, float* q_out, float* d_out, double& total,
                                             double& d_total) {
  total = 0.0, d_total = 0.0;
  for (std::int64_t b0 = 0; b0 < vocab; b0 += block_size) {
    const std::int64_t len = std::min(block_size, vocab - b0);
    float t[lanes] = {}, u[lanes] = {};
    std::int64_t i = 0;
    for (; i + lanes <= len; i += lanes)
      for (int j = 0; j < lanes; ++j) {
        float term, d;
        row.entry(zt[b0 + i + j], zs[b0 + i + j], q_out[b0 + i + j], term, d);
        d_out[b0 + i + j] = d;
        t[j] += term, u[j] += d;
      }
    for (; i < len; ++i) {
      float term, d;
      row.entry(zt[b0 + i], zs[b0 + i], q_out[b0 + i], term, d);
      d_out[b0 + i] = d;
      t[0] += term, u[0] += d;
    }
    for (int j = 0; j < lanes; ++j) total += static_cast<double>(t[j]), d_total += static_cast<double>(u[j]);
  }
}

GRPO_HOST_FLATTEN inline void divergence_pass_generic(const divergence_terms& row, const float* zt, const float* zs,
                                                      std::int64_t vocab, float* q, float* d, double& total,
                                                      double& d_total) {
  divergence_pass(row, zt, zs, vocab, q, d, total, d_total);
}

#if GRPO_HOST_AVX2
__attribute__((target("avx2,fma"))) GRPO_HOST_FLATTEN inline void divergence_pass_avx2(
    const divergence_terms& row, const float* zt, const float* zs, std::int64_t vocab, float* q, float* d,
    double& total, double& d_total) {
  divergence_pass(row, zt, zs, vocab, q, d, total, d_total);
}
#endif

/// c = lse / s rounded to fp32 and r0 = lse - s c, so that log p = s (z - c) - r0 is exact near the row's max.
GRPO_HOST_ALWAYS_INLINE void split_lse(double lse, double scale, float& c, float& r0) {
  c = static_cast<float>(lse / scale);
  r0 = static_cast<float>(lse - scale * static_cast<double>(c));
}

}  // namespace detail

/// One row of row_divergence: loss = D_beta(softmax(s teacher) || softmax(s student)) and g [vocab] =
/// weight d loss / d student (beta 0: KL(P || Q), beta 1: KL(Q || P), else JSD_beta, beta in [0, 1]). scratch holds
/// 2 vocab floats; g may be student. Returns false, having written nothing, for a row left to the exact path.
inline bool divergence_row(const float* student, const float* teacher, std::int64_t vocab, double scale, double beta,
                           double weight, float* scratch, float& loss, float* g, isa which = best_isa()) {
  if (!(scale > 0.0) || !std::isfinite(scale) || !std::isfinite(weight)) return false;
  const row_moments ms = softmax_row_moments(student, vocab, scale, which);
  if (!ms.ok) return false;
  const row_moments mt = softmax_row_moments(teacher, vocab, scale, which);
  if (!mt.ok) return false;
  float* q = scratch;
  float* d = scratch + vocab;
  detail::divergence_terms row{beta == 0.0   ? detail::divergence_terms::forward_kl
                               : beta == 1.0 ? detail::divergence_terms::reverse_kl
                                             : detail::divergence_terms::jsd,
                               static_cast<float>(scale), 0, 0, 0, 0, static_cast<float>(beta),
                               static_cast<float>(1.0 - beta)};
  detail::split_lse(mt.lse, scale, row.ct, row.rt);
  detail::split_lse(ms.lse, scale, row.cs, row.rs);
  double total = 0.0, d_total = 0.0;
#if GRPO_HOST_AVX2
  if (which == isa::avx2)
    detail::divergence_pass_avx2(row, teacher, student, vocab, q, d, total, d_total);
  else
    detail::divergence_pass_generic(row, teacher, student, vocab, q, d, total, d_total);
#else
  (void)which;
  detail::divergence_pass_generic(row, teacher, student, vocab, q, d, total, d_total);
#endif
  loss = static_cast<float>(total);
  const float ws = static_cast<float>(weight * scale), d_sum = static_cast<float>(d_total);
  for (std::int64_t v = 0; v < vocab; ++v) g[v] = ws * (d[v] - q[v] * d_sum);
  return true;
}

/// One row of row_sparse_forward_kl: loss = sum_j p_j (log p_j - log q_{id_j}) with p_j = exp(teacher_logprobs[j])
/// and Q = softmax(s student), and g [vocab] = weight s ((sum_j p_j) q_v - sum_j p_j 1[v = id_j]), as the reference
/// computes them (the entries at the ids in double, a repeated id summed). picked holds k doubles; g may be student.
/// Returns false, having written nothing, for a row left to the exact path: a scale <= 0 or not finite, a weight not
/// finite, an id outside [0, vocab), a teacher log-prob NaN or +inf, a student row the softmax kernel hands back.
inline bool sparse_forward_kl_row(const float* student, std::int64_t vocab, double scale, const std::int64_t* ids,
                                  const float* teacher_logprobs, std::int64_t k, double weight, double* picked,
                                  float& loss, float* g, isa which = best_isa()) {
  if (!(scale > 0.0) || !std::isfinite(scale) || !std::isfinite(weight)) return false;
  for (std::int64_t j = 0; j < k; ++j)
    if (ids[j] < 0 || ids[j] >= vocab || std::isnan(teacher_logprobs[j]) || teacher_logprobs[j] == INFINITY)
      return false;
  const row_moments m = softmax_row_moments(student, vocab, scale, which);
  if (!m.ok) return false;
  double mass = 0.0, total = 0.0;
  for (std::int64_t j = 0; j < k; ++j) {
    picked[j] = static_cast<double>(student[ids[j]]);  // read before g overwrites it
    const double log_p = static_cast<double>(teacher_logprobs[j]), p = std::exp(log_p);
    mass += p;
    if (p > 0.0) total += p * (log_p - (scale * picked[j] - m.lse));
  }
  if (!std::isfinite(total) || !std::isfinite(mass)) return false;
  loss = static_cast<float>(total);
  // g_v = (w s mass) q_v: softmax_gradient_row's loop with a = 1, b = 0.
  float c = 0.0f, r0 = 0.0f;
  detail::split_lse(m.lse, scale, c, r0);
  const float sf = static_cast<float>(scale), coef = static_cast<float>(weight * scale * mass);
#if GRPO_HOST_AVX2
  if (which == isa::avx2)
    detail::gradient_row_avx2(student, g, vocab, sf, c, r0, coef, 1.0f, 0.0f);
  else
    detail::gradient_row_generic(student, g, vocab, sf, c, r0, coef, 1.0f, 0.0f);
#else
  detail::gradient_row_generic(student, g, vocab, sf, c, r0, coef, 1.0f, 0.0f);
#endif
  // The entries at the ids in double, each id once with every p_j of that id subtracted (where q and p cancel).
  const double ws = weight * scale;
  for (std::int64_t j = 0; j < k; ++j) {
    bool first = true;
    for (std::int64_t i = 0; i < j && first; ++i) first = ids[i] != ids[j];
    if (!first) continue;
    double grad = ws * mass * std::exp(scale * picked[j] - m.lse);
    for (std::int64_t i = j; i < k; ++i)
      if (ids[i] == ids[j]) grad -= ws * std::exp(static_cast<double>(teacher_logprobs[i]));
    g[ids[j]] = static_cast<float>(grad);
  }
  return true;
}

}  // namespace GRPO_HOST_ISA_NAMESPACE
}  // namespace grpo::host_kernels
