// SPDX-License-Identifier: Apache-2.0
// grpo/cccl/host_divergence.hpp: the fp32 fast paths of grpo::cccl::backend<float>'s row_divergence and
// row_sparse_forward_kl on the host device systems (CPP, OMP), where rows.hpp's double functors spend about 16
// (dense) or 2 (sparse) transcendental calls in double per vocabulary entry. The
// per-row kernel (both rows' lse, one pass in fp32 lanes for the terms and d = d term / d log q, then
// g = w s (d - q sum d); Agarwal et al. 2024, Eq. 1) is the core's grpo/host/divergence_rows.hpp, shared with
// grpo::libtorch's CPU path; this file runs it over the rows, in parallel under OpenMP, and hands the rows it cannot
// reproduce (a NaN or +-Inf anywhere, a row all -inf, a scale <= 0 or not finite, a weight not finite) to rows.hpp's
// functor, as host_rows does. The sparse rows are the core's sparse_forward_kl_row: the student's lse in fp32 lanes,
// the gradient (w s mass) q_v in the same lanes, the entries at the teacher ids in double.
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

/// loss [rows] and out [rows, vocab] = w d loss / d student of the forward KL to a teacher known by K (id, log-prob)
/// pairs per row, as fn::row_sparse_forward_kl computes them; out may be student. picked [rows, K] and error_slot are
/// the functor's, for the rows it is handed (an id out of range, a teacher log-prob NaN or +inf, a student row that
/// is not ordinary, a weight not finite). Rows in parallel under OpenMP.
inline void sparse_forward_kl(const float* student, const std::int64_t* teacher_ids, const float* teacher_logprobs,
                              std::int64_t rows, std::int64_t vocab, std::int64_t k, double scale, const float* weight,
                              float* loss, float* out, float* picked, std::int64_t* error_slot,
                              isa which = best_isa()) {
#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_OMP && defined(_OPENMP)
#pragma omp parallel
#endif
  {
    std::vector<double> picked_row(static_cast<std::size_t>(k));  // the student's logits at the row's ids, per thread
#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_OMP && defined(_OPENMP)
#pragma omp for schedule(static)
#endif
    for (std::int64_t n = 0; n < rows; ++n) {
      if (!grpo::host_kernels::sparse_forward_kl_row(student + n * vocab, vocab, scale, teacher_ids + n * k,
                                                     teacher_logprobs + n * k, k, weight[n], picked_row.data(),
                                                     loss[n], out + n * vocab, which))
        fn::row_sparse_forward_kl<float>{student, teacher_ids, teacher_logprobs, vocab, k, scale, weight, loss, out,
                                         picked, error_slot}(n);
    }
  }
}

}  // namespace host_rows
}  // namespace GRPO_CCCL_SYSTEM_NAMESPACE
}  // namespace grpo::cccl
