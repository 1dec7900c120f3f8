// SPDX-License-Identifier: Apache-2.0
// grpo/libtorch/tensor_ops.hpp: grpo::libtorch::backend and its tensor operations (upload, fill, elementwise,
// reductions, gather, scans): every one a torch op on at::Tensor (CPU or CUDA: results follow the inputs' device),
// with the reference backend's semantics: minimum/maximum keep their first argument on a tie (so autograd takes the
// branch the library's analytic gradients take), reductions accumulate in double. The row primitives over logits
// are in grpo/libtorch/row_primitives.hpp; grpo/libtorch/backend.hpp puts both together as a grpo::logits_backend.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "grpo/backend.hpp"
#include "grpo/error.hpp"
#include "grpo/libtorch/config.hpp"
#include "grpo/tensor.hpp"

namespace grpo::libtorch {
inline namespace GRPO_LIBTORCH_NAMESPACE {

/// A LibTorch backend: where new tensors are made and in which dtype. Small and copyable.
///
/// Tensors are at::Tensor of rank 0, 1 or 2 in any floating dtype on any device; index tensors are integer
/// at::Tensor (converted to int64 where used). Operations run on the device of their inputs; upload and fill
/// create tensors on `device` in `dtype`, so make the backend for the device of the tensors you pass
/// (backend_like does). Reduced-precision inputs (bf16, fp16) are promoted to fp32 by every operation: the
/// algorithms compute and return fp32 while autograd still hands bf16 gradients to bf16 leaves. Integer and bool
/// inputs (a bool mask) are promoted to `dtype`.
struct backend {
  using tensor_type = at::Tensor;
  using index_type = at::Tensor;

  at::Device device = at::kCPU;       ///< where upload and fill put new tensors
  at::ScalarType dtype = at::kFloat;  ///< the dtype of uploads (fill: its compute dtype); a floating type
  /// The dtype the row-wise softmax primitives compute in. Double (the default) reproduces the reference backend
  /// to the output's rounding whatever the logits' magnitude; float is faster on GPUs with slow fp64, and on the CPU
  /// with fp32 logits runs the core's fp32 SIMD row kernels (row_path::host_fp32, see row_softmax_stats_path).
  at::ScalarType row_dtype = at::kDouble;
  /// The row primitives work on chunks of about this many logits, so their temporaries stay O(chunk) rather than
  /// N x V (without autograd; with autograd torch keeps what the backward needs).
  std::int64_t chunk_elements = std::int64_t{1} << 20;
};

namespace detail {

/// The dtype operations compute in: the tensor's own floating dtype, the backend's dtype for integers and bool,
/// and fp32 in place of a reduced-precision float (bf16, fp16) either way.
inline at::ScalarType compute_type(at::ScalarType t, const backend& b) {
  const auto type = at::isFloatingType(t) ? t : b.dtype;
  return type == at::kBFloat16 || type == at::kHalf || !at::isFloatingType(type) ? at::kFloat : type;
}

inline at::Tensor lift(const backend& b, const at::Tensor& t) {
  const auto type = compute_type(t.scalar_type(), b);
  return t.scalar_type() == type ? t : t.to(type);
}

/// The common compute dtype of two tensors (type promotion, then compute_type).
inline at::ScalarType common_type(const backend& b, const at::Tensor& x, const at::Tensor& y) {
  return compute_type(at::promote_types(compute_type(x.scalar_type(), b), compute_type(y.scalar_type(), b)), b);
}

inline std::vector<std::int64_t> sizes_of(const shape& s) {
  if (s.rank == 0) return {};
  if (s.rank == 1) return {s.dims[0]};
  return {s.dims[0], s.dims[1]};
}

inline void check_defined(const at::Tensor& t, const char* what) {
  GRPO_CHECK(t.defined(), shape_error, what, ": the tensor is undefined");
}

inline shape shape_from(const at::Tensor& t, const char* what) {
  check_defined(t, what);
  GRPO_CHECK(t.dim() <= 2, shape_error, what, ": grpo tensors have rank 0, 1 or 2, got rank ", t.dim(), " ", t.sizes());
  if (t.dim() == 0) return shape::scalar();
  if (t.dim() == 1) return shape::vector(t.size(0));
  return shape::matrix(t.size(0), t.size(1));
}

inline void check_shape(const shape& s, const char* what) {
  GRPO_CHECK(s.rank >= 0 && s.rank <= 2 && s.dims[0] >= 0 && s.dims[1] >= 0, shape_error, what, ": invalid shape ",
             to_string(s));
}

inline void check_same_shape(const at::Tensor& a, const at::Tensor& b, const char* op) {
  const auto sa = shape_from(a, op), sb = shape_from(b, op);
  GRPO_CHECK(sa == sb, shape_error, op, ": shapes differ, ", to_string(sa), " vs ", to_string(sb));
}

inline void check_floating(at::ScalarType t, const char* what) {
  GRPO_CHECK(at::isFloatingType(t), config_error, what, ": must be a floating-point dtype, got ", toString(t));
}

/// ids as int64, after checking they are integers.
inline at::Tensor as_index(const at::Tensor& ids, const char* what) {
  check_defined(ids, what);
  GRPO_CHECK(at::isIntegralType(ids.scalar_type(), /*includeBool=*/false), value_error, what,
             ": ids must be an integer tensor, got ", toString(ids.scalar_type()));
  return ids.scalar_type() == at::kLong ? ids : ids.to(at::kLong);
}

/// Every id in [0, bound), with the reference backend's message otherwise. Out-of-range ids would be a host
/// exception in a CPU kernel but a fatal device-side assert in a CUDA one, hence the check (one sync).
inline void check_ids_in_range(const at::Tensor& ids, std::int64_t bound, const char* what) {
  if (ids.numel() == 0) return;
  const auto bad = at::logical_or(ids < 0, ids >= bound).reshape({-1});
  if (!bad.any().item<bool>()) return;
  const auto first = bad.nonzero().select(1, 0)[0].item<std::int64_t>();
  grpo::detail::fail<shape_error>(what, ": index ", ids.reshape({-1})[first].item<std::int64_t>(), " out of range [0, ",
                                  bound, ")");
}

/// A rank-0 CPU tensor holding x in `type`: TensorIterator accepts a CPU scalar next to CUDA tensors, so this is
/// the scalar operand of x / t without a host-to-device copy.
inline at::Tensor cpu_scalar(double x, at::ScalarType type) {
  return at::scalar_tensor(x, at::TensorOptions().dtype(type));
}

/// Sums in double (of everything when rows is false, of each row when true), then back to the compute dtype;
/// differentiable.
inline at::Tensor double_sum(const backend& b, const at::Tensor& t, bool rows) {
  const auto type = compute_type(t.scalar_type(), b);
  const auto wide = t.to(at::kDouble);
  return (rows ? wide.sum({1}) : wide.sum()).to(type);
}

}  // namespace detail

/// A backend for tensors like t: its device, and its dtype promoted as the operations promote it.
inline backend backend_like(const at::Tensor& t) {
  detail::check_defined(t, "backend_like");
  backend b;
  b.device = t.device();
  b.dtype = detail::compute_type(t.scalar_type(), b);
  return b;
}

inline shape shape_of(const backend&, const at::Tensor& t) { return detail::shape_from(t, "shape_of"); }

/// The concept's optional stop-gradient hook: the values of t, cut from the autograd graph.
inline at::Tensor stop_gradient(const backend&, const at::Tensor& t) { return t.detach(); }

namespace detail {

/// Elements of data[0, n) whose exponent bits are all ones (NaN, +-Inf), counted over the bits (a loop the compiler
/// vectorizes) on torch's threads; no temporary.
template <class Bits>
std::int64_t count_all_ones_exponent(const void* data, std::int64_t n, Bits exponent_mask) {
  const auto* bits = static_cast<const Bits*>(data);
  return at::parallel_reduce(
      0, n, std::int64_t{1} << 16, std::int64_t{0},
      [&](std::int64_t begin, std::int64_t end, std::int64_t partial) {
        std::int64_t count = 0;
        for (std::int64_t i = begin; i < end; ++i) count += (bits[i] & exponent_mask) == exponent_mask;
        return partial + count;
      },
      [](std::int64_t a, std::int64_t b) { return a + b; });
}

}  // namespace detail

/// The concept's optional counting hooks (validate.hpp): the elements that are NaN or +-Inf, and that are neither 0
/// nor 1, counted on t's device, so that checking a valid CUDA tensor copies nothing to the host. fp32 and fp64 CPU
/// tensors are counted in place (a policy loss from logits checks N x V of them, which isfinite would copy into a
/// bool tensor of N x V first).
inline std::int64_t count_not_finite(const backend&, const at::Tensor& t) {
  if (t.device().is_cpu() && t.is_contiguous()) {
    if (t.scalar_type() == at::kFloat)
      return detail::count_all_ones_exponent<std::uint32_t>(t.data_ptr(), t.numel(), 0x7f800000u);
    if (t.scalar_type() == at::kDouble)
      return detail::count_all_ones_exponent<std::uint64_t>(t.data_ptr(), t.numel(), 0x7ff0000000000000ull);
  }
  const at::NoGradGuard no_grad;
  return at::isfinite(t).logical_not().sum().item<std::int64_t>();
}
inline std::int64_t count_not_binary(const backend&, const at::Tensor& t) {
  const at::NoGradGuard no_grad;
  return t.ne(0).logical_and(t.ne(1)).sum().item<std::int64_t>();
}

/// Host doubles -> a tensor on b.device in b.dtype (always a copy).
inline at::Tensor upload(const backend& b, std::span<const double> host, shape s) {
  detail::check_shape(s, "upload");
  detail::check_floating(b.dtype, "backend.dtype");
  GRPO_CHECK(static_cast<std::int64_t>(host.size()) == s.numel(), shape_error, "upload: ", host.size(),
             " values for shape ", to_string(s));
  auto staging = at::empty(detail::sizes_of(s), at::TensorOptions().dtype(at::kDouble));
  std::copy(host.begin(), host.end(), staging.data_ptr<double>());
  return staging.to(b.device, b.dtype);
}

/// The values as host doubles, row-major (detached: reading never touches the autograd graph).
inline std::vector<double> download(const backend&, const at::Tensor& t) {
  detail::shape_from(t, "download");
  const auto host = t.detach().to(at::kCPU, at::kDouble).contiguous();
  const double* data = host.data_ptr<double>();
  return std::vector<double>(data, data + host.numel());
}

/// A constant tensor on b.device in the compute dtype of b.dtype (fp32 for a bf16 backend: fill makes the
/// intermediates of the algorithms, not their inputs).
inline at::Tensor fill(const backend& b, shape s, double value) {
  detail::check_shape(s, "fill");
  detail::check_floating(b.dtype, "backend.dtype");
  const auto type = detail::compute_type(b.dtype, b);
  return at::full(detail::sizes_of(s), value, at::TensorOptions().dtype(type).device(b.device));
}

inline at::Tensor upload_index(const backend& b, std::span<const std::int64_t> host, shape s) {
  detail::check_shape(s, "upload_index");
  GRPO_CHECK(static_cast<std::int64_t>(host.size()) == s.numel(), shape_error, "upload_index: ", host.size(),
             " values for shape ", to_string(s));
  auto staging = at::empty(detail::sizes_of(s), at::TensorOptions().dtype(at::kLong));
  std::copy(host.begin(), host.end(), staging.data_ptr<std::int64_t>());
  return staging.to(b.device);
}

inline shape index_shape_of(const backend&, const at::Tensor& ids) { return detail::shape_from(ids, "index_shape_of"); }

inline std::vector<std::int64_t> download_index(const backend&, const at::Tensor& ids) {
  const auto host = detail::as_index(ids, "download_index").to(at::kCPU).contiguous();
  const std::int64_t* data = host.data_ptr<std::int64_t>();
  return std::vector<std::int64_t>(data, data + host.numel());
}

inline at::Tensor unary(const backend& b, unary_op op, const at::Tensor& t) {
  detail::check_defined(t, "unary");
  const auto x = detail::lift(b, t);
  const auto type = x.scalar_type();
  switch (op) {
    case unary_op::neg:
      return at::neg(x);
    case unary_op::exp:
      return at::exp(x);
    case unary_op::expm1:
      return at::expm1(x);
    case unary_op::log:
      return at::log(x);
    case unary_op::log1p:
      return at::log1p(x);
    case unary_op::abs:
      return at::abs(x);
    case unary_op::square:
      return at::square(x);
    case unary_op::sqrt:
      return at::sqrt(x);
    // (x > 0) - (x < 0), as the reference: 0 for NaN whatever at::sign does with it in a given torch version.
    case unary_op::sign:
      return (x > 0).to(type) - (x < 0).to(type);
    case unary_op::reciprocal:
      return at::reciprocal(x);
    case unary_op::is_nan:
      return at::isnan(x).to(type);
    case unary_op::is_finite:
      return at::isfinite(x).to(type);
    case unary_op::sigmoid:
      return at::sigmoid(x);
  }
  grpo::detail::fail<error>("unary: unknown operation");
}

/// Elementwise t op u on equal shapes. minimum/maximum are where() on a strict comparison, not at::minimum,
/// whose gradient splits 1/2-1/2 on a tie: the first argument wins a tie, in value and in gradient.
inline at::Tensor binary(const backend& b, binary_op op, const at::Tensor& t, const at::Tensor& u) {
  detail::check_same_shape(t, u, "binary");
  const auto type = detail::common_type(b, t, u);
  const auto x = t.to(type), y = u.to(type);
  switch (op) {
    case binary_op::add:
      return x + y;
    case binary_op::sub:
      return x - y;
    case binary_op::mul:
      return x * y;
    case binary_op::div:
      return x / y;
    case binary_op::minimum:
      return at::where(y < x, y, x);
    case binary_op::maximum:
      return at::where(x < y, y, x);
    case binary_op::less:
      return (x < y).to(type);
    case binary_op::less_equal:
      return (x <= y).to(type);
    case binary_op::greater:
      return (x > y).to(type);
    case binary_op::greater_equal:
      return (x >= y).to(type);
    case binary_op::equal:
      return (x == y).to(type);
  }
  grpo::detail::fail<error>("binary: unknown operation");
}

/// t op x. minimum(t, x) = x < t ? x : t and maximum(t, x) = t < x ? x : t, as masked fills: NaN stays NaN and
/// a tie keeps t (gradient 1), so clamp passes the gradient on the closed interval.
inline at::Tensor binary(const backend& b, binary_op op, const at::Tensor& t, double x) {
  detail::check_defined(t, "binary");
  const auto v = detail::lift(b, t);
  const auto type = v.scalar_type();
  switch (op) {
    case binary_op::add:
      return v + x;
    case binary_op::sub:
      return v - x;
    case binary_op::mul:
      return v * x;
    case binary_op::div:
      return v / x;
    case binary_op::minimum:
      return v.masked_fill(v > x, x);
    case binary_op::maximum:
      return v.masked_fill(v < x, x);
    case binary_op::less:
      return (v < x).to(type);
    case binary_op::less_equal:
      return (v <= x).to(type);
    case binary_op::greater:
      return (v > x).to(type);
    case binary_op::greater_equal:
      return (v >= x).to(type);
    case binary_op::equal:
      return (v == x).to(type);
  }
  grpo::detail::fail<error>("binary: unknown operation");
}

/// x op t. minimum(x, t) = t < x ? t : x and maximum(x, t) = x < t ? t : x: a NaN t gives x, as in the reference.
inline at::Tensor binary(const backend& b, binary_op op, double x, const at::Tensor& t) {
  detail::check_defined(t, "binary");
  const auto v = detail::lift(b, t);
  const auto type = v.scalar_type();
  switch (op) {
    case binary_op::add:
      return v + x;
    case binary_op::sub:
      return at::rsub(v, x);
    case binary_op::mul:
      return v * x;
    case binary_op::div:
      return at::div(detail::cpu_scalar(x, type), v);
    case binary_op::minimum:
      return v.masked_fill(at::logical_not(v < x), x);
    case binary_op::maximum:
      return v.masked_fill(at::logical_not(v > x), x);
    case binary_op::less:
      return (v > x).to(type);
    case binary_op::less_equal:
      return (v >= x).to(type);
    case binary_op::greater:
      return (v < x).to(type);
    case binary_op::greater_equal:
      return (v <= x).to(type);
    case binary_op::equal:
      return (v == x).to(type);
  }
  grpo::detail::fail<error>("binary: unknown operation");
}

/// cond != 0 ? t : u (a NaN condition selects t, as in the reference).
inline at::Tensor select(const backend& b, const at::Tensor& cond, const at::Tensor& t, const at::Tensor& u) {
  detail::check_same_shape(cond, t, "select");
  detail::check_same_shape(t, u, "select");
  const auto type = detail::common_type(b, t, u);
  return at::where(cond != 0, t.to(type), u.to(type));
}

/// Sum of every element, accumulated in double, as a rank-0 tensor.
inline at::Tensor sum(const backend& b, const at::Tensor& t) {
  detail::shape_from(t, "sum");
  return detail::double_sum(b, t, false);
}

inline at::Tensor sum_rows(const backend& b, const at::Tensor& t) {
  const auto s = detail::shape_from(t, "sum_rows");
  GRPO_CHECK(s.rank == 2, shape_error, "sum_rows: expected a rank-2 tensor, got ", to_string(s));
  return detail::double_sum(b, t, true);
}

/// Per-segment sums in double (index_add), differentiable with respect to the values.
inline at::Tensor sum_segments(const backend& b, const at::Tensor& t, const at::Tensor& ids, std::int64_t segments) {
  const auto s = detail::shape_from(t, "sum_segments");
  GRPO_CHECK(s.rank == 1, shape_error, "sum_segments: values must be rank 1, got ", to_string(s));
  const auto id_shape = detail::shape_from(ids, "sum_segments");
  GRPO_CHECK(id_shape == s, shape_error, "sum_segments: ids ", to_string(id_shape), " vs values ", to_string(s));
  GRPO_CHECK(segments >= 0, shape_error, "sum_segments: negative segment count ", segments);
  const auto index = detail::as_index(ids, "sum_segments");
  detail::check_ids_in_range(index, segments, "sum_segments");
  const auto type = detail::compute_type(t.scalar_type(), b);
  const auto totals = at::zeros({segments}, at::TensorOptions().dtype(at::kDouble).device(t.device()));
  return totals.index_add(0, index, t.to(at::kDouble)).to(type);
}

inline at::Tensor gather(const backend& b, const at::Tensor& t, const at::Tensor& ids) {
  const auto s = detail::shape_from(t, "gather"), id_shape = detail::shape_from(ids, "gather");
  GRPO_CHECK(s.rank == 1 && id_shape.rank == 1, shape_error, "gather: expected rank-1 values and ids, got ",
             to_string(s), " and ", to_string(id_shape));
  const auto index = detail::as_index(ids, "gather");
  detail::check_ids_in_range(index, s.dims[0], "gather");
  return detail::lift(b, t).index_select(0, index);
}

/// [R] -> [R, C] as an expanded view (no copy).
inline at::Tensor expand_rows(const backend& b, const at::Tensor& t, std::int64_t cols) {
  const auto s = detail::shape_from(t, "expand_rows");
  GRPO_CHECK(s.rank == 1, shape_error, "expand_rows: expected a rank-1 tensor, got ", to_string(s));
  GRPO_CHECK(cols >= 0, shape_error, "expand_rows: negative column count ", cols);
  return detail::lift(b, t).unsqueeze(1).expand({s.dims[0], cols});
}

inline at::Tensor reshape(const backend& b, const at::Tensor& t, shape s) {
  detail::check_shape(s, "reshape");
  const auto from = detail::shape_from(t, "reshape");
  GRPO_CHECK(s.numel() == from.numel(), shape_error, "reshape: cannot view ", to_string(from), " as ", to_string(s));
  return detail::lift(b, t).reshape(detail::sizes_of(s));
}

inline at::Tensor shift_left(const backend& b, const at::Tensor& t) {
  const auto s = detail::shape_from(t, "shift_left");
  GRPO_CHECK(s.rank == 2, shape_error, "shift_left: expected a rank-2 tensor, got ", to_string(s));
  const auto x = detail::lift(b, t);
  if (s.dims[1] <= 1) return at::zeros_like(x);
  return at::constant_pad_nd(x.narrow(1, 1, s.dims[1] - 1), {0, 1}, 0);
}

/// y[c] = x[c] + decay[c] y[c + 1] in double. Without autograd on CPU: one loop over the data; otherwise one
/// torch op per column (differentiable, C steps, each over all rows at once).
inline at::Tensor reverse_scan_rows(const backend& b, const at::Tensor& x, const at::Tensor& decay) {
  const auto s = detail::shape_from(x, "reverse_scan_rows");
  GRPO_CHECK(s.rank == 2, shape_error, "reverse_scan_rows: expected a rank-2 tensor, got ", to_string(s));
  detail::check_same_shape(x, decay, "reverse_scan_rows");
  const auto type = detail::common_type(b, x, decay);
  const auto rows = s.dims[0], cols = s.dims[1];
  const bool tracked = at::GradMode::is_enabled() && (x.requires_grad() || decay.requires_grad());
  if (!tracked && x.device().is_cpu() && decay.device().is_cpu()) {
    auto out = x.to(at::kDouble).contiguous().clone();
    const auto d = decay.to(at::kDouble).contiguous();
    double* y = out.data_ptr<double>();
    const double* k = d.data_ptr<double>();
    for (std::int64_t r = 0; r < rows; ++r) {
      double next = 0.0;
      for (std::int64_t c = cols - 1; c >= 0; --c) {
        const auto i = r * cols + c;
        next = y[i] + k[i] * next;
        y[i] = next;
      }
    }
    return out.to(type);
  }
  const auto xd = x.to(at::kDouble), dd = decay.to(at::kDouble);
  if (cols == 0) return at::zeros({rows, 0}, x.options().dtype(type));
  std::vector<at::Tensor> columns(static_cast<std::size_t>(cols));
  auto next = at::zeros({rows}, xd.options());
  for (std::int64_t c = cols - 1; c >= 0; --c) {
    next = xd.select(1, c) + dd.select(1, c) * next;
    columns[static_cast<std::size_t>(c)] = next;
  }
  return at::stack(columns, 1).to(type);
}

}  // namespace GRPO_LIBTORCH_NAMESPACE
}  // namespace grpo::libtorch
