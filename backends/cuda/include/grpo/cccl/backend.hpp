// SPDX-License-Identifier: Apache-2.0
// grpo/cccl/backend.hpp: grpo::cccl::backend<T>, the CUDA/Thrust backend, a model of grpo::logits_backend on
// memory of its Thrust device system: GPU memory under CUDA (nvcc), host memory under CPP and OMP (any C++20
// compiler), so the same code is tested without a GPU. Every concept operation is one or two Thrust algorithms
// on the backend's policy (CUDA: par_nosync on the caller's stream; no synchronisation but downloads), with
// the reference backend's arithmetic (double, rounded once); under CUDA the row-wise softmax primitives run
// as the fused kernels of kernels/ (fp32 accumulation), and on the host for float as host_rows.hpp's vectorized
// fp32 kernels. Algorithms reach it only through the concept.
#pragma once

#include <thrust/binary_search.h>
#include <thrust/count.h>
#include <thrust/fill.h>
#include <thrust/for_each.h>
#include <thrust/functional.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/iterator/transform_iterator.h>
#include <thrust/scan.h>
#include <thrust/sequence.h>
#include <thrust/sort.h>
#include <thrust/transform.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "grpo/backend.hpp"
#include "grpo/cccl/config.hpp"
#include "grpo/cccl/device_error.hpp"
#include "grpo/cccl/functors.hpp"
#include "grpo/cccl/memory.hpp"
#include "grpo/cccl/rows.hpp"
#include "grpo/error.hpp"

#if GRPO_CCCL_CUDA
#include <thrust/system/system_error.h>

#include "grpo/cccl/kernels/divergence.cuh"
#include "grpo/cccl/kernels/softmax.cuh"
#else
#include "grpo/cccl/host_divergence.hpp"
#include "grpo/cccl/host_rows.hpp"
#endif

namespace grpo::cccl {
inline namespace GRPO_CCCL_SYSTEM_NAMESPACE {

/// A dense row-major tensor of rank 0, 1 or 2 in the backend's memory.
template <class T>
struct device_tensor {
  grpo::shape shape;
  device_buffer<T> data;
};

/// A dense row-major int64 tensor of rank 1 or 2 (token ids, segment ids) in the backend's memory.
struct device_index {
  grpo::shape shape;
  device_buffer<std::int64_t> data;
};

/// The backend object: small and copyable; copies share one workspace (stream, memory pool, error slot).
/// T is the storage type of its tensors, float or double. Tensors are bound to the workspace that allocated
/// them; under CUDA, using one backend's tensors on another backend's stream needs the caller's own
/// synchronisation between the two streams.
template <class T = float>
class backend {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "grpo::cccl::backend<T>: T must be float or double");

 public:
  using value_type = T;
  using tensor_type = device_tensor<T>;
  using index_type = device_index;

#if GRPO_CCCL_CUDA
  /// Queues all work on `stream` (default: the legacy default stream), which the caller keeps alive.
  /// fused_kernels = false runs the row-wise softmax primitives as Thrust functors instead of the fused
  /// kernels (slower; for testing the one against the other).
  explicit backend(cudaStream_t stream = nullptr, bool fused_kernels = true)
      : workspace_(std::make_shared<cccl::workspace>(stream)), fused_kernels_(fused_kernels) {}
  cudaStream_t stream() const noexcept { return workspace_->stream(); }
  bool fused_kernels() const noexcept { return fused_kernels_; }
#else
  backend() : workspace_(std::make_shared<cccl::workspace>()) {}
  bool fused_kernels() const noexcept { return false; }
#endif

  /// Waits for all queued work and throws what device code reported (an index out of range), if anything.
  void synchronize() const { workspace_->synchronize(); }
  /// The pool's counters: after a first call of each shape, repeated calls add no upstream allocations.
  pool_statistics memory_statistics() const { return workspace_->statistics(); }
  /// Frees the pool's cached blocks (tensors still alive keep theirs).
  void release_cached_memory() const { workspace_->release_cached(); }
  const std::shared_ptr<cccl::workspace>& workspace() const noexcept { return workspace_; }

 private:
  std::shared_ptr<cccl::workspace> workspace_;
#if GRPO_CCCL_CUDA
  bool fused_kernels_ = true;
#endif
};

namespace detail {

inline void check_rank(const shape& s, const char* what) {
  GRPO_CHECK(s.rank >= 0 && s.rank <= 2 && s.dims[0] >= 0 && s.dims[1] >= 0, shape_error, what, ": invalid shape ",
             to_string(s));
}

inline void check_same_shape(const shape& a, const shape& b, const char* op) {
  GRPO_CHECK(a == b, shape_error, op, ": shapes differ, ", to_string(a), " vs ", to_string(b));
}

inline void check_operation(unary_op op) {
  GRPO_CHECK(static_cast<int>(op) >= 0 && static_cast<int>(op) <= static_cast<int>(unary_op::sigmoid), error,
             "unary: unknown operation");
}

inline void check_operation(binary_op op) {
  GRPO_CHECK(static_cast<int>(op) >= 0 && static_cast<int>(op) <= static_cast<int>(binary_op::equal), error,
             "binary: unknown operation");
}

template <class T>
void check_logits(const device_tensor<T>& z, const char* what) {
  GRPO_CHECK(z.shape.rank == 2 && z.shape.dims[1] > 0, shape_error, what, ": logits must be [N, V] with V > 0, got ",
             to_string(z.shape));
}

/// Runs one operation's device work. Under CUDA, Thrust reports failures as thrust::system_error; they
/// become backend_error naming the operation here, the boundary of the backend.
template <class F>
void run(const char* what, F&& work) {
#if GRPO_CCCL_CUDA
  try {
    work();
  } catch (const thrust::system_error& e) {
    (void)cudaGetLastError();
    grpo::detail::fail<backend_error>(what, ": ", e.what());
  }
#else
  (void)what;
  work();
#endif
}

template <class T>
device_tensor<T> allocate(const backend<T>& b, const shape& s) {
  return {s, device_buffer<T>(b.workspace(), static_cast<std::size_t>(s.numel()))};
}

/// Temporary storage of n elements of U from the pool.
template <class U, class T>
device_buffer<U> scratch(const backend<T>& b, std::int64_t n) {
  return device_buffer<U>(b.workspace(), static_cast<std::size_t>(n));
}

inline thrust::counting_iterator<std::int64_t> count_from(std::int64_t i) {
  return thrust::counting_iterator<std::int64_t>(i);
}

/// How a row sum is split: `parts` pieces per row, each contiguous or interleaved (see fn::row_part_sum).
struct row_sum_layout {
  bool interleaved;
  std::int64_t parts;
};

/// CUDA: interleaved parts of at least 32 elements, so neighbouring threads read neighbouring elements.
/// CPP and OMP: contiguous chunks of 16384 elements, so a row that fits in one is summed exactly as the
/// reference backend sums it.
inline row_sum_layout default_row_sum_layout(std::int64_t cols) {
#if GRPO_CCCL_CUDA
  return {true, std::clamp<std::int64_t>((cols + 31) / 32, 1, 1024)};
#else
  return {false, std::max<std::int64_t>(1, (cols + 16383) / 16384)};
#endif
}

/// out[r] = sum of row r of x [rows, cols], in double, in two passes of for_each (reduce_by_key would
/// synchronise to return its end iterators): the parts of each row in parallel, then each row's parts in
/// order. A fixed order for a given layout, whatever the number of threads.
template <class T>
void sum_rows_into(const backend<T>& b, const T* x, std::int64_t rows, std::int64_t cols, T* out,
                   row_sum_layout layout) {
  if (rows == 0) return;
  auto policy = execution_policy(*b.workspace());
  const std::int64_t parts = std::max<std::int64_t>(1, layout.parts);
  if (parts == 1) {
    thrust::for_each_n(policy, count_from(0), rows, fn::row_part_sum<T, T>{x, cols, 1, layout.interleaved, out});
    return;
  }
  auto partial = scratch<double>(b, rows * parts);
  thrust::for_each_n(policy, count_from(0), rows * parts,
                     fn::row_part_sum<T, double>{x, cols, parts, layout.interleaved, partial.data()});
  thrust::for_each_n(policy, count_from(0), rows, fn::row_parts_total<T>{partial.data(), parts, out});
}

/// A [rows] argument of a row primitive, checked with the reference backend's message.
template <class T>
void check_row_vector(const device_tensor<T>& t, std::int64_t rows, const char* op, const char* what,
                      const shape& logits) {
  GRPO_CHECK(t.shape == shape::vector(rows), shape_error, op, ": ", what, " ", to_string(t.shape), " vs logits ",
             to_string(logits));
}

/// `out` of a row primitive: written in place when it already has the logits' shape (it may be the logits
/// tensor itself), otherwise allocated.
template <class T>
void prepare_output(const backend<T>& b, device_tensor<T>& out, const shape& s) {
  if (out.shape != s || out.data.size() != static_cast<std::size_t>(s.numel())) out = allocate(b, s);
}

}  // namespace detail

template <class T>
shape shape_of(const backend<T>&, const device_tensor<T>& t) {
  return t.shape;
}

/// Host values (double) to a tensor of T, each rounded once.
template <class T>
device_tensor<T> upload(const backend<T>& b, std::span<const double> host, shape s) {
  detail::check_rank(s, "upload");
  GRPO_CHECK(static_cast<std::int64_t>(host.size()) == s.numel(), shape_error, "upload: ", host.size(),
             " values for shape ", to_string(s));
  const std::vector<T> values(host.begin(), host.end());
  auto out = detail::allocate(b, s);
  detail::bytes_to_device(*b.workspace(), out.data.data(), values.data(), values.size() * sizeof(T));
  return out;
}

namespace detail {

template <class T, class Predicate>
std::int64_t count_where(const backend<T>& b, const device_tensor<T>& t, Predicate predicate, const char* what) {
  std::int64_t count = 0;
  run(what, [&] {
    count = thrust::count_if(execution_policy(*b.workspace()), t.data.data(), t.data.data() + t.data.size(),
                             predicate);
  });
  return count;
}

}  // namespace detail

/// The concept's optional counting hooks (validate.hpp): one reduction where t lives, so checking a valid tensor
/// copies nothing to the host. A synchronisation point, as every check is.
template <class T>
std::int64_t count_not_finite(const backend<T>& b, const device_tensor<T>& t) {
  return detail::count_where(b, t, fn::not_finite<T>{}, "count_not_finite");
}

template <class T>
std::int64_t count_not_binary(const backend<T>& b, const device_tensor<T>& t) {
  return detail::count_where(b, t, fn::not_binary<T>{}, "count_not_binary");
}

/// A synchronisation point: waits for the stream, then reports any error device code recorded.
template <class T>
std::vector<double> download(const backend<T>& b, const device_tensor<T>& t) {
  std::vector<T> values(t.data.size());
  detail::bytes_to_host(*b.workspace(), values.data(), t.data.data(), values.size() * sizeof(T));
  b.synchronize();
  return std::vector<double>(values.begin(), values.end());
}

template <class T>
device_tensor<T> fill(const backend<T>& b, shape s, double value) {
  detail::check_rank(s, "fill");
  auto out = detail::allocate(b, s);
  detail::run("fill", [&] {
    thrust::fill_n(execution_policy(*b.workspace()), out.data.data(), s.numel(), static_cast<T>(value));
  });
  return out;
}

template <class T>
device_index upload_index(const backend<T>& b, std::span<const std::int64_t> host, shape s) {
  detail::check_rank(s, "upload_index");
  GRPO_CHECK(static_cast<std::int64_t>(host.size()) == s.numel(), shape_error, "upload_index: ", host.size(),
             " values for shape ", to_string(s));
  device_index out{s, device_buffer<std::int64_t>(b.workspace(), host.size())};
  detail::bytes_to_device(*b.workspace(), out.data.data(), host.data(), host.size() * sizeof(std::int64_t));
  return out;
}

template <class T>
shape index_shape_of(const backend<T>&, const device_index& idx) {
  return idx.shape;
}

/// A synchronisation point, like download.
template <class T>
std::vector<std::int64_t> download_index(const backend<T>& b, const device_index& idx) {
  std::vector<std::int64_t> values(idx.data.size());
  detail::bytes_to_host(*b.workspace(), values.data(), idx.data.data(), values.size() * sizeof(std::int64_t));
  b.synchronize();
  return values;
}

template <class T>
device_tensor<T> unary(const backend<T>& b, unary_op op, const device_tensor<T>& t) {
  detail::check_operation(op);
  auto out = detail::allocate(b, t.shape);
  detail::run("unary", [&] {
    thrust::transform(execution_policy(*b.workspace()), t.data.data(), t.data.data() + t.data.size(), out.data.data(),
                      fn::unary_map<T>{op});
  });
  return out;
}

template <class T>
device_tensor<T> binary(const backend<T>& b, binary_op op, const device_tensor<T>& x, const device_tensor<T>& y) {
  detail::check_operation(op);
  detail::check_same_shape(x.shape, y.shape, "binary");
  auto out = detail::allocate(b, x.shape);
  detail::run("binary", [&] {
    thrust::transform(execution_policy(*b.workspace()), x.data.data(), x.data.data() + x.data.size(), y.data.data(),
                      out.data.data(), fn::binary_map<T>{op});
  });
  return out;
}

template <class T>
device_tensor<T> binary(const backend<T>& b, binary_op op, const device_tensor<T>& x, double y) {
  detail::check_operation(op);
  auto out = detail::allocate(b, x.shape);
  detail::run("binary", [&] {
    thrust::transform(execution_policy(*b.workspace()), x.data.data(), x.data.data() + x.data.size(), out.data.data(),
                      fn::binary_scalar_right<T>{op, y});
  });
  return out;
}

template <class T>
device_tensor<T> binary(const backend<T>& b, binary_op op, double x, const device_tensor<T>& y) {
  detail::check_operation(op);
  auto out = detail::allocate(b, y.shape);
  detail::run("binary", [&] {
    thrust::transform(execution_policy(*b.workspace()), y.data.data(), y.data.data() + y.data.size(), out.data.data(),
                      fn::binary_scalar_left<T>{op, x});
  });
  return out;
}

template <class T>
device_tensor<T> select(const backend<T>& b, const device_tensor<T>& cond, const device_tensor<T>& x,
                        const device_tensor<T>& y) {
  detail::check_same_shape(cond.shape, x.shape, "select");
  detail::check_same_shape(x.shape, y.shape, "select");
  auto out = detail::allocate(b, x.shape);
  detail::run("select", [&] {
    thrust::transform(execution_policy(*b.workspace()), detail::count_from(0), detail::count_from(x.shape.numel()),
                      out.data.data(), fn::select_at<T>{cond.data.data(), x.data.data(), y.data.data()});
  });
  return out;
}

/// Rank-0 sum of every element, accumulated in double (as one row; see sum_rows for the order).
template <class T>
device_tensor<T> sum(const backend<T>& b, const device_tensor<T>& t) {
  auto out = detail::allocate(b, shape::scalar());
  const auto n = t.shape.numel();
  detail::run("sum", [&] {
    detail::sum_rows_into(b, t.data.data(), 1, n, out.data.data(), detail::default_row_sum_layout(n));
  });
  return out;
}

/// [R, C] -> [R], accumulated in double. Under CPP and OMP a row of up to 16384 elements is summed in
/// index order, as the reference backend does; longer rows (and every row under CUDA) in a fixed order
/// of parts, so results never depend on the thread count.
template <class T>
device_tensor<T> sum_rows(const backend<T>& b, const device_tensor<T>& t) {
  GRPO_CHECK(t.shape.rank == 2, shape_error, "sum_rows: expected a rank-2 tensor, got ", to_string(t.shape));
  const auto rows = t.shape.dims[0], cols = t.shape.dims[1];
  auto out = detail::allocate(b, shape::vector(rows));
  detail::run("sum_rows", [&] {
    detail::sum_rows_into(b, t.data.data(), rows, cols, out.data.data(), detail::default_row_sum_layout(cols));
  });
  return out;
}

/// [N] values with segment ids [N] -> [segments], accumulated in double in index order within each
/// segment (a stable sort of the ids, then one sequential sum per segment). An id out of range is reported
/// at the next synchronisation point and left out.
template <class T>
device_tensor<T> sum_segments(const backend<T>& b, const device_tensor<T>& t, const device_index& ids,
                              std::int64_t segments) {
  GRPO_CHECK(t.shape.rank == 1, shape_error, "sum_segments: values must be rank 1, got ", to_string(t.shape));
  GRPO_CHECK(ids.shape == t.shape, shape_error, "sum_segments: ids ", to_string(ids.shape), " vs values ",
             to_string(t.shape));
  GRPO_CHECK(segments >= 0, shape_error, "sum_segments: negative segment count ", segments);
  const std::int64_t n = t.shape.numel();
  auto out = detail::allocate(b, shape::vector(segments));
  detail::run("sum_segments", [&] {
    auto policy = execution_policy(*b.workspace());
    auto keys = detail::scratch<std::int64_t>(b, n);
    auto order = detail::scratch<std::int64_t>(b, n);
    auto offsets = detail::scratch<std::int64_t>(b, segments + 1);
    thrust::transform(policy, detail::count_from(0), detail::count_from(n), keys.data(),
                      fn::checked_segment_id{ids.data.data(), segments, b.workspace()->error_slot()});
    thrust::sequence(policy, order.data(), order.data() + n);
    thrust::stable_sort_by_key(policy, keys.data(), keys.data() + n, order.data());
    thrust::lower_bound(policy, keys.data(), keys.data() + n, detail::count_from(0), detail::count_from(segments + 1),
                        offsets.data());
    thrust::for_each_n(policy, detail::count_from(0), segments,
                       fn::segment_total<T>{t.data.data(), order.data(), offsets.data(), out.data.data()});
  });
  return out;
}

/// [S] at ids [N] -> [N]. An id out of range gives NaN and is reported at the next synchronisation point.
template <class T>
device_tensor<T> gather(const backend<T>& b, const device_tensor<T>& t, const device_index& ids) {
  GRPO_CHECK(t.shape.rank == 1 && ids.shape.rank == 1, shape_error, "gather: expected rank-1 values and ids, got ",
             to_string(t.shape), " and ", to_string(ids.shape));
  auto out = detail::allocate(b, ids.shape);
  detail::run("gather", [&] {
    thrust::transform(execution_policy(*b.workspace()), detail::count_from(0), detail::count_from(ids.shape.numel()),
                      out.data.data(),
                      fn::gather_at<T>{t.data.data(), ids.data.data(), t.shape.dims[0], b.workspace()->error_slot()});
  });
  return out;
}

template <class T>
device_tensor<T> expand_rows(const backend<T>& b, const device_tensor<T>& t, std::int64_t cols) {
  GRPO_CHECK(t.shape.rank == 1, shape_error, "expand_rows: expected a rank-1 tensor, got ", to_string(t.shape));
  GRPO_CHECK(cols >= 0, shape_error, "expand_rows: negative column count ", cols);
  const shape s = shape::matrix(t.shape.dims[0], cols);
  auto out = detail::allocate(b, s);
  if (s.numel() == 0) return out;
  detail::run("expand_rows", [&] {
    thrust::transform(execution_policy(*b.workspace()), detail::count_from(0), detail::count_from(s.numel()),
                      out.data.data(), fn::expand_at<T>{t.data.data(), cols});
  });
  return out;
}

/// A copy with another shape of the same element count (tensors own their storage).
template <class T>
device_tensor<T> reshape(const backend<T>&, const device_tensor<T>& t, shape s) {
  detail::check_rank(s, "reshape");
  GRPO_CHECK(s.numel() == t.shape.numel(), shape_error, "reshape: cannot view ", to_string(t.shape), " as ",
             to_string(s));
  return {s, t.data};
}

template <class T>
device_tensor<T> shift_left(const backend<T>& b, const device_tensor<T>& t) {
  GRPO_CHECK(t.shape.rank == 2, shape_error, "shift_left: expected a rank-2 tensor, got ", to_string(t.shape));
  auto out = detail::allocate(b, t.shape);
  if (t.shape.numel() == 0) return out;
  detail::run("shift_left", [&] {
    thrust::transform(execution_policy(*b.workspace()), detail::count_from(0), detail::count_from(t.shape.numel()),
                      out.data.data(), fn::shift_left_at<T>{t.data.data(), t.shape.dims[1]});
  });
  return out;
}

/// y[r][c] = x[r][c] + decay[r][c] y[r][c+1], y[r][C] = 0, as an inclusive scan by row of affine maps run
/// from the last element to the first (in double; a parallel scan regroups the compositions, which changes
/// only the rounding; CPP scans in order and reproduces the reference exactly).
template <class T>
device_tensor<T> reverse_scan_rows(const backend<T>& b, const device_tensor<T>& x, const device_tensor<T>& decay) {
  GRPO_CHECK(x.shape.rank == 2, shape_error, "reverse_scan_rows: expected a rank-2 tensor, got ", to_string(x.shape));
  detail::check_same_shape(x.shape, decay.shape, "reverse_scan_rows");
  auto out = detail::allocate(b, x.shape);
  const std::int64_t n = x.shape.numel();
  if (n == 0) return out;
  detail::run("reverse_scan_rows", [&] {
    auto policy = execution_policy(*b.workspace());
    auto scanned = detail::scratch<fn::affine>(b, n);
    const auto keys = thrust::make_transform_iterator(detail::count_from(0), fn::reversed_row{n, x.shape.dims[1]});
    const auto maps = thrust::make_transform_iterator(detail::count_from(0),
                                                      fn::reversed_affine<T>{x.data.data(), decay.data.data(), n});
    thrust::inclusive_scan_by_key(policy, keys, keys + n, maps, scanned.data(), thrust::equal_to<std::int64_t>(),
                                  fn::compose_affine{});
    thrust::transform(policy, detail::count_from(0), detail::count_from(n), out.data.data(),
                      fn::unreverse_affine<T>{scanned.data(), n});
  });
  return out;
}

/// {lse, entropy, logprob} [N] of softmax(inv_temperature z) for logits [N, V] and ids [N]. An id out of
/// range gives logprob NaN and is reported at the next synchronisation point.
template <class T>
softmax_row_stats<device_tensor<T>> row_softmax_stats(const backend<T>& b, const device_tensor<T>& z,
                                                      const device_index& ids, double inv_temperature) {
  detail::check_logits(z, "row_softmax_stats");
  const auto rows = z.shape.dims[0], vocab = z.shape.dims[1];
  GRPO_CHECK(ids.shape == shape::vector(rows), shape_error, "row_softmax_stats: ids ", to_string(ids.shape),
             " vs logits ", to_string(z.shape));
  softmax_row_stats<device_tensor<T>> out{detail::allocate(b, shape::vector(rows)),
                                          detail::allocate(b, shape::vector(rows)),
                                          detail::allocate(b, shape::vector(rows))};
  std::int64_t* slot = b.workspace()->error_slot();
#if GRPO_CCCL_CUDA
  if (b.fused_kernels()) {
    detail::cuda_check(
        kernels::softmax_stats(z.data.data(), rows, vocab, ids.data.data(), inv_temperature, out.lse.data.data(),
                               out.entropy.data.data(), out.logprob.data.data(), slot, b.stream()),
        "row_softmax_stats");
    return out;
  }
#else
  if constexpr (std::is_same_v<T, float>) {
    host_rows::softmax_stats(z.data.data(), ids.data.data(), rows, vocab, inv_temperature, out.lse.data.data(),
                             out.entropy.data.data(), out.logprob.data.data(), slot);
    return out;
  }
#endif
  detail::run("row_softmax_stats", [&] {
    thrust::for_each_n(
        execution_policy(*b.workspace()), detail::count_from(0), rows,
        fn::row_softmax_stats<T>{z.data.data(), ids.data.data(), vocab, inv_temperature, out.lse.data.data(),
                                 out.entropy.data.data(), out.logprob.data.data(), slot});
  });
  return out;
}

/// out [N, V] = d/dz sum_n (g_logprob[n] logprob[n] + g_entropy[n] entropy[n]); out may be z itself.
template <class T>
void row_softmax_backward(const backend<T>& b, const device_tensor<T>& z, const device_index& ids,
                          double inv_temperature, const device_tensor<T>& lse, const device_tensor<T>& entropy,
                          const device_tensor<T>& g_logprob, const device_tensor<T>& g_entropy, device_tensor<T>& out) {
  detail::check_logits(z, "row_softmax_backward");
  const auto rows = z.shape.dims[0], vocab = z.shape.dims[1];
  for (const auto* t : {&lse, &entropy, &g_logprob, &g_entropy})
    detail::check_row_vector(*t, rows, "row_softmax_backward", "row vector", z.shape);
  GRPO_CHECK(ids.shape == shape::vector(rows), shape_error, "row_softmax_backward: ids ", to_string(ids.shape),
             " vs logits ", to_string(z.shape));
  detail::prepare_output(b, out, z.shape);
#if GRPO_CCCL_CUDA
  if (b.fused_kernels()) {
    detail::cuda_check(kernels::softmax_backward(z.data.data(), rows, vocab, ids.data.data(), inv_temperature,
                                                 lse.data.data(), entropy.data.data(), g_logprob.data.data(),
                                                 g_entropy.data.data(), out.data.data(), b.stream()),
                       "row_softmax_backward");
    return;
  }
#else
  if constexpr (std::is_same_v<T, float>) {
    host_rows::softmax_backward(z.data.data(), ids.data.data(), rows, vocab, inv_temperature, lse.data.data(),
                                entropy.data.data(), g_logprob.data.data(), g_entropy.data.data(), out.data.data());
    return;
  }
#endif
  detail::run("row_softmax_backward", [&] {
    thrust::transform(
        execution_policy(*b.workspace()), detail::count_from(0), detail::count_from(rows * vocab), out.data.data(),
        fn::row_softmax_gradient<T>{z.data.data(), ids.data.data(), vocab, inv_temperature, lse.data.data(),
                                    entropy.data.data(), g_logprob.data.data(), g_entropy.data.data()});
  });
}

/// Per-row divergence D_beta(softmax(s teacher) || softmax(s student)) [N] and out [N, V] = w d loss /
/// d student (backend.hpp); out may be the student logits.
template <class T>
device_tensor<T> row_divergence(const backend<T>& b, const device_tensor<T>& student, const device_tensor<T>& teacher,
                                double inv_temperature, double beta, const device_tensor<T>& weight,
                                device_tensor<T>& out) {
  detail::check_logits(student, "row_divergence");
  detail::check_same_shape(student.shape, teacher.shape, "row_divergence");
  const auto rows = student.shape.dims[0], vocab = student.shape.dims[1];
  GRPO_CHECK(weight.shape == shape::vector(rows), shape_error, "row_divergence: weight ", to_string(weight.shape),
             " vs logits ", to_string(student.shape));
  GRPO_CHECK(beta >= 0.0 && beta <= 1.0, config_error, "row_divergence: beta must be in [0, 1], got ", beta);
  detail::prepare_output(b, out, student.shape);
  auto loss = detail::allocate(b, shape::vector(rows));
#if GRPO_CCCL_CUDA
  if (b.fused_kernels()) {
    detail::cuda_check(kernels::divergence(student.data.data(), teacher.data.data(), rows, vocab, inv_temperature, beta,
                                           weight.data.data(), loss.data.data(), out.data.data(), b.stream()),
                       "row_divergence");
    return loss;
  }
#else
  if constexpr (std::is_same_v<T, float>) {
    host_rows::divergence(student.data.data(), teacher.data.data(), rows, vocab, inv_temperature, beta,
                          weight.data.data(), loss.data.data(), out.data.data());
    return loss;
  }
#endif
  detail::run("row_divergence", [&] {
    thrust::for_each_n(execution_policy(*b.workspace()), detail::count_from(0), rows,
                       fn::row_divergence<T>{student.data.data(), teacher.data.data(), vocab, inv_temperature, beta,
                                             weight.data.data(), loss.data.data(), out.data.data()});
  });
  return loss;
}

/// Forward KL to a sparse teacher (K ids and log-probs per row) [N] and out [N, V] = w d loss / d student;
/// out may be the student logits. A teacher id out of range makes its row's loss NaN, is left out of the
/// gradient and is reported at the next synchronisation point.
template <class T>
device_tensor<T> row_sparse_forward_kl(const backend<T>& b, const device_tensor<T>& student,
                                       const device_index& teacher_ids, const device_tensor<T>& teacher_logprobs,
                                       double inv_temperature, const device_tensor<T>& weight, device_tensor<T>& out) {
  detail::check_logits(student, "row_sparse_forward_kl");
  const auto rows = student.shape.dims[0], vocab = student.shape.dims[1];
  GRPO_CHECK(teacher_ids.shape.rank == 2 && teacher_ids.shape.dims[0] == rows, shape_error,
             "row_sparse_forward_kl: teacher ids must be [N, K], got ", to_string(teacher_ids.shape), " for logits ",
             to_string(student.shape));
  detail::check_same_shape(teacher_ids.shape, teacher_logprobs.shape, "row_sparse_forward_kl");
  GRPO_CHECK(weight.shape == shape::vector(rows), shape_error, "row_sparse_forward_kl: weight ",
             to_string(weight.shape), " vs logits ", to_string(student.shape));
  const auto k = teacher_ids.shape.dims[1];
  detail::prepare_output(b, out, student.shape);
  auto loss = detail::allocate(b, shape::vector(rows));
  std::int64_t* slot = b.workspace()->error_slot();
#if GRPO_CCCL_CUDA
  if (b.fused_kernels()) {
    detail::cuda_check(kernels::sparse_forward_kl(
                           student.data.data(), teacher_ids.data.data(), teacher_logprobs.data.data(), rows, vocab, k,
                           inv_temperature, weight.data.data(), loss.data.data(), out.data.data(), slot, b.stream()),
                       "row_sparse_forward_kl");
    return loss;
  }
#endif
  auto picked = detail::allocate(b, teacher_ids.shape);
#if !GRPO_CCCL_CUDA
  if constexpr (std::is_same_v<T, float>) {
    host_rows::sparse_forward_kl(student.data.data(), teacher_ids.data.data(), teacher_logprobs.data.data(), rows, vocab,
                                 k, inv_temperature, weight.data.data(), loss.data.data(), out.data.data(),
                                 picked.data.data(), slot);
    return loss;
  }
#endif
  detail::run("row_sparse_forward_kl", [&] {
    thrust::for_each_n(
        execution_policy(*b.workspace()), detail::count_from(0), rows,
        fn::row_sparse_forward_kl<T>{student.data.data(), teacher_ids.data.data(), teacher_logprobs.data.data(), vocab,
                                     k, inv_temperature, weight.data.data(), loss.data.data(), out.data.data(),
                                     picked.data.data(), slot});
  });
  return loss;
}

static_assert(logits_backend<backend<float>>);
static_assert(logits_backend<backend<double>>);

}  // namespace GRPO_CCCL_SYSTEM_NAMESPACE
}  // namespace grpo::cccl

// The host systems' fused algorithm paths, built on the operations above (host_fused.hpp).
#include "grpo/cccl/host_fused.hpp"
