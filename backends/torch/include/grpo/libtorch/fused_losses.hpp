// SPDX-License-Identifier: Apache-2.0
// grpo/libtorch/fused_losses.hpp: the fused paths of grpo::libtorch::backend (backend.hpp's "optional fused paths"),
// which the generic algorithms take on their own: for fp32 and fp64 CPU tensors that autograd need not differentiate,
//   fused_policy_loss      policy_loss.hpp a row at a time, the core's grpo/host/policy_rows.hpp (two sweeps per row,
//                          fp32 SIMD lanes for fp32, double for fp64) over the rows with at::parallel_for, the rows'
//                          sums then added in row order, so the result does not depend on torch's thread count;
//   fused_grpo_advantages  advantages.hpp's grpo_core, the core's grpo/host/group_stats.hpp (one thread: the group
//                          sums are a few adds per score);
// in place of about forty torch ops, each reading and writing a whole [B,T] tensor (bench/RESULTS.md, issue 14). Any
// other device or dtype, or an input autograd records a graph for (grad mode on and requires_grad: the composite
// path's autograd then differentiates every step), keeps the generic path; policy_loss_path and
// grpo_advantages_path say which one runs. A value the checks reject (NaN, +-Inf, a mask entry other than 0 or 1)
// returns nullopt, and the generic path's checks name the input.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "grpo/advantages.hpp"
#include "grpo/host/group_stats.hpp"
#include "grpo/host/isa.hpp"
#include "grpo/host/policy_rows.hpp"
#include "grpo/libtorch/backend.hpp"
#include "grpo/libtorch/config.hpp"
#include "grpo/policy_loss.hpp"
#include "grpo/tensor.hpp"

namespace grpo::libtorch {
inline namespace GRPO_LIBTORCH_NAMESPACE {

/// Which implementation an algorithm with a fused path runs on grpo::libtorch::backend for given inputs.
enum class loss_path {
  torch_ops,  ///< the generic algorithm, one torch op per operation (any device and dtype; differentiable)
  host_rows,  ///< the core's host kernels over the rows on the CPU (grpo/host/policy_rows.hpp, group_stats.hpp)
};

namespace detail {

/// The fused paths apply to tensors of one storage type: b's dtype, fp32 or fp64, on the CPU, with nothing for
/// autograd to record.
inline bool host_storage(const backend& b, const at::Tensor& t) {
  return (b.dtype == at::kFloat || b.dtype == at::kDouble) && t.scalar_type() == b.dtype && t.device().is_cpu() &&
         !(at::GradMode::is_enabled() && t.requires_grad());
}

/// A mask may also be bool or integer, which every operation lifts to b.dtype (tensor_ops.hpp).
inline bool host_mask(const backend& b, const at::Tensor& mask) {
  return host_storage(b, mask) ||
         (!at::isFloatingType(mask.scalar_type()) && compute_type(mask.scalar_type(), b) == b.dtype &&
          mask.device().is_cpu());
}

/// Rows per at::parallel_for task: about 16 Ki tokens.
inline std::int64_t policy_grain_rows(std::int64_t cols) {
  return std::max<std::int64_t>(1, (std::int64_t{1} << 14) / std::max<std::int64_t>(cols, 1));
}

template <class T>
std::optional<policy_loss_result<backend>> host_policy_loss(const backend& b, const policy_loss_inputs<backend>& in,
                                                            const policy_loss_options& o,
                                                            const loss_denominators& d) {
  namespace hk = grpo::host_kernels;
  const shape s = in.logprobs.shape();
  const std::int64_t rows = s.dims[0], cols = s.dims[1];
  const auto contiguous = [](const std::optional<tensor<backend>>& t) {
    return t ? t->raw().contiguous() : at::Tensor();
  };
  const auto logp = in.logprobs.raw().contiguous(), adv = in.advantages.raw().contiguous();
  const auto mask = in.mask.raw().to(b.dtype).contiguous();
  const auto old = contiguous(in.old_logprobs), ref = contiguous(in.ref_logprobs);
  const auto rollout = contiguous(in.rollout_logprobs), entropy = contiguous(in.entropy);
  const bool adv_per_row = in.advantages.shape().rank == 1;

  const auto options = at::TensorOptions().dtype(b.dtype).device(at::kCPU);
  auto per_token = at::empty({rows, cols}, options), grad = at::empty({rows, cols}, options);
  auto grad_entropy = in.entropy ? at::empty({rows, cols}, options) : at::Tensor();
  // Presence is the optional's: an absent input is nullptr, and so is a present one without storage (empty), whose
  // rows have no token to read.
  const auto data = [](const at::Tensor& t) -> const T* { return t.defined() ? t.data_ptr<T>() : nullptr; };
  const auto row_of = [](auto* p, std::int64_t begin) -> decltype(p) { return p ? p + begin : nullptr; };
  const T *logp_data = data(logp), *mask_data = data(mask), *adv_data = data(adv);
  const T *old_data = data(old), *ref_data = data(ref), *rollout_data = data(rollout), *entropy_data = data(entropy);
  T* per_token_data = per_token.data_ptr<T>();
  T* grad_data = grad.data_ptr<T>();
  T* grad_entropy_data = grad_entropy.defined() ? grad_entropy.data_ptr<T>() : nullptr;

  std::vector<hk::policy_row_sums> sums(static_cast<std::size_t>(rows));
  const hk::isa which = hk::best_isa();
  at::parallel_for(0, rows, policy_grain_rows(cols), [&](std::int64_t first, std::int64_t last) {
    for (std::int64_t i = first; i < last; ++i) {
      const std::int64_t begin = i * cols;
      const hk::policy_row_inputs<T> row_in{row_of(logp_data, begin),
                                            row_of(mask_data, begin),
                                            row_of(adv_data, adv_per_row ? i : begin),
                                            adv_per_row,
                                            row_of(old_data, begin),
                                            row_of(ref_data, begin),
                                            row_of(rollout_data, begin),
                                            row_of(entropy_data, begin)};
      const hk::policy_row_outputs<T> row_out{row_of(per_token_data, begin), row_of(grad_data, begin),
                                              row_of(grad_entropy_data, begin)};
      sums[static_cast<std::size_t>(i)] = hk::policy_loss_row(o, d, row_in, row_out, cols, which);
    }
  });

  const hk::policy_row_sums total = hk::add_policy_rows(sums);
  if (total[hk::invalid] > 0.0) return std::nullopt;
  std::optional<tensor<backend>> grad_entropy_tensor;
  if (in.entropy) grad_entropy_tensor = wrap(b, grad_entropy);
  return policy_loss_result<backend>{
      wrap(b, at::scalar_tensor(total[hk::loss_sum], options)), wrap(b, per_token), wrap(b, grad),
      std::move(grad_entropy_tensor),
      hk::policy_metrics(total, o, d, in.ref_logprobs.has_value(), in.rollout_logprobs.has_value(),
                         in.entropy.has_value())};
}

}  // namespace detail

/// Which implementation grpo::policy_loss runs for these inputs on backend b: loss_path::host_rows when every input
/// is a CPU tensor of b's dtype, fp32 or fp64 (the mask may also be bool or integer), and autograd records a graph
/// for none of them (grad mode off, or none requires grad; grpo::libtorch::policy_loss runs with grad mode off);
/// loss_path::torch_ops otherwise.
inline loss_path policy_loss_path(const backend& b, const policy_loss_inputs<backend>& in) {
  const auto host = [&](const std::optional<tensor<backend>>& t) { return !t || detail::host_storage(b, t->raw()); };
  return detail::host_storage(b, in.logprobs.raw()) && detail::host_storage(b, in.advantages.raw()) &&
                 detail::host_mask(b, in.mask.raw()) && host(in.old_logprobs) && host(in.ref_logprobs) &&
                 host(in.rollout_logprobs) && host(in.entropy)
             ? loss_path::host_rows
             : loss_path::torch_ops;
}

/// Which implementation grpo::grpo_advantages runs for scores on backend b: loss_path::host_rows for CPU scores of
/// b's dtype, fp32 or fp64, that autograd records no graph for; loss_path::torch_ops otherwise.
inline loss_path grpo_advantages_path(const backend& b, const at::Tensor& scores) {
  return detail::host_storage(b, scores) ? loss_path::host_rows : loss_path::torch_ops;
}

/// The concept's fused policy loss (policy_loss.hpp, has_fused_policy_loss) for validated options, denominators and
/// shapes: nullopt where policy_loss_path is torch_ops, or an input holds NaN or Inf or the mask a value other than
/// 0 or 1 (the generic checks then name it).
inline std::optional<policy_loss_result<backend>> fused_policy_loss(const backend& b,
                                                                    const policy_loss_inputs<backend>& in,
                                                                    const policy_loss_options& o,
                                                                    const loss_denominators& d) {
  if (policy_loss_path(b, in) != loss_path::host_rows) return std::nullopt;
  return b.dtype == at::kFloat ? detail::host_policy_loss<float>(b, in, o, d)
                               : detail::host_policy_loss<double>(b, in, o, d);
}

/// The concept's fused GRPO advantages (advantages.hpp, has_fused_grpo_advantages) for validated scores [B] (NaN =
/// unscorable, no Inf), dense group ids [B] in [0, groups) and validated options; nullopt where
/// grpo_advantages_path is torch_ops. The group means and stds are held in b's dtype, as the generic path holds them.
inline std::optional<advantage_result<backend>> fused_grpo_advantages(const backend& b, const at::Tensor& scores,
                                                                      std::span<const std::int64_t> ids,
                                                                      std::int64_t groups,
                                                                      const grpo_advantage_options& options) {
  if (grpo_advantages_path(b, scores) != loss_path::host_rows) return std::nullopt;
  const auto x = scores.contiguous();
  auto advantages = at::empty(x.sizes(), at::TensorOptions().dtype(b.dtype).device(at::kCPU));
  const auto run = [&](auto zero) {
    using T = decltype(zero);
    return grpo::host_kernels::grpo_group_advantages(x.data_ptr<T>(), ids, groups, options,
                                                     advantages.data_ptr<T>());
  };
  const auto summary = b.dtype == at::kFloat ? run(0.0f) : run(0.0);
  return advantage_result<backend>{wrap(b, advantages), summary.zero_std_fraction, summary.reward_mean,
                                   summary.reward_std};
}

}  // namespace GRPO_LIBTORCH_NAMESPACE
}  // namespace grpo::libtorch
