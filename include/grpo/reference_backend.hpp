// SPDX-License-Identifier: Apache-2.0
// grpo/reference_backend.hpp: the reference backend, the oracle every other backend is tested
// against. Plain sequential loops over std::vector<T>; every elementwise operation is evaluated in
// double and rounded to T once; every reduction accumulates in double. It is meant to be short and
// obviously right, not fast.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "grpo/backend.hpp"
#include "grpo/error.hpp"

namespace grpo {

template <class T>
struct reference_tensor {
  grpo::shape shape;
  std::vector<T> data;
};

struct reference_index {
  grpo::shape shape;
  std::vector<std::int64_t> data;
};

/// Reference backend storing T (float or double). Stateless: copies are free.
template <class T = double>
struct reference_backend {
  static_assert(std::is_floating_point_v<T>, "reference_backend<T>: T must be float or double");
  using value_type = T;
  using tensor_type = reference_tensor<T>;
  using index_type = reference_index;
};

namespace detail {

inline void check_rank(const shape& s, const char* what) {
  GRPO_CHECK(s.rank >= 0 && s.rank <= 2 && s.dims[0] >= 0 && s.dims[1] >= 0, shape_error, what,
             ": invalid shape ", to_string(s));
}

inline void check_same_shape(const shape& a, const shape& b, const char* op) {
  GRPO_CHECK(a == b, shape_error, op, ": shapes differ, ", to_string(a), " vs ", to_string(b));
}

inline double apply(unary_op op, double x) {
  switch (op) {
    case unary_op::neg: return -x;
    case unary_op::exp: return std::exp(x);
    case unary_op::expm1: return std::expm1(x);
    case unary_op::log: return std::log(x);
    case unary_op::log1p: return std::log1p(x);
    case unary_op::abs: return std::fabs(x);
    case unary_op::square: return x * x;
    case unary_op::sqrt: return std::sqrt(x);
    case unary_op::sign: return static_cast<double>((x > 0) - (x < 0));
    case unary_op::reciprocal: return 1.0 / x;
    case unary_op::is_nan: return std::isnan(x) ? 1.0 : 0.0;
    case unary_op::is_finite: return std::isfinite(x) ? 1.0 : 0.0;
    case unary_op::sigmoid: return 1.0 / (1.0 + std::exp(-x));
  }
  fail<error>("unary: unknown operation");
}

inline double apply(binary_op op, double a, double b) {
  switch (op) {
    case binary_op::add: return a + b;
    case binary_op::sub: return a - b;
    case binary_op::mul: return a * b;
    case binary_op::div: return a / b;
    case binary_op::minimum: return b < a ? b : a;
    case binary_op::maximum: return a < b ? b : a;
    case binary_op::less: return a < b ? 1.0 : 0.0;
    case binary_op::less_equal: return a <= b ? 1.0 : 0.0;
    case binary_op::greater: return a > b ? 1.0 : 0.0;
    case binary_op::greater_equal: return a >= b ? 1.0 : 0.0;
    case binary_op::equal: return a == b ? 1.0 : 0.0;
  }
  fail<error>("binary: unknown operation");
}

template <class T, class F>
reference_tensor<T> generate(const shape& s, F&& f) {
  reference_tensor<T> out{s, std::vector<T>(static_cast<std::size_t>(s.numel()))};
  for (std::size_t i = 0; i < out.data.size(); ++i) out.data[i] = static_cast<T>(f(i));
  return out;
}

inline void check_index(std::int64_t id, std::int64_t bound, const char* what) {
  GRPO_CHECK(id >= 0 && id < bound, shape_error, what, ": index ", id, " out of range [0, ", bound, ")");
}

}  // namespace detail

template <class T>
shape shape_of(const reference_backend<T>&, const reference_tensor<T>& t) {
  return t.shape;
}

template <class T>
reference_tensor<T> upload(const reference_backend<T>&, std::span<const double> host, shape s) {
  detail::check_rank(s, "upload");
  GRPO_CHECK(static_cast<std::int64_t>(host.size()) == s.numel(), shape_error, "upload: ", host.size(),
             " values for shape ", to_string(s));
  return detail::generate<T>(s, [&](std::size_t i) { return host[i]; });
}

template <class T>
std::vector<double> download(const reference_backend<T>&, const reference_tensor<T>& t) {
  return std::vector<double>(t.data.begin(), t.data.end());
}

template <class T>
reference_tensor<T> fill(const reference_backend<T>&, shape s, double value) {
  detail::check_rank(s, "fill");
  return detail::generate<T>(s, [&](std::size_t) { return value; });
}

template <class T>
reference_index upload_index(const reference_backend<T>&, std::span<const std::int64_t> host, shape s) {
  detail::check_rank(s, "upload_index");
  GRPO_CHECK(static_cast<std::int64_t>(host.size()) == s.numel(), shape_error, "upload_index: ", host.size(),
             " values for shape ", to_string(s));
  return {s, std::vector<std::int64_t>(host.begin(), host.end())};
}

template <class T>
shape index_shape_of(const reference_backend<T>&, const reference_index& idx) {
  return idx.shape;
}

template <class T>
std::vector<std::int64_t> download_index(const reference_backend<T>&, const reference_index& idx) {
  return idx.data;
}

template <class T>
reference_tensor<T> unary(const reference_backend<T>&, unary_op op, const reference_tensor<T>& t) {
  return detail::generate<T>(t.shape, [&](std::size_t i) { return detail::apply(op, t.data[i]); });
}

template <class T>
reference_tensor<T> binary(const reference_backend<T>&, binary_op op, const reference_tensor<T>& a,
                           const reference_tensor<T>& b) {
  detail::check_same_shape(a.shape, b.shape, "binary");
  return detail::generate<T>(a.shape, [&](std::size_t i) { return detail::apply(op, a.data[i], b.data[i]); });
}

template <class T>
reference_tensor<T> binary(const reference_backend<T>&, binary_op op, const reference_tensor<T>& a, double b) {
  return detail::generate<T>(a.shape, [&](std::size_t i) { return detail::apply(op, a.data[i], b); });
}

template <class T>
reference_tensor<T> binary(const reference_backend<T>&, binary_op op, double a, const reference_tensor<T>& b) {
  return detail::generate<T>(b.shape, [&](std::size_t i) { return detail::apply(op, a, b.data[i]); });
}

template <class T>
reference_tensor<T> select(const reference_backend<T>&, const reference_tensor<T>& cond, const reference_tensor<T>& a,
                           const reference_tensor<T>& b) {
  detail::check_same_shape(cond.shape, a.shape, "select");
  detail::check_same_shape(a.shape, b.shape, "select");
  return detail::generate<T>(a.shape, [&](std::size_t i) { return cond.data[i] != T(0) ? a.data[i] : b.data[i]; });
}

template <class T>
reference_tensor<T> sum(const reference_backend<T>&, const reference_tensor<T>& t) {
  double total = 0.0;
  for (T v : t.data) total += static_cast<double>(v);
  return {shape::scalar(), {static_cast<T>(total)}};
}

template <class T>
reference_tensor<T> sum_rows(const reference_backend<T>&, const reference_tensor<T>& t) {
  GRPO_CHECK(t.shape.rank == 2, shape_error, "sum_rows: expected a rank-2 tensor, got ", to_string(t.shape));
  const auto rows = t.shape.dims[0], cols = t.shape.dims[1];
  reference_tensor<T> out{shape::vector(rows), std::vector<T>(static_cast<std::size_t>(rows))};
  for (std::int64_t r = 0; r < rows; ++r) {
    double total = 0.0;
    for (std::int64_t c = 0; c < cols; ++c) total += static_cast<double>(t.data[static_cast<std::size_t>(r * cols + c)]);
    out.data[static_cast<std::size_t>(r)] = static_cast<T>(total);
  }
  return out;
}

template <class T>
reference_tensor<T> sum_segments(const reference_backend<T>&, const reference_tensor<T>& t, const reference_index& ids,
                                 std::int64_t segments) {
  GRPO_CHECK(t.shape.rank == 1, shape_error, "sum_segments: values must be rank 1, got ", to_string(t.shape));
  GRPO_CHECK(ids.shape == t.shape, shape_error, "sum_segments: ids ", to_string(ids.shape), " vs values ",
             to_string(t.shape));
  GRPO_CHECK(segments >= 0, shape_error, "sum_segments: negative segment count ", segments);
  std::vector<double> totals(static_cast<std::size_t>(segments), 0.0);
  for (std::size_t i = 0; i < t.data.size(); ++i) {
    detail::check_index(ids.data[i], segments, "sum_segments");
    totals[static_cast<std::size_t>(ids.data[i])] += static_cast<double>(t.data[i]);
  }
  return detail::generate<T>(shape::vector(segments), [&](std::size_t s) { return totals[s]; });
}

template <class T>
reference_tensor<T> gather(const reference_backend<T>&, const reference_tensor<T>& t, const reference_index& ids) {
  GRPO_CHECK(t.shape.rank == 1 && ids.shape.rank == 1, shape_error, "gather: expected rank-1 values and ids, got ",
             to_string(t.shape), " and ", to_string(ids.shape));
  return detail::generate<T>(ids.shape, [&](std::size_t i) {
    detail::check_index(ids.data[i], t.shape.dims[0], "gather");
    return t.data[static_cast<std::size_t>(ids.data[i])];
  });
}

template <class T>
reference_tensor<T> expand_rows(const reference_backend<T>&, const reference_tensor<T>& t, std::int64_t cols) {
  GRPO_CHECK(t.shape.rank == 1, shape_error, "expand_rows: expected a rank-1 tensor, got ", to_string(t.shape));
  GRPO_CHECK(cols >= 0, shape_error, "expand_rows: negative column count ", cols);
  return detail::generate<T>(shape::matrix(t.shape.dims[0], cols), [&](std::size_t i) {
    return t.data[i / static_cast<std::size_t>(cols)];
  });
}

template <class T>
reference_tensor<T> reshape(const reference_backend<T>&, const reference_tensor<T>& t, shape s) {
  detail::check_rank(s, "reshape");
  GRPO_CHECK(s.numel() == t.shape.numel(), shape_error, "reshape: cannot view ", to_string(t.shape), " as ",
             to_string(s));
  return {s, t.data};
}

template <class T>
reference_tensor<T> shift_left(const reference_backend<T>&, const reference_tensor<T>& t) {
  GRPO_CHECK(t.shape.rank == 2, shape_error, "shift_left: expected a rank-2 tensor, got ", to_string(t.shape));
  const auto cols = static_cast<std::size_t>(t.shape.dims[1]);
  return detail::generate<T>(t.shape, [&](std::size_t i) { return (i % cols) + 1 < cols ? t.data[i + 1] : T(0); });
}

template <class T>
reference_tensor<T> reverse_scan_rows(const reference_backend<T>&, const reference_tensor<T>& x,
                                      const reference_tensor<T>& decay) {
  GRPO_CHECK(x.shape.rank == 2, shape_error, "reverse_scan_rows: expected a rank-2 tensor, got ", to_string(x.shape));
  detail::check_same_shape(x.shape, decay.shape, "reverse_scan_rows");
  reference_tensor<T> out = x;
  const auto rows = x.shape.dims[0], cols = x.shape.dims[1];
  for (std::int64_t r = 0; r < rows; ++r) {
    double next = 0.0;
    for (std::int64_t c = cols - 1; c >= 0; --c) {
      const auto i = static_cast<std::size_t>(r * cols + c);
      next = static_cast<double>(x.data[i]) + static_cast<double>(decay.data[i]) * next;
      out.data[i] = static_cast<T>(next);
    }
  }
  return out;
}

namespace detail {

// One logits row viewed as doubles, scaled by the inverse temperature.
template <class T>
struct scaled_row {
  const T* z;
  std::int64_t size;
  double scale;
  double operator[](std::int64_t v) const { return scale * static_cast<double>(z[v]); }
};

// log sum_v exp(row[v]), in one pass with a running maximum (online log-sum-exp), so no exp
// overflows whatever the magnitude of the logits.
template <class Row>
double row_logsumexp(const Row& row) {
  double max = -INFINITY, total = 0.0;
  for (std::int64_t v = 0; v < row.size; ++v) {
    const double x = row[v];
    if (x == -INFINITY) continue;  // a masked-out entry: probability 0, and exp(-inf - -inf) would be NaN
    if (x > max) {
      total = total * std::exp(max - x) + 1.0;
      max = x;
    } else {
      total += std::exp(x - max);
    }
  }
  return max == -INFINITY ? -INFINITY : max + std::log(total);
}

// `out` of a row primitive: written in place when it already has the logits' shape (it may be
// the logits tensor itself), otherwise allocated.
template <class T>
void prepare_output(reference_tensor<T>& out, const shape& s) {
  if (out.shape != s || out.data.size() != static_cast<std::size_t>(s.numel()))
    out = reference_tensor<T>{s, std::vector<T>(static_cast<std::size_t>(s.numel()))};
}

template <class T>
void check_logits(const reference_tensor<T>& z, const char* what) {
  GRPO_CHECK(z.shape.rank == 2 && z.shape.dims[1] > 0, shape_error, what, ": logits must be [N, V] with V > 0, got ",
             to_string(z.shape));
}

}  // namespace detail

template <class T>
softmax_row_stats<reference_tensor<T>> row_softmax_stats(const reference_backend<T>&, const reference_tensor<T>& z,
                                                         const reference_index& ids, double inv_temperature) {
  detail::check_logits(z, "row_softmax_stats");
  const auto rows = z.shape.dims[0], vocab = z.shape.dims[1];
  GRPO_CHECK(ids.shape == shape::vector(rows), shape_error, "row_softmax_stats: ids ", to_string(ids.shape),
             " vs logits ", to_string(z.shape));
  softmax_row_stats<reference_tensor<T>> out;
  std::vector<double> lse(static_cast<std::size_t>(rows)), entropy(lse.size()), logprob(lse.size());
  for (std::int64_t n = 0; n < rows; ++n) {
    const detail::scaled_row<T> row{z.data.data() + n * vocab, vocab, inv_temperature};
    const double l = detail::row_logsumexp(row);
    // H = -sum_v p_v log p_v with log p_v = s z_v - lse. Not lse - sum_v p_v s z_v: that form
    // multiplies the rounding error of p by |z|, 1e-8 absolute at logits of 1e4.
    double entropy_n = 0.0;
    for (std::int64_t v = 0; v < vocab; ++v) {
      const double log_p = row[v] - l;
      if (log_p > -INFINITY) entropy_n -= std::exp(log_p) * log_p;
    }
    const auto id = ids.data[static_cast<std::size_t>(n)];
    detail::check_index(id, vocab, "row_softmax_stats");
    lse[static_cast<std::size_t>(n)] = l;
    entropy[static_cast<std::size_t>(n)] = entropy_n;
    logprob[static_cast<std::size_t>(n)] = row[id] - l;
  }
  const auto as_tensor = [&](const std::vector<double>& v) {
    return detail::generate<T>(shape::vector(rows), [&](std::size_t i) { return v[i]; });
  };
  return {as_tensor(lse), as_tensor(entropy), as_tensor(logprob)};
}

template <class T>
void row_softmax_backward(const reference_backend<T>&, const reference_tensor<T>& z, const reference_index& ids,
                          double inv_temperature, const reference_tensor<T>& lse, const reference_tensor<T>& entropy,
                          const reference_tensor<T>& g_logprob, const reference_tensor<T>& g_entropy,
                          reference_tensor<T>& out) {
  detail::check_logits(z, "row_softmax_backward");
  const auto rows = z.shape.dims[0], vocab = z.shape.dims[1];
  for (const auto* t : {&lse, &entropy, &g_logprob, &g_entropy})
    GRPO_CHECK(t->shape == shape::vector(rows), shape_error, "row_softmax_backward: row vector ", to_string(t->shape),
               " vs logits ", to_string(z.shape));
  GRPO_CHECK(ids.shape == shape::vector(rows), shape_error, "row_softmax_backward: ids ", to_string(ids.shape),
             " vs logits ", to_string(z.shape));
  detail::prepare_output(out, z.shape);
  for (std::int64_t n = 0; n < rows; ++n) {
    const auto r = static_cast<std::size_t>(n);
    const double l = lse.data[r], h = entropy.data[r], gl = g_logprob.data[r], ge = g_entropy.data[r];
    const auto id = ids.data[r];
    for (std::int64_t v = 0; v < vocab; ++v) {
      const auto i = static_cast<std::size_t>(n * vocab + v);
      const double log_p = inv_temperature * static_cast<double>(z.data[i]) - l;
      const double p = std::exp(log_p);
      // d log p[id] / d(s z_v) = 1[v = id] - p_v;  d H / d(s z_v) = -p_v (log p_v + H).
      const double d = gl * ((v == id ? 1.0 : 0.0) - p) - (p > 0.0 ? ge * p * (log_p + h) : 0.0);
      out.data[i] = static_cast<T>(inv_temperature * d);
    }
  }
}

template <class T>
reference_tensor<T> row_divergence(const reference_backend<T>&, const reference_tensor<T>& student,
                                   const reference_tensor<T>& teacher, double inv_temperature, double beta,
                                   const reference_tensor<T>& weight, reference_tensor<T>& out) {
  detail::check_logits(student, "row_divergence");
  detail::check_same_shape(student.shape, teacher.shape, "row_divergence");
  const auto rows = student.shape.dims[0], vocab = student.shape.dims[1];
  GRPO_CHECK(weight.shape == shape::vector(rows), shape_error, "row_divergence: weight ", to_string(weight.shape),
             " vs logits ", to_string(student.shape));
  GRPO_CHECK(beta >= 0.0 && beta <= 1.0, config_error, "row_divergence: beta must be in [0, 1], got ", beta);
  detail::prepare_output(out, student.shape);
  std::vector<double> loss(static_cast<std::size_t>(rows));
  std::vector<double> dlogq(static_cast<std::size_t>(vocab));
  for (std::int64_t n = 0; n < rows; ++n) {
    const detail::scaled_row<T> zs{student.data.data() + n * vocab, vocab, inv_temperature};
    const detail::scaled_row<T> zt{teacher.data.data() + n * vocab, vocab, inv_temperature};
    const double lse_s = detail::row_logsumexp(zs), lse_t = detail::row_logsumexp(zt);
    // Loss as a function of log q; its derivative dlogq_v, then the chain rule through log-softmax:
    // d/d(s zs_v) = dlogq_v - q_v sum_u dlogq_u.
    double total = 0.0, dsum = 0.0;
    for (std::int64_t v = 0; v < vocab; ++v) {
      const double log_q = zs[v] - lse_s, log_p = zt[v] - lse_t;
      const double q = std::exp(log_q), p = std::exp(log_p);
      double term = 0.0, d = 0.0;
      if (beta == 0.0) {  // KL(P||Q) = sum p (log p - log q)
        term = p > 0.0 ? p * (log_p - log_q) : 0.0;
        d = -p;
      } else if (beta == 1.0) {  // KL(Q||P) = sum q (log q - log p)
        term = q > 0.0 ? q * (log_q - log_p) : 0.0;
        d = q > 0.0 ? q * (log_q - log_p) + q : 0.0;
      } else if (p == 0.0 && q == 0.0) {  // an entry both distributions exclude
        term = 0.0;
        d = 0.0;
      } else {  // beta KL(P||M) + (1-beta) KL(Q||M), log m by log-sum-exp of the two weighted terms
        const double a = std::log(beta) + log_p, b = std::log1p(-beta) + log_q;
        const double hi = std::max(a, b);
        const double log_m = hi + std::log(std::exp(a - hi) + std::exp(b - hi));
        term = (p > 0.0 ? beta * p * (log_p - log_m) : 0.0) + (q > 0.0 ? (1.0 - beta) * q * (log_q - log_m) : 0.0);
        // d/dlogq of (1-beta) q (log q - log m) + beta p (log p - log m), with dm/dlogq = (1-beta) q:
        d = q > 0.0 ? (1.0 - beta) * q * (log_q - log_m) : 0.0;
      }
      total += term;
      dlogq[static_cast<std::size_t>(v)] = d;
      dsum += d;
    }
    loss[static_cast<std::size_t>(n)] = total;
    const double w = weight.data[static_cast<std::size_t>(n)];
    for (std::int64_t v = 0; v < vocab; ++v) {
      const double q = std::exp(zs[v] - lse_s);
      out.data[static_cast<std::size_t>(n * vocab + v)] =
          static_cast<T>(w * inv_temperature * (dlogq[static_cast<std::size_t>(v)] - q * dsum));
    }
  }
  return detail::generate<T>(shape::vector(rows), [&](std::size_t i) { return loss[i]; });
}

template <class T>
reference_tensor<T> row_sparse_forward_kl(const reference_backend<T>&, const reference_tensor<T>& student,
                                          const reference_index& teacher_ids,
                                          const reference_tensor<T>& teacher_logprobs, double inv_temperature,
                                          const reference_tensor<T>& weight, reference_tensor<T>& out) {
  detail::check_logits(student, "row_sparse_forward_kl");
  const auto rows = student.shape.dims[0], vocab = student.shape.dims[1];
  GRPO_CHECK(teacher_ids.shape.rank == 2 && teacher_ids.shape.dims[0] == rows, shape_error,
             "row_sparse_forward_kl: teacher ids must be [N, K], got ", to_string(teacher_ids.shape), " for logits ",
             to_string(student.shape));
  detail::check_same_shape(teacher_ids.shape, teacher_logprobs.shape, "row_sparse_forward_kl");
  GRPO_CHECK(weight.shape == shape::vector(rows), shape_error, "row_sparse_forward_kl: weight ",
             to_string(weight.shape), " vs logits ", to_string(student.shape));
  const auto k = teacher_ids.shape.dims[1];
  detail::prepare_output(out, student.shape);
  std::vector<double> loss(static_cast<std::size_t>(rows)), grad(static_cast<std::size_t>(vocab));
  for (std::int64_t n = 0; n < rows; ++n) {
    const detail::scaled_row<T> zs{student.data.data() + n * vocab, vocab, inv_temperature};
    const double lse_s = detail::row_logsumexp(zs);
    const double w = weight.data[static_cast<std::size_t>(n)];
    // L = sum_j p_j (log p_j - log q_{id_j}); dL/d(s z_v) = (sum_j p_j) q_v - sum_j p_j 1[v = id_j].
    double mass = 0.0, total = 0.0;
    for (std::int64_t j = 0; j < k; ++j) {
      const auto i = static_cast<std::size_t>(n * k + j);
      const auto id = teacher_ids.data[i];
      detail::check_index(id, vocab, "row_sparse_forward_kl");
      const double log_p = teacher_logprobs.data[i], p = std::exp(log_p);
      mass += p;
      if (p > 0.0) total += p * (log_p - (zs[id] - lse_s));
    }
    loss[static_cast<std::size_t>(n)] = total;
    // The row in double, rounded to T once: repeated ids subtract in double (out may alias the student).
    for (std::int64_t v = 0; v < vocab; ++v)
      grad[static_cast<std::size_t>(v)] = w * inv_temperature * mass * std::exp(zs[v] - lse_s);
    for (std::int64_t j = 0; j < k; ++j) {
      const auto i = static_cast<std::size_t>(n * k + j);
      grad[static_cast<std::size_t>(teacher_ids.data[i])] -=
          w * inv_temperature * std::exp(static_cast<double>(teacher_logprobs.data[i]));
    }
    for (std::int64_t v = 0; v < vocab; ++v)
      out.data[static_cast<std::size_t>(n * vocab + v)] = static_cast<T>(grad[static_cast<std::size_t>(v)]);
  }
  return detail::generate<T>(shape::vector(rows), [&](std::size_t i) { return loss[i]; });
}

static_assert(logits_backend<reference_backend<double>>);
static_assert(logits_backend<reference_backend<float>>);

}  // namespace grpo
