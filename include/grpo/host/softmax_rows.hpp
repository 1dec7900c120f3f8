// SPDX-License-Identifier: Apache-2.0
// grpo/host/softmax_rows.hpp: the fp32 row kernels of the row softmax primitives (grpo::logits_backend's
// row_softmax_stats and row_softmax_backward) on the host, one row per call, which grpo::cccl's host systems
// (cccl/host_rows.hpp) and grpo::libtorch's CPU path (libtorch/host_rows.hpp) run over their rows.
//   forward, one streaming pass per row: in blocks of 1024 (L1-resident), the block max m, then over 16 fp32 lanes
//     S_b = sum e^{s(z-m)}, U_b = sum e^{s(z-m)} s(z-m), merged in double with the online log-sum-exp rescaling
//     (Milakov & Gimelshein 2018, "Online normalizer calculation for softmax", extended to the entropy's sum);
//     lse = M + log S,  H = log S - U / S  (= -sum p log p, every term relative to the max, so no |z| cancellation)
//   backward, one pass: g_v = -s p_v (g_lp + g_H (log p_v + H)), plus s g_lp at the target (done in double).
// A row the kernels cannot reproduce exactly (NaN, +-Inf, a row all -inf, a scale < 0 or not finite, a non-finite
// lse or upstream gradient) is reported (ok = false, or a false return) and left to the caller's exact path.
// Standard library only; exp in fp32 lanes from simd_math.hpp, the AVX2+FMA clones from isa.hpp.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

#include "grpo/host/isa.hpp"
#include "grpo/host/simd_math.hpp"

namespace grpo::host_kernels {
inline namespace GRPO_HOST_ISA_NAMESPACE {

/// Elements per block: 4 KiB of fp32, read twice (max, then exp) while in L1.
inline constexpr std::int64_t block_size = 1024;
/// Independent fp32 accumulators per sum: enough for two AVX2 registers, so the loop vectorizes without
/// reassociation (-O3 alone, no -ffast-math), and 64 terms per accumulator in a block.
inline constexpr int lanes = 16;

/// A row's log-sum-exp and entropy; ok = false when the fast path cannot vouch for them (see the file comment).
struct row_moments {
  double lse;
  double entropy;
  bool ok;
};

namespace detail {

GRPO_HOST_ALWAYS_INLINE float block_max(const float* x, std::int64_t len) {
  float lane_max[lanes];
  for (int j = 0; j < lanes; ++j) lane_max[j] = -INFINITY;
  std::int64_t i = 0;
  // NaN is never taken (the comparison is false): a NaN element is found by the sums instead.
  for (; i + lanes <= len; i += lanes)
    for (int j = 0; j < lanes; ++j) lane_max[j] = x[i + j] > lane_max[j] ? x[i + j] : lane_max[j];
  for (; i < len; ++i) lane_max[0] = x[i] > lane_max[0] ? x[i] : lane_max[0];
  float m = lane_max[0];
  for (int j = 1; j < lanes; ++j) m = lane_max[j] > m ? lane_max[j] : m;
  return m;
}

inline bool has_nan(const float* x, std::int64_t len) {
  for (std::int64_t i = 0; i < len; ++i)
    if (x[i] != x[i]) return true;
  return false;
}

/// Adds e = exp(d) to s and e d to u. For e = 0 (d = -inf, a masked entry, or d below exp's range) the product is
/// dropped by masking its bits, since 0 * -inf would be NaN and a conditional would stop vectorization (simd_math).
GRPO_HOST_ALWAYS_INLINE void accumulate(float d, float& s, float& u) {
  const float e = exp_f32(d);
  const std::uint32_t keep = 0u - static_cast<std::uint32_t>(e != 0.0f);
  s += e;
  u += std::bit_cast<float>(std::bit_cast<std::uint32_t>(e * d) & keep);
}

/// {lse, H} of softmax(scale z) for one row, scale > 0 and finite.
GRPO_HOST_ALWAYS_INLINE row_moments softmax_row(const float* z, std::int64_t vocab, double scale) {
  const float sf = static_cast<float>(scale);
  double max = -INFINITY, total = 0.0, weighted = 0.0;
  for (std::int64_t b0 = 0; b0 < vocab; b0 += block_size) {
    const std::int64_t len = std::min(block_size, vocab - b0);
    const float* x = z + b0;
    const float m = block_max(x, len);
    if (!(m > -INFINITY)) {  // every entry -inf (probability 0) or NaN
      if (has_nan(x, len)) return {NAN, NAN, false};
      continue;
    }
    float s[lanes] = {}, u[lanes] = {};
    std::int64_t i = 0;
    for (; i + lanes <= len; i += lanes)
      for (int j = 0; j < lanes; ++j) accumulate(sf * (x[i + j] - m), s[j], u[j]);
    for (; i < len; ++i) accumulate(sf * (x[i] - m), s[0], u[0]);
    double sb = 0.0, ub = 0.0;
    for (int j = 0; j < lanes; ++j) {
      sb += static_cast<double>(s[j]);
      ub += static_cast<double>(u[j]);
    }
    if (!std::isfinite(sb) || !std::isfinite(ub)) return {NAN, NAN, false};  // NaN, or +inf (inf - inf)
    // Rescale both sums to the larger of the two maxima: e^{x - M'} = e^{x - M} e^{M - M'}, x - M' = x - M + M - M'.
    const double mb = scale * static_cast<double>(m);
    if (total == 0.0) {
      max = mb;
      total = sb;
      weighted = ub;
    } else if (mb > max) {
      const double c = std::exp(max - mb);
      weighted = c * (weighted + (max - mb) * total) + ub;
      total = c * total + sb;
      max = mb;
    } else {
      const double c = std::exp(mb - max);
      weighted += c * (ub + (mb - max) * sb);
      total += c * sb;
    }
  }
  if (!(total > 0.0)) return {NAN, NAN, false};  // a row all -inf: the exact path's own answer
  const double log_total = std::log(total);
  return {max + log_total, std::max(0.0, log_total - weighted / total), true};
}

/// Row of the gradient without the target's 1[v = id] term, which the caller writes in double afterwards:
/// g_v = coef p_v (a + b log p_v), log p_v = s (z_v - c) - r0. Reading z_v before writing g_v, g may be z.
GRPO_HOST_ALWAYS_INLINE void gradient_row(const float* z, float* g, std::int64_t vocab, float sf, float c, float r0,
                                          float coef, float a, float b) {
  GRPO_HOST_NO_LOOP_DEPENDENCE
  for (std::int64_t v = 0; v < vocab; ++v) {
    const float log_p = sf * (z[v] - c) - r0;
    const float p = exp_f32(log_p);
    // p = 0 (a masked entry, log p = -inf) contributes exactly 0, as in the reference; masked, not branched.
    const std::uint32_t keep = 0u - static_cast<std::uint32_t>(p != 0.0f);
    g[v] = std::bit_cast<float>(std::bit_cast<std::uint32_t>(coef * p * (a + b * log_p)) & keep);
  }
}

GRPO_HOST_FLATTEN inline row_moments softmax_row_generic(const float* z, std::int64_t vocab, double scale) {
  return softmax_row(z, vocab, scale);
}

GRPO_HOST_FLATTEN inline void gradient_row_generic(const float* z, float* g, std::int64_t vocab, float sf, float c,
                                                   float r0, float coef, float a, float b) {
  gradient_row(z, g, vocab, sf, c, r0, coef, a, b);
}

#if GRPO_HOST_AVX2
__attribute__((target("avx2,fma"))) GRPO_HOST_FLATTEN inline row_moments softmax_row_avx2(const float* z,
                                                                                         std::int64_t vocab,
                                                                                         double scale) {
  return softmax_row(z, vocab, scale);
}

__attribute__((target("avx2,fma"))) GRPO_HOST_FLATTEN inline void gradient_row_avx2(const float* z, float* g,
                                                                                    std::int64_t vocab, float sf,
                                                                                    float c, float r0, float coef,
                                                                                    float a, float b) {
  gradient_row(z, g, vocab, sf, c, r0, coef, a, b);
}
#endif

/// Whether every element of the row is finite: 0 * x is 0 for finite x and NaN for NaN or +-Inf.
GRPO_HOST_FLATTEN inline bool row_is_finite(const float* x, std::int64_t len) {
  float acc[lanes] = {};
  std::int64_t i = 0;
  for (; i + lanes <= len; i += lanes)
    for (int j = 0; j < lanes; ++j) acc[j] += 0.0f * x[i + j];
  for (; i < len; ++i) acc[0] += 0.0f * x[i];
  float total = 0.0f;
  for (int j = 0; j < lanes; ++j) total += acc[j];
  return total == 0.0f;
}

}  // namespace detail

/// {lse, H} of one row z [vocab] of softmax(scale z) through the kernels of the given instruction set; ok = false
/// for a row they leave to the exact path. scale = 0 (the core's finiteness check) is a pass of 0 * z: a finite row
/// has lse = H = log V, exactly the reference's values up to its summation's rounding.
inline row_moments softmax_row_moments(const float* z, std::int64_t vocab, double scale, isa which = best_isa()) {
  if (!(scale >= 0.0) || !std::isfinite(scale)) return {NAN, NAN, false};
  if (scale == 0.0) {
    if (!detail::row_is_finite(z, vocab)) return {NAN, NAN, false};
    const double log_v = std::log(static_cast<double>(vocab));
    return {log_v, log_v, true};
  }
#if GRPO_HOST_AVX2
  if (which == isa::avx2) return detail::softmax_row_avx2(z, vocab, scale);
#endif
  (void)which;
  return detail::softmax_row_generic(z, vocab, scale);
}

/// One row g [vocab] of d/dz (g_logprob logprob + g_entropy entropy) for logprob = log softmax(scale z)[id] and
/// entropy H, from the row's lse and H: s [g_logprob (1[v = id] - p_v) - g_entropy p_v (log p_v + H)]; an id outside
/// [0, vocab) has no 1[v = id] term. g may be z. Returns false, having written nothing, for a row left to the exact
/// path: a scale <= 0 or not finite, or lse, H or an upstream gradient not finite.
inline bool softmax_gradient_row(const float* z, float* g, std::int64_t vocab, double scale, std::int64_t id,
                                 double lse, double entropy, double g_logprob, double g_entropy,
                                 isa which = best_isa()) {
  if (!(scale > 0.0) || !std::isfinite(scale) || !std::isfinite(lse) || !std::isfinite(entropy) ||
      !std::isfinite(g_logprob) || !std::isfinite(g_entropy))
    return false;
  const bool has_target = id >= 0 && id < vocab;
  const double z_target = has_target ? static_cast<double>(z[id]) : 0.0;  // read before g overwrites it
  // log p = s z - l = s (z - c) - r0 with c = l / s rounded to fp32 and r0 = l - s c: z - c is exact for the
  // entries near the max, which carry the probability, so log p does not inherit the rounding of s z at large |z|.
  const float c = static_cast<float>(lse / scale);
  const float r0 = static_cast<float>(lse - scale * static_cast<double>(c));
  const float sf = static_cast<float>(scale), coef = static_cast<float>(-scale);
  const float a = static_cast<float>(g_logprob + g_entropy * entropy), b = static_cast<float>(g_entropy);
#if GRPO_HOST_AVX2
  if (which == isa::avx2)
    detail::gradient_row_avx2(z, g, vocab, sf, c, r0, coef, a, b);
  else
    detail::gradient_row_generic(z, g, vocab, sf, c, r0, coef, a, b);
#else
  (void)which;
  detail::gradient_row_generic(z, g, vocab, sf, c, r0, coef, a, b);
#endif
  if (has_target) {  // the reference's own expression, where 1 - p cancels
    const double log_p = scale * z_target - lse, p = std::exp(log_p);
    const double d = g_logprob * (1.0 - p) - (p > 0.0 ? g_entropy * p * (log_p + entropy) : 0.0);
    g[id] = static_cast<float>(scale * d);
  }
  return true;
}

}  // namespace GRPO_HOST_ISA_NAMESPACE
}  // namespace grpo::host_kernels
