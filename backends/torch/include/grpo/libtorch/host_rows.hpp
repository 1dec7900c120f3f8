// SPDX-License-Identifier: Apache-2.0
// grpo/libtorch/host_rows.hpp: the CPU fp32 path of grpo::libtorch::backend's row primitives (row_softmax_stats,
// row_softmax_backward, row_divergence, row_sparse_forward_kl): the core's host fp32 row kernels
// (grpo/host/softmax_rows.hpp, divergence_rows.hpp: fp32 SIMD lanes with a vectorizable exp and log, sums merged in
// double, an AVX2+FMA clone picked at run time; the formulas and their sources are cited there) run over the rows
// with at::parallel_for, so they follow torch's thread count, in place of the chunked torch ops that backend.hpp
// otherwise runs. Each function returns the rows the kernels cannot reproduce (NaN, +-Inf, a row all -inf, ...),
// which backend.hpp then redoes through its torch ops: those keep the exact semantics. backend.hpp decides when this
// path is taken (row_path).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "grpo/host/divergence_rows.hpp"
#include "grpo/host/softmax_rows.hpp"
#include "grpo/libtorch/config.hpp"

namespace grpo::libtorch {
inline namespace GRPO_LIBTORCH_NAMESPACE {

/// Which implementation a row primitive of grpo::libtorch::backend runs for given inputs (see backend.hpp's
/// row_softmax_stats_path and its siblings).
enum class row_path {
  torch_ops,  ///< chunks of torch ops in backend::row_dtype (differentiable; any device and dtype)
  host_fp32,  ///< the core's fp32 row kernels over the rows on the CPU (grpo/host/softmax_rows.hpp)
  /// grpo::cuda's fused kernels on LibTorch's current stream (grpo/libtorch/cuda_rows.hpp; only in files compiled by
  /// nvcc with GRPO_LIBTORCH_CUDA_KERNELS, config.hpp)
  cuda_kernels,
};

namespace host_fp32 {

/// Rows per at::parallel_for task: about 64 Ki logits, so that small vocabularies are not split per row.
inline std::int64_t grain_rows(std::int64_t vocab) {
  return std::max<std::int64_t>(1, (std::int64_t{1} << 16) / std::max<std::int64_t>(vocab, 1));
}

/// The indices (int64, CPU) of the rows whose flag is 0; empty when every row was done.
inline at::Tensor failed_rows(const std::vector<unsigned char>& done) {
  std::vector<std::int64_t> rows;
  for (std::size_t n = 0; n < done.size(); ++n)
    if (!done[n]) rows.push_back(static_cast<std::int64_t>(n));
  return at::tensor(rows, at::TensorOptions().dtype(at::kLong));
}

/// A CPU double copy of a row vector (as contiguous doubles: the kernels take the row's scalars in double).
inline at::Tensor row_values(const at::Tensor& t) { return t.to(at::kCPU, at::kDouble).contiguous(); }

/// lse, entropy and logprob [N] (fp32, allocated here) of softmax(scale z) for CPU fp32 z [N, V] and int64 ids [N]
/// in [0, V). Returns the rows left undone (their outputs unspecified).
inline at::Tensor softmax_stats(const at::Tensor& z, const at::Tensor& ids, double scale, at::Tensor& lse,
                                at::Tensor& entropy, at::Tensor& logprob) {
  const auto rows = z.size(0), vocab = z.size(1);
  const auto zc = z.contiguous();
  const auto idc = ids.to(at::kCPU).contiguous();
  const auto options = at::TensorOptions().dtype(at::kFloat);
  lse = at::empty({rows}, options);
  entropy = at::empty({rows}, options);
  logprob = at::empty({rows}, options);
  const float* zp = zc.data_ptr<float>();
  const std::int64_t* idp = idc.data_ptr<std::int64_t>();
  float* lp = lse.data_ptr<float>();
  float* hp = entropy.data_ptr<float>();
  float* op = logprob.data_ptr<float>();
  const auto which = grpo::host_kernels::best_isa();
  std::vector<unsigned char> done(static_cast<std::size_t>(rows));
  at::parallel_for(0, rows, grain_rows(vocab), [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t n = begin; n < end; ++n) {
      const float* row = zp + n * vocab;
      const auto m = grpo::host_kernels::softmax_row_moments(row, vocab, scale, which);
      done[static_cast<std::size_t>(n)] = m.ok;
      if (!m.ok) continue;
      lp[n] = static_cast<float>(m.lse);
      hp[n] = static_cast<float>(m.entropy);
      op[n] = static_cast<float>(scale * static_cast<double>(row[idp[n]]) - m.lse);
    }
  });
  return failed_rows(done);
}

/// out [N, V] (fp32, contiguous, CPU; it may be z) = d/dz sum_n (g_logprob[n] logprob[n] + g_entropy[n] entropy[n])
/// for CPU fp32 z [N, V]; an id outside [0, V) adds no one-hot term. Returns the rows left undone (out's rows there
/// untouched).
inline at::Tensor softmax_backward(const at::Tensor& z, const at::Tensor& ids, double scale, const at::Tensor& lse,
                                   const at::Tensor& entropy, const at::Tensor& g_logprob, const at::Tensor& g_entropy,
                                   at::Tensor& out) {
  const auto rows = z.size(0), vocab = z.size(1);
  const auto zc = z.contiguous();
  const auto idc = ids.to(at::kCPU).contiguous();
  const auto l = row_values(lse), h = row_values(entropy), gl = row_values(g_logprob), gh = row_values(g_entropy);
  const float* zp = zc.data_ptr<float>();
  float* gp = out.data_ptr<float>();
  const std::int64_t* idp = idc.data_ptr<std::int64_t>();
  const double *lp = l.data_ptr<double>(), *hp = h.data_ptr<double>();
  const double *glp = gl.data_ptr<double>(), *ghp = gh.data_ptr<double>();
  const auto which = grpo::host_kernels::best_isa();
  std::vector<unsigned char> done(static_cast<std::size_t>(rows));
  at::parallel_for(0, rows, grain_rows(vocab), [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t n = begin; n < end; ++n)
      done[static_cast<std::size_t>(n)] = grpo::host_kernels::softmax_gradient_row(
          zp + n * vocab, gp + n * vocab, vocab, scale, idp[n], lp[n], hp[n], glp[n], ghp[n], which);
  });
  return failed_rows(done);
}

/// loss [N] (fp32, allocated here) and out [N, V] (fp32, contiguous, CPU; it may be student) = w d loss / d student
/// of D_beta(softmax(s teacher) || softmax(s student)) for CPU fp32 logits. Returns the rows left undone (their loss
/// unspecified, out's rows untouched).
inline at::Tensor divergence(const at::Tensor& student, const at::Tensor& teacher, double scale, double beta,
                             const at::Tensor& weight, at::Tensor& loss, at::Tensor& out) {
  const auto rows = student.size(0), vocab = student.size(1);
  const auto sc = student.contiguous(), tc = teacher.contiguous();
  const auto w = row_values(weight);
  loss = at::empty({rows}, at::TensorOptions().dtype(at::kFloat));
  const float *sp = sc.data_ptr<float>(), *tp = tc.data_ptr<float>();
  const double* wp = w.data_ptr<double>();
  float* lp = loss.data_ptr<float>();
  float* gp = out.data_ptr<float>();
  const auto which = grpo::host_kernels::best_isa();
  std::vector<unsigned char> done(static_cast<std::size_t>(rows));
  at::parallel_for(0, rows, grain_rows(vocab), [&](std::int64_t begin, std::int64_t end) {
    std::vector<float> scratch(static_cast<std::size_t>(2 * vocab));  // q and d of the current row, per task
    for (std::int64_t n = begin; n < end; ++n)
      done[static_cast<std::size_t>(n)] =
          grpo::host_kernels::divergence_row(sp + n * vocab, tp + n * vocab, vocab, scale, beta, wp[n],
                                             scratch.data(), lp[n], gp + n * vocab, which);
  });
  return failed_rows(done);
}

/// loss [N] (fp32, allocated here) and out [N, V] (fp32, contiguous, CPU; it may be student) of the forward KL to a
/// sparse teacher: teacher ids [N, K] (int64, in [0, V)) and fp32 teacher log-probs [N, K], CPU fp32 student logits.
/// Returns the rows left undone (their loss unspecified, out's rows untouched).
inline at::Tensor sparse_forward_kl(const at::Tensor& student, const at::Tensor& teacher_ids,
                                    const at::Tensor& teacher_logprobs, double scale, const at::Tensor& weight,
                                    at::Tensor& loss, at::Tensor& out) {
  const auto rows = student.size(0), vocab = student.size(1), k = teacher_ids.size(1);
  const auto sc = student.contiguous();
  const auto idc = teacher_ids.to(at::kCPU).contiguous();
  const auto lpc = teacher_logprobs.contiguous();
  const auto w = row_values(weight);
  loss = at::empty({rows}, at::TensorOptions().dtype(at::kFloat));
  const float* sp = sc.data_ptr<float>();
  const std::int64_t* ip = idc.data_ptr<std::int64_t>();
  const float* tp = lpc.data_ptr<float>();
  const double* wp = w.data_ptr<double>();
  float* lp = loss.data_ptr<float>();
  float* gp = out.data_ptr<float>();
  const auto which = grpo::host_kernels::best_isa();
  std::vector<unsigned char> done(static_cast<std::size_t>(rows));
  at::parallel_for(0, rows, grain_rows(vocab), [&](std::int64_t begin, std::int64_t end) {
    std::vector<double> picked(static_cast<std::size_t>(k));  // the student's logits at the ids, per task
    for (std::int64_t n = begin; n < end; ++n)
      done[static_cast<std::size_t>(n)] = grpo::host_kernels::sparse_forward_kl_row(
          sp + n * vocab, vocab, scale, ip + n * k, tp + n * k, k, wp[n], picked.data(), lp[n], gp + n * vocab, which);
  });
  return failed_rows(done);
}

}  // namespace host_fp32
}  // namespace GRPO_LIBTORCH_NAMESPACE
}  // namespace grpo::libtorch
