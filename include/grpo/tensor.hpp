// SPDX-License-Identifier: Apache-2.0
// grpo/tensor.hpp: grpo::tensor<B>, an eager handle pairing a backend with one of its tensors, so
// the generic algorithms read like their formulas (`exp(clamp(logp - old, -20, 20))`). Every
// operator calls the backend's operation at once: no expression templates, no laziness.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "grpo/backend.hpp"
#include "grpo/error.hpp"

namespace grpo {

template <tensor_backend B>
class tensor {
 public:
  using backend_type = B;
  using raw_type = typename B::tensor_type;

  tensor(const B& backend, raw_type raw) : backend_(backend), raw_(std::move(raw)) {}

  const B& backend() const { return backend_; }
  const raw_type& raw() const& { return raw_; }
  raw_type& raw() & { return raw_; }
  raw_type&& raw() && { return std::move(raw_); }
  grpo::shape shape() const { return shape_of(backend_, raw_); }
  std::vector<double> to_host() const { return download(backend_, raw_); }
  /// The single value of a tensor with one element.
  double item() const {
    auto values = download(backend_, raw_);
    GRPO_CHECK(values.size() == 1, shape_error, "item: tensor of shape ", to_string(shape()), " is not a scalar");
    return values[0];
  }

 private:
  B backend_;
  raw_type raw_;
};

/// The index-tensor counterpart of tensor<B>.
template <tensor_backend B>
class index_tensor {
 public:
  using raw_type = typename B::index_type;
  index_tensor(const B& backend, raw_type raw) : backend_(backend), raw_(std::move(raw)) {}
  const B& backend() const { return backend_; }
  const raw_type& raw() const { return raw_; }
  grpo::shape shape() const { return index_shape_of(backend_, raw_); }
  std::vector<std::int64_t> to_host() const { return download_index(backend_, raw_); }

 private:
  B backend_;
  raw_type raw_;
};

template <tensor_backend B>
tensor<B> make_tensor(const B& b, std::span<const double> values, grpo::shape s) {
  return {b, upload(b, values, s)};
}

template <tensor_backend B>
tensor<B> make_tensor(const B& b, const std::vector<double>& values, grpo::shape s) {
  return {b, upload(b, std::span<const double>(values), s)};
}

template <tensor_backend B>
tensor<B> full(const B& b, grpo::shape s, double value) {
  return {b, fill(b, s, value)};
}

template <tensor_backend B>
index_tensor<B> make_index(const B& b, std::span<const std::int64_t> values, grpo::shape s) {
  return {b, upload_index(b, values, s)};
}

template <tensor_backend B>
index_tensor<B> make_index(const B& b, const std::vector<std::int64_t>& values, grpo::shape s) {
  return {b, upload_index(b, std::span<const std::int64_t>(values), s)};
}

namespace detail {
template <tensor_backend B>
tensor<B> wrap(const tensor<B>& like, typename B::tensor_type raw) {
  return {like.backend(), std::move(raw)};
}
}  // namespace detail

#define GRPO_DEFINE_BINARY(op_symbol, op_name)                                               \
  template <tensor_backend B>                                                                \
  tensor<B> operator op_symbol(const tensor<B>& a, const tensor<B>& b) {                     \
    return detail::wrap(a, binary(a.backend(), binary_op::op_name, a.raw(), b.raw()));       \
  }                                                                                          \
  template <tensor_backend B>                                                                \
  tensor<B> operator op_symbol(const tensor<B>& a, double b) {                               \
    return detail::wrap(a, binary(a.backend(), binary_op::op_name, a.raw(), b));             \
  }                                                                                          \
  template <tensor_backend B>                                                                \
  tensor<B> operator op_symbol(double a, const tensor<B>& b) {                               \
    return detail::wrap(b, binary(b.backend(), binary_op::op_name, a, b.raw()));             \
  }
GRPO_DEFINE_BINARY(+, add)
GRPO_DEFINE_BINARY(-, sub)
GRPO_DEFINE_BINARY(*, mul)
GRPO_DEFINE_BINARY(/, div)
#undef GRPO_DEFINE_BINARY

#define GRPO_DEFINE_BINARY_FN(fn_name, op_name)                                              \
  template <tensor_backend B>                                                                \
  tensor<B> fn_name(const tensor<B>& a, const tensor<B>& b) {                                \
    return detail::wrap(a, binary(a.backend(), binary_op::op_name, a.raw(), b.raw()));       \
  }                                                                                          \
  template <tensor_backend B>                                                                \
  tensor<B> fn_name(const tensor<B>& a, double b) {                                          \
    return detail::wrap(a, binary(a.backend(), binary_op::op_name, a.raw(), b));             \
  }                                                                                          \
  template <tensor_backend B>                                                                \
  tensor<B> fn_name(double a, const tensor<B>& b) {                                          \
    return detail::wrap(b, binary(b.backend(), binary_op::op_name, a, b.raw()));             \
  }
/// Elementwise minimum/maximum and comparisons (1 where true, 0 where false).
GRPO_DEFINE_BINARY_FN(minimum, minimum)
GRPO_DEFINE_BINARY_FN(maximum, maximum)
GRPO_DEFINE_BINARY_FN(less, less)
GRPO_DEFINE_BINARY_FN(less_equal, less_equal)
GRPO_DEFINE_BINARY_FN(greater, greater)
GRPO_DEFINE_BINARY_FN(greater_equal, greater_equal)
GRPO_DEFINE_BINARY_FN(equal, equal)
#undef GRPO_DEFINE_BINARY_FN

#define GRPO_DEFINE_UNARY(fn_name)                                         \
  template <tensor_backend B>                                              \
  tensor<B> fn_name(const tensor<B>& a) {                                  \
    return detail::wrap(a, unary(a.backend(), unary_op::fn_name, a.raw())); \
  }
GRPO_DEFINE_UNARY(exp)
GRPO_DEFINE_UNARY(expm1)
GRPO_DEFINE_UNARY(log)
GRPO_DEFINE_UNARY(log1p)
GRPO_DEFINE_UNARY(abs)
GRPO_DEFINE_UNARY(square)
GRPO_DEFINE_UNARY(sqrt)
GRPO_DEFINE_UNARY(sign)
GRPO_DEFINE_UNARY(reciprocal)
GRPO_DEFINE_UNARY(is_nan)
GRPO_DEFINE_UNARY(is_finite)
GRPO_DEFINE_UNARY(sigmoid)
#undef GRPO_DEFINE_UNARY

template <tensor_backend B>
tensor<B> operator-(const tensor<B>& a) {
  return detail::wrap(a, unary(a.backend(), unary_op::neg, a.raw()));
}

/// cond != 0 ? a : b, elementwise.
template <tensor_backend B>
tensor<B> where(const tensor<B>& cond, const tensor<B>& a, const tensor<B>& b) {
  return detail::wrap(a, select(a.backend(), cond.raw(), a.raw(), b.raw()));
}

template <tensor_backend B>
tensor<B> where(const tensor<B>& cond, const tensor<B>& a, double b) {
  return where(cond, a, full(a.backend(), a.shape(), b));
}

template <tensor_backend B>
tensor<B> where(const tensor<B>& cond, double a, const tensor<B>& b) {
  return where(cond, full(b.backend(), b.shape(), a), b);
}

/// min(max(a, lo), hi).
template <tensor_backend B>
tensor<B> clamp(const tensor<B>& a, double lo, double hi) {
  return minimum(maximum(a, lo), hi);
}

/// Sum of every element (double accumulation), as a rank-0 tensor.
template <tensor_backend B>
tensor<B> sum(const tensor<B>& a) {
  return detail::wrap(a, sum(a.backend(), a.raw()));
}

/// [R, C] -> [R]: sum over each row (double accumulation).
template <tensor_backend B>
tensor<B> sum_rows(const tensor<B>& a) {
  return detail::wrap(a, sum_rows(a.backend(), a.raw()));
}

/// [N] with segment ids [N] -> [segments]: per-segment sums (double accumulation).
template <tensor_backend B>
tensor<B> sum_segments(const tensor<B>& a, const index_tensor<B>& ids, std::int64_t segments) {
  return detail::wrap(a, sum_segments(a.backend(), a.raw(), ids.raw(), segments));
}

/// [S] gathered at ids [N] -> [N].
template <tensor_backend B>
tensor<B> gather(const tensor<B>& a, const index_tensor<B>& ids) {
  return detail::wrap(a, gather(a.backend(), a.raw(), ids.raw()));
}

/// [R] -> [R, C], each row filled with its value.
template <tensor_backend B>
tensor<B> expand_rows(const tensor<B>& a, std::int64_t cols) {
  return detail::wrap(a, expand_rows(a.backend(), a.raw(), cols));
}

template <tensor_backend B>
tensor<B> reshape(const tensor<B>& a, grpo::shape s) {
  return detail::wrap(a, reshape(a.backend(), a.raw(), s));
}

/// [R, C] -> [R, C] with out[r][c] = a[r][c + 1] and a zero last column.
template <tensor_backend B>
tensor<B> shift_left(const tensor<B>& a) {
  return detail::wrap(a, shift_left(a.backend(), a.raw()));
}

/// y[r][c] = x[r][c] + decay[r][c] * y[r][c + 1], with y[r][C] = 0: discounted returns and GAE.
template <tensor_backend B>
tensor<B> reverse_scan_rows(const tensor<B>& x, const tensor<B>& decay) {
  return detail::wrap(x, reverse_scan_rows(x.backend(), x.raw(), decay.raw()));
}

}  // namespace grpo
