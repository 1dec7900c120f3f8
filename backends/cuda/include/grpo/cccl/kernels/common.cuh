// SPDX-License-Identifier: Apache-2.0
// grpo/cccl/kernels/common.cuh: the building blocks of grpo::cccl's fused logits kernels (nvcc only): the
// accumulation type per logits dtype (fp32 for bf16/fp16/fp32 logits, fp64 for fp64), 16-byte vectorised
// row traversal, the online softmax state (max, sum, shifted sum) that yields lse and entropy in one pass,
// and deterministic block-wide reductions (warp shuffles, then every warp reduces the warp results, so every
// thread holds the same bits without a broadcast). Kernels are launched one block per logits row.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "grpo/cccl/config.hpp"

namespace grpo::cccl {
inline namespace GRPO_CCCL_SYSTEM_NAMESPACE {
namespace kernels::detail {

template <class In>
struct accumulator {
  using type = float;
};
template <>
struct accumulator<double> {
  using type = double;
};
/// fp32 for bf16, fp16 and fp32 logits; fp64 for fp64 logits.
template <class In>
using accumulator_t = typename accumulator<In>::type;

__device__ inline float to_accumulator(float x) { return x; }
__device__ inline double to_accumulator(double x) { return x; }
__device__ inline float to_accumulator(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ inline float to_accumulator(__half x) { return __half2float(x); }

/// Round-to-nearest conversion of an accumulated value to a storage type.
template <class Out, class A>
__device__ Out from_accumulator(A x) {
  if constexpr (std::is_same_v<Out, __nv_bfloat16>) {
    return __float2bfloat16_rn(static_cast<float>(x));
  } else if constexpr (std::is_same_v<Out, __half>) {
    return __float2half_rn(static_cast<float>(x));
  } else {
    return static_cast<Out>(x);
  }
}

// Qualified: inside namespace grpo an unqualified exp would find grpo::exp (tensor.hpp) and stop there.
__device__ inline float exp_of(float x) { return ::expf(x); }
__device__ inline double exp_of(double x) { return ::exp(x); }
__device__ inline float log_of(float x) { return ::logf(x); }
__device__ inline double log_of(double x) { return ::log(x); }
__device__ inline float log1p_of(float x) { return ::log1pf(x); }
__device__ inline double log1p_of(double x) { return ::log1p(x); }

template <class A>
__device__ constexpr A minus_infinity() {
  return -static_cast<A>(INFINITY);
}

template <class P>
__device__ bool aligned_16(const P* p) {
  return reinterpret_cast<std::uintptr_t>(p) % 16 == 0;
}

/// Calls f(v, value) for this thread's share of row[0, vocab). Whole 16-byte vectors, block-strided, where
/// the row is 16-byte aligned, then single elements for the tail (or the whole row when unaligned). The
/// share of a thread depends only on threadIdx.x and the row's address, so every traversal of the same row
/// gives a thread the same elements.
template <class In, class F>
__device__ void for_row(const In* row, std::int64_t vocab, F&& f) {
  constexpr int width = 16 / sizeof(In);
  std::int64_t head = 0;
  if (aligned_16(row)) {
    head = vocab / width * width;
    const auto* vectors = reinterpret_cast<const uint4*>(row);
#pragma unroll 4
    for (std::int64_t i = threadIdx.x; i < vocab / width; i += blockDim.x) {
      const uint4 raw = vectors[i];
      In values[width];
      memcpy(values, &raw, sizeof raw);
#pragma unroll
      for (int w = 0; w < width; ++w) f(i * width + w, to_accumulator(values[w]));
    }
  }
  for (std::int64_t v = head + threadIdx.x; v < vocab; v += blockDim.x) f(v, to_accumulator(row[v]));
}

/// for_row over two rows at once: f(v, a[v], b[v]).
template <class In, class F>
__device__ void for_rows(const In* a, const In* b, std::int64_t vocab, F&& f) {
  constexpr int width = 16 / sizeof(In);
  std::int64_t head = 0;
  if (aligned_16(a) && aligned_16(b)) {
    head = vocab / width * width;
    const auto* va = reinterpret_cast<const uint4*>(a);
    const auto* vb = reinterpret_cast<const uint4*>(b);
#pragma unroll 2
    for (std::int64_t i = threadIdx.x; i < vocab / width; i += blockDim.x) {
      const uint4 raw_a = va[i], raw_b = vb[i];
      In values_a[width], values_b[width];
      memcpy(values_a, &raw_a, sizeof raw_a);
      memcpy(values_b, &raw_b, sizeof raw_b);
#pragma unroll
      for (int w = 0; w < width; ++w) f(i * width + w, to_accumulator(values_a[w]), to_accumulator(values_b[w]));
    }
  }
  for (std::int64_t v = head + threadIdx.x; v < vocab; v += blockDim.x)
    f(v, to_accumulator(a[v]), to_accumulator(b[v]));
}

/// out[v] = f(v, a[v]) for this thread's share, rounded to In. out may be a (each element is read and
/// written by the same thread).
template <class In, class F>
__device__ void map_row(const In* a, In* out, std::int64_t vocab, F&& f) {
  constexpr int width = 16 / sizeof(In);
  std::int64_t head = 0;
  if (aligned_16(a) && aligned_16(out)) {
    head = vocab / width * width;
    const auto* va = reinterpret_cast<const uint4*>(a);
    auto* vo = reinterpret_cast<uint4*>(out);
#pragma unroll 4
    for (std::int64_t i = threadIdx.x; i < vocab / width; i += blockDim.x) {
      const uint4 raw_a = va[i];
      In values[width];
      memcpy(values, &raw_a, sizeof raw_a);
#pragma unroll
      for (int w = 0; w < width; ++w) values[w] = from_accumulator<In>(f(i * width + w, to_accumulator(values[w])));
      uint4 raw_out;
      memcpy(&raw_out, values, sizeof raw_out);
      vo[i] = raw_out;
    }
  }
  for (std::int64_t v = head + threadIdx.x; v < vocab; v += blockDim.x)
    out[v] = from_accumulator<In>(f(v, to_accumulator(a[v])));
}

/// out[v] = f(v, a[v], b[v]) for this thread's share, rounded to In. out may be a or b (each element is read
/// and written by the same thread).
template <class In, class F>
__device__ void map_rows(const In* a, const In* b, In* out, std::int64_t vocab, F&& f) {
  constexpr int width = 16 / sizeof(In);
  std::int64_t head = 0;
  if (aligned_16(a) && aligned_16(b) && aligned_16(out)) {
    head = vocab / width * width;
    const auto* va = reinterpret_cast<const uint4*>(a);
    const auto* vb = reinterpret_cast<const uint4*>(b);
    auto* vo = reinterpret_cast<uint4*>(out);
#pragma unroll 2
    for (std::int64_t i = threadIdx.x; i < vocab / width; i += blockDim.x) {
      const uint4 raw_a = va[i], raw_b = vb[i];
      In values_a[width], values_b[width], values_out[width];
      memcpy(values_a, &raw_a, sizeof raw_a);
      memcpy(values_b, &raw_b, sizeof raw_b);
#pragma unroll
      for (int w = 0; w < width; ++w)
        values_out[w] =
            from_accumulator<In>(f(i * width + w, to_accumulator(values_a[w]), to_accumulator(values_b[w])));
      uint4 raw_out;
      memcpy(&raw_out, values_out, sizeof raw_out);
      vo[i] = raw_out;
    }
  }
  for (std::int64_t v = head + threadIdx.x; v < vocab; v += blockDim.x)
    out[v] = from_accumulator<In>(f(v, to_accumulator(a[v]), to_accumulator(b[v])));
}

/// Running softmax statistics of the scaled logits seen so far, relative to their maximum m:
/// sum = sum_v e^(x_v - m) and shifted = sum_v e^(x_v - m) (x_v - m). Then lse = m + log sum and
/// H = log sum - shifted / sum. Keeping x - m (not x) in the entropy's sum makes its rounding error scale
/// with the spread of the row's logits, not their magnitude. -inf entries (probability 0) are skipped; a
/// NaN entry makes sum NaN, and NaN propagates through every merge.
template <class A>
struct softmax_state {
  A max;
  A sum;
  A shifted;
};

template <class A>
__device__ softmax_state<A> empty_softmax_state() {
  return {minus_infinity<A>(), A(0), A(0)};
}

template <class A>
__device__ void add_logit(softmax_state<A>& s, A x) {
  if (x == minus_infinity<A>()) return;
  if (x > s.max) {
    if (s.sum == A(0)) {
      s.shifted = A(0);
      s.sum = A(1);
    } else {
      const A d = s.max - x, scale = exp_of(d);
      s.shifted = scale * (s.shifted + s.sum * d);
      s.sum = s.sum * scale + A(1);
    }
    s.max = x;
  } else {
    const A d = x - s.max, e = exp_of(d);
    s.sum += e;
    s.shifted += e * d;
  }
}

/// Commutative bit for bit (each result is a sum of two products, and IEEE addition commutes), so the two
/// lanes of a butterfly step compute the same state.
template <class A>
struct merge_softmax {
  __device__ softmax_state<A> operator()(const softmax_state<A>& a, const softmax_state<A>& b) const {
    if (b.sum == A(0)) return a;
    if (a.sum == A(0)) return b;
    const A m = a.max > b.max ? a.max : b.max;
    const A da = a.max - m, db = b.max - m;
    const A ea = exp_of(da), eb = exp_of(db);
    return {m, a.sum * ea + b.sum * eb, ea * (a.shifted + a.sum * da) + eb * (b.shifted + b.sum * db)};
  }
};

/// Up to three sums reduced together.
template <class A>
struct sums {
  A x;
  A y;
  A z;
};

template <class A>
struct add_sums {
  __device__ sums<A> operator()(const sums<A>& a, const sums<A>& b) const { return {a.x + b.x, a.y + b.y, a.z + b.z}; }
};

template <class A>
__device__ softmax_state<A> shuffle_xor(const softmax_state<A>& s, int mask) {
  return {__shfl_xor_sync(0xffffffffu, s.max, mask), __shfl_xor_sync(0xffffffffu, s.sum, mask),
          __shfl_xor_sync(0xffffffffu, s.shifted, mask)};
}

template <class A>
__device__ sums<A> shuffle_xor(const sums<A>& s, int mask) {
  return {__shfl_xor_sync(0xffffffffu, s.x, mask), __shfl_xor_sync(0xffffffffu, s.y, mask),
          __shfl_xor_sync(0xffffffffu, s.z, mask)};
}

template <class V, class Op>
__device__ V warp_all_reduce(V value, Op op) {
#pragma unroll
  for (int mask = 16; mask > 0; mask /= 2) value = op(value, shuffle_xor(value, mask));
  return value;
}

/// Reduction over the whole block (blockDim.x a multiple of 32, at most 1024), the result in every thread.
/// Contains __syncthreads(), so all threads of the block must call it; it also orders every global-memory
/// access made before it against those made after it.
template <class V, class Op>
__device__ V block_all_reduce(V value, Op op, V identity) {
  __shared__ V warp_results[32];
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  value = warp_all_reduce(value, op);
  __syncthreads();  // a previous call's readers are done with warp_results
  if (lane == 0) warp_results[warp] = value;
  __syncthreads();
  return warp_all_reduce(lane < warps ? warp_results[lane] : identity, op);
}

/// Threads per block: enough that each thread has about eight 16-byte vectors of the row, 32 to 512.
inline unsigned block_threads(std::int64_t vocab, int width) {
  unsigned threads = 32;
  while (threads < 512 && static_cast<std::int64_t>(threads) * width * 8 < vocab) threads *= 2;
  return threads;
}

}  // namespace kernels::detail
}  // namespace GRPO_CCCL_SYSTEM_NAMESPACE
}  // namespace grpo::cccl
