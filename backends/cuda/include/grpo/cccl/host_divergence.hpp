// SPDX-License-Identifier: Apache-2.0
// grpo/cccl/host_divergence.hpp: the fp32 fast path of grpo::cccl::backend<float>'s row_divergence on the host device
// systems (CPP, OMP), where rows.hpp's double functor spends about 16 transcendental calls per vocabulary entry.
// Per row, between teacher P = softmax(s zt) and student Q = softmax(s zs) (backend.hpp; Agarwal et al. 2024, Eq. 1):
//   1. lse of both rows by host_rows' streaming pass;
//   2. one pass over the entries in fp32 lanes (simd_math's exp and log): log p, log q, the entry's term and
//      d = d term / d log q (rows.hpp's divergence_entry), the sums of the terms and of d per block of 1024 merged in
//      double; q and d are kept in a per-thread buffer of 2 V floats;
//   3. g = w s (d - q sum d), streamed from that buffer, so out may be the student logits.
// log m = log(beta p + (1 - beta) q) is taken directly where the mixture is a normal float; below FLT_MIN an entry
// contributes at most about 1e-36 and is dropped. Rows the fast path cannot reproduce (a NaN or +-Inf anywhere, a row
// all -inf, a scale <= 0 or not finite, a weight not finite) go to rows.hpp's functor, as host_rows does.
#pragma once

#include <bit>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <vector>

#include "grpo/cccl/host_rows.hpp"
#include "grpo/cccl/rows.hpp"
#include "grpo/cccl/simd_math.hpp"

namespace grpo::cccl {
inline namespace GRPO_CCCL_SYSTEM_NAMESPACE {
namespace host_rows {
namespace detail {

/// The bits of x where keep, else +0: a product 0 * -inf (an entry of probability 0) becomes 0, not NaN.
GRPO_CCCL_ALWAYS_INLINE float masked(float x, bool keep) {
  return std::bit_cast<float>(std::bit_cast<std::uint32_t>(x) & (0u - static_cast<std::uint32_t>(keep)));
}

/// One entry: log p and log q relative to the rows' lse (as host_rows' gradient: s (z - c) - r0), its term and d.
struct divergence_row {
  enum kind { forward_kl, reverse_kl, jsd };
  kind divergence;       // from the double beta: 0, 1 or in between (a beta near 1 may round to 1.0f)
  float sf, ct, rt, cs, rs;
  float beta, one_minus_beta;
  GRPO_CCCL_ALWAYS_INLINE void entry(float zt, float zs, float& q, float& term, float& d) const {
    const float log_p = sf * (zt - ct) - rt, log_q = sf * (zs - cs) - rs;
    const float p = simd::exp_f32(log_p);
    q = simd::exp_f32(log_q);
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
      const float log_m = simd::log_f32(mixture);
      const float tail_q = masked(one_minus_beta * q * (log_q - log_m), has_q && normal);
      term = masked(beta * p * (log_p - log_m), has_p && normal) + tail_q;
      d = tail_q;
    }
  }
};

/// Pass 2 for one row: writes q and d to buffer [2 V] and returns the row's {sum term, sum d} in double.
GRPO_CCCL_ALWAYS_INLINE void divergence_pass(const divergence_row& row, const float* zt, const float* zs,
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

GRPO_CCCL_FLATTEN inline void divergence_pass_generic(const divergence_row& row, const float* zt, const float* zs,
                                                      std::int64_t vocab, float* q, float* d, double& total,
                                                      double& d_total) {
  divergence_pass(row, zt, zs, vocab, q, d, total, d_total);
}

#if GRPO_CCCL_HOST_AVX2
__attribute__((target("avx2,fma"))) GRPO_CCCL_FLATTEN inline void divergence_pass_avx2(
    const divergence_row& row, const float* zt, const float* zs, std::int64_t vocab, float* q, float* d,
    double& total, double& d_total) {
  divergence_pass(row, zt, zs, vocab, q, d, total, d_total);
}
#endif

/// c = lse / s rounded to fp32 and r0 = lse - s c, so that log p = s (z - c) - r0 is exact near the row's max.
GRPO_CCCL_ALWAYS_INLINE void split_lse(double lse, double scale, float& c, float& r0) {
  c = static_cast<float>(lse / scale);
  r0 = static_cast<float>(lse - scale * static_cast<double>(c));
}

}  // namespace detail

/// loss [rows] and out [rows, vocab] = w d loss / d student of the divergence D_beta(softmax(s teacher) ||
/// softmax(s student)), as fn::row_divergence computes them; out may be student. Rows in parallel under OpenMP.
inline void divergence(const float* student, const float* teacher, std::int64_t rows, std::int64_t vocab,
                       double scale, double beta, const float* weight, float* loss, float* out,
                       isa which = best_isa()) {
  const bool fast_scale = scale > 0.0 && std::isfinite(scale);
#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_OMP && defined(_OPENMP)
#pragma omp parallel
#endif
  {
    std::vector<float> buffer;  // q and d of the current row, per thread
#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_OMP && defined(_OPENMP)
#pragma omp for schedule(static)
#endif
    for (std::int64_t n = 0; n < rows; ++n) {
      const float* zs = student + n * vocab;
      const float* zt = teacher + n * vocab;
      const double w = weight[n];
      const row_moments ms = fast_scale ? softmax_row_moments(zs, vocab, scale, which) : row_moments{0, 0, false};
      const row_moments mt = ms.ok ? softmax_row_moments(zt, vocab, scale, which) : row_moments{0, 0, false};
      if (!ms.ok || !mt.ok || !std::isfinite(w)) {
        fn::row_divergence<float>{student, teacher, vocab, scale, beta, weight, loss, out}(n);
        continue;
      }
      buffer.resize(static_cast<std::size_t>(2 * vocab));
      float* q = buffer.data();
      float* d = q + vocab;
      detail::divergence_row row{beta == 0.0   ? detail::divergence_row::forward_kl
                                 : beta == 1.0 ? detail::divergence_row::reverse_kl
                                               : detail::divergence_row::jsd,
                                 static_cast<float>(scale), 0, 0, 0, 0, static_cast<float>(beta),
                                 static_cast<float>(1.0 - beta)};
      detail::split_lse(mt.lse, scale, row.ct, row.rt);
      detail::split_lse(ms.lse, scale, row.cs, row.rs);
      double total = 0.0, d_total = 0.0;
#if GRPO_CCCL_HOST_AVX2
      if (which == isa::avx2)
        detail::divergence_pass_avx2(row, zt, zs, vocab, q, d, total, d_total);
      else
        detail::divergence_pass_generic(row, zt, zs, vocab, q, d, total, d_total);
#else
      detail::divergence_pass_generic(row, zt, zs, vocab, q, d, total, d_total);
#endif
      loss[n] = static_cast<float>(total);
      const float ws = static_cast<float>(w * scale), d_sum = static_cast<float>(d_total);
      float* g = out + n * vocab;
      for (std::int64_t v = 0; v < vocab; ++v) g[v] = ws * (d[v] - q[v] * d_sum);
    }
  }
}

}  // namespace host_rows
}  // namespace GRPO_CCCL_SYSTEM_NAMESPACE
}  // namespace grpo::cccl
