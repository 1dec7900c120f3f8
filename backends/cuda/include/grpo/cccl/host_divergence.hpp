// SPDX-License-Identifier: Apache-2.0
// grpo/cccl/host_divergence.hpp: the fp32 fast path of grpo::cccl::backend<float>'s row_divergence on the host device
// systems (CPP, OMP), where rows.hpp's double functor spends about 16 transcendental calls per vocabulary entry. The
// per-row kernel (both rows' lse, one pass in fp32 lanes for the terms and d = d term / d log q, then
// g = w s (d - q sum d); Agarwal et al. 2024, Eq. 1) is the core's grpo/host/divergence_rows.hpp, shared with
// grpo::libtorch's CPU path; this file runs it over the rows, in parallel under OpenMP, and hands the rows it cannot
// reproduce (a NaN or +-Inf anywhere, a row all -inf, a scale <= 0 or not finite, a weight not finite) to rows.hpp's
// functor, as host_rows does.
#pragma once

#include <cstdint>
#include <vector>

#include "grpo/cccl/host_rows.hpp"
#include "grpo/cccl/rows.hpp"
#include "grpo/host/divergence_rows.hpp"

namespace grpo::cccl {
inline namespace GRPO_CCCL_SYSTEM_NAMESPACE {
namespace host_rows {

/// loss [rows] and out [rows, vocab] = w d loss / d student of the divergence D_beta(softmax(s teacher) ||
/// softmax(s student)), as fn::row_divergence computes them; out may be student. Rows in parallel under OpenMP.
inline void divergence(const float* student, const float* teacher, std::int64_t rows, std::int64_t vocab,
                       double scale, double beta, const float* weight, float* loss, float* out,
                       isa which = best_isa()) {
#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_OMP && defined(_OPENMP)
#pragma omp parallel
#endif
  {
    std::vector<float> scratch(static_cast<std::size_t>(2 * vocab));  // q and d of the current row, per thread
#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_OMP && defined(_OPENMP)
#pragma omp for schedule(static)
#endif
    for (std::int64_t n = 0; n < rows; ++n) {
      if (!grpo::host_kernels::divergence_row(student + n * vocab, teacher + n * vocab, vocab, scale, beta,
                                              weight[n], scratch.data(), loss[n], out + n * vocab, which))
        fn::row_divergence<float>{student, teacher, vocab, scale, beta, weight, loss, out}(n);
    }
  }
}

}  // namespace host_rows
}  // namespace GRPO_CCCL_SYSTEM_NAMESPACE
}  // namespace grpo::cccl
