// SPDX-License-Identifier: Apache-2.0
// grpo/model/gemm.hpp: the native model's matrix product, a blocked product in the style of BLIS (Van Zee and
// van de Geijn, ACM TOMS 2015) with the packing of Goto and van de Geijn (ACM TOMS 2008): B packed into k-blocks
// of nr-wide panels, A into mr-tall panels, an mr x nr register tile updated by a fully unrolled loop that the
// compiler vectorizes, except float on AVX2 + FMA (a 6 x 16 tile in intrinsics, the design of BLIS's Haswell
// sgemm kernel) and float on AVX-512 (a 12 x 32 tile: 24 of the 32 zmm registers accumulate). Every float sum
// is the same fma chain on both, so their bits are equal. Each output element is computed by one task with a
// reduction order that depends only on the inner dimension, so results do not depend on the thread count, the
// tiling or the other rows of the batch. The attention kernels (attention_kernels.hpp) reuse the tile.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "grpo/model/instruction_sets.hpp"
#include "grpo/model/thread_pool.hpp"

namespace grpo::model {

/// A read-only strided matrix: element (i, j) at data[i * row_stride + j * col_stride].
template <class T>
struct matrix_view {
  const T* data = nullptr;
  std::ptrdiff_t row_stride = 0;
  std::ptrdiff_t col_stride = 1;
  const T& operator()(std::ptrdiff_t i, std::ptrdiff_t j) const { return data[i * row_stride + j * col_stride]; }
};

namespace detail {

/// Register tile mr x nr of the matrix-product micro-kernel for a scalar type and instruction set:
/// two vector registers wide; float on AVX2 six rows tall (12 accumulators, the 6 x 16 intrinsics
/// kernel below), float on AVX-512 twelve (24 of 32 registers, the 12 x 32 kernel), otherwise four
/// (all the auto-vectorized loop holds in registers without spilling).
template <class T, isa I>
struct tile {
  static constexpr bool intrinsics = I != isa::generic && std::is_same_v<T, float>;
  static constexpr std::ptrdiff_t mr = intrinsics ? (I == isa::avx512 ? 12 : 6) : 4;
  static constexpr std::ptrdiff_t nr =
      (I == isa::avx512 ? 64 : I == isa::avx2 ? 32 : 16) / static_cast<std::ptrdiff_t>(sizeof(T)) * 2;
};

/// Cache blocking: an mc x kc block of A stays in L2, a kc x nr panel of B in L1. mc is a multiple
/// of every mr (4, 6 and 12); attention packs at most 8 rows (it runs the AVX2 tile at most).
inline constexpr std::ptrdiff_t gemm_mc = 72;
inline constexpr std::ptrdiff_t gemm_kc = 256;
inline constexpr std::ptrdiff_t gemm_nc = 4096;

template <isa I, class T>
GRPO_MODEL_INLINE T madd(T a, T b, T c) {
  if constexpr (I != isa::generic)
    return std::fma(a, b, c);
  else
    return a * b + c;
}

}  // namespace detail

/// A K x N right-hand operand packed for the micro-kernel: for each k-block of gemm_kc rows, the
/// columns in panels of nr, each panel kc x nr row-major, the last panel zero-padded. Packing a
/// constant weight once lets every product that uses it skip the repacking.
template <class T>
struct packed_matrix {
  std::vector<T> data;
  std::ptrdiff_t k = 0;
  std::ptrdiff_t n = 0;
  std::ptrdiff_t nr = 0;
  isa kernels = isa::generic;

  std::ptrdiff_t padded_n() const { return (n + nr - 1) / nr * nr; }
  const T* panel(std::ptrdiff_t k0, std::ptrdiff_t kc, std::ptrdiff_t j0) const {
    return data.data() + k0 * padded_n() + (j0 / nr) * kc * nr;
  }
};

/// Buffers of the matrix products: per thread, a packed mc x kc block of A; a packed B for
/// operands not packed in advance. Grow on first use, reused afterwards.
template <class T>
struct gemm_scratch {
  std::vector<std::vector<T>> a;
  packed_matrix<T> b;

  void reserve_threads(std::size_t threads) {
    if (a.size() < threads) a.resize(threads);
    for (auto& buffer : a)
      if (buffer.size() < static_cast<std::size_t>((detail::gemm_mc + 8) * detail::gemm_kc))
        buffer.resize(static_cast<std::size_t>((detail::gemm_mc + 8) * detail::gemm_kc));
  }
};

namespace detail {

template <class T, isa I>
GRPO_MODEL_INLINE void pack_b_panel(matrix_view<T> b, std::ptrdiff_t k0, std::ptrdiff_t kc, std::ptrdiff_t j0,
                                    std::ptrdiff_t n, T* out) {
  constexpr std::ptrdiff_t nr = tile<T, I>::nr;
  const std::ptrdiff_t cols = std::min(nr, n - j0);
  if (b.col_stride == 1) {
    if (cols == nr) {  // a full panel: fixed-size row copies, inlined as vector moves (not a library call each)
      for (std::ptrdiff_t kk = 0; kk < kc; ++kk) std::memcpy(out + kk * nr, &b(k0 + kk, j0), nr * sizeof(T));
      return;
    }
    for (std::ptrdiff_t kk = 0; kk < kc; ++kk) {
      const T* src = &b(k0 + kk, j0);
      T* dst = out + kk * nr;
      for (std::ptrdiff_t j = 0; j < cols; ++j) dst[j] = src[j];
      for (std::ptrdiff_t j = cols; j < nr; ++j) dst[j] = T(0);
    }
  } else {
    for (std::ptrdiff_t j = 0; j < nr; ++j)
      for (std::ptrdiff_t kk = 0; kk < kc; ++kk) out[kk * nr + j] = j < cols ? b(k0 + kk, j0 + j) : T(0);
  }
}

template <class T, isa I>
GRPO_MODEL_INLINE void pack_b_task(matrix_view<T> b, packed_matrix<T>& out, std::ptrdiff_t task) {
  constexpr std::ptrdiff_t nr = tile<T, I>::nr;
  const std::ptrdiff_t panels = out.padded_n() / nr;
  const std::ptrdiff_t k0 = task / panels * gemm_kc, j0 = task % panels * nr;
  const std::ptrdiff_t kc = std::min(gemm_kc, out.k - k0);
  pack_b_panel<T, I>(b, k0, kc, j0, out.n, out.data.data() + k0 * out.padded_n() + (j0 / nr) * kc * nr);
}

#if GRPO_MODEL_X86_DISPATCH
/// pack_a of a full tile of a row-major float A (mr a multiple of 4): 4 x 4 blocks loaded as rows
/// and transposed in SSE registers (x86-64's baseline), four times fewer loads and stores than one
/// value at a time.
template <std::ptrdiff_t mr>
GRPO_MODEL_INLINE void pack_a_rows_by_four(const float* a, std::ptrdiff_t lda, std::ptrdiff_t kc, float* out) {
  static_assert(mr % 4 == 0);
  for (std::ptrdiff_t i0 = 0; i0 < mr; i0 += 4) {
    const float* row = a + i0 * lda;
    std::ptrdiff_t k = 0;
    for (; k + 4 <= kc; k += 4) {
      __m128 x0 = _mm_loadu_ps(row + k), x1 = _mm_loadu_ps(row + lda + k);
      __m128 x2 = _mm_loadu_ps(row + 2 * lda + k), x3 = _mm_loadu_ps(row + 3 * lda + k);
      _MM_TRANSPOSE4_PS(x0, x1, x2, x3);
      _mm_storeu_ps(out + k * mr + i0, x0);
      _mm_storeu_ps(out + (k + 1) * mr + i0, x1);
      _mm_storeu_ps(out + (k + 2) * mr + i0, x2);
      _mm_storeu_ps(out + (k + 3) * mr + i0, x3);
    }
    for (; k < kc; ++k)
      for (std::ptrdiff_t i = 0; i < 4; ++i) out[k * mr + i0 + i] = row[i * lda + k];
  }
}
#endif

/// Packs `rows` <= mr rows of a (k < kc) as the micro-kernel reads them: out[k * mr + i], rows
/// beyond `rows` zero.
template <class T, isa I>
GRPO_MODEL_INLINE void pack_a(matrix_view<T> a, std::ptrdiff_t rows, std::ptrdiff_t kc, T* out) {
  constexpr std::ptrdiff_t mr = tile<T, I>::mr;
#if GRPO_MODEL_X86_DISPATCH
  if constexpr (std::is_same_v<T, float> && mr % 4 == 0) {
    if (rows == mr && a.col_stride == 1 && a.row_stride != 1) {
      pack_a_rows_by_four<mr>(a.data, a.row_stride, kc, out);
      return;
    }
  }
#endif
  if (a.row_stride == 1) {  // A transposed in memory: the mr values of one k are adjacent
    if (rows == mr) {  // a full tile: fixed-size copies, inlined as vector moves (no per-value test or call)
      for (std::ptrdiff_t k = 0; k < kc; ++k) std::memcpy(out + k * mr, a.data + k * a.col_stride, mr * sizeof(T));
      return;
    }
    for (std::ptrdiff_t k = 0; k < kc; ++k) {
      const T* src = a.data + k * a.col_stride;
      for (std::ptrdiff_t i = 0; i < mr; ++i) out[k * mr + i] = i < rows ? src[i] : T(0);
    }
    return;
  }
  for (std::ptrdiff_t i = 0; i < mr; ++i) {
    if (i < rows) {
      for (std::ptrdiff_t k = 0; k < kc; ++k) out[k * mr + i] = a(i, k);
    } else {
      for (std::ptrdiff_t k = 0; k < kc; ++k) out[k * mr + i] = T(0);
    }
  }
}

/// The register tile: for i < rows, j < cols,
///   c[i * ldc + j] = (accumulate ? c[i * ldc + j] : 0) + sum over k < kc of a[k * mr + i] b[k * ldb + j],
/// the sum an fma chain from 0 in k order, held in registers for all mr x nr elements (the fixed
/// trip counts let the compiler unroll and vectorize over nr). a is packed by pack_a;
/// b[k * ldb + j] must be readable for every j < nr (the columns beyond `cols` are dropped).
template <class T, isa I>
GRPO_MODEL_INLINE void micro_kernel(std::ptrdiff_t kc, const T* __restrict a, const T* __restrict b, std::ptrdiff_t ldb,
                                    T* __restrict c, std::ptrdiff_t ldc, std::ptrdiff_t rows, std::ptrdiff_t cols,
                                    bool accumulate) {
  constexpr std::ptrdiff_t mr = tile<T, I>::mr, nr = tile<T, I>::nr;
  T local[mr * nr] = {};
  for (std::ptrdiff_t k = 0; k < kc; ++k) {
    const T* bk = b + k * ldb;
    const T* ak = a + k * mr;
#pragma GCC unroll 8
    for (std::ptrdiff_t i = 0; i < mr; ++i) {
      const T ai = ak[i];
#pragma GCC unroll 32
      for (std::ptrdiff_t j = 0; j < nr; ++j) local[i * nr + j] = madd<I>(ai, bk[j], local[i * nr + j]);
    }
  }
  if (rows == mr && cols == nr) {
    for (std::ptrdiff_t i = 0; i < mr; ++i)
      for (std::ptrdiff_t j = 0; j < nr; ++j)
        c[i * ldc + j] = accumulate ? c[i * ldc + j] + local[i * nr + j] : local[i * nr + j];
  } else {
    for (std::ptrdiff_t i = 0; i < rows; ++i)
      for (std::ptrdiff_t j = 0; j < cols; ++j)
        c[i * ldc + j] = accumulate ? c[i * ldc + j] + local[i * nr + j] : local[i * nr + j];
  }
}

// Compiled as its own function, so that register allocation sees the tile alone (inlined into
// the blocking loops, GCC spills accumulators to the stack).
template <class T>
[[gnu::noinline]] void micro_kernel_generic(std::ptrdiff_t kc, const T* a, const T* b, std::ptrdiff_t ldb, T* c,
                                            std::ptrdiff_t ldc, std::ptrdiff_t rows, std::ptrdiff_t cols,
                                            bool accumulate) {
  micro_kernel<T, isa::generic>(kc, a, b, ldb, c, ldc, rows, cols, accumulate);
}
#if GRPO_MODEL_X86_DISPATCH
/// micro_kernel for float on AVX2 + FMA: R <= 6 rows of the 6 x 16 tile (a packed 6 rows per k),
/// with the same contract and the same bits (each element an fma chain from 0 in k order, then
/// added to c when accumulating). Per k: two vectors of b, R broadcasts of a, 2R fmas into 2R
/// accumulators; at R = 6, twelve independent chains cover the fma latency times the two fma pipes
/// with 15 of the 16 ymm registers in use (the register budget of BLIS's Haswell sgemm kernel).
/// Only the rows present are computed, so decoding one row costs a sixth of a full tile. Written
/// with intrinsics because the auto-vectorized form of the tile spills accumulators.
template <int R>
GRPO_MODEL_AVX2 GRPO_MODEL_INLINE void micro_kernel_avx2_rows(std::ptrdiff_t kc, const float* a, const float* b,
                                                              std::ptrdiff_t ldb, float* c, std::ptrdiff_t ldc,
                                                              std::ptrdiff_t cols, bool accumulate) {
  __m256 low[R], high[R];
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) low[i] = high[i] = _mm256_setzero_ps();
#pragma GCC unroll 4
  for (std::ptrdiff_t k = 0; k < kc; ++k) {
    const float* ak = a + k * 6;
    const __m256 b0 = _mm256_loadu_ps(b + k * ldb), b1 = _mm256_loadu_ps(b + k * ldb + 8);
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) {
      const __m256 ai = _mm256_broadcast_ss(ak + i);
      low[i] = _mm256_fmadd_ps(ai, b0, low[i]);
      high[i] = _mm256_fmadd_ps(ai, b1, high[i]);
    }
  }
  if (cols == 16) {
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) {
      float* ci = c + i * ldc;
      if (accumulate) {
        low[i] = _mm256_add_ps(_mm256_loadu_ps(ci), low[i]);
        high[i] = _mm256_add_ps(_mm256_loadu_ps(ci + 8), high[i]);
      }
      _mm256_storeu_ps(ci, low[i]);
      _mm256_storeu_ps(ci + 8, high[i]);
    }
    return;
  }
  // Edge tiles: columns beyond `cols` are readable, so the full width was computed; only its
  // stored part shrinks (scalar adds round as the vector ones).
  // Unrolled, so that low[i] and high[i] keep constant indices and stay in registers throughout.
  alignas(32) float local[16];
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) {
    _mm256_store_ps(local, low[i]);
    _mm256_store_ps(local + 8, high[i]);
    for (std::ptrdiff_t j = 0; j < cols; ++j) c[i * ldc + j] = accumulate ? c[i * ldc + j] + local[j] : local[j];
  }
}

template <class T>
GRPO_MODEL_AVX2 [[gnu::noinline]] void micro_kernel_avx2(std::ptrdiff_t kc, const T* a, const T* b, std::ptrdiff_t ldb,
                                                         T* c, std::ptrdiff_t ldc, std::ptrdiff_t rows,
                                                         std::ptrdiff_t cols, bool accumulate) {
  if constexpr (tile<T, isa::avx2>::intrinsics) {
    switch (rows) {
      case 1: return micro_kernel_avx2_rows<1>(kc, a, b, ldb, c, ldc, cols, accumulate);
      case 2: return micro_kernel_avx2_rows<2>(kc, a, b, ldb, c, ldc, cols, accumulate);
      case 3: return micro_kernel_avx2_rows<3>(kc, a, b, ldb, c, ldc, cols, accumulate);
      case 4: return micro_kernel_avx2_rows<4>(kc, a, b, ldb, c, ldc, cols, accumulate);
      case 5: return micro_kernel_avx2_rows<5>(kc, a, b, ldb, c, ldc, cols, accumulate);
      default: return micro_kernel_avx2_rows<6>(kc, a, b, ldb, c, ldc, cols, accumulate);
    }
  } else {
    micro_kernel<T, isa::avx2>(kc, a, b, ldb, c, ldc, rows, cols, accumulate);
  }
}

/// micro_kernel for float on AVX-512, R <= 12 rows of the 12 x 32 tile (a packed 12 rows per k),
/// with the same contract and bits as the AVX2 kernel. Per k: two vectors of b, R broadcasts of a,
/// 2R fmas into 2R accumulators; at R = 12, 24 independent chains cover the fma latency times two
/// pipes with 27 of the 32 zmm registers in use. Only the rows present are computed, so decoding a
/// few rows costs no more fmas than it needs. Columns beyond `cols` are computed (b is readable)
/// and masked off at the store.
template <int R>
GRPO_MODEL_AVX512 GRPO_MODEL_INLINE void micro_kernel_avx512_rows(std::ptrdiff_t kc, const float* a, const float* b,
                                                                  std::ptrdiff_t ldb, float* c, std::ptrdiff_t ldc,
                                                                  std::ptrdiff_t cols, bool accumulate) {
  __m512 low[R], high[R];
#pragma GCC unroll 12
  for (int i = 0; i < R; ++i) low[i] = high[i] = _mm512_setzero_ps();
#pragma GCC unroll 2
  for (std::ptrdiff_t k = 0; k < kc; ++k) {
    const float* ak = a + k * 12;
    const __m512 b0 = _mm512_loadu_ps(b + k * ldb), b1 = _mm512_loadu_ps(b + k * ldb + 16);
    // b's row 16 steps ahead into L1 (5-10% on the products of the training step; the first row tile of a
    // panel reads it from L2 or L3). A prefetch never faults, so running past the panel's end is harmless.
    const auto ahead = reinterpret_cast<std::uintptr_t>(b + k * ldb) + 16 * sizeof(float) * static_cast<std::size_t>(ldb);
    _mm_prefetch(reinterpret_cast<const char*>(ahead), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(ahead + 16 * sizeof(float)), _MM_HINT_T0);
#pragma GCC unroll 12
    for (int i = 0; i < R; ++i) {
      const __m512 ai = _mm512_set1_ps(ak[i]);
      low[i] = _mm512_fmadd_ps(ai, b0, low[i]);
      high[i] = _mm512_fmadd_ps(ai, b1, high[i]);
    }
  }
  const auto mask_of = [](std::ptrdiff_t n) {
    return static_cast<__mmask16>(n >= 16 ? 0xffff : n <= 0 ? 0 : (1u << n) - 1u);
  };
  const __mmask16 low_mask = mask_of(cols), high_mask = mask_of(cols - 16);
#pragma GCC unroll 12
  for (int i = 0; i < R; ++i) {
    float* ci = c + i * ldc;
    if (accumulate) {
      low[i] = _mm512_add_ps(_mm512_maskz_loadu_ps(low_mask, ci), low[i]);
      high[i] = _mm512_add_ps(_mm512_maskz_loadu_ps(high_mask, ci + 16), high[i]);
    }
    _mm512_mask_storeu_ps(ci, low_mask, low[i]);
    _mm512_mask_storeu_ps(ci + 16, high_mask, high[i]);
  }
}

template <class T>
GRPO_MODEL_AVX512 [[gnu::noinline]] void micro_kernel_avx512(std::ptrdiff_t kc, const T* a, const T* b,
                                                             std::ptrdiff_t ldb, T* c, std::ptrdiff_t ldc,
                                                             std::ptrdiff_t rows, std::ptrdiff_t cols,
                                                             bool accumulate) {
  if constexpr (tile<T, isa::avx512>::intrinsics) {
    switch (rows) {
      case 1: return micro_kernel_avx512_rows<1>(kc, a, b, ldb, c, ldc, cols, accumulate);
      case 2: return micro_kernel_avx512_rows<2>(kc, a, b, ldb, c, ldc, cols, accumulate);
      case 3: return micro_kernel_avx512_rows<3>(kc, a, b, ldb, c, ldc, cols, accumulate);
      case 4: return micro_kernel_avx512_rows<4>(kc, a, b, ldb, c, ldc, cols, accumulate);
      case 5: return micro_kernel_avx512_rows<5>(kc, a, b, ldb, c, ldc, cols, accumulate);
      case 6: return micro_kernel_avx512_rows<6>(kc, a, b, ldb, c, ldc, cols, accumulate);
      case 7: return micro_kernel_avx512_rows<7>(kc, a, b, ldb, c, ldc, cols, accumulate);
      case 8: return micro_kernel_avx512_rows<8>(kc, a, b, ldb, c, ldc, cols, accumulate);
      case 9: return micro_kernel_avx512_rows<9>(kc, a, b, ldb, c, ldc, cols, accumulate);
      case 10: return micro_kernel_avx512_rows<10>(kc, a, b, ldb, c, ldc, cols, accumulate);
      case 11: return micro_kernel_avx512_rows<11>(kc, a, b, ldb, c, ldc, cols, accumulate);
      default: return micro_kernel_avx512_rows<12>(kc, a, b, ldb, c, ldc, cols, accumulate);
    }
  } else {
    micro_kernel<T, isa::avx512>(kc, a, b, ldb, c, ldc, rows, cols, accumulate);
  }
}
#endif

template <class T, isa I>
GRPO_MODEL_INLINE void call_micro_kernel(std::ptrdiff_t kc, const T* a, const T* b, std::ptrdiff_t ldb, T* c,
                                         std::ptrdiff_t ldc, std::ptrdiff_t rows, std::ptrdiff_t cols,
                                         bool accumulate) {
#if GRPO_MODEL_X86_DISPATCH
  if constexpr (I == isa::avx2) {
    micro_kernel_avx2<T>(kc, a, b, ldb, c, ldc, rows, cols, accumulate);
    return;
  } else if constexpr (I == isa::avx512) {
    micro_kernel_avx512<T>(kc, a, b, ldb, c, ldc, rows, cols, accumulate);
    return;
  }
#endif
  micro_kernel_generic<T>(kc, a, b, ldb, c, ldc, rows, cols, accumulate);
}

template <class T>
struct gemm_args {
  std::ptrdiff_t m = 0, n = 0, k = 0;
  matrix_view<T> a;
  const packed_matrix<T>* b = nullptr;
  T* c = nullptr;
  std::ptrdiff_t ldc = 0;
  bool accumulate = false;
  std::ptrdiff_t nc = gemm_nc;  ///< width of C's column blocks, a multiple of the panel width

  std::ptrdiff_t row_blocks() const { return (m + gemm_mc - 1) / gemm_mc; }
  std::ptrdiff_t col_blocks() const { return (n + nc - 1) / nc; }
};

/// The column-block width for an m x n product on `threads` threads: gemm_nc, or narrower (a
/// multiple of the panel width nr, about four blocks per thread) when m has too few row blocks to
/// give each thread one, as when decoding a few rows. The blocking never changes a sum's order.
inline std::ptrdiff_t column_block_width(std::ptrdiff_t m, std::ptrdiff_t n, std::ptrdiff_t nr, std::size_t threads) {
  const std::ptrdiff_t row_blocks = (m + gemm_mc - 1) / gemm_mc, t = static_cast<std::ptrdiff_t>(threads);
  if (row_blocks >= t) return gemm_nc;
  const std::ptrdiff_t blocks = (4 * t + row_blocks - 1) / row_blocks, width = (n + blocks - 1) / blocks;
  return std::clamp((width + nr - 1) / nr * nr, nr, gemm_nc);
}

/// One mc x nc block of C, over every k-block in order (so each element's sum has one order).
template <class T, isa I>
GRPO_MODEL_INLINE void gemm_task(const gemm_args<T>& g, std::ptrdiff_t task, T* a_buffer) {
  constexpr std::ptrdiff_t mr = tile<T, I>::mr, nr = tile<T, I>::nr;
  const std::ptrdiff_t m0 = task / g.col_blocks() * gemm_mc, n0 = task % g.col_blocks() * g.nc;
  const std::ptrdiff_t rows = std::min(gemm_mc, g.m - m0), cols = std::min(g.nc, g.n - n0);
  for (std::ptrdiff_t k0 = 0; k0 < g.k; k0 += gemm_kc) {
    const std::ptrdiff_t kc = std::min(gemm_kc, g.k - k0);
    for (std::ptrdiff_t i0 = 0; i0 < rows; i0 += mr)
      pack_a<T, I>(matrix_view<T>{&g.a(m0 + i0, k0), g.a.row_stride, g.a.col_stride}, std::min(mr, rows - i0), kc,
                   a_buffer + i0 * kc);
    const bool accumulate = k0 > 0 || g.accumulate;
    for (std::ptrdiff_t j0 = n0; j0 < n0 + cols; j0 += nr) {
      const T* b_panel = g.b->panel(k0, kc, j0);
      const std::ptrdiff_t tile_cols = std::min(nr, n0 + cols - j0);
      for (std::ptrdiff_t i0 = 0; i0 < rows; i0 += mr)
        call_micro_kernel<T, I>(kc, a_buffer + i0 * kc, b_panel, nr, g.c + (m0 + i0) * g.ldc + j0, g.ldc,
                                std::min(mr, rows - i0), tile_cols, accumulate);
    }
  }
}

#if GRPO_MODEL_X86_DISPATCH
// The AVX2 + FMA and AVX-512 builds: the generic templates inlined into functions compiled for that target.
template <class T>
GRPO_MODEL_AVX2 void gemm_task_avx2(const gemm_args<T>& g, std::ptrdiff_t task, T* a_buffer) {
  gemm_task<T, isa::avx2>(g, task, a_buffer);
}
template <class T>
GRPO_MODEL_AVX512 void gemm_task_avx512(const gemm_args<T>& g, std::ptrdiff_t task, T* a_buffer) {
  gemm_task<T, isa::avx512>(g, task, a_buffer);
}
#endif

template <class T>
void gemm_task(isa kernels, const gemm_args<T>& g, std::ptrdiff_t task, T* a_buffer) {
#if GRPO_MODEL_X86_DISPATCH
  if (kernels == isa::avx512) return gemm_task_avx512(g, task, a_buffer);
  if (kernels == isa::avx2) return gemm_task_avx2(g, task, a_buffer);
#endif
  gemm_task<T, isa::generic>(g, task, a_buffer);
}

template <class T>
constexpr std::ptrdiff_t panel_width(isa kernels) {
  return kernels == isa::avx512 ? tile<T, isa::avx512>::nr
         : kernels == isa::avx2 ? tile<T, isa::avx2>::nr
                                : tile<T, isa::generic>::nr;
}

}  // namespace detail

/// Packs the K x N operand b (element (k, j) = b(k, j)) for `kernels`, in parallel over panels
/// when a pool is given. `out` is reused (its storage only grows).
template <class T>
void pack(thread_pool* pool, isa kernels, matrix_view<T> b, std::ptrdiff_t k, std::ptrdiff_t n, packed_matrix<T>& out) {
  out.k = k;
  out.n = n;
  out.nr = detail::panel_width<T>(kernels);
  out.kernels = kernels;
  const auto size = static_cast<std::size_t>(k * out.padded_n());
  if (out.data.size() < size) out.data.resize(size);
  const std::ptrdiff_t panels = out.padded_n() / out.nr, blocks = (k + detail::gemm_kc - 1) / detail::gemm_kc;
  const auto task = [&](std::size_t t, std::size_t) {
    const auto i = static_cast<std::ptrdiff_t>(t);
    if (kernels == isa::avx512)
      detail::pack_b_task<T, isa::avx512>(b, out, i);
    else if (kernels == isa::avx2)
      detail::pack_b_task<T, isa::avx2>(b, out, i);
    else
      detail::pack_b_task<T, isa::generic>(b, out, i);
  };
  const auto tasks = static_cast<std::size_t>(panels * blocks);
  if (pool != nullptr)
    pool->parallel_for(tasks, task);
  else
    for (std::size_t t = 0; t < tasks; ++t) task(t, 0);
}

/// C[m, n] = A[m, k] B (or C += A B with accumulate), B packed for the same instruction set.
/// Parallel over mc x nc blocks of C when a pool is given (narrower column blocks when m is small,
/// detail::column_block_width); `scratch` needs one A buffer per thread. Each element's sum runs
/// over k in the same order whatever m, the blocking or the thread count, so a row of C depends
/// only on the same row of A.
template <class T>
void gemm(thread_pool* pool, gemm_scratch<T>& scratch, std::ptrdiff_t m, matrix_view<T> a, const packed_matrix<T>& b,
          T* c, std::ptrdiff_t ldc, bool accumulate) {
  if (m == 0 || b.n == 0) return;
  const std::size_t threads = pool != nullptr ? pool->size() : 1;
  const detail::gemm_args<T> args{
      m, b.n, b.k, a, &b, c, ldc, accumulate, detail::column_block_width(m, b.n, b.nr, threads)};
  if (b.k == 0) {
    if (!accumulate)
      for (std::ptrdiff_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + b.n, T(0));
    return;
  }
  const auto tasks = static_cast<std::size_t>(args.row_blocks() * args.col_blocks());
  scratch.reserve_threads(pool != nullptr ? pool->size() : 1);
  const auto task = [&](std::size_t t, std::size_t thread) {
    detail::gemm_task(b.kernels, args, static_cast<std::ptrdiff_t>(t), scratch.a[thread].data());
  };
  if (pool != nullptr)
    pool->parallel_for(tasks, task);
  else
    for (std::size_t t = 0; t < tasks; ++t) task(t, 0);
}

/// As above with B given unpacked: packs it into scratch.b first.
template <class T>
void gemm(thread_pool* pool, isa kernels, gemm_scratch<T>& scratch, std::ptrdiff_t m, std::ptrdiff_t n,
          std::ptrdiff_t k, matrix_view<T> a, matrix_view<T> b, T* c, std::ptrdiff_t ldc, bool accumulate) {
  pack(pool, kernels, b, k, n, scratch.b);
  gemm(pool, scratch, m, a, scratch.b, c, ldc, accumulate);
}

}  // namespace grpo::model
