// SPDX-License-Identifier: Apache-2.0
// grpo/model/layer_rows.hpp: the per-token operations of a transformer layer of the native model, one row at a
// time: RMSNorm and its backward (sums in double), rotary embedding, SwiGLU and its backward. Plain loops; the
// matrix products and attention are in gemm.hpp and attention_kernels.hpp.
#pragma once

#include <cmath>
#include <cstddef>

namespace grpo::model::detail {

/// RMSNorm of one row (Zhang and Sennrich 2019, Eq. 4): out = x / sqrt(mean(x^2) + eps) * w,
/// the mean in double. Returns 1 / sqrt(mean(x^2) + eps) for the backward.
template <class T>
double rms_norm_row(const T* x, const T* weight, T* out, std::ptrdiff_t n, double eps) {
  double squares = 0.0;
  for (std::ptrdiff_t i = 0; i < n; ++i) squares += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  const double inverse_rms = 1.0 / std::sqrt(squares / static_cast<double>(n) + eps);
  for (std::ptrdiff_t i = 0; i < n; ++i) out[i] = static_cast<T>(static_cast<double>(x[i]) * inverse_rms) * weight[i];
  return inverse_rms;
}

/// Backward of rms_norm_row with respect to x, added into dx:
/// dx += r (w dy) - x r^3 / n sum_i (w dy x)_i, r = inverse_rms. (The weight's gradient is a
/// column sum over rows, taken separately so it has one summation order.)
template <class T>
void rms_norm_backward_row(const T* x, const T* weight, const T* dy, double inverse_rms, T* dx, std::ptrdiff_t n) {
  double projection = 0.0;
  for (std::ptrdiff_t i = 0; i < n; ++i)
    projection += static_cast<double>(weight[i]) * static_cast<double>(dy[i]) * static_cast<double>(x[i]);
  const double coefficient = projection * inverse_rms * inverse_rms * inverse_rms / static_cast<double>(n);
  for (std::ptrdiff_t i = 0; i < n; ++i)
    dx[i] += static_cast<T>(inverse_rms * static_cast<double>(weight[i]) * static_cast<double>(dy[i]) -
                            coefficient * static_cast<double>(x[i]));
}

/// Rotary embedding in the rotate-half convention of Hugging Face Llama (Su et al. 2021,
/// "RoFormer", Eq. 34 with the pair (i, i + d/2)): for each head and i < d/2,
/// (a, b) = (x_i, x_{i+d/2}) -> (a cos - b sin, b cos + a sin). inverse = true rotates back (the
/// transpose, for the backward).
template <class T>
void rope_row(T* x, std::ptrdiff_t heads, std::ptrdiff_t head_dim, const T* cos, const T* sin, bool inverse) {
  const std::ptrdiff_t half = head_dim / 2;
  for (std::ptrdiff_t h = 0; h < heads; ++h) {
    T* v = x + h * head_dim;
    for (std::ptrdiff_t i = 0; i < half; ++i) {
      const T a = v[i], b = v[i + half], c = cos[i], s = inverse ? -sin[i] : sin[i];
      v[i] = a * c - b * s;
      v[i + half] = b * c + a * s;
    }
  }
}

/// SwiGLU (Shazeer 2020, Eq. 6 with Swish_1 = SiLU): out = silu(g) * u, silu(g) = g sigmoid(g).
template <class T>
void swiglu_row(const T* gate, const T* up, T* out, std::ptrdiff_t n) {
  for (std::ptrdiff_t i = 0; i < n; ++i) {
    const T g = gate[i];
    out[i] = g / (T(1) + std::exp(-g)) * up[i];
  }
}

/// Backward of swiglu_row: dgate = dout u s (1 + g (1 - s)), dup = dout g s, s = sigmoid(g).
template <class T>
void swiglu_backward_row(const T* gate, const T* up, const T* dout, T* dgate, T* dup, std::ptrdiff_t n) {
  for (std::ptrdiff_t i = 0; i < n; ++i) {
    const T g = gate[i], s = T(1) / (T(1) + std::exp(-g));
    dgate[i] = dout[i] * up[i] * s * (T(1) + g * (T(1) - s));
    dup[i] = dout[i] * g * s;
  }
}

}  // namespace grpo::model::detail
