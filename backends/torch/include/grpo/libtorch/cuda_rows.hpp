// SPDX-License-Identifier: Apache-2.0
// grpo/libtorch/cuda_rows.hpp: the CUDA path of grpo::libtorch::backend's row primitives (row_softmax_stats,
// row_softmax_backward, row_divergence, row_sparse_forward_kl): grpo::cuda's fused kernels (grpo/cccl/kernels/:
// one block per row, the online softmax in one read of the row, deterministic block reductions; the formulas and
// their sources are cited there) launched on LibTorch's current stream of the tensors' device, in place of the
// chunked torch ops. Only for translation units compiled by nvcc with GRPO_LIBTORCH_CUDA_KERNELS (config.hpp);
// row_primitives.hpp decides when this path is taken (row_path::cuda_kernels) and checks every argument first.
//
// The kernels accumulate in fp32 for bf16, fp16 and fp32 logits and in fp64 for fp64 logits, so they stand in for the
// torch ops only where b.row_dtype is that accumulation type: the torch ops then compute in the same precision, and
// every result keeps its dtype (lse, entropy, log-probs and losses in the accumulation type; a gradient in the
// logits' dtype, so it is only taken when the output has it). Rows holding NaN or +-Inf get what grpo::logits_backend
// specifies (include/grpo/backend.hpp: a non-finite lse, which is how the algorithms reject such logits before any
// loss); their other outputs, which the concept leaves open, are the kernels' (NaN where the torch ops give an
// entropy of 0 or a divergence of 0 or NaN). A row of only -inf gives lse -inf, entropy 0 and logprob NaN on both.
#pragma once

#include "grpo/libtorch/config.hpp"

#if !GRPO_LIBTORCH_CUDA_KERNELS
#error "grpo/libtorch/cuda_rows.hpp needs GRPO_LIBTORCH_CUDA_KERNELS (nvcc, grpo::cuda and a CUDA LibTorch)"
#endif

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <type_traits>

#include "grpo/backend.hpp"
#include "grpo/cccl/kernels/divergence.cuh"
#include "grpo/cccl/kernels/softmax.cuh"
#include "grpo/error.hpp"

namespace grpo::libtorch {
inline namespace GRPO_LIBTORCH_NAMESPACE {
namespace cuda_kernels {

/// The kernels' accumulation dtype for logits of dtype t.
inline at::ScalarType accumulator_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

/// Logits of dtype t on a CUDA device, with row dtype row_dtype: the kernels compute what the torch ops would.
inline bool applies(const at::Tensor& logits, at::ScalarType row_dtype) {
  if (!logits.device().is_cuda() || logits.size(0) > INT_MAX) return false;
  switch (logits.scalar_type()) {
    case at::kDouble:
      return row_dtype == at::kDouble;
    case at::kFloat:
    case at::kBFloat16:
    case at::kHalf:
      return row_dtype == at::kFloat;
    default:
      return false;
  }
}

/// Calls f(std::type_identity<In>{}) with the kernels' element type of logits of dtype t (applies() held).
template <class F>
void with_element_type(at::ScalarType t, F&& f) {
  switch (t) {
    case at::kDouble:
      f(std::type_identity<double>{});
      return;
    case at::kFloat:
      f(std::type_identity<float>{});
      return;
    case at::kBFloat16:
      f(std::type_identity<__nv_bfloat16>{});
      return;
    default:
      f(std::type_identity<__half>{});
      return;
  }
}

/// The data of a contiguous tensor as the kernels' element type (the layouts are the same: c10::BFloat16 and
/// c10::Half hold the bits of __nv_bfloat16 and __half).
template <class T>
T* data_of(const at::Tensor& t) {
  return static_cast<T*>(t.data_ptr());
}

/// A row vector on logits' device, contiguous, in dtype `type`: a view when it already is one.
inline at::Tensor row_values(const at::Tensor& t, const at::Tensor& logits, at::ScalarType type) {
  return t.to(logits.device(), type).contiguous();
}

inline void check_cuda(cudaError_t status, const char* what) {
  GRPO_CHECK(status == cudaSuccess, backend_error, what, ": CUDA error: ", cudaGetErrorString(status));
}

/// Calls write(target) with out itself where it is contiguous (the kernels write dense rows), else with a contiguous
/// temporary that is copied into out afterwards.
template <class F>
void write_dense(at::Tensor& out, F&& write) {
  auto target = out.is_contiguous() ? out : at::empty_like(out, at::MemoryFormat::Contiguous);
  write(target);
  if (!target.is_same(out)) out.copy_(target);
}

/// LibTorch's current stream on t's device, where torch ops on t would run: the kernels keep torch's ordering.
inline cudaStream_t stream_of(const at::Tensor& t) {
  return c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
}

/// The sparse kernel fits k teacher entries per row of the student's logits on their device (it keeps them in a
/// block's shared memory).
inline bool sparse_fits(const at::Tensor& student, std::int64_t k) {
  std::int64_t max_k = 0;
  with_element_type(student.scalar_type(), [&](auto element) {
    using In = typename decltype(element)::type;
    check_cuda(grpo::cccl::kernels::sparse_forward_kl_capacity<In, grpo::cccl::kernels::detail::accumulator_t<In>>(
                   student.device().index(), max_k),
               "row_sparse_forward_kl");
  });
  return k <= max_k;
}

/// The divergence kernel takes beta in its accumulation type: with fp32 accumulation a beta strictly between 0 and 1
/// that rounds to 0 or 1 would turn JSD_beta into one of the KLs (defined as the end points, not as its limits).
inline bool divergence_beta_fits(const at::Tensor& student, double beta) {
  if (beta == 0.0 || beta == 1.0 || accumulator_type(student.scalar_type()) == at::kDouble) return true;
  const auto rounded = static_cast<float>(beta);
  return rounded != 0.0f && rounded != 1.0f;
}

/// lse, entropy and logprob [N] (the accumulation dtype) of softmax(scale z) for CUDA logits z [N, V] and int64 ids
/// [N] in [0, V).
inline softmax_row_stats<at::Tensor> softmax_stats(const at::Tensor& z, const at::Tensor& ids, double scale) {
  const c10::cuda::CUDAGuard guard(z.device());
  const auto rows = z.size(0), vocab = z.size(1);
  const auto zc = z.contiguous();
  const auto idc = ids.to(z.device()).contiguous();
  const auto options = z.options().dtype(accumulator_type(z.scalar_type()));
  softmax_row_stats<at::Tensor> out{at::empty({rows}, options), at::empty({rows}, options),
                                    at::empty({rows}, options)};
  with_element_type(z.scalar_type(), [&](auto element) {
    using In = typename decltype(element)::type;
    using Out = grpo::cccl::kernels::detail::accumulator_t<In>;
    check_cuda(grpo::cccl::kernels::softmax_stats(data_of<const In>(zc), rows, vocab, idc.data_ptr<std::int64_t>(),
                                                  scale, data_of<Out>(out.lse), data_of<Out>(out.entropy),
                                                  data_of<Out>(out.logprob), nullptr, stream_of(z)),
               "row_softmax_stats");
  });
  return out;
}

/// out [N, V] (z's dtype and device; it may be z) = d/dz sum_n (g_logprob[n] logprob[n] + g_entropy[n] entropy[n]).
inline void softmax_backward(const at::Tensor& z, const at::Tensor& ids, double scale, const at::Tensor& lse,
                             const at::Tensor& entropy, const at::Tensor& g_logprob, const at::Tensor& g_entropy,
                             at::Tensor& out) {
  const c10::cuda::CUDAGuard guard(z.device());
  const auto rows = z.size(0), vocab = z.size(1);
  const auto zc = z.contiguous();
  const auto idc = ids.to(z.device()).contiguous();
  const auto type = accumulator_type(z.scalar_type());
  const auto l = row_values(lse, z, type), h = row_values(entropy, z, type);
  const auto gl = row_values(g_logprob, z, type), gh = row_values(g_entropy, z, type);
  write_dense(out, [&](at::Tensor& target) {
    with_element_type(z.scalar_type(), [&](auto element) {
      using In = typename decltype(element)::type;
      using Out = grpo::cccl::kernels::detail::accumulator_t<In>;
      check_cuda(grpo::cccl::kernels::softmax_backward(
                     data_of<const In>(zc), rows, vocab, idc.data_ptr<std::int64_t>(), scale, data_of<const Out>(l),
                     data_of<const Out>(h), data_of<const Out>(gl), data_of<const Out>(gh), data_of<In>(target),
                     stream_of(z)),
                 "row_softmax_backward");
    });
  });
}

/// loss [N] (the accumulation dtype) and out [N, V] (the student's dtype; it may be student) = w d loss / d student
/// of D_beta(softmax(s teacher) || softmax(s student)), for CUDA logits of one dtype.
inline at::Tensor divergence(const at::Tensor& student, const at::Tensor& teacher, double scale, double beta,
                             const at::Tensor& weight, at::Tensor& out) {
  const c10::cuda::CUDAGuard guard(student.device());
  const auto rows = student.size(0), vocab = student.size(1);
  const auto sc = student.contiguous(), tc = teacher.contiguous();
  const auto type = accumulator_type(student.scalar_type());
  const auto w = row_values(weight, student, type);
  auto loss = at::empty({rows}, student.options().dtype(type));
  write_dense(out, [&](at::Tensor& target) {
    with_element_type(student.scalar_type(), [&](auto element) {
      using In = typename decltype(element)::type;
      using Out = grpo::cccl::kernels::detail::accumulator_t<In>;
      check_cuda(grpo::cccl::kernels::divergence(data_of<const In>(sc), data_of<const In>(tc), rows, vocab, scale,
                                                 beta, data_of<const Out>(w), data_of<Out>(loss),
                                                 data_of<In>(target), stream_of(student)),
                 "row_divergence");
    });
  });
  return loss;
}

/// loss [N] (the accumulation dtype) and out [N, V] (the student's dtype; it may be student) of the forward KL to a
/// sparse teacher: int64 ids [N, K] in [0, V) and log-probs [N, K] (taken in the accumulation dtype).
inline at::Tensor sparse_forward_kl(const at::Tensor& student, const at::Tensor& teacher_ids,
                                    const at::Tensor& teacher_logprobs, double scale, const at::Tensor& weight,
                                    at::Tensor& out) {
  const c10::cuda::CUDAGuard guard(student.device());
  const auto rows = student.size(0), vocab = student.size(1), k = teacher_ids.size(1);
  const auto sc = student.contiguous();
  const auto idc = teacher_ids.to(student.device()).contiguous();
  const auto type = accumulator_type(student.scalar_type());
  const auto lp = teacher_logprobs.to(student.device(), type).contiguous();
  const auto w = row_values(weight, student, type);
  auto loss = at::empty({rows}, student.options().dtype(type));
  write_dense(out, [&](at::Tensor& target) {
    with_element_type(student.scalar_type(), [&](auto element) {
      using In = typename decltype(element)::type;
      using Out = grpo::cccl::kernels::detail::accumulator_t<In>;
      check_cuda(grpo::cccl::kernels::sparse_forward_kl(data_of<const In>(sc), idc.data_ptr<std::int64_t>(),
                                                        data_of<const Out>(lp), rows, vocab, k, scale,
                                                        data_of<const Out>(w), data_of<Out>(loss),
                                                        data_of<In>(target), nullptr, stream_of(student)),
                 "row_sparse_forward_kl");
    });
  });
  return loss;
}

}  // namespace cuda_kernels
}  // namespace GRPO_LIBTORCH_NAMESPACE
}  // namespace grpo::libtorch
