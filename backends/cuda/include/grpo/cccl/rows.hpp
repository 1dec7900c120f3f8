// SPDX-License-Identifier: Apache-2.0
// grpo/cccl/rows.hpp: the row-wise softmax primitives of the logits_backend concept as Thrust functors, one
// call per logits row looping over the vocabulary, so they run on CPP, OMP (rows in parallel) and CUDA. They
// are the reference backend's loops transcribed (double arithmetic, online log-sum-exp, -inf entries skipped),
// so on the host they match it bit for bit. Nothing N x V is allocated: the divergence recomputes its
// per-entry derivative in a third pass instead of keeping it. On CUDA the fused kernels of kernels/ replace them.
#pragma once

#include <cmath>
#include <cstdint>

#include "grpo/cccl/config.hpp"
#include "grpo/cccl/device_error.hpp"

namespace grpo::cccl {
inline namespace GRPO_CCCL_SYSTEM_NAMESPACE {

namespace detail {

/// log sum_v exp(scale z_v) with a running maximum: no exp overflows, and a -inf entry (masked out,
/// probability 0) is skipped rather than turned into exp(-inf - -inf) = NaN. NaN entries propagate.
template <class T>
GRPO_CCCL_HOST_DEVICE double row_logsumexp(const T* z, std::int64_t vocab, double scale) {
  double max = -INFINITY, total = 0.0;
  for (std::int64_t v = 0; v < vocab; ++v) {
    const double x = scale * static_cast<double>(z[v]);
    if (x == -INFINITY) continue;
    if (x > max) {
      total = total * ::exp(max - x) + 1.0;
      max = x;
    } else {
      total += ::exp(x - max);
    }
  }
  return max == -INFINITY ? -INFINITY : max + ::log(total);
}

/// One vocabulary entry of the divergence between teacher P and student Q (backend.hpp): its loss term and
/// d term / d log q. beta = 0: KL(P||Q); beta = 1: KL(Q||P); otherwise the generalized JSD, with log m
/// from a two-term log-sum-exp so that a tiny p or q does not underflow the mixture.
GRPO_CCCL_HOST_DEVICE inline void divergence_entry(double beta, double log_p, double log_q, double& term, double& d) {
  const double q = ::exp(log_q), p = ::exp(log_p);
  if (beta == 0.0) {
    term = p > 0.0 ? p * (log_p - log_q) : 0.0;
    d = -p;
  } else if (beta == 1.0) {
    term = q > 0.0 ? q * (log_q - log_p) : 0.0;
    d = q > 0.0 ? q * (log_q - log_p) + q : 0.0;
  } else if (p == 0.0 && q == 0.0) {
    term = 0.0;
    d = 0.0;
  } else {
    const double a = ::log(beta) + log_p, b = ::log1p(-beta) + log_q;
    const double hi = a > b ? a : b;
    const double log_m = hi + ::log(::exp(a - hi) + ::exp(b - hi));
    term = (p > 0.0 ? beta * p * (log_p - log_m) : 0.0) + (q > 0.0 ? (1.0 - beta) * q * (log_q - log_m) : 0.0);
    d = q > 0.0 ? (1.0 - beta) * q * (log_q - log_m) : 0.0;
  }
}

}  // namespace detail

namespace fn {

/// {lse, entropy, logprob} of row n of softmax(scale z). A target id out of range is reported to the error
/// slot and gives logprob NaN.
template <class T>
struct row_softmax_stats {
  const T* z;
  const std::int64_t* ids;
  std::int64_t vocab;
  double scale;
  T* lse;
  T* entropy;
  T* logprob;
  std::int64_t* error_slot;
  GRPO_CCCL_HOST_DEVICE void operator()(std::int64_t n) const {
    const T* row = z + n * vocab;
    const double l = detail::row_logsumexp(row, vocab, scale);
    // -sum p log p with log p = s z - lse, not lse - sum p s z (which scales p's rounding error by |z|).
    double h = 0.0;
    for (std::int64_t v = 0; v < vocab; ++v) {
      const double log_p = scale * static_cast<double>(row[v]) - l;
      if (log_p > -INFINITY) h -= ::exp(log_p) * log_p;
    }
    const std::int64_t id = ids[n];
    lse[n] = static_cast<T>(l);
    entropy[n] = static_cast<T>(h);
    if (id < 0 || id >= vocab) {
      detail::report_index_error(error_slot, detail::device_error_row_softmax_stats, id, vocab);
      logprob[n] = static_cast<T>(NAN);
    } else {
      logprob[n] = static_cast<T>(scale * static_cast<double>(row[id]) - l);
    }
  }
};

/// Element i = n V + v of d/dz sum_n (g_logprob logprob + g_entropy entropy):
///   scale [ g_logprob (1[v = id] - p_v) - g_entropy p_v (log p_v + H) ].
/// Reads z[i] only, so the output may be the logits themselves.
template <class T>
struct row_softmax_gradient {
  const T* z;
  const std::int64_t* ids;
  std::int64_t vocab;
  double scale;
  const T* lse;
  const T* entropy;
  const T* g_logprob;
  const T* g_entropy;
  GRPO_CCCL_HOST_DEVICE T operator()(std::int64_t i) const {
    const std::int64_t n = i / vocab, v = i % vocab;
    const double l = static_cast<double>(lse[n]), h = static_cast<double>(entropy[n]);
    const double gl = static_cast<double>(g_logprob[n]), ge = static_cast<double>(g_entropy[n]);
    const double log_p = scale * static_cast<double>(z[i]) - l;
    const double p = ::exp(log_p);
    const double d = gl * ((v == ids[n] ? 1.0 : 0.0) - p) - (p > 0.0 ? ge * p * (log_p + h) : 0.0);
    return static_cast<T>(scale * d);
  }
};

/// loss[n] = D_beta(P_n, Q_n) and out row n = w_n d loss_n / d zs_n, in three passes over the row: the two
/// log-sum-exps, the loss with sum_u dlogq_u, then the gradient dlogq_v - q_v sum_u dlogq_u with dlogq_v
/// recomputed. Each pass reads zs[v] before writing out[v], so out may be the student logits.
template <class T>
struct row_divergence {
  const T* student;
  const T* teacher;
  std::int64_t vocab;
  double scale;
  double beta;
  const T* weight;
  T* loss;
  T* out;
  GRPO_CCCL_HOST_DEVICE void operator()(std::int64_t n) const {
    const T* zs = student + n * vocab;
    const T* zt = teacher + n * vocab;
    T* g = out + n * vocab;
    const double lse_s = detail::row_logsumexp(zs, vocab, scale), lse_t = detail::row_logsumexp(zt, vocab, scale);
    double total = 0.0, dsum = 0.0;
    for (std::int64_t v = 0; v < vocab; ++v) {
      double term = 0.0, d = 0.0;
      detail::divergence_entry(beta, scale * static_cast<double>(zt[v]) - lse_t,
                               scale * static_cast<double>(zs[v]) - lse_s, term, d);
      total += term;
      dsum += d;
    }
    loss[n] = static_cast<T>(total);
    const double w = static_cast<double>(weight[n]);
    for (std::int64_t v = 0; v < vocab; ++v) {
      const double log_q = scale * static_cast<double>(zs[v]) - lse_s;
      double term = 0.0, d = 0.0;
      detail::divergence_entry(beta, scale * static_cast<double>(zt[v]) - lse_t, log_q, term, d);
      g[v] = static_cast<T>(w * scale * (d - ::exp(log_q) * dsum));
    }
  }
};

/// Forward KL to a teacher known by K (id, log-prob) pairs per row:
///   loss = sum_j p_j (log p_j - log q_{id_j}),  d loss / d(s z_v) = (sum_j p_j) q_v - sum_j p_j 1[v = id_j].
/// The student's logits at the teacher ids are copied to `picked` [N, K] before the row of out is written (out
/// may alias them); the gradient at each distinct teacher id is then computed whole in double and rounded once,
/// as the reference does. An id out of range is reported, makes the row's loss NaN and is left out of the
/// gradient.
template <class T>
struct row_sparse_forward_kl {
  const T* student;
  const std::int64_t* teacher_ids;
  const T* teacher_logprobs;
  std::int64_t vocab;
  std::int64_t k;
  double scale;
  const T* weight;
  T* loss;
  T* out;
  T* picked;
  std::int64_t* error_slot;
  GRPO_CCCL_HOST_DEVICE void operator()(std::int64_t n) const {
    const T* zs = student + n * vocab;
    const std::int64_t* ids = teacher_ids + n * k;
    const T* logp = teacher_logprobs + n * k;
    T* g = out + n * vocab;
    T* at_ids = picked + n * k;
    const double lse_s = detail::row_logsumexp(zs, vocab, scale);
    const double w = static_cast<double>(weight[n]);
    double mass = 0.0, total = 0.0;
    bool valid = true;
    for (std::int64_t j = 0; j < k; ++j) {
      const std::int64_t id = ids[j];
      if (id < 0 || id >= vocab) {
        detail::report_index_error(error_slot, detail::device_error_row_sparse_forward_kl, id, vocab);
        valid = false;
        continue;
      }
      at_ids[j] = zs[id];
      const double log_p = static_cast<double>(logp[j]), p = ::exp(log_p);
      mass += p;
      if (p > 0.0) total += p * (log_p - (scale * static_cast<double>(zs[id]) - lse_s));
    }
    loss[n] = valid ? static_cast<T>(total) : static_cast<T>(NAN);
    for (std::int64_t v = 0; v < vocab; ++v)
      g[v] = static_cast<T>(w * scale * mass * ::exp(scale * static_cast<double>(zs[v]) - lse_s));
    for (std::int64_t j = 0; j < k; ++j) {
      const std::int64_t id = ids[j];
      if (id < 0 || id >= vocab) continue;
      bool first = true;
      for (std::int64_t i = 0; i < j && first; ++i) first = ids[i] != id;
      if (!first) continue;
      double grad = w * scale * mass * ::exp(scale * static_cast<double>(at_ids[j]) - lse_s);
      for (std::int64_t i = j; i < k; ++i)
        if (ids[i] == id) grad -= w * scale * ::exp(static_cast<double>(logp[i]));
      g[id] = static_cast<T>(grad);
    }
  }
};

}  // namespace fn
}  // namespace GRPO_CCCL_SYSTEM_NAMESPACE
}  // namespace grpo::cccl
