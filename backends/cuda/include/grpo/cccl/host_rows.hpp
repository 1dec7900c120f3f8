// SPDX-License-Identifier: Apache-2.0
// grpo/cccl/host_rows.hpp: the fp32 fast path of grpo::cccl::backend<float>'s row softmax primitives on the host
// device systems (CPP, OMP), which rows.hpp's double functors are far too slow for at N x V = 4096 x 32768. The
// per-row kernels (one streaming pass for {lse, H}, one for the gradient, fp32 lanes merged in double, an AVX2+FMA
// clone picked at run time) are the core's grpo/host/softmax_rows.hpp, shared with grpo::libtorch's CPU path; this
// file runs them over the rows, in parallel under OpenMP (THRUST_DEVICE_SYSTEM_OMP built with OpenMP), one after
// another otherwise. Rows the kernels cannot reproduce exactly (NaN, +-Inf, a row all -inf, a scale <= 0 or not
// finite) are handed to rows.hpp's functors: the reference's semantics, bit for bit, wherever they are not ordinary.
#pragma once

#include <cmath>
#include <cstdint>

#include "grpo/cccl/config.hpp"
#include "grpo/cccl/device_error.hpp"
#include "grpo/cccl/rows.hpp"
#include "grpo/host/isa.hpp"
#include "grpo/host/softmax_rows.hpp"

namespace grpo::cccl {
inline namespace GRPO_CCCL_SYSTEM_NAMESPACE {
namespace host_rows {

using grpo::host_kernels::avx2_available;
using grpo::host_kernels::best_isa;
using grpo::host_kernels::isa;

/// {lse, entropy, logprob} [rows] of softmax(scale z) for z [rows, vocab] and ids [rows], as fn::row_softmax_stats
/// computes them (an id out of range: reported to error_slot, logprob NaN), rows in parallel under OpenMP.
inline void softmax_stats(const float* z, const std::int64_t* ids, std::int64_t rows, std::int64_t vocab, double scale,
                          float* lse, float* entropy, float* logprob, std::int64_t* error_slot,
                          isa which = best_isa()) {
#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_OMP && defined(_OPENMP)
#pragma omp parallel for schedule(static)
#endif
  for (std::int64_t n = 0; n < rows; ++n) {
    const float* row = z + n * vocab;
    const grpo::host_kernels::row_moments m = grpo::host_kernels::softmax_row_moments(row, vocab, scale, which);
    if (!m.ok) {
      fn::row_softmax_stats<float>{z, ids, vocab, scale, lse, entropy, logprob, error_slot}(n);
      continue;
    }
    lse[n] = static_cast<float>(m.lse);
    entropy[n] = static_cast<float>(m.entropy);
    const std::int64_t id = ids[n];
    if (id < 0 || id >= vocab) {
      cccl::detail::report_index_error(error_slot, cccl::detail::device_error_row_softmax_stats, id, vocab);
      logprob[n] = NAN;
    } else {
      logprob[n] = static_cast<float>(scale * static_cast<double>(row[id]) - m.lse);
    }
  }
}

/// out [rows, vocab] = d/dz sum_n (g_logprob[n] logprob[n] + g_entropy[n] entropy[n]), as fn::row_softmax_gradient
/// computes it; out may be z. Rows whose scale, lse, entropy or upstream gradients are not finite go through that
/// functor.
inline void softmax_backward(const float* z, const std::int64_t* ids, std::int64_t rows, std::int64_t vocab,
                             double scale, const float* lse, const float* entropy, const float* g_logprob,
                             const float* g_entropy, float* out, isa which = best_isa()) {
#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_OMP && defined(_OPENMP)
#pragma omp parallel for schedule(static)
#endif
  for (std::int64_t n = 0; n < rows; ++n) {
    float* g = out + n * vocab;
    if (grpo::host_kernels::softmax_gradient_row(z + n * vocab, g, vocab, scale, ids[n], lse[n], entropy[n],
                                                 g_logprob[n], g_entropy[n], which))
      continue;
    const fn::row_softmax_gradient<float> element{z, ids, vocab, scale, lse, entropy, g_logprob, g_entropy};
    for (std::int64_t v = 0; v < vocab; ++v) g[v] = element(n * vocab + v);
  }
}

}  // namespace host_rows
}  // namespace GRPO_CCCL_SYSTEM_NAMESPACE
}  // namespace grpo::cccl
