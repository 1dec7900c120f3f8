// SPDX-License-Identifier: Apache-2.0
// grpo/libtorch/row_primitives.hpp: the row primitives of grpo::libtorch::backend over logits [N, V]
// (row_softmax_stats, row_softmax_backward, row_divergence, row_sparse_forward_kl; grpo::logits_backend). They run as
// chunks of torch ops in backend::row_dtype, double by default, exact to the reference whatever the logits'
// magnitude, and differentiable by torch autograd. One exception, opted into with row_dtype float: on fp32 CPU logits
// that autograd need not differentiate, they run the core's fp32 row kernels (grpo/libtorch/host_rows.hpp;
// row_softmax_stats_path and its siblings say when), and redo through the torch ops the rows those hand back. In a
// file compiled by nvcc with grpo::cuda (GRPO_LIBTORCH_CUDA_KERNELS, config.hpp), CUDA logits whose kernel
// accumulation type is row_dtype (fp32 for bf16, fp16 and fp32 logits with row_dtype float; fp64 with double) run
// grpo::cuda's fused kernels on torch's current stream (grpo/libtorch/cuda_rows.hpp) under the same conditions.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "grpo/backend.hpp"
#include "grpo/error.hpp"
#include "grpo/libtorch/config.hpp"
#include "grpo/libtorch/host_rows.hpp"
#include "grpo/libtorch/tensor_ops.hpp"
#if GRPO_LIBTORCH_CUDA_KERNELS
#include "grpo/libtorch/cuda_rows.hpp"
#endif

namespace grpo::libtorch {
inline namespace GRPO_LIBTORCH_NAMESPACE {

namespace detail {

inline void check_logits(const backend& b, const at::Tensor& z, const char* what) {
  check_floating(b.row_dtype, "backend.row_dtype");
  const auto s = shape_from(z, what);
  GRPO_CHECK(s.rank == 2 && s.dims[1] > 0, shape_error, what, ": logits must be [N, V] with V > 0, got ", to_string(s));
}

inline void check_row_vector(const at::Tensor& t, std::int64_t rows, const char* what, const char* name,
                             const at::Tensor& logits) {
  const auto s = shape_from(t, what);
  GRPO_CHECK(s == shape::vector(rows), shape_error, what, ": ", name, " ", to_string(s), " vs logits ",
             to_string(shape_from(logits, what)));
}

/// Rows per chunk of the row primitives: about b.chunk_elements logits, at least one row.
inline std::int64_t chunk_rows(const backend& b, std::int64_t vocab) {
  return std::max<std::int64_t>(1, b.chunk_elements / std::max<std::int64_t>(vocab, 1));
}

/// Runs f(first_row, row_count) over the chunks of `rows` and concatenates the [count] tensors it returns.
template <class F>
at::Tensor concat_chunks(std::int64_t rows, std::int64_t chunk, const at::TensorOptions& empty_options, F&& f) {
  if (rows == 0) return at::empty({0}, empty_options);
  std::vector<at::Tensor> parts;
  for (std::int64_t r0 = 0; r0 < rows; r0 += chunk) parts.push_back(f(r0, std::min(chunk, rows - r0)));
  return parts.size() == 1 ? parts.front() : at::cat(parts);
}

/// `out` of a row primitive: written in place, in its own dtype, when it already has the logits' shape (it may be
/// the logits themselves); otherwise allocated in the logits' compute dtype (fp32 for bf16 logits, as every other
/// result; pass a bf16 buffer to get a bf16 gradient).
inline void prepare_output(const backend& b, at::Tensor& out, const at::Tensor& logits) {
  if (!out.defined() || out.sizes() != logits.sizes())
    out = at::empty(logits.sizes(), logits.options().dtype(compute_type(logits.scalar_type(), b)));
}

/// x where keep, else 0: the branch not taken never reaches the gradient as NaN (0 * inf).
inline at::Tensor where_or_zero(const at::Tensor& keep, const at::Tensor& x) {
  return at::where(keep, x, at::zeros_like(x));
}

}  // namespace detail

namespace detail {

/// row_softmax_stats through torch ops, chunk by chunk in b.row_dtype (ids as int64, already checked).
inline softmax_row_stats<at::Tensor> row_softmax_stats_torch(const backend& b, const at::Tensor& z,
                                                             const at::Tensor& index, double inv_temperature) {
  const auto rows = z.size(0), vocab = z.size(1);
  const auto type = compute_type(z.scalar_type(), b);
  const auto chunk = chunk_rows(b, vocab);
  std::vector<at::Tensor> lse, entropy, logprob;
  for (std::int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const auto n = std::min(chunk, rows - r0);
    const auto x = z.narrow(0, r0, n).to(b.row_dtype) * inv_temperature;
    const auto l = at::logsumexp(x, {1});
    const auto log_p = x - l.unsqueeze(1);
    // -sum p log p over the entries with log p > -inf (false for NaN too); 0 elsewhere, so exp(0) * 0 = 0.
    const auto safe = where_or_zero(log_p > -INFINITY, log_p);
    entropy.push_back(-(at::exp(safe) * safe).sum({1}).to(type));
    logprob.push_back((x.gather(1, index.narrow(0, r0, n).unsqueeze(1)).squeeze(1) - l).to(type));
    lse.push_back(l.to(type));
  }
  const auto join = [&](std::vector<at::Tensor>& parts) {
    if (parts.empty()) return at::empty({0}, z.options().dtype(type));
    return parts.size() == 1 ? parts.front() : at::cat(parts);
  };
  return {join(lse), join(entropy), join(logprob)};
}

/// The host fp32 path applies: CPU fp32 logits and b.row_dtype float (autograd is the caller's condition).
inline bool host_fp32_logits(const backend& b, const at::Tensor& z) {
  return b.row_dtype == at::kFloat && z.device().is_cpu() && z.scalar_type() == at::kFloat;
}

inline bool records_graph(const at::Tensor& t) { return at::GradMode::is_enabled() && t.requires_grad(); }

/// The CUDA kernel path applies to logits z: this file has grpo::cuda's kernels (config.hpp) and z is a CUDA tensor
/// whose kernel accumulation type is b.row_dtype (cuda_kernels::applies).
inline bool cuda_kernel_logits([[maybe_unused]] const backend& b, [[maybe_unused]] const at::Tensor& z) {
#if GRPO_LIBTORCH_CUDA_KERNELS
  return cuda_kernels::applies(z, b.row_dtype);
#else
  return false;
#endif
}

/// The gradient a row primitive writes for logits z into out (as prepare_output leaves it; out may be undefined)
/// has z's dtype and device, as the kernels write it.
inline bool gradient_like_logits(const backend& b, const at::Tensor& z, const at::Tensor& out) {
  if (!out.defined() || out.sizes() != z.sizes()) return compute_type(z.scalar_type(), b) == z.scalar_type();
  return out.scalar_type() == z.scalar_type() && out.device() == z.device();
}

/// The path of a row primitive over the student's logits x and the teacher's logits or log-probs y, with the
/// gradient going to out: cuda_kernels when x takes the kernels, y is on x's device (in x's dtype when
/// same_dtype), the gradient has x's dtype and autograd records nothing for either; host_fp32 when both are fp32 CPU
/// tensors, b.row_dtype is float and autograd records nothing for either; torch_ops otherwise.
inline row_path two_input_path(const backend& b, const at::Tensor& x, const at::Tensor& y, const at::Tensor& out,
                               bool same_dtype) {
  if (records_graph(x) || records_graph(y)) return row_path::torch_ops;
  if (cuda_kernel_logits(b, x) && y.device() == x.device() && (!same_dtype || y.scalar_type() == x.scalar_type()) &&
      gradient_like_logits(b, x, out))
    return row_path::cuda_kernels;
  return host_fp32_logits(b, x) && host_fp32_logits(b, y) ? row_path::host_fp32 : row_path::torch_ops;
}

}  // namespace detail

/// Which implementation row_softmax_stats runs for logits z: row_path::torch_ops when autograd records a graph for z;
/// else row_path::cuda_kernels (grpo::cuda's kernels, grpo/libtorch/cuda_rows.hpp) for CUDA logits whose kernel
/// accumulation type is b.row_dtype, in a file built with them (config.hpp); row_path::host_fp32 (the core's fp32
/// row kernels, grpo/libtorch/host_rows.hpp) for fp32 CPU logits with b.row_dtype float; row_path::torch_ops
/// otherwise (double row_dtype on fp32 logits, CUDA tensors without the kernels, bf16 / fp16 / fp64 CPU logits).
inline row_path row_softmax_stats_path(const backend& b, const at::Tensor& z) {
  if (detail::records_graph(z)) return row_path::torch_ops;
  if (detail::cuda_kernel_logits(b, z)) return row_path::cuda_kernels;
  return detail::host_fp32_logits(b, z) ? row_path::host_fp32 : row_path::torch_ops;
}

/// Which implementation row_softmax_backward runs for logits z and the out it is given (the backward never records a
/// graph): row_path::cuda_kernels as row_softmax_stats_path says, when the gradient also has z's dtype (fp32 and fp64
/// logits, or an out of bf16 / fp16 logits' own dtype); row_path::host_fp32 for fp32 CPU logits with b.row_dtype
/// float; row_path::torch_ops otherwise.
inline row_path row_softmax_backward_path(const backend& b, const at::Tensor& z, const at::Tensor& out = {}) {
  if (detail::cuda_kernel_logits(b, z) && detail::gradient_like_logits(b, z, out)) return row_path::cuda_kernels;
  return detail::host_fp32_logits(b, z) ? row_path::host_fp32 : row_path::torch_ops;
}

/// Which implementation row_divergence runs for the logits and the out it is given: row_path::cuda_kernels when the
/// student's logits take the kernels (row_softmax_stats_path), the teacher's have their dtype and device, the
/// gradient has their dtype (row_softmax_backward_path) and autograd records nothing for either (row_divergence then
/// also keeps the torch ops for a beta strictly inside (0, 1) that the fp32 kernels would round to 0 or 1);
/// row_path::host_fp32
/// when both logits are fp32 CPU tensors, b.row_dtype is float and autograd records nothing for either;
/// row_path::torch_ops otherwise.
inline row_path row_divergence_path(const backend& b, const at::Tensor& student, const at::Tensor& teacher,
                                    const at::Tensor& out = {}) {
  return detail::two_input_path(b, student, teacher, out, /*same_dtype=*/true);
}

/// {lse, entropy, logprob} of softmax(s z) per row, computed in b.row_dtype chunk by chunk and returned in the
/// compute dtype of z. Differentiable (torch autograd) with respect to z. As in the reference, entries with
/// log p = -inf (masked-out logits) add nothing to the entropy, a row of only -inf has lse -inf, entropy 0 and
/// logprob NaN, and a NaN or +inf logit makes the row's lse non-finite. On row_softmax_stats_path's host_fp32 path
/// the ordinary rows run the core's fp32 kernels and the others (non-finite entries, a row all -inf) the torch ops.
inline softmax_row_stats<at::Tensor> row_softmax_stats(const backend& b, const at::Tensor& z, const at::Tensor& ids,
                                                       double inv_temperature) {
  detail::check_logits(b, z, "row_softmax_stats");
  const auto rows = z.size(0), vocab = z.size(1);
  const auto index = detail::as_index(ids, "row_softmax_stats");
  detail::check_row_vector(index, rows, "row_softmax_stats", "ids", z);
  detail::check_ids_in_range(index, vocab, "row_softmax_stats");
  const auto path = row_softmax_stats_path(b, z);
  if (path == row_path::torch_ops) return detail::row_softmax_stats_torch(b, z, index, inv_temperature);
#if GRPO_LIBTORCH_CUDA_KERNELS
  if (path == row_path::cuda_kernels) return cuda_kernels::softmax_stats(z, index, inv_temperature);
#endif
  softmax_row_stats<at::Tensor> out;
  const auto redo = host_fp32::softmax_stats(z, index, inv_temperature, out.lse, out.entropy, out.logprob);
  if (redo.numel() > 0) {
    const auto exact = detail::row_softmax_stats_torch(b, z.index_select(0, redo), index.index_select(0, redo),
                                                       inv_temperature);
    out.lse.index_copy_(0, redo, exact.lse);
    out.entropy.index_copy_(0, redo, exact.entropy);
    out.logprob.index_copy_(0, redo, exact.logprob);
  }
  return out;
}

namespace detail {

/// row_softmax_backward through torch ops into out (z's shape), chunk by chunk in b.row_dtype, without autograd.
inline void row_softmax_backward_torch(const backend& b, const at::Tensor& z, const at::Tensor& index,
                                       double inv_temperature, const at::Tensor& lse, const at::Tensor& entropy,
                                       const at::Tensor& g_logprob, const at::Tensor& g_entropy, at::Tensor& out) {
  const auto rows = z.size(0), vocab = z.size(1);
  const auto rd = b.row_dtype;
  const auto columns = at::arange(vocab, index.options()).unsqueeze(0);
  const auto chunk = chunk_rows(b, vocab);
  for (std::int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const auto n = std::min(chunk, rows - r0);
    const auto row = [&](const at::Tensor& t) { return t.narrow(0, r0, n).to(rd).unsqueeze(1); };
    const auto log_p = z.narrow(0, r0, n).to(rd) * inv_temperature - row(lse);
    const auto p = at::exp(log_p);
    const auto onehot = (columns == index.narrow(0, r0, n).unsqueeze(1)).to(rd);
    const auto d = row(g_logprob) * (onehot - p) - where_or_zero(p > 0, row(g_entropy) * p * (log_p + row(entropy)));
    out.narrow(0, r0, n).copy_(d * inv_temperature);
  }
}

/// out itself when the host fp32 kernels can write it (fp32, contiguous, CPU), else a new fp32 tensor of z's shape
/// to be copied into out afterwards.
inline at::Tensor host_fp32_output(const at::Tensor& out) {
  return out.scalar_type() == at::kFloat && out.device().is_cpu() && out.is_contiguous()
             ? out
             : at::empty(out.sizes(), at::TensorOptions().dtype(at::kFloat));
}

}  // namespace detail

/// Writes d/dz of sum_n (g_logprob[n] logprob[n] + g_entropy[n] entropy[n]) into out [N, V] (in place when out
/// has the logits' shape; it may be z itself). The analytic gradient, computed without autograd:
/// s [g_logprob (1[v = id] - p_v) - g_entropy p_v (log p_v + H)], chunk by chunk in b.row_dtype; on
/// row_softmax_backward_path's host_fp32 path by the core's fp32 kernels, the rows with a non-finite lse, entropy or
/// upstream gradient by the torch ops.
inline void row_softmax_backward(const backend& b, const at::Tensor& z, const at::Tensor& ids, double inv_temperature,
                                 const at::Tensor& lse, const at::Tensor& entropy, const at::Tensor& g_logprob,
                                 const at::Tensor& g_entropy, at::Tensor& out) {
  detail::check_logits(b, z, "row_softmax_backward");
  const auto rows = z.size(0);
  for (const auto* t : {&lse, &entropy, &g_logprob, &g_entropy})
    detail::check_row_vector(*t, rows, "row_softmax_backward", "row vector", z);
  const auto index = detail::as_index(ids, "row_softmax_backward");
  detail::check_row_vector(index, rows, "row_softmax_backward", "ids", z);
  const at::NoGradGuard no_grad;
  detail::prepare_output(b, out, z);
  const auto path = row_softmax_backward_path(b, z, out);
  if (path == row_path::torch_ops) {
    detail::row_softmax_backward_torch(b, z, index, inv_temperature, lse, entropy, g_logprob, g_entropy, out);
    return;
  }
#if GRPO_LIBTORCH_CUDA_KERNELS
  if (path == row_path::cuda_kernels) {
    cuda_kernels::softmax_backward(z, index, inv_temperature, lse, entropy, g_logprob, g_entropy, out);
    return;
  }
#endif
  auto target = detail::host_fp32_output(out);
  const auto redo =
      host_fp32::softmax_backward(z, index, inv_temperature, lse, entropy, g_logprob, g_entropy, target);
  if (redo.numel() > 0) {
    const auto pick = [&](const at::Tensor& t) { return t.index_select(0, redo.to(t.device())); };
    auto exact = at::empty({redo.numel(), z.size(1)}, target.options());
    detail::row_softmax_backward_torch(b, pick(z), pick(index), inv_temperature, pick(lse), pick(entropy),
                                       pick(g_logprob), pick(g_entropy), exact);
    target.index_copy_(0, redo, exact);
  }
  if (!target.is_same(out)) out.copy_(target);
}

namespace detail {

/// row_divergence through torch ops: loss [N] (differentiable) and out (the student's shape) written without
/// autograd, chunk by chunk in b.row_dtype.
inline at::Tensor row_divergence_torch(const backend& b, const at::Tensor& student, const at::Tensor& teacher,
                                       double inv_temperature, double beta, const at::Tensor& weight,
                                       at::Tensor& out) {
  const auto rows = student.size(0), vocab = student.size(1);
  const auto type = common_type(b, student, teacher);
  const auto rd = b.row_dtype;
  return concat_chunks(
      rows, chunk_rows(b, vocab), student.options().dtype(type), [&](std::int64_t r0, std::int64_t n) {
        const auto xs = student.narrow(0, r0, n).to(rd) * inv_temperature;
        const auto xt = teacher.narrow(0, r0, n).to(rd) * inv_temperature;
        const auto log_q = xs - at::logsumexp(xs, {1}).unsqueeze(1);
        const auto log_p = xt - at::logsumexp(xt, {1}).unsqueeze(1);
        const auto q = at::exp(log_q), p = at::exp(log_p);
        at::Tensor term, log_m;
        if (beta == 0.0) {
          term = p * where_or_zero(p > 0, log_p - log_q);
        } else if (beta == 1.0) {
          term = q * where_or_zero(q > 0, log_q - log_p);
        } else {
          // log m = logaddexp(log beta + log p, log(1 - beta) + log q); entries both distributions exclude get
          // finite stand-ins (their terms are 0) so that logaddexp's gradient never sees -inf - -inf.
          const auto excluded = at::logical_and(p == 0, q == 0);
          const auto a = where_or_zero(at::logical_not(excluded), log_p + std::log(beta));
          const auto c = where_or_zero(at::logical_not(excluded), log_q + std::log1p(-beta));
          log_m = at::logaddexp(a, c);
          term = beta * p * where_or_zero(p > 0, log_p - log_m) +
                 (1.0 - beta) * q * where_or_zero(q > 0, log_q - log_m);
        }
        {
          // d loss / d log q, then the chain rule through log-softmax: d/d(s zs_v) = d_v - q_v sum_u d_u.
          const at::NoGradGuard no_grad;
          at::Tensor d;
          if (beta == 0.0) {
            d = -p;
          } else if (beta == 1.0) {
            d = where_or_zero(q > 0, q * (log_q - log_p) + q);
          } else {
            d = where_or_zero(q > 0, (1.0 - beta) * q * (log_q - log_m));
          }
          const auto w = weight.narrow(0, r0, n).to(rd).unsqueeze(1) * inv_temperature;
          out.narrow(0, r0, n).copy_(w * (d - q * d.sum({1}, /*keepdim=*/true)));
        }
        return term.sum({1}).to(type);
      });
}

}  // namespace detail

/// Per-row divergence between teacher P = softmax(s zt) and student Q = softmax(s zs) (see grpo::logits_backend):
/// beta 0: KL(P||Q); beta 1: KL(Q||P); else JSD_beta. Returns loss [N] (differentiable by autograd with respect to
/// both logits) and writes out = w * d loss / d zs analytically (no autograd), chunk by chunk in b.row_dtype; on
/// row_divergence_path's host_fp32 path by the core's fp32 kernel, the rows with a non-finite entry, a row all -inf or
/// a non-finite weight by the torch ops. Terms with a zero probability contribute 0 and no NaN reaches either
/// gradient.
inline at::Tensor row_divergence(const backend& b, const at::Tensor& student, const at::Tensor& teacher,
                                 double inv_temperature, double beta, const at::Tensor& weight, at::Tensor& out) {
  detail::check_logits(b, student, "row_divergence");
  detail::check_same_shape(student, teacher, "row_divergence");
  const auto rows = student.size(0);
  detail::check_row_vector(weight, rows, "row_divergence", "weight", student);
  GRPO_CHECK(beta >= 0.0 && beta <= 1.0, config_error, "row_divergence: beta must be in [0, 1], got ", beta);
  detail::prepare_output(b, out, student);
  const auto path = row_divergence_path(b, student, teacher, out);
  if (path == row_path::torch_ops)
    return detail::row_divergence_torch(b, student, teacher, inv_temperature, beta, weight, out);
  const at::NoGradGuard no_grad;
#if GRPO_LIBTORCH_CUDA_KERNELS
  if (path == row_path::cuda_kernels) {
    if (!cuda_kernels::divergence_beta_fits(student, beta))
      return detail::row_divergence_torch(b, student, teacher, inv_temperature, beta, weight, out);
    return cuda_kernels::divergence(student, teacher, inv_temperature, beta, weight, out);
  }
#endif
  auto target = detail::host_fp32_output(out);
  at::Tensor loss;
  const auto redo = host_fp32::divergence(student, teacher, inv_temperature, beta, weight, loss, target);
  if (redo.numel() > 0) {
    const auto pick = [&](const at::Tensor& t) { return t.index_select(0, redo.to(t.device())); };
    auto exact = at::empty({redo.numel(), student.size(1)}, target.options());
    loss.index_copy_(0, redo,
                     detail::row_divergence_torch(b, pick(student), pick(teacher), inv_temperature, beta,
                                                  pick(weight), exact));
    target.index_copy_(0, redo, exact);
  }
  if (!target.is_same(out)) out.copy_(target);
  return loss;
}

namespace detail {

/// row_sparse_forward_kl through torch ops: loss [N] (differentiable) and out written without autograd, chunk by
/// chunk in b.row_dtype (ids as int64, already checked).
inline at::Tensor row_sparse_forward_kl_torch(const backend& b, const at::Tensor& student, const at::Tensor& index,
                                              const at::Tensor& teacher_logprobs, double inv_temperature,
                                              const at::Tensor& weight, at::Tensor& out) {
  const auto rows = student.size(0), vocab = student.size(1);
  const auto type = common_type(b, student, teacher_logprobs);
  const auto rd = b.row_dtype;
  return concat_chunks(
      rows, chunk_rows(b, vocab), student.options().dtype(type), [&](std::int64_t r0, std::int64_t n) {
        const auto xs = student.narrow(0, r0, n).to(rd) * inv_temperature;
        const auto lse = at::logsumexp(xs, {1}).unsqueeze(1);
        const auto ids = index.narrow(0, r0, n);
        const auto log_p = teacher_logprobs.narrow(0, r0, n).to(rd);
        const auto p = at::exp(log_p);
        const auto term = p * where_or_zero(p > 0, log_p - (xs.gather(1, ids) - lse));
        {
          const at::NoGradGuard no_grad;
          auto g = p.sum({1}, /*keepdim=*/true) * at::exp(xs - lse);
          g.scatter_add_(1, ids, -p);
          out.narrow(0, r0, n).copy_(weight.narrow(0, r0, n).to(rd).unsqueeze(1) * inv_temperature * g);
        }
        return term.sum({1}).to(type);
      });
}

}  // namespace detail

/// Which implementation row_sparse_forward_kl runs for the student's logits, the teacher's log-probs [N, K] and the
/// out it is given: row_path::cuda_kernels when the student's logits take the kernels (row_softmax_stats_path), the
/// log-probs are on their device (any floating dtype: they are read in the accumulation type, as the torch ops read
/// them in row_dtype), the gradient has the logits' dtype, the K entries of a row fit the kernel's shared memory on
/// that device (about 14500 for fp32 logits on Hopper) and autograd records nothing for either; row_path::host_fp32
/// when both are fp32 CPU tensors, b.row_dtype is float and autograd records nothing for either; row_path::torch_ops
/// otherwise.
inline row_path row_sparse_forward_kl_path(const backend& b, const at::Tensor& student,
                                           const at::Tensor& teacher_logprobs, const at::Tensor& out = {}) {
  const auto path = detail::two_input_path(b, student, teacher_logprobs, out, /*same_dtype=*/false);
#if GRPO_LIBTORCH_CUDA_KERNELS
  if (path == row_path::cuda_kernels &&
      (teacher_logprobs.dim() != 2 || !cuda_kernels::sparse_fits(student, teacher_logprobs.size(1))))
    return row_path::torch_ops;
#endif
  return path;
}

/// Forward KL against a sparse teacher: loss_n = sum_j p_j (log p_j - log q_{id_j}) with p_j = exp(teacher log-prob),
/// differentiable by autograd; out = w s (sum_j p_j q_v - sum_j p_j 1[v = id_j]) written analytically. On
/// row_sparse_forward_kl_path's host_fp32 path by the core's fp32 kernel, the rows with a non-finite student entry,
/// a NaN or +inf teacher log-prob or a non-finite weight by the torch ops.
inline at::Tensor row_sparse_forward_kl(const backend& b, const at::Tensor& student, const at::Tensor& teacher_ids,
                                        const at::Tensor& teacher_logprobs, double inv_temperature,
                                        const at::Tensor& weight, at::Tensor& out) {
  detail::check_logits(b, student, "row_sparse_forward_kl");
  const auto rows = student.size(0), vocab = student.size(1);
  const auto index = detail::as_index(teacher_ids, "row_sparse_forward_kl");
  const auto id_shape = detail::shape_from(index, "row_sparse_forward_kl");
  GRPO_CHECK(id_shape.rank == 2 && id_shape.dims[0] == rows, shape_error,
             "row_sparse_forward_kl: teacher ids must be [N, K], got ", to_string(id_shape), " for logits ",
             to_string(detail::shape_from(student, "row_sparse_forward_kl")));
  detail::check_same_shape(index, teacher_logprobs, "row_sparse_forward_kl");
  detail::check_row_vector(weight, rows, "row_sparse_forward_kl", "weight", student);
  detail::check_ids_in_range(index, vocab, "row_sparse_forward_kl");
  detail::prepare_output(b, out, student);
  const auto path = row_sparse_forward_kl_path(b, student, teacher_logprobs, out);
  if (path == row_path::torch_ops)
    return detail::row_sparse_forward_kl_torch(b, student, index, teacher_logprobs, inv_temperature, weight, out);
  const at::NoGradGuard no_grad;
#if GRPO_LIBTORCH_CUDA_KERNELS
  // The loss in the dtype the torch ops return (fp64 teacher log-probs promote it), computed in row_dtype on both.
  if (path == row_path::cuda_kernels)
    return cuda_kernels::sparse_forward_kl(student, index, teacher_logprobs, inv_temperature, weight, out)
        .to(detail::common_type(b, student, teacher_logprobs));
#endif
  auto target = detail::host_fp32_output(out);
  at::Tensor loss;
  const auto redo =
      host_fp32::sparse_forward_kl(student, index, teacher_logprobs, inv_temperature, weight, loss, target);
  if (redo.numel() > 0) {
    const auto pick = [&](const at::Tensor& t) { return t.index_select(0, redo.to(t.device())); };
    auto exact = at::empty({redo.numel(), vocab}, target.options());
    loss.index_copy_(0, redo,
                     detail::row_sparse_forward_kl_torch(b, pick(student), pick(index), pick(teacher_logprobs),
                                                         inv_temperature, pick(weight), exact));
    target.index_copy_(0, redo, exact);
  }
  if (!target.is_same(out)) out.copy_(target);
  return loss;
}

}  // namespace GRPO_LIBTORCH_NAMESPACE
}  // namespace grpo::libtorch
