// SPDX-License-Identifier: Apache-2.0
// grpo/cccl/kernels/softmax.cuh: fused kernels for per-token log-prob, entropy and their gradient from logits
// [N, V] of bf16, fp16, fp32 or fp64 (nvcc only). Forward: ONE pass over each row with the online softmax
// state: lse = log sum_v exp(s z_v), H = -sum_v p_v log p_v, logprob = s z[id] - lse. Backward: one pass,
//   out_v = s [ g_logprob (1[v = id] - p_v) - g_entropy p_v (log p_v + H) ],
// which may overwrite the logits. The same formulas as logits.hpp (PPO's entropy bonus, Schulman et al. 2017,
// Eq. 9), accumulated in fp32 (fp64 for fp64 logits); nothing N x V is allocated.
#pragma once

#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "grpo/cccl/config.hpp"
#include "grpo/cccl/device_error.hpp"
#include "grpo/cccl/kernels/common.cuh"

namespace grpo::cccl {
inline namespace GRPO_CCCL_SYSTEM_NAMESPACE {
namespace kernels {

namespace detail {

template <class In, class Out>
__global__ void softmax_stats_kernel(const In* logits, const std::int64_t* ids, std::int64_t vocab,
                                     accumulator_t<In> scale, Out* lse, Out* entropy, Out* logprob,
                                     std::int64_t* error_slot) {
  using A = accumulator_t<In>;
  const std::int64_t n = blockIdx.x;
  const In* row = logits + n * vocab;
  softmax_state<A> state = empty_softmax_state<A>();
  for_row(row, vocab, [&](std::int64_t, A z) { add_logit(state, scale * z); });
  state = block_all_reduce(state, merge_softmax<A>{}, empty_softmax_state<A>());
  if (threadIdx.x != 0) return;
  // An all -inf row has sum 0: lse -inf and entropy 0, as in the reference backend.
  const A log_sum = log_of(state.sum);
  const A l = state.max + log_sum;
  A h = state.sum == A(0) ? A(0) : log_sum - state.shifted / state.sum;
  if (h < A(0)) h = A(0);  // rounding of a near-deterministic row; NaN stays NaN
  lse[n] = static_cast<Out>(l);
  entropy[n] = static_cast<Out>(h);
  const std::int64_t id = ids[n];
  if (id < 0 || id >= vocab) {
    grpo::cccl::detail::report_index_error(error_slot, grpo::cccl::detail::device_error_row_softmax_stats, id, vocab);
    logprob[n] = static_cast<Out>(NAN);
  } else {
    logprob[n] = static_cast<Out>(scale * to_accumulator(row[id]) - l);
  }
}

template <class In, class Out>
__global__ void softmax_backward_kernel(const In* logits, const std::int64_t* ids, std::int64_t vocab,
                                        accumulator_t<In> scale, const Out* lse, const Out* entropy,
                                        const Out* g_logprob, const Out* g_entropy, In* out) {
  using A = accumulator_t<In>;
  const std::int64_t n = blockIdx.x;
  const A l = static_cast<A>(lse[n]), h = static_cast<A>(entropy[n]);
  const A gl = static_cast<A>(g_logprob[n]), ge = static_cast<A>(g_entropy[n]);
  const std::int64_t id = ids[n];
  const In* row = logits + n * vocab;
  map_row(row, out + n * vocab, vocab, [&](std::int64_t v, A z) {
    const A log_p = scale * z - l;
    const A p = exp_of(log_p);
    const A d = gl * ((v == id ? A(1) : A(0)) - p) - (p > A(0) ? ge * p * (log_p + h) : A(0));
    return scale * d;
  });
}

}  // namespace detail

/// lse, entropy and logprob [rows] of softmax(inv_temperature * logits) for logits [rows, vocab] in device
/// memory (any alignment; 16-byte aligned rows are read as vectors), targets ids [rows]. An id out of
/// [0, vocab) gives logprob NaN and is recorded in error_slot (device_error.hpp; may be null). Asynchronous
/// on `stream`. Returns cudaErrorInvalidValue for vocab < 1 or rows >= 2^31, else the launch status.
template <class In, class Out>
[[nodiscard]] cudaError_t softmax_stats(const In* logits, std::int64_t rows, std::int64_t vocab,
                                        const std::int64_t* ids, double inv_temperature, Out* lse, Out* entropy,
                                        Out* logprob, std::int64_t* error_slot, cudaStream_t stream) {
  if (vocab < 1 || rows < 0 || rows > INT_MAX) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  using A = detail::accumulator_t<In>;
  const unsigned threads = detail::block_threads(vocab, static_cast<int>(16 / sizeof(In)));
  detail::softmax_stats_kernel<In, Out><<<static_cast<unsigned>(rows), threads, 0, stream>>>(
      logits, ids, vocab, static_cast<A>(inv_temperature), lse, entropy, logprob, error_slot);
  return cudaGetLastError();
}

/// out [rows, vocab] = d/dz sum_n (g_logprob[n] logprob[n] + g_entropy[n] entropy[n]) given the forward's
/// lse and entropy. out may equal logits (the gradient then overwrites them). Asynchronous on `stream`; ids
/// are not range-checked here (an id out of range only drops the 1[v = id] term).
template <class In, class Out>
[[nodiscard]] cudaError_t softmax_backward(const In* logits, std::int64_t rows, std::int64_t vocab,
                                           const std::int64_t* ids, double inv_temperature, const Out* lse,
                                           const Out* entropy, const Out* g_logprob, const Out* g_entropy, In* out,
                                           cudaStream_t stream) {
  if (vocab < 1 || rows < 0 || rows > INT_MAX) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  using A = detail::accumulator_t<In>;
  const unsigned threads = detail::block_threads(vocab, static_cast<int>(16 / sizeof(In)));
  detail::softmax_backward_kernel<In, Out><<<static_cast<unsigned>(rows), threads, 0, stream>>>(
      logits, ids, vocab, static_cast<A>(inv_temperature), lse, entropy, g_logprob, g_entropy, out);
  return cudaGetLastError();
}

}  // namespace kernels
}  // namespace GRPO_CCCL_SYSTEM_NAMESPACE
}  // namespace grpo::cccl
