// SPDX-License-Identifier: Apache-2.0
// grpo/model/reference.hpp: the oracle of the native transformer: forward and backward written as
// plain per-token loops with double accumulation, one row at a time, no blocking and no threads.
// It is slow and meant to be read: the fast version (transformer.hpp) is tested against it and it
// is tested against finite differences. The architecture is Llama's (Touvron et al. 2023, Sec. 2):
//   x = E[token];  per layer: x += W_o attn(rope(W_q n1(x)), rope(W_k n1(x)), W_v n1(x))
//                             x += W_down (silu(W_gate n2(x)) * W_up n2(x))
//   logits = W_lm n(x)       with n(x) = x / sqrt(mean(x^2) + eps) * w (RMSNorm), causal softmax
// attention at scale 1/sqrt(head_dim), key/value heads shared by groups of query heads (GQA), and
// RoPE in Hugging Face's rotate-half convention, so weights load from a Llama/Qwen2 checkpoint.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "grpo/concepts.hpp"
#include "grpo/error.hpp"
#include "grpo/model/batch.hpp"
#include "grpo/model/parameters.hpp"

namespace grpo::model::reference {

/// What forward keeps for backward, per row and layer (every activation, nothing recomputed).
/// Matrices are row-major with one row per fed token.
template <class T>
struct activations {
  struct layer {
    std::vector<T> x, h1, q, k, v, attn, x_mid, h2, gate, up, m;
    std::vector<T> probs;  ///< [heads][tokens][tokens], zero above the diagonal
    std::vector<double> r1, r2;
  };
  struct row {
    std::vector<token_id> tokens;
    std::size_t prompt_length = 0, completion_length = 0;
    std::vector<layer> layers;
    std::vector<T> x_final, h_final;
    std::vector<double> r_final;
  };
  std::vector<row> rows;
  std::size_t max_completion = 0;
};

namespace detail {

/// y[o] = sum_i W[o, i] x[i] (+ b[o]) for a row-major W [out, in], summed in double.
template <class T>
void matvec(const T* w, const T* bias, const T* x, std::size_t out, std::size_t in, T* y) {
  for (std::size_t o = 0; o < out; ++o) {
    double total = bias != nullptr ? static_cast<double>(bias[o]) : 0.0;
    for (std::size_t i = 0; i < in; ++i) total += static_cast<double>(w[o * in + i]) * static_cast<double>(x[i]);
    y[o] = static_cast<T>(total);
  }
}

/// Backward of matvec: dx[i] += sum_o W[o, i] dy[o]; dW[o, i] += dy[o] x[i]; db[o] += dy[o].
template <class T>
void matvec_backward(const T* w, const T* x, const T* dy, std::size_t out, std::size_t in, T* dx, T* dw, T* db) {
  for (std::size_t i = 0; i < in; ++i) {
    double total = 0.0;
    for (std::size_t o = 0; o < out; ++o) total += static_cast<double>(w[o * in + i]) * static_cast<double>(dy[o]);
    dx[i] = static_cast<T>(static_cast<double>(dx[i]) + total);
  }
  for (std::size_t o = 0; o < out; ++o) {
    for (std::size_t i = 0; i < in; ++i)
      dw[o * in + i] =
          static_cast<T>(static_cast<double>(dw[o * in + i]) + static_cast<double>(dy[o]) * static_cast<double>(x[i]));
    if (db != nullptr) db[o] = static_cast<T>(static_cast<double>(db[o]) + static_cast<double>(dy[o]));
  }
}

/// RMSNorm: y = x r w with r = 1 / sqrt(mean(x^2) + eps); returns r.
template <class T>
double rms_norm(const T* x, const T* w, T* y, std::size_t n, double eps) {
  double squares = 0.0;
  for (std::size_t i = 0; i < n; ++i) squares += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  const double r = 1.0 / std::sqrt(squares / static_cast<double>(n) + eps);
  for (std::size_t i = 0; i < n; ++i) y[i] = static_cast<T>(static_cast<double>(x[i]) * r * static_cast<double>(w[i]));
  return r;
}

/// Backward of rms_norm: dx[j] += r w_j dy_j - x_j r^3 / n sum_i w_i dy_i x_i; dw[i] += dy_i x_i r.
template <class T>
void rms_norm_backward(const T* x, const T* w, const T* dy, double r, std::size_t n, T* dx, T* dw) {
  double projection = 0.0;
  for (std::size_t i = 0; i < n; ++i)
    projection += static_cast<double>(w[i]) * static_cast<double>(dy[i]) * static_cast<double>(x[i]);
  for (std::size_t j = 0; j < n; ++j) {
    const double xj = static_cast<double>(x[j]), dyj = static_cast<double>(dy[j]);
    dx[j] = static_cast<T>(static_cast<double>(dx[j]) + r * static_cast<double>(w[j]) * dyj -
                           xj * r * r * r / static_cast<double>(n) * projection);
    dw[j] = static_cast<T>(static_cast<double>(dw[j]) + dyj * xj * r);
  }
}

/// Rotate-half RoPE of every head of x at position pos: element i pairs with i + d/2 and the pair
/// turns by pos theta^(-2i/d); sign = -1 turns it back (the transpose, for the backward).
template <class T>
void rope(T* x, std::size_t heads, std::size_t head_dim, std::size_t pos, double theta, double sign) {
  const std::size_t half = head_dim / 2;
  for (std::size_t h = 0; h < heads; ++h)
    for (std::size_t i = 0; i < half; ++i) {
      const double angle =
          static_cast<double>(pos) * std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
      const double c = std::cos(angle), s = sign * std::sin(angle);
      T& a = x[h * head_dim + i];
      T& b = x[h * head_dim + i + half];
      const double a0 = static_cast<double>(a), b0 = static_cast<double>(b);
      a = static_cast<T>(a0 * c - b0 * s);
      b = static_cast<T>(b0 * c + a0 * s);
    }
}

inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

/// The parts of the architecture in plain size_t, and where the weights are.
template <class T>
struct model_view {
  explicit model_view(const parameters<T>& weights) : w(weights) {}

  const parameters<T>& w;
  const transformer_config& c = w.config();
  std::size_t d = static_cast<std::size_t>(c.hidden_size), f = static_cast<std::size_t>(c.intermediate_size);
  std::size_t vocab = static_cast<std::size_t>(c.vocab_size), hd = static_cast<std::size_t>(c.head_dim());
  std::size_t heads = static_cast<std::size_t>(c.num_attention_heads);
  std::size_t kv_heads = static_cast<std::size_t>(c.num_key_value_heads);
  std::size_t group = static_cast<std::size_t>(c.group_size());
  std::size_t qd = heads * hd, kvd = kv_heads * hd;
  double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim()));

  const T* at(std::size_t offset) const { return w.data() + offset; }
};

template <class T>
void forward_row(const model_view<T>& m, typename activations<T>::row& row) {
  const std::size_t n = row.tokens.size(), d = m.d, f = m.f, hd = m.hd, qd = m.qd, kvd = m.kvd;
  const parameter_layout& lay = m.w.layout();
  std::vector<T> x(n * d);
  for (std::size_t t = 0; t < n; ++t)
    std::copy_n(m.at(lay.embed_tokens()) + static_cast<std::size_t>(row.tokens[t]) * d, d, &x[t * d]);

  for (std::int64_t l = 0; l < m.c.num_hidden_layers; ++l) {
    const layer_offsets& o = lay.layer(l);
    const T* bias = o.qkv_bias == layer_offsets::npos ? nullptr : m.at(o.qkv_bias);
    typename activations<T>::layer a;
    a.x = x;
    a.h1.resize(n * d);
    a.r1.resize(n);
    a.q.resize(n * qd);
    a.k.resize(n * kvd);
    a.v.resize(n * kvd);
    for (std::size_t t = 0; t < n; ++t) {
      a.r1[t] = rms_norm(&x[t * d], m.at(o.input_layernorm), &a.h1[t * d], d, m.c.rms_norm_eps);
      const T* wq = m.at(o.qkv_proj);
      matvec(wq, bias, &a.h1[t * d], qd, d, &a.q[t * qd]);
      matvec(wq + qd * d, bias ? bias + qd : nullptr, &a.h1[t * d], kvd, d, &a.k[t * kvd]);
      matvec(wq + (qd + kvd) * d, bias ? bias + qd + kvd : nullptr, &a.h1[t * d], kvd, d, &a.v[t * kvd]);
      rope(&a.q[t * qd], m.heads, hd, t, m.c.rope_theta, 1.0);
      rope(&a.k[t * kvd], m.kv_heads, hd, t, m.c.rope_theta, 1.0);
    }
    // Query t of head h attends to keys j <= t of kv head h / group.
    a.probs.assign(m.heads * n * n, T(0));
    a.attn.assign(n * qd, T(0));
    for (std::size_t h = 0; h < m.heads; ++h) {
      const std::size_t g = h / m.group;
      for (std::size_t t = 0; t < n; ++t) {
        std::vector<double> p(t + 1);
        double max = -INFINITY, z = 0.0;
        for (std::size_t j = 0; j <= t; ++j) {
          double s = 0.0;
          for (std::size_t i = 0; i < hd; ++i)
            s += static_cast<double>(a.q[t * qd + h * hd + i]) * static_cast<double>(a.k[j * kvd + g * hd + i]);
          p[j] = s * m.scale;
          max = std::max(max, p[j]);
        }
        for (auto& value : p) z += (value = std::exp(value - max));
        for (std::size_t j = 0; j <= t; ++j) a.probs[(h * n + t) * n + j] = static_cast<T>(p[j] / z);
        for (std::size_t i = 0; i < hd; ++i) {
          double total = 0.0;
          for (std::size_t j = 0; j <= t; ++j) total += p[j] / z * static_cast<double>(a.v[j * kvd + g * hd + i]);
          a.attn[t * qd + h * hd + i] = static_cast<T>(total);
        }
      }
    }
    a.x_mid = x;
    a.h2.resize(n * d);
    a.r2.resize(n);
    a.gate.resize(n * f);
    a.up.resize(n * f);
    a.m.resize(n * f);
    std::vector<T> out(d);
    for (std::size_t t = 0; t < n; ++t) {
      matvec(m.at(o.o_proj), static_cast<const T*>(nullptr), &a.attn[t * qd], d, qd, out.data());
      for (std::size_t i = 0; i < d; ++i) a.x_mid[t * d + i] += out[i];
      a.r2[t] = rms_norm(&a.x_mid[t * d], m.at(o.post_attention_layernorm), &a.h2[t * d], d, m.c.rms_norm_eps);
      matvec(m.at(o.gate_up_proj), static_cast<const T*>(nullptr), &a.h2[t * d], f, d, &a.gate[t * f]);
      matvec(m.at(o.gate_up_proj) + f * d, static_cast<const T*>(nullptr), &a.h2[t * d], f, d, &a.up[t * f]);
      for (std::size_t i = 0; i < f; ++i) {
        const double g = static_cast<double>(a.gate[t * f + i]);
        a.m[t * f + i] = static_cast<T>(g * sigmoid(g) * static_cast<double>(a.up[t * f + i]));
      }
    }
    x = a.x_mid;
    for (std::size_t t = 0; t < n; ++t) {
      matvec(m.at(o.down_proj), static_cast<const T*>(nullptr), &a.m[t * f], d, f, out.data());
      for (std::size_t i = 0; i < d; ++i) x[t * d + i] += out[i];
    }
    row.layers.push_back(std::move(a));
  }
  row.x_final = x;
  row.h_final.resize(n * d);
  row.r_final.resize(n);
  for (std::size_t t = 0; t < n; ++t)
    row.r_final[t] = rms_norm(&x[t * d], m.at(lay.norm()), &row.h_final[t * d], d, m.c.rms_norm_eps);
}

template <class T>
void backward_row(const model_view<T>& m, const typename activations<T>::row& row, const T* d_logits, T* g) {
  const std::size_t n = row.tokens.size(), d = m.d, f = m.f, hd = m.hd, qd = m.qd, kvd = m.kvd;
  const parameter_layout& lay = m.w.layout();
  std::vector<T> dh(n * d, T(0)), dx(n * d, T(0));
  for (std::size_t i = 0; i < row.completion_length; ++i) {
    const std::size_t t = row.prompt_length - 1 + i;
    matvec_backward(m.at(lay.lm_head()), &row.h_final[t * d], d_logits + i * m.vocab, m.vocab, d, &dh[t * d],
                    g + lay.lm_head(), static_cast<T*>(nullptr));
  }
  for (std::size_t t = 0; t < n; ++t)
    rms_norm_backward(&row.x_final[t * d], m.at(lay.norm()), &dh[t * d], row.r_final[t], d, &dx[t * d], g + lay.norm());

  for (std::int64_t l = m.c.num_hidden_layers - 1; l >= 0; --l) {
    const layer_offsets& o = lay.layer(l);
    const auto& a = row.layers[static_cast<std::size_t>(l)];
    // The MLP. dx holds d loss / d (layer output); it becomes d loss / d x_mid.
    std::vector<T> dm(f), dgate(f), dup(f), dh2(d);
    for (std::size_t t = 0; t < n; ++t) {
      std::fill(dm.begin(), dm.end(), T(0));
      std::fill(dh2.begin(), dh2.end(), T(0));
      matvec_backward(m.at(o.down_proj), &a.m[t * f], &dx[t * d], d, f, dm.data(), g + o.down_proj,
                      static_cast<T*>(nullptr));
      for (std::size_t i = 0; i < f; ++i) {
        const double gt = static_cast<double>(a.gate[t * f + i]), u = static_cast<double>(a.up[t * f + i]);
        const double s = sigmoid(gt), dmi = static_cast<double>(dm[i]);
        dgate[i] = static_cast<T>(dmi * u * s * (1.0 + gt * (1.0 - s)));
        dup[i] = static_cast<T>(dmi * gt * s);
      }
      matvec_backward(m.at(o.gate_up_proj), &a.h2[t * d], dgate.data(), f, d, dh2.data(), g + o.gate_up_proj,
                      static_cast<T*>(nullptr));
      matvec_backward(m.at(o.gate_up_proj) + f * d, &a.h2[t * d], dup.data(), f, d, dh2.data(),
                      g + o.gate_up_proj + f * d, static_cast<T*>(nullptr));
      rms_norm_backward(&a.x_mid[t * d], m.at(o.post_attention_layernorm), dh2.data(), a.r2[t], d, &dx[t * d],
                        g + o.post_attention_layernorm);
    }
    // Attention. Every token's d attn first (query t depends on keys j <= t).
    std::vector<T> dattn(n * qd, T(0));
    for (std::size_t t = 0; t < n; ++t)
      matvec_backward(m.at(o.o_proj), &a.attn[t * qd], &dx[t * d], d, qd, &dattn[t * qd], g + o.o_proj,
                      static_cast<T*>(nullptr));
    std::vector<double> dq(n * qd, 0.0), dk(n * kvd, 0.0), dv(n * kvd, 0.0);
    for (std::size_t h = 0; h < m.heads; ++h) {
      const std::size_t kv = h / m.group;
      for (std::size_t t = 0; t < n; ++t) {
        const T* p = &a.probs[(h * n + t) * n];
        // dp_j = dattn . v_j; ds_j = p_j (dp_j - sum_i p_i dp_i) scale.
        std::vector<double> dp(t + 1);
        double weighted = 0.0;
        for (std::size_t j = 0; j <= t; ++j) {
          for (std::size_t i = 0; i < hd; ++i)
            dp[j] += static_cast<double>(dattn[t * qd + h * hd + i]) * static_cast<double>(a.v[j * kvd + kv * hd + i]);
          weighted += static_cast<double>(p[j]) * dp[j];
        }
        for (std::size_t j = 0; j <= t; ++j) {
          const double pj = static_cast<double>(p[j]), ds = pj * (dp[j] - weighted) * m.scale;
          for (std::size_t i = 0; i < hd; ++i) {
            dq[t * qd + h * hd + i] += ds * static_cast<double>(a.k[j * kvd + kv * hd + i]);
            dk[j * kvd + kv * hd + i] += ds * static_cast<double>(a.q[t * qd + h * hd + i]);
            dv[j * kvd + kv * hd + i] += pj * static_cast<double>(dattn[t * qd + h * hd + i]);
          }
        }
      }
    }
    // Through RoPE (turned back), the q/k/v projections and the first norm; dx becomes
    // d loss / d (layer input).
    std::vector<T> dqkv(qd + 2 * kvd), dh1(d);
    T* db = o.qkv_bias == layer_offsets::npos ? nullptr : g + o.qkv_bias;
    for (std::size_t t = 0; t < n; ++t) {
      for (std::size_t i = 0; i < qd; ++i) dqkv[i] = static_cast<T>(dq[t * qd + i]);
      for (std::size_t i = 0; i < kvd; ++i) {
        dqkv[qd + i] = static_cast<T>(dk[t * kvd + i]);
        dqkv[qd + kvd + i] = static_cast<T>(dv[t * kvd + i]);
      }
      rope(dqkv.data(), m.heads, hd, t, m.c.rope_theta, -1.0);
      rope(dqkv.data() + qd, m.kv_heads, hd, t, m.c.rope_theta, -1.0);
      std::fill(dh1.begin(), dh1.end(), T(0));
      matvec_backward(m.at(o.qkv_proj), &a.h1[t * d], dqkv.data(), qd + 2 * kvd, d, dh1.data(), g + o.qkv_proj, db);
      rms_norm_backward(&a.x[t * d], m.at(o.input_layernorm), dh1.data(), a.r1[t], d, &dx[t * d],
                        g + o.input_layernorm);
    }
  }
  for (std::size_t t = 0; t < n; ++t) {
    T* embedding = g + lay.embed_tokens() + static_cast<std::size_t>(row.tokens[t]) * d;
    for (std::size_t i = 0; i < d; ++i)
      embedding[i] = static_cast<T>(static_cast<double>(embedding[i]) + static_cast<double>(dx[t * d + i]));
  }
}

}  // namespace detail

/// Logits [R * T, V] (row-major, flattened) of every completion position of `batch`; padding rows
/// (beyond a row's completion) are zero. With `saved`, keeps what backward needs.
/// \throws what plan_batch throws (shape_error naming "batch", "batch.prompts" or "batch.completions").
template <class T>
std::vector<T> forward(const parameters<T>& w, const sequence_batch& batch, activations<T>* saved = nullptr) {
  const detail::model_view<T> m(w);
  const batch_plan plan = plan_batch(m.c, batch);
  const auto rows = static_cast<std::size_t>(plan.rows), max_completion = static_cast<std::size_t>(plan.max_completion);
  std::vector<T> logits(rows * max_completion * m.vocab, T(0));
  activations<T> local;
  local.max_completion = max_completion;
  for (std::size_t r = 0; r < rows; ++r) {
    typename activations<T>::row row;
    row.prompt_length = static_cast<std::size_t>(plan.prompt_length[r]);
    row.completion_length = static_cast<std::size_t>(plan.completion_length[r]);
    const auto first = plan.input.begin() + plan.offset[r];
    row.tokens.assign(first, first + plan.length[r]);
    detail::forward_row(m, row);
    for (std::size_t i = 0; i < row.completion_length; ++i)
      detail::matvec(m.at(w.layout().lm_head()), static_cast<const T*>(nullptr),
                     &row.h_final[(row.prompt_length - 1 + i) * m.d], m.vocab, m.d,
                     &logits[(r * max_completion + i) * m.vocab]);
    local.rows.push_back(std::move(row));
  }
  if (saved != nullptr) *saved = std::move(local);
  return logits;
}

/// Accumulates into `grads` (same layout as the weights) the gradient of sum(d_logits * logits)
/// for the logits of the forward that filled `saved`. d_logits is [R * T, V]; padding rows are
/// ignored.
/// \throws shape_error naming "grads" (another config) or "d_logits" (another size).
template <class T>
void backward(const parameters<T>& w, const activations<T>& saved, std::span<const T> d_logits, parameters<T>& grads) {
  const detail::model_view<T> m(w);
  GRPO_CHECK(grads.config() == m.c, shape_error, "grads: the config differs from the weights'");
  const std::size_t expected = saved.rows.size() * saved.max_completion * m.vocab;
  GRPO_CHECK(d_logits.size() == expected, shape_error, "d_logits: expected ", expected, " values ([",
             saved.rows.size() * saved.max_completion, ", ", m.vocab, "]), got ", d_logits.size());
  for (std::size_t r = 0; r < saved.rows.size(); ++r)
    detail::backward_row(m, saved.rows[r], d_logits.data() + r * saved.max_completion * m.vocab, grads.data());
}

}  // namespace grpo::model::reference
