// SPDX-License-Identifier: Apache-2.0
// grpo/model/attention_kernels.hpp: causal attention of the native model on the CPU, for training (forward and
// backward of a (sequence, key/value head) pair, mr queries at a time in the register tile of gemm.hpp) and for
// cached decoding (one query at a time in register rows). Every score is an fma chain over the head's dimensions
// from 0, every output an fma chain over the keys from 0, in both paths: the same chains, the same bits, which is
// what makes sampled log-probs equal training log-probs. The AVX-512 build runs the AVX2 kernels here.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "grpo/model/gemm.hpp"

namespace grpo::model::detail {

/// Softmax of scale * s[0, n) in place (the sum in double). Shared by both paths.
template <class T>
GRPO_MODEL_INLINE void softmax_row(T* s, std::ptrdiff_t n, T scale) {
  T max = -INFINITY;
  for (std::ptrdiff_t j = 0; j < n; ++j) max = std::max(max, s[j] *= scale);
  double total = 0.0;
  for (std::ptrdiff_t j = 0; j < n; ++j) {
    s[j] = std::exp(s[j] - max);
    total += static_cast<double>(s[j]);
  }
  const double inverse = 1.0 / total;
  for (std::ptrdiff_t j = 0; j < n; ++j) s[j] = static_cast<T>(static_cast<double>(s[j]) * inverse);
}

/// One row of a product held in registers: out[j] = sum over k < kc of a[k] b[k * ldb + j] for
/// j < W, each an fma chain from 0 in k order (the chains of the register tile, one row).
template <class T, isa I, std::ptrdiff_t W>
GRPO_MODEL_INLINE void row_tile_impl(std::ptrdiff_t kc, const T* __restrict a, const T* __restrict b,
                                     std::ptrdiff_t ldb, T* __restrict out) {
  T acc[W] = {};
  for (std::ptrdiff_t k = 0; k < kc; ++k) {
    const T ak = a[k];
    const T* bk = b + k * ldb;
#pragma GCC unroll 64
    for (std::ptrdiff_t j = 0; j < W; ++j) acc[j] = madd<I>(ak, bk[j], acc[j]);
  }
  for (std::ptrdiff_t j = 0; j < W; ++j) out[j] = acc[j];
}

template <class T, std::ptrdiff_t W>
[[gnu::noinline]] void row_tile_generic(std::ptrdiff_t kc, const T* a, const T* b, std::ptrdiff_t ldb, T* out) {
  row_tile_impl<T, isa::generic, W>(kc, a, b, ldb, out);
}
#if GRPO_MODEL_X86_DISPATCH
template <class T, std::ptrdiff_t W>
GRPO_MODEL_AVX2 [[gnu::noinline]] void row_tile_avx2(std::ptrdiff_t kc, const T* a, const T* b, std::ptrdiff_t ldb,
                                                     T* out) {
  row_tile_impl<T, isa::avx2, W>(kc, a, b, ldb, out);
}
#endif

template <class T, isa I, std::ptrdiff_t W>
GRPO_MODEL_INLINE void row_tile(std::ptrdiff_t kc, const T* a, const T* b, std::ptrdiff_t ldb, T* out) {
#if GRPO_MODEL_X86_DISPATCH
  if constexpr (I == isa::avx2) {
    row_tile_avx2<T, W>(kc, a, b, ldb, out);
    return;
  }
#endif
  row_tile_generic<T, W>(kc, a, b, ldb, out);
}

/// out[j] = sum over k < kc of a[k] b[k * ldb + j] for j < cols: four register tiles at a time
/// (enough independent chains to hide the fma latency), then two, one, and the last partial tile
/// through a padded read when b_padded (b readable up to the next multiple of nr) or else one
/// chain at a time.
template <class T, isa I>
GRPO_MODEL_INLINE void row_product(std::ptrdiff_t kc, const T* a, const T* b, std::ptrdiff_t ldb, std::ptrdiff_t cols,
                                   bool b_padded, T* out) {
  constexpr std::ptrdiff_t nr = tile<T, I>::nr;
  std::ptrdiff_t j0 = 0;
  for (; j0 + 4 * nr <= cols; j0 += 4 * nr) row_tile<T, I, 4 * nr>(kc, a, b + j0, ldb, out + j0);
  for (; j0 + 2 * nr <= cols; j0 += 2 * nr) row_tile<T, I, 2 * nr>(kc, a, b + j0, ldb, out + j0);
  for (; j0 + nr <= cols; j0 += nr) row_tile<T, I, nr>(kc, a, b + j0, ldb, out + j0);
  if (j0 == cols) return;
  if (b_padded) {
    T last[nr];
    row_tile<T, I, nr>(kc, a, b + j0, ldb, last);
    std::copy_n(last, cols - j0, out + j0);
    return;
  }
  for (std::ptrdiff_t j = j0; j < cols; ++j) {
    T acc = T(0);
    for (std::ptrdiff_t k = 0; k < kc; ++k) acc = madd<I>(a[k], b[k * ldb + j], acc);
    out[j] = acc;
  }
}

/// Attention of one query over keys/values 0..n-1 of a cache: keys transposed (kt[d * ld + j] is
/// element d of key j, readable up to the next multiple of 16 keys), values rows `v_stride`
/// apart. probs_j = softmax_j(scale q.k_j), out = sum_j probs_j v_j: the chains of the training
/// kernels, one query at a time.
template <class T, isa I>
GRPO_MODEL_INLINE void attend_impl(const T* q, const T* kt, std::ptrdiff_t ld, const T* v, std::ptrdiff_t v_stride,
                                   std::ptrdiff_t n, std::ptrdiff_t head_dim, T scale, T* probs, T* out) {
  row_product<T, I>(head_dim, q, kt, ld, n, true, probs);
  softmax_row(probs, n, scale);
  row_product<T, I>(n, probs, v, v_stride, head_dim, false, out);
}

/// out[i * ldo + j] (+)= sum over k in [k0, k1) of a(i, k) b[k * ldb + j] for i < rows <= mr and
/// j < cols, the rows of a packed (pack_a) in `packed` (mr (k1 - k0) values) by the caller.
/// Columns go through the register tile nr at a time; a last partial tile whose extra columns of b
/// might not be readable is computed with the same fma chains one element at a time.
template <class T, isa I>
GRPO_MODEL_INLINE void packed_product(std::ptrdiff_t k0, std::ptrdiff_t k1, const T* packed, std::ptrdiff_t rows,
                                      const T* b, std::ptrdiff_t ldb, std::ptrdiff_t cols, bool b_padded, T* out,
                                      std::ptrdiff_t ldo, bool accumulate) {
  constexpr std::ptrdiff_t mr = tile<T, I>::mr, nr = tile<T, I>::nr;
  const std::ptrdiff_t kc = k1 - k0;
  for (std::ptrdiff_t j0 = 0; j0 < cols; j0 += nr) {
    const std::ptrdiff_t width = std::min(nr, cols - j0);
    if (width == nr || b_padded) {
      call_micro_kernel<T, I>(kc, packed, b + k0 * ldb + j0, ldb, out + j0, ldo, rows, width, accumulate);
      continue;
    }
    for (std::ptrdiff_t i = 0; i < rows; ++i)
      for (std::ptrdiff_t j = j0; j < cols; ++j) {
        T acc = T(0);
        for (std::ptrdiff_t k = 0; k < kc; ++k) acc = madd<I>(packed[k * mr + i], b[(k0 + k) * ldb + j], acc);
        out[i * ldo + j] = accumulate ? out[i * ldo + j] + acc : acc;
      }
  }
}

/// Arguments of the attention of one (sequence, key/value head) pair: the q/k/v rows of the
/// sequence in a [tokens, q_dim + 2 kv_dim] buffer, the saved probabilities (query i of the
/// group's head h_local at probs + h_local * tokens(tokens+1)/2 + i(i+1)/2), the output
/// [tokens, q_dim].
template <class T>
struct attention_args {
  const T* qkv = nullptr;  ///< first row of the sequence
  std::ptrdiff_t tokens = 0;
  std::ptrdiff_t qkv_stride = 0;
  std::ptrdiff_t q_dim = 0, kv_dim = 0, head_dim = 0, group = 0, kv_head = 0;
  T scale = T(1);
  T* probs = nullptr;    ///< group * tokens(tokens+1)/2 values
  T* out = nullptr;      ///< first output row, [tokens, q_dim] with row stride q_dim
  T* scratch = nullptr;  ///< attention_scratch(tokens, head_dim, backward) values
  // Backward only.
  const T* dout = nullptr;  ///< [tokens, q_dim]
  T* dqkv = nullptr;        ///< [tokens, q_dim + 2 kv_dim]; this pair's q and k/v columns are written
};

/// Keys padded to a multiple of 16 (every nr), so score tiles are always full.
inline std::ptrdiff_t padded_tokens(std::ptrdiff_t tokens) { return (tokens + 15) / 16 * 16; }

/// Scratch values one attention task needs (forward: keys transposed, mr score rows, packed
/// panels; backward: values transposed, dense probabilities and their gradient, dk, dv, panels).
inline std::ptrdiff_t attention_scratch(std::ptrdiff_t tokens, std::ptrdiff_t head_dim, bool backward) {
  const std::ptrdiff_t ld = padded_tokens(tokens);
  const std::ptrdiff_t pad = 8 * (ld + head_dim);
  return backward ? head_dim * ld + 2 * tokens * ld + 2 * tokens * head_dim + pad : (head_dim + 8) * ld + pad;
}

/// Element d of row j of the head's columns starting at `first` -> out[d * ld + j], zero-padded
/// to ld columns.
template <class T>
GRPO_MODEL_INLINE void transpose_head(const T* first, std::ptrdiff_t stride, std::ptrdiff_t tokens,
                                      std::ptrdiff_t head_dim, std::ptrdiff_t ld, T* out) {
  for (std::ptrdiff_t d = 0; d < head_dim; ++d)
    for (std::ptrdiff_t j = tokens; j < ld; ++j) out[d * ld + j] = T(0);
  for (std::ptrdiff_t j = 0; j < tokens; ++j)
    for (std::ptrdiff_t d = 0; d < head_dim; ++d) out[d * ld + j] = first[j * stride + d];
}

template <class T, isa I>
GRPO_MODEL_INLINE void attention_forward_impl(const attention_args<T>& a) {
  constexpr std::ptrdiff_t mr = tile<T, I>::mr;
  const std::ptrdiff_t n = a.tokens, hd = a.head_dim, ld = padded_tokens(n), triangle = n * (n + 1) / 2;
  const T* k = a.qkv + a.q_dim + a.kv_head * hd;
  const T* v = k + a.kv_dim;
  T* kt = a.scratch;       // [hd][ld], keys transposed
  T* s = kt + hd * ld;     // [mr][ld], scores then probabilities of mr queries
  T* packed = s + 8 * ld;  // 8 (ld + hd): a panel of queries, then of probabilities
  transpose_head(k, a.qkv_stride, n, hd, ld, kt);
  for (std::ptrdiff_t local = 0; local < a.group; ++local) {
    const std::ptrdiff_t head = a.kv_head * a.group + local;
    for (std::ptrdiff_t i0 = 0; i0 < n; i0 += mr) {
      const std::ptrdiff_t rows = std::min(mr, n - i0), keys = i0 + rows;
      pack_a<T, I>(matrix_view<T>{a.qkv + i0 * a.qkv_stride + head * hd, a.qkv_stride, 1}, rows, hd, packed);
      packed_product<T, I>(0, hd, packed, rows, kt, ld, keys, true, s, ld, false);
      for (std::ptrdiff_t r = 0; r < rows; ++r) {
        const std::ptrdiff_t i = i0 + r;
        T* row = s + r * ld;
        softmax_row(row, i + 1, a.scale);
        for (std::ptrdiff_t j = i + 1; j < keys; ++j) row[j] = T(0);  // exact zeros in the chains below
        std::copy_n(row, i + 1, a.probs + local * triangle + i * (i + 1) / 2);
      }
      pack_a<T, I>(matrix_view<T>{s, ld, 1}, rows, keys, packed);
      packed_product<T, I>(0, keys, packed, rows, v, a.qkv_stride, hd, false, a.out + i0 * a.q_dim + head * hd, a.q_dim,
                           false);
    }
  }
}

/// Backward of the pair's attention given d out, per head of the group:
/// dP = dO V^T, dS = scale P (dP - rowsum(P dP)), dQ = dS K, dK += dS^T Q, dV += P^T dO.
/// Writes dq of the group's heads and dk, dv of the kv head into dqkv.
template <class T, isa I>
GRPO_MODEL_INLINE void attention_backward_impl(const attention_args<T>& a) {
  constexpr std::ptrdiff_t mr = tile<T, I>::mr;
  const std::ptrdiff_t n = a.tokens, hd = a.head_dim, ld = padded_tokens(n), triangle = n * (n + 1) / 2;
  const std::ptrdiff_t k_offset = a.q_dim + a.kv_head * hd, v_offset = k_offset + a.kv_dim;
  T* vt = a.scratch;        // [hd][ld], values transposed
  T* p = vt + hd * ld;      // [n][ld], probabilities with zeros above the diagonal
  T* ds = p + n * ld;       // [n][ld]
  T* dk = ds + n * ld;      // [n][hd]
  T* dv = dk + n * hd;      // [n][hd]
  T* packed = dv + n * hd;  // 8 (ld + hd)
  transpose_head(a.qkv + v_offset, a.qkv_stride, n, hd, ld, vt);
  std::fill_n(dk, 2 * n * hd, T(0));
  for (std::ptrdiff_t local = 0; local < a.group; ++local) {
    const std::ptrdiff_t head = a.kv_head * a.group + local;
    const T* dout = a.dout + head * hd;
    for (std::ptrdiff_t i0 = 0; i0 < n; i0 += mr) {
      const std::ptrdiff_t rows = std::min(mr, n - i0), count = i0 + rows;
      pack_a<T, I>(matrix_view<T>{dout + i0 * a.q_dim, a.q_dim, 1}, rows, hd, packed);
      packed_product<T, I>(0, hd, packed, rows, vt, ld, count, true, ds + i0 * ld, ld, false);
      for (std::ptrdiff_t r = 0; r < rows; ++r) {
        const std::ptrdiff_t i = i0 + r;
        T* p_row = p + i * ld;
        T* ds_row = ds + i * ld;
        std::copy_n(a.probs + local * triangle + i * (i + 1) / 2, i + 1, p_row);
        std::fill(p_row + i + 1, p_row + ld, T(0));
        double weighted = 0.0;
        for (std::ptrdiff_t j = 0; j <= i; ++j)
          weighted += static_cast<double>(p_row[j]) * static_cast<double>(ds_row[j]);
        const T mean = static_cast<T>(weighted);
        for (std::ptrdiff_t j = 0; j <= i; ++j) ds_row[j] = a.scale * p_row[j] * (ds_row[j] - mean);
        std::fill(ds_row + i + 1, ds_row + ld, T(0));
      }
      pack_a<T, I>(matrix_view<T>{ds + i0 * ld, ld, 1}, rows, count, packed);
      packed_product<T, I>(0, count, packed, rows, a.qkv + k_offset, a.qkv_stride, hd, false,
                           a.dqkv + i0 * a.qkv_stride + head * hd, a.qkv_stride, false);
    }
    // Key j gets contributions from queries i >= j only: dK rows j0.. = dS[j0.., j0..]^T Q[j0..].
    const T* q = a.qkv + head * hd;
    for (std::ptrdiff_t j0 = 0; j0 < n; j0 += mr) {
      const std::ptrdiff_t rows = std::min(mr, n - j0);
      pack_a<T, I>(matrix_view<T>{ds + j0 * ld + j0, 1, ld}, rows, n - j0, packed);
      packed_product<T, I>(j0, n, packed, rows, q, a.qkv_stride, hd, false, dk + j0 * hd, hd, true);
      pack_a<T, I>(matrix_view<T>{p + j0 * ld + j0, 1, ld}, rows, n - j0, packed);
      packed_product<T, I>(j0, n, packed, rows, dout, a.q_dim, hd, false, dv + j0 * hd, hd, true);
    }
  }
  for (std::ptrdiff_t j = 0; j < n; ++j) {
    std::copy_n(dk + j * hd, hd, a.dqkv + j * a.qkv_stride + k_offset);
    std::copy_n(dv + j * hd, hd, a.dqkv + j * a.qkv_stride + v_offset);
  }
}

#if GRPO_MODEL_X86_DISPATCH
// The AVX2 + FMA builds: the generic templates inlined into functions compiled for that target.
template <class T>
GRPO_MODEL_AVX2 void attend_avx2(const T* q, const T* kt, std::ptrdiff_t ld, const T* v, std::ptrdiff_t v_stride,
                                 std::ptrdiff_t n, std::ptrdiff_t head_dim, T scale, T* probs, T* out) {
  attend_impl<T, isa::avx2>(q, kt, ld, v, v_stride, n, head_dim, scale, probs, out);
}
template <class T>
GRPO_MODEL_AVX2 void attention_forward_avx2(const attention_args<T>& a) {
  attention_forward_impl<T, isa::avx2>(a);
}
template <class T>
GRPO_MODEL_AVX2 void attention_backward_avx2(const attention_args<T>& a) {
  attention_backward_impl<T, isa::avx2>(a);
}
#endif

template <class T>
void attend(isa kernels, const T* q, const T* kt, std::ptrdiff_t ld, const T* v, std::ptrdiff_t v_stride,
            std::ptrdiff_t n, std::ptrdiff_t head_dim, T scale, T* probs, T* out) {
#if GRPO_MODEL_X86_DISPATCH
  if (kernels != isa::generic) return attend_avx2(q, kt, ld, v, v_stride, n, head_dim, scale, probs, out);
#endif
  attend_impl<T, isa::generic>(q, kt, ld, v, v_stride, n, head_dim, scale, probs, out);
}

template <class T>
void attention_forward(isa kernels, const attention_args<T>& a) {
#if GRPO_MODEL_X86_DISPATCH
  if (kernels != isa::generic) return attention_forward_avx2(a);
#endif
  attention_forward_impl<T, isa::generic>(a);
}

template <class T>
void attention_backward(isa kernels, const attention_args<T>& a) {
#if GRPO_MODEL_X86_DISPATCH
  if (kernels != isa::generic) return attention_backward_avx2(a);
#endif
  attention_backward_impl<T, isa::generic>(a);
}

}  // namespace grpo::model::detail
