// SPDX-License-Identifier: Apache-2.0
// grpo/cccl/host_fused.hpp: the fused paths of grpo::cccl::backend<T> on the host device systems (CPP, OMP), which the
// generic algorithms take where a backend offers them (backend.hpp, "optional fused paths"), with their semantics:
//   fused_policy_loss      policy_loss.hpp in one sweep over the [B,T] inputs, a row at a time: the core's
//                          grpo/host/policy_rows.hpp (two sweeps per row while it is in L1; fp32 SIMD lanes for fp32
//                          storage, double for fp64), rows in parallel under OpenMP. The rows' sums are added in row
//                          order, so the result does not depend on the number of threads.
//   fused_grpo_advantages  advantages.hpp's grpo_core: the core's grpo/host/group_stats.hpp (the group sums in two
//                          sweeps, mean then squared deviations, as group_stats does), no [B] temporaries.
// The generic algorithms run one Thrust transform per operation, each reading and writing a whole tensor (about forty
// for the loss); these read each input once and write each output once (bench/RESULTS.md, issue 14).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "grpo/cccl/backend.hpp"

#if !GRPO_CCCL_CUDA
#include "grpo/advantages.hpp"
#include "grpo/host/group_stats.hpp"
#include "grpo/host/isa.hpp"
#include "grpo/host/policy_rows.hpp"
#include "grpo/policy_loss.hpp"

namespace grpo::cccl {
inline namespace GRPO_CCCL_SYSTEM_NAMESPACE {
/// policy_loss (policy_loss.hpp) for validated options, denominators and shapes; nullopt when an input holds NaN
/// or Inf or the mask a value other than 0 or 1, so that the generic checks name it.
template <class T>
std::optional<policy_loss_result<backend<T>>> fused_policy_loss(const backend<T>& b,
                                                                const policy_loss_inputs<backend<T>>& in,
                                                                const policy_loss_options& o,
                                                                const loss_denominators& d) {
  namespace hk = grpo::host_kernels;
  using tensor_t = tensor<backend<T>>;
  const shape s = in.logprobs.shape();
  const std::int64_t rows = s.dims[0], cols = s.dims[1];
  const T* logp = in.logprobs.raw().data.data();
  const T* mask = in.mask.raw().data.data();
  const T* adv = in.advantages.raw().data.data();
  const bool adv_per_row = in.advantages.shape().rank == 1;
  // An absent input is nullptr; so is a present one without storage (an empty tensor), whose rows have no token
  // to read, and whose presence the metrics take from the optional.
  const auto present = [](const std::optional<tensor_t>& t, std::int64_t begin) -> const T* {
    return t ? t->raw().data.data() + begin : nullptr;
  };
  const bool entropy = in.entropy.has_value();

  auto per_token = detail::allocate(b, s);
  auto grad = detail::allocate(b, s);
  std::optional<device_tensor<T>> grad_entropy;
  if (entropy) grad_entropy = detail::allocate(b, s);
  T* per_token_out = per_token.data.data();
  T* grad_out = grad.data.data();
  T* grad_entropy_out = entropy ? grad_entropy->data.data() : nullptr;
  std::vector<hk::policy_row_sums> sums(static_cast<std::size_t>(rows));
  const hk::isa which = hk::best_isa();

#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_OMP && defined(_OPENMP)
#pragma omp parallel for schedule(static)
#endif
  for (std::int64_t i = 0; i < rows; ++i) {
    const std::int64_t begin = i * cols;
    const hk::policy_row_inputs<T> row_in{logp + begin,
                                          mask + begin,
                                          adv_per_row ? adv + i : adv + begin,
                                          adv_per_row,
                                          present(in.old_logprobs, begin),
                                          present(in.ref_logprobs, begin),
                                          present(in.rollout_logprobs, begin),
                                          present(in.entropy, begin)};
    const hk::policy_row_outputs<T> row_out{per_token_out + begin, grad_out + begin,
                                            entropy ? grad_entropy_out + begin : nullptr};
    sums[static_cast<std::size_t>(i)] = hk::policy_loss_row(o, d, row_in, row_out, cols, which);
  }

  const hk::policy_row_sums total = hk::add_policy_rows(sums);
  if (total[hk::invalid] > 0.0) return std::nullopt;
  auto loss = detail::allocate(b, shape::scalar());
  loss.data.data()[0] = static_cast<T>(total[hk::loss_sum]);
  std::optional<tensor_t> grad_entropy_tensor;
  if (grad_entropy) grad_entropy_tensor = tensor_t(b, std::move(*grad_entropy));
  return policy_loss_result<backend<T>>{
      tensor_t(b, std::move(loss)), tensor_t(b, std::move(per_token)), tensor_t(b, std::move(grad)),
      std::move(grad_entropy_tensor),
      hk::policy_metrics(total, o, d, in.ref_logprobs.has_value(), in.rollout_logprobs.has_value(), entropy)};
}

/// grpo_core (advantages.hpp) for validated scores [B] (NaN = unscorable, no Inf), dense group ids [B] in
/// [0, groups) and validated options. The group means and stds are held in T, as the generic path holds them.
template <class T>
std::optional<advantage_result<backend<T>>> fused_grpo_advantages(const backend<T>& b, const device_tensor<T>& scores,
                                                                  std::span<const std::int64_t> ids,
                                                                  std::int64_t groups,
                                                                  const grpo_advantage_options& options) {
  auto advantages = detail::allocate(b, scores.shape);
  const auto summary =
      grpo::host_kernels::grpo_group_advantages(scores.data.data(), ids, groups, options, advantages.data.data());
  return advantage_result<backend<T>>{tensor<backend<T>>(b, std::move(advantages)), summary.zero_std_fraction,
                                      summary.reward_mean, summary.reward_std};
}

}  // namespace GRPO_CCCL_SYSTEM_NAMESPACE
}  // namespace grpo::cccl
#endif
