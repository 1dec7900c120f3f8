// SPDX-License-Identifier: Apache-2.0
// grpo/cccl/kernels/divergence.cuh: fused distillation kernels on student logits [N, V] (nvcc only), loss and
// gradient together, one block per row, nothing N x V allocated, the gradient allowed to overwrite the student:
//   dense: D_beta(P || Q), P = softmax(s zt), Q = softmax(s zs): beta = 0 KL(P||Q), beta = 1 KL(Q||P), else
//          the generalized JSD (Agarwal et al. 2024, GKD, Eq. 1); three passes (both lse, loss, gradient), the
//          entries in base 2 (divergence_entry_log2: two exp2 and one log2 per entry and pass)
//   sparse: sum_j p_j (log p_j - log q_{id_j}) over a teacher's K (id, log-prob) pairs per row (two passes)
// The formulas of backend.hpp's row_divergence and row_sparse_forward_kl; fp32 accumulation (fp64 for fp64).
#pragma once

#include <cuda_runtime.h>

#include <cfloat>
#include <climits>
#include <cstdint>
#include <type_traits>

#include "grpo/cccl/config.hpp"
#include "grpo/cccl/device_error.hpp"
#include "grpo/cccl/kernels/common.cuh"

namespace grpo::cccl {
inline namespace GRPO_CCCL_SYSTEM_NAMESPACE {
namespace kernels {

namespace detail {

template <class A>
GRPO_CCCL_HOST_DEVICE constexpr A ln_2() {
  return static_cast<A>(0.693147180559945309417232121458176568L);
}

template <class A>
GRPO_CCCL_HOST_DEVICE constexpr A log2_e() {
  return static_cast<A>(1.442695040888963407359924681001892137L);
}

/// The smallest normal value of A: a mixture below it takes the log-sum-exp form, where log2 of a subnormal sum
/// would have lost its low bits.
template <class A>
GRPO_CCCL_HOST_DEVICE constexpr A smallest_normal() {
  return std::is_same_v<A, float> ? static_cast<A>(FLT_MIN) : static_cast<A>(DBL_MIN);
}

// exp2 and log2 (CUDA's accurate exp2f / log2f: 2 and 1 ulp, each a hardware MUFU instruction and a few fused
// multiply-adds, where expf and logf need a range reduction first); the same functions on the host.
GRPO_CCCL_HOST_DEVICE inline float exp2_of(float x) { return ::exp2f(x); }
GRPO_CCCL_HOST_DEVICE inline double exp2_of(double x) { return ::exp2(x); }
GRPO_CCCL_HOST_DEVICE inline float log2_of(float x) { return ::log2f(x); }
GRPO_CCCL_HOST_DEVICE inline double log2_of(double x) { return ::log2(x); }

/// One entry's loss term and d term / d log q (rows.hpp's divergence_entry in the accumulation type), from base-2
/// log-probabilities lp2 = log2 p and lq2 = log2 q, so that p, q and log m cost one exp2 or log2 each: with
/// m = beta p + (1 - beta) q (Agarwal et al. 2024, Eq. 1),
///   beta = 0: term = p (log p - log q), d = -p;  beta = 1: term = q (log q - log p), d = term + q;
///   else:     term = beta p (log p - log m) + (1 - beta) q (log q - log m), d = (1 - beta) q (log q - log m),
/// each log difference taken in base 2 and multiplied by ln 2 once. log2 m is log2 of the mixture where the mixture
/// is a normal number, else the two-term log-sum-exp (log2_beta + lp2, log2_one_minus_beta + lq2) as the reference
/// computes it, so that a tiny p or q does not lose the mixture to underflow; a NaN takes the second form and
/// propagates. The kernel calls it twice per entry (loss and gradient sum, then the gradient): the JSD's cost.
template <class A>
GRPO_CCCL_HOST_DEVICE void divergence_entry_log2(A beta, A log2_beta, A log2_one_minus_beta, A lp2, A lq2, A& term,
                                                 A& d) {
  const A q = exp2_of(lq2), p = exp2_of(lp2);
  if (beta == A(0)) {
    term = p > A(0) ? ln_2<A>() * (p * (lp2 - lq2)) : A(0);
    d = -p;
  } else if (beta == A(1)) {
    term = q > A(0) ? ln_2<A>() * (q * (lq2 - lp2)) : A(0);
    d = q > A(0) ? term + q : A(0);
  } else if (p == A(0) && q == A(0)) {
    term = A(0);
    d = A(0);
  } else {
    const A mixture = beta * p + (A(1) - beta) * q;
    A lm2;
    if (mixture >= smallest_normal<A>()) {
      lm2 = log2_of(mixture);
    } else {
      const A a = log2_beta + lp2, b = log2_one_minus_beta + lq2;
      const A hi = a > b ? a : b;
      lm2 = hi + log2_of(exp2_of(a - hi) + exp2_of(b - hi));
    }
    const A student = q > A(0) ? (A(1) - beta) * q * (lq2 - lm2) : A(0);
    term = ln_2<A>() * ((p > A(0) ? beta * p * (lp2 - lm2) : A(0)) + student);
    d = ln_2<A>() * student;
  }
}

template <class A>
__device__ A lse_of(const softmax_state<A>& s) {
  return s.max + log_of(s.sum);  // sum 0 (every entry -inf): -inf
}

template <class In, class Out>
__global__ void divergence_kernel(const In* student, const In* teacher, std::int64_t vocab, accumulator_t<In> scale,
                                  accumulator_t<In> beta, const Out* weight, Out* loss, In* out) {
  using A = accumulator_t<In>;
  const std::int64_t n = blockIdx.x;
  const In* zs = student + n * vocab;
  const In* zt = teacher + n * vocab;
  softmax_state<A> s = empty_softmax_state<A>(), t = empty_softmax_state<A>();
  for_rows(zs, zt, vocab, [&](std::int64_t, A a, A b) {
    add_logit(s, scale * a);
    add_logit(t, scale * b);
  });
  s = block_all_reduce(s, merge_softmax<A>{}, empty_softmax_state<A>());
  t = block_all_reduce(t, merge_softmax<A>{}, empty_softmax_state<A>());
  const A lse_s = lse_of(s), lse_t = lse_of(t);
  // log p and log q in natural units first (the cancellation against the lse exact as before), then in base 2.
  const A log2_beta = log2_of(beta), log2_one_minus_beta = log1p_of(-beta) * log2_e<A>();
  sums<A> partial{A(0), A(0), A(0)};  // x: loss, y: sum_v dlogq_v
  for_rows(zs, zt, vocab, [&](std::int64_t, A a, A b) {
    A term, d;
    divergence_entry_log2(beta, log2_beta, log2_one_minus_beta, (scale * b - lse_t) * log2_e<A>(),
                          (scale * a - lse_s) * log2_e<A>(), term, d);
    partial.x += term;
    partial.y += d;
  });
  const sums<A> total = block_all_reduce(partial, add_sums<A>{}, sums<A>{A(0), A(0), A(0)});
  const A w = static_cast<A>(weight[n]);
  map_rows(zs, zt, out + n * vocab, vocab, [&](std::int64_t, A a, A b) {
    const A lq2 = (scale * a - lse_s) * log2_e<A>();
    A term, d;
    divergence_entry_log2(beta, log2_beta, log2_one_minus_beta, (scale * b - lse_t) * log2_e<A>(), lq2, term, d);
    return w * scale * (d - exp2_of(lq2) * total.y);
  });
  if (threadIdx.x == 0) loss[n] = static_cast<Out>(total.x);
}

/// Dynamic shared memory of the sparse kernel per teacher entry: its id, its probability and the student's logit
/// there (the gradient may overwrite the logits).
template <class In>
constexpr std::int64_t sparse_shared_bytes_per_entry() {
  return static_cast<std::int64_t>(sizeof(std::int64_t) + sizeof(accumulator_t<In>) + sizeof(In));
}

/// One block per row. The gradient at a teacher id is computed whole in the accumulation type and rounded to In
/// once: w s ((sum_j p_j) q_id - sum_{j: id_j = id} p_j), by the thread of the id's first occurrence; rounding
/// after each repeated id's subtraction would leave bf16/fp16 errors of the size of the intermediate terms where
/// the two parts cancel. The teacher entries wait in shared memory; the teacher mass is summed in j order by one
/// thread, as the reference does, so that a row whose K ids are all one token gets exactly 0 there.
template <class In, class Out>
__global__ void sparse_forward_kl_kernel(const In* student, const std::int64_t* teacher_ids,
                                         const Out* teacher_logprobs, std::int64_t vocab, std::int64_t k,
                                         accumulator_t<In> scale, const Out* weight, Out* loss, In* out,
                                         std::int64_t* error_slot) {
  using A = accumulator_t<In>;
  extern __shared__ __align__(16) unsigned char sparse_shared[];
  auto* entry_id = reinterpret_cast<std::int64_t*>(sparse_shared);  // [k]; -1 for an id out of range
  auto* entry_p = reinterpret_cast<A*>(entry_id + k);               // [k]: exp(teacher log-prob)
  auto* picked = reinterpret_cast<In*>(entry_p + k);                // [k]: zs[id]
  __shared__ A teacher_mass;
  const std::int64_t n = blockIdx.x;
  const In* zs = student + n * vocab;
  In* g = out + n * vocab;
  const std::int64_t* ids = teacher_ids + n * k;
  const Out* logp = teacher_logprobs + n * k;
  softmax_state<A> s = empty_softmax_state<A>();
  for_row(zs, vocab, [&](std::int64_t, A a) { add_logit(s, scale * a); });
  s = block_all_reduce(s, merge_softmax<A>{}, empty_softmax_state<A>());
  const A lse_s = lse_of(s);
  sums<A> partial{A(0), A(0), A(0)};  // y: loss, z: ids out of range (x unused)
  for (std::int64_t j = threadIdx.x; j < k; j += blockDim.x) {
    const std::int64_t id = ids[j];
    if (id < 0 || id >= vocab) {
      grpo::cccl::detail::report_index_error(error_slot, grpo::cccl::detail::device_error_row_sparse_forward_kl, id,
                                             vocab);
      entry_id[j] = -1;
      entry_p[j] = A(0);
      partial.z += A(1);
      continue;
    }
    const A log_p = static_cast<A>(logp[j]), p = exp_of(log_p);
    entry_id[j] = id;
    entry_p[j] = p;
    picked[j] = zs[id];
    if (p > A(0)) partial.y += p * (log_p - (scale * to_accumulator(picked[j]) - lse_s));
  }
  // The reduction's barriers publish the entries, and order the reads of zs above before the writes to g below
  // (g may be zs).
  const sums<A> total = block_all_reduce(partial, add_sums<A>{}, sums<A>{A(0), A(0), A(0)});
  if (threadIdx.x == 0) {
    A mass = A(0);
    for (std::int64_t j = 0; j < k; ++j) mass += entry_p[j];
    teacher_mass = mass;
  }
  __syncthreads();
  const A w = static_cast<A>(weight[n]), mass = teacher_mass;
  map_row(zs, g, vocab, [&](std::int64_t, A a) { return w * scale * mass * exp_of(scale * a - lse_s); });
  __syncthreads();  // every dense write lands before the teacher positions are overwritten
  for (std::int64_t j = threadIdx.x; j < k; j += blockDim.x) {
    const std::int64_t id = entry_id[j];
    if (id < 0) continue;
    bool first = true;
    for (std::int64_t i = 0; i < j && first; ++i) first = entry_id[i] != id;
    if (!first) continue;
    A at_id = A(0);
    for (std::int64_t i = j; i < k; ++i)
      if (entry_id[i] == id) at_id += entry_p[i];
    g[id] = from_accumulator<In>(w * scale * (mass * exp_of(scale * to_accumulator(picked[j]) - lse_s) - at_id));
  }
  if (threadIdx.x == 0) loss[n] = total.z > A(0) ? static_cast<Out>(NAN) : static_cast<Out>(total.y);
}

}  // namespace detail

/// loss [rows] = D_beta(softmax(s teacher) || softmax(s student)) per row, and out [rows, vocab] =
/// weight[n] d loss[n] / d student[n] (out may equal student). beta in [0, 1] (not checked here).
/// Asynchronous on `stream`. Returns cudaErrorInvalidValue for vocab < 1 or rows >= 2^31.
template <class In, class Out>
[[nodiscard]] cudaError_t divergence(const In* student, const In* teacher, std::int64_t rows, std::int64_t vocab,
                                     double inv_temperature, double beta, const Out* weight, Out* loss, In* out,
                                     cudaStream_t stream) {
  if (vocab < 1 || rows < 0 || rows > INT_MAX) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  using A = detail::accumulator_t<In>;
  const unsigned threads = detail::block_threads(vocab, static_cast<int>(16 / sizeof(In)));
  detail::divergence_kernel<In, Out><<<static_cast<unsigned>(rows), threads, 0, stream>>>(
      student, teacher, vocab, static_cast<A>(inv_temperature), static_cast<A>(beta), weight, loss, out);
  return cudaGetLastError();
}

/// The most teacher entries per row sparse_forward_kl<In, Out> takes on `device`: the device's opt-in shared memory
/// per block, less the kernel's static shared memory (its block reductions), over the bytes per entry.
template <class In, class Out>
[[nodiscard]] cudaError_t sparse_forward_kl_capacity(int device, std::int64_t& max_k) {
  int limit = 0;
  cudaError_t status = cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (status != cudaSuccess) return status;
  cudaFuncAttributes attributes{};
  status = cudaFuncGetAttributes(&attributes, detail::sparse_forward_kl_kernel<In, Out>);
  if (status != cudaSuccess) return status;
  const auto dynamic = static_cast<std::int64_t>(limit) - static_cast<std::int64_t>(attributes.sharedSizeBytes);
  max_k = dynamic > 0 ? dynamic / detail::sparse_shared_bytes_per_entry<In>() : 0;
  return cudaSuccess;
}

/// Sparse forward KL: teacher_ids and teacher_logprobs [rows, k]; loss [rows]; out [rows, vocab] =
/// weight[n] d loss[n] / d student[n] (out may equal student). A teacher id out of range is recorded in
/// error_slot (may be null), left out of the gradient and makes its row's loss NaN. Asynchronous on `stream`.
/// Uses k * (8 + 4 + sizeof(In)) bytes of shared memory per block (8 + 8 + 8 for fp64) besides the kernel's static
/// shared memory (under 2 KiB): k up to sparse_forward_kl_capacity (227 KiB on Hopper: about 16600 entries for
/// bf16, 14500 for fp32); beyond it, the error of cudaFuncSetAttribute.
template <class In, class Out>
[[nodiscard]] cudaError_t sparse_forward_kl(const In* student, const std::int64_t* teacher_ids,
                                            const Out* teacher_logprobs, std::int64_t rows, std::int64_t vocab,
                                            std::int64_t k, double inv_temperature, const Out* weight, Out* loss,
                                            In* out, std::int64_t* error_slot, cudaStream_t stream) {
  constexpr std::int64_t per_entry = detail::sparse_shared_bytes_per_entry<In>();
  if (vocab < 1 || k < 0 || k > INT_MAX / per_entry || rows < 0 || rows > INT_MAX) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  using A = detail::accumulator_t<In>;
  const unsigned threads = detail::block_threads(vocab, static_cast<int>(16 / sizeof(In)));
  const auto shared = static_cast<int>(k * per_entry);
  // Static and dynamic shared memory together above the default 48 KiB need the opt-in.
  cudaFuncAttributes attributes{};
  cudaError_t status = cudaFuncGetAttributes(&attributes, detail::sparse_forward_kl_kernel<In, Out>);
  if (status != cudaSuccess) return status;
  if (static_cast<std::int64_t>(shared) + static_cast<std::int64_t>(attributes.sharedSizeBytes) > 48 * 1024) {
    status = cudaFuncSetAttribute(detail::sparse_forward_kl_kernel<In, Out>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize, shared);
    if (status != cudaSuccess) return status;
  }
  detail::sparse_forward_kl_kernel<In, Out><<<static_cast<unsigned>(rows), threads, shared, stream>>>(
      student, teacher_ids, teacher_logprobs, vocab, k, static_cast<A>(inv_temperature), weight, loss, out, error_slot);
  return cudaGetLastError();
}

}  // namespace kernels
}  // namespace GRPO_CCCL_SYSTEM_NAMESPACE
}  // namespace grpo::cccl
