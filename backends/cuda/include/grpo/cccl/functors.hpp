// SPDX-License-Identifier: Apache-2.0
// grpo/cccl/functors.hpp: the element functions of grpo::cccl's tensor operations, one functor per Thrust call,
// callable on the host (CPP, OMP) and the device (CUDA). Every value is computed in double and rounded to the
// storage type once, and every sum accumulates in double in a fixed order, as the reference backend does, so
// CPP results equal the reference's bit for bit and OMP results do not depend on the thread count.
// The functors live in namespace fn, which holds class types only: Thrust looks up its algorithms by ADL on
// the functor's namespace, where a function named like one of them would be picked up instead.
#pragma once

#include <cmath>
#include <cstdint>

#include "grpo/backend.hpp"
#include "grpo/cccl/config.hpp"
#include "grpo/cccl/device_error.hpp"

namespace grpo::cccl {
inline namespace GRPO_CCCL_SYSTEM_NAMESPACE {

namespace detail {

GRPO_CCCL_HOST_DEVICE inline bool is_nan_value(double x) {
#if defined(__CUDA_ARCH__)
  return ::isnan(x);
#else
  return std::isnan(x);
#endif
}

GRPO_CCCL_HOST_DEVICE inline bool is_finite_value(double x) {
#if defined(__CUDA_ARCH__)
  return ::isfinite(x);
#else
  return std::isfinite(x);
#endif
}

/// The reference backend's definition of each unary operation (backend.hpp). An operation outside the
/// enumeration is rejected on the host before any launch; NaN here only keeps the switch total.
GRPO_CCCL_HOST_DEVICE inline double apply_unary(unary_op op, double x) {
  switch (op) {
    case unary_op::neg: return -x;
    case unary_op::exp: return ::exp(x);
    case unary_op::expm1: return ::expm1(x);
    case unary_op::log: return ::log(x);
    case unary_op::log1p: return ::log1p(x);
    case unary_op::abs: return ::fabs(x);
    case unary_op::square: return x * x;
    case unary_op::sqrt: return ::sqrt(x);
    case unary_op::sign: return static_cast<double>((x > 0) - (x < 0));
    case unary_op::reciprocal: return 1.0 / x;
    case unary_op::is_nan: return is_nan_value(x) ? 1.0 : 0.0;
    case unary_op::is_finite: return is_finite_value(x) ? 1.0 : 0.0;
    case unary_op::sigmoid: return 1.0 / (1.0 + ::exp(-x));
  }
  return NAN;
}

GRPO_CCCL_HOST_DEVICE inline double apply_binary(binary_op op, double a, double b) {
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
  return NAN;
}

}  // namespace detail

namespace fn {

template <class T>
struct unary_map {
  unary_op op;
  GRPO_CCCL_HOST_DEVICE T operator()(T x) const {
    return static_cast<T>(detail::apply_unary(op, static_cast<double>(x)));
  }
};

template <class T>
struct binary_map {
  binary_op op;
  GRPO_CCCL_HOST_DEVICE T operator()(T a, T b) const {
    return static_cast<T>(detail::apply_binary(op, static_cast<double>(a), static_cast<double>(b)));
  }
};

/// t op scalar.
template <class T>
struct binary_scalar_right {
  binary_op op;
  double b;
  GRPO_CCCL_HOST_DEVICE T operator()(T a) const {
    return static_cast<T>(detail::apply_binary(op, static_cast<double>(a), b));
  }
};

/// scalar op t.
template <class T>
struct binary_scalar_left {
  binary_op op;
  double a;
  GRPO_CCCL_HOST_DEVICE T operator()(T b) const {
    return static_cast<T>(detail::apply_binary(op, a, static_cast<double>(b)));
  }
};

template <class T>
struct select_at {
  const T* cond;
  const T* a;
  const T* b;
  GRPO_CCCL_HOST_DEVICE T operator()(std::int64_t i) const { return cond[i] != T(0) ? a[i] : b[i]; }
};

template <class T>
struct to_value {
  GRPO_CCCL_HOST_DEVICE T operator()(double x) const { return static_cast<T>(x); }
};

/// Phase 1 of a row sum: part p of row r, either the contiguous chunk p (host systems: each thread streams
/// through its own memory) or the elements p, p + parts, p + 2 parts, ... (CUDA: neighbouring threads read
/// neighbouring addresses). Out is the storage type when a row is one part, double otherwise.
template <class T, class Out>
struct row_part_sum {
  const T* x;
  std::int64_t cols;
  std::int64_t parts;
  bool interleaved;
  Out* out;
  GRPO_CCCL_HOST_DEVICE void operator()(std::int64_t k) const {
    const std::int64_t r = k / parts, p = k % parts;
    const T* row = x + r * cols;
    double total = 0.0;
    if (interleaved) {
      for (std::int64_t c = p; c < cols; c += parts) total += static_cast<double>(row[c]);
    } else {
      const std::int64_t chunk = (cols + parts - 1) / parts;
      const std::int64_t end = (p + 1) * chunk < cols ? (p + 1) * chunk : cols;
      for (std::int64_t c = p * chunk; c < end; ++c) total += static_cast<double>(row[c]);
    }
    out[k] = static_cast<Out>(total);
  }
};

/// Phase 2 of a row sum: the row's parts in order.
template <class T>
struct row_parts_total {
  const double* partial;
  std::int64_t parts;
  T* out;
  GRPO_CCCL_HOST_DEVICE void operator()(std::int64_t r) const {
    double total = 0.0;
    for (std::int64_t p = 0; p < parts; ++p) total += partial[r * parts + p];
    out[r] = static_cast<T>(total);
  }
};

/// Segment ids, checked against the segment count (an id out of range is reported and then sorts outside
/// every segment, so it is left out of the sums).
struct checked_segment_id {
  const std::int64_t* ids;
  std::int64_t segments;
  std::int64_t* error_slot;
  GRPO_CCCL_HOST_DEVICE std::int64_t operator()(std::int64_t i) const {
    const std::int64_t id = ids[i];
    if (id < 0 || id >= segments)
      detail::report_index_error(error_slot, detail::device_error_sum_segments, id, segments);
    return id;
  }
};

/// Sum of one segment's values in index order (the ids were stably sorted, so `order` lists each segment's
/// positions ascending): the reference's order of accumulation.
template <class T>
struct segment_total {
  const T* values;
  const std::int64_t* order;
  const std::int64_t* offsets;
  T* out;
  GRPO_CCCL_HOST_DEVICE void operator()(std::int64_t s) const {
    double total = 0.0;
    for (std::int64_t k = offsets[s]; k < offsets[s + 1]; ++k) total += static_cast<double>(values[order[k]]);
    out[s] = static_cast<T>(total);
  }
};

template <class T>
struct gather_at {
  const T* values;
  const std::int64_t* ids;
  std::int64_t size;
  std::int64_t* error_slot;
  GRPO_CCCL_HOST_DEVICE T operator()(std::int64_t i) const {
    const std::int64_t id = ids[i];
    if (id < 0 || id >= size) {
      detail::report_index_error(error_slot, detail::device_error_gather, id, size);
      return static_cast<T>(NAN);
    }
    return values[id];
  }
};

template <class T>
struct expand_at {
  const T* values;
  std::int64_t cols;
  GRPO_CCCL_HOST_DEVICE T operator()(std::int64_t i) const { return values[i / cols]; }
};

template <class T>
struct shift_left_at {
  const T* x;
  std::int64_t cols;
  GRPO_CCCL_HOST_DEVICE T operator()(std::int64_t i) const { return (i % cols) + 1 < cols ? x[i + 1] : T(0); }
};

/// The affine map y -> a + b y. reverse_scan_rows composes them right to left along each row: y[c] is the
/// composition of the maps of columns c..C-1 applied to y[C] = 0, i.e. its `a`.
struct affine {
  double a;
  double b;
};

/// Composition for an inclusive scan running from the last column to the first: `later` covers the columns
/// after `here`'s. Associative, so the scan may regroup it; CPP scans sequentially and so computes exactly
/// the reference's y = x + decay y_next.
struct compose_affine {
  GRPO_CCCL_HOST_DEVICE affine operator()(const affine& later, const affine& here) const {
    return {here.a + here.b * later.a, here.b * later.b};
  }
};

/// The scan visits element n-1-k at step k.
template <class T>
struct reversed_affine {
  const T* x;
  const T* decay;
  std::int64_t n;
  GRPO_CCCL_HOST_DEVICE affine operator()(std::int64_t k) const {
    return {static_cast<double>(x[n - 1 - k]), static_cast<double>(decay[n - 1 - k])};
  }
};

struct reversed_row {
  std::int64_t n;
  std::int64_t cols;
  GRPO_CCCL_HOST_DEVICE std::int64_t operator()(std::int64_t k) const { return (n - 1 - k) / cols; }
};

template <class T>
struct unreverse_affine {
  const affine* scanned;
  std::int64_t n;
  GRPO_CCCL_HOST_DEVICE T operator()(std::int64_t i) const { return static_cast<T>(scanned[n - 1 - i].a); }
};

/// The elements the input checks reject (backend.hpp count_not_finite / count_not_binary).
template <class T>
struct not_finite {
  GRPO_CCCL_HOST_DEVICE bool operator()(T x) const { return !detail::is_finite_value(static_cast<double>(x)); }
};

template <class T>
struct not_binary {
  GRPO_CCCL_HOST_DEVICE bool operator()(T x) const {
    const double v = static_cast<double>(x);
    return !(v == 0.0 || v == 1.0);
  }
};

}  // namespace fn
}  // namespace GRPO_CCCL_SYSTEM_NAMESPACE
}  // namespace grpo::cccl
