// SPDX-License-Identifier: Apache-2.0
// grpo/host/group_stats.hpp: grpo_advantages' core (advantages.hpp, grpo_core) on host arrays, which the fused GRPO
// advantages of grpo::cccl's host systems (cccl/host_fused.hpp) and grpo::libtorch's CPU path
// (libtorch/fused_losses.hpp) run: the group sums in two sweeps (mean, then squared deviations, as group_stats does,
// so a constant group has exactly zero spread), with no [B] temporaries. A run of equal ids (a group of consecutive
// rows) is summed in registers and added to its group once, in row order, so the sums are those of one thread.
// Standard library only (and the core's option types).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <type_traits>
#include <vector>

#include "grpo/advantages.hpp"

namespace grpo::host_kernels {

/// What grpo_group_advantages reports besides the advantages (advantage_result's statistics).
struct group_advantage_summary {
  double zero_std_fraction;  ///< share of groups that are constant or have < 2 scorable members
  double reward_mean;        ///< over the scorable scores; NaN when there is none
  double reward_std;         ///< unbiased, over the scorable scores; NaN when there are < 2
};

/// grpo_core (advantages.hpp) for validated scores [B] (NaN = unscorable, no Inf), dense group ids [B] in
/// [0, groups) and validated options: writes advantages [B] (it may not alias scores). The group means and stds are
/// held in T, as the generic path holds them in the backend's storage type; sums are in double.
template <class T>
group_advantage_summary grpo_group_advantages(const T* scores, std::span<const std::int64_t> ids, std::int64_t groups,
                                              const grpo_advantage_options& options, T* advantages) {
  static_assert(std::is_floating_point_v<T>, "grpo_group_advantages: T is a floating-point type");
  const std::size_t rows = ids.size(), group_count = static_cast<std::size_t>(groups);
  const T* x = scores;
  std::vector<double> count(group_count, 0.0), total(group_count, 0.0), squares(group_count, 0.0);
  double batch_count = 0.0, batch_total = 0.0;
  // A run of equal ids (a group of consecutive rows) is summed in registers and added to its group once: adding
  // each row to memory would chain every addition of a group through a store and a load.
  for (std::size_t i = 0; i < rows;) {
    const std::int64_t g = ids[i];
    double run_count = 0.0, run_total = 0.0;
    for (; i < rows && ids[i] == g; ++i) {
      const bool scorable = !std::isnan(x[i]);
      run_count += scorable ? 1.0 : 0.0;
      run_total += scorable ? static_cast<double>(x[i]) : 0.0;
    }
    count[static_cast<std::size_t>(g)] += run_count, total[static_cast<std::size_t>(g)] += run_total;
    batch_count += run_count, batch_total += run_total;
  }
  std::vector<T> mean(group_count);
  for (std::size_t g = 0; g < group_count; ++g) mean[g] = static_cast<T>(total[g] / std::max(count[g], 1.0));

  T* out = advantages;  // the deviations first, then the advantages in place
  constexpr double quiet_nan = std::numeric_limits<double>::quiet_NaN();
  const double batch_mean = batch_count >= 1.0 ? batch_total / batch_count : quiet_nan;
  double batch_squares = 0.0;
  for (std::size_t i = 0; i < rows;) {
    const std::int64_t g = ids[i];
    const double group_mean = mean[static_cast<std::size_t>(g)];
    double run_squares = 0.0;
    for (; i < rows && ids[i] == g; ++i) {
      const bool scorable = !std::isnan(x[i]);
      const T deviation = scorable ? static_cast<T>(static_cast<double>(x[i]) - group_mean) : T(0);
      out[i] = deviation;
      run_squares += static_cast<double>(deviation) * static_cast<double>(deviation);
      const double batch_deviation = scorable ? static_cast<double>(x[i]) - batch_mean : 0.0;
      batch_squares += batch_deviation * batch_deviation;
    }
    squares[static_cast<std::size_t>(g)] += run_squares;
  }
  const double batch_std = batch_count >= 2.0 ? std::sqrt(batch_squares / (batch_count - 1.0)) : quiet_nan;

  // keep: the group carries a signal (count >= 2, std >= floor, std > 0); divisor: what its deviations divide by.
  std::vector<char> keep(group_count);
  std::vector<T> divisor(group_count, T(1));
  double kept = 0.0;
  for (std::size_t g = 0; g < group_count; ++g) {
    const T std_dev = static_cast<T>(std::sqrt(squares[g] / std::max(count[g] - 1.0, 1.0)));
    keep[g] = count[g] >= 2.0 && std_dev >= options.std_floor && std_dev > T(0);
    kept += keep[g] ? 1.0 : 0.0;
    if (keep[g] && options.scale == reward_scale::group)
      divisor[g] = static_cast<T>(static_cast<double>(std_dev) + options.epsilon);
  }
  // Every scale is deviation / divisor where the group is kept: the group's std + epsilon, the batch's, or 1.
  const bool batch_signal = batch_count >= 2.0 && batch_std >= options.std_floor && batch_std > 0.0;
  if (options.scale == reward_scale::batch) std::fill(divisor.begin(), divisor.end(), T(1));
  const double batch_divisor = options.scale == reward_scale::batch ? batch_std + options.epsilon : 1.0;
  for (std::size_t g = 0; g < group_count; ++g)
    keep[g] = keep[g] && (options.scale != reward_scale::batch || batch_signal);
  // Run by run, so that each run divides by one value (a loop of divisions the compiler vectorizes).
  for (std::size_t i = 0; i < rows;) {
    const auto g = static_cast<std::size_t>(ids[i]);
    std::size_t end = i + 1;
    while (end < rows && static_cast<std::size_t>(ids[end]) == g) ++end;
    const double run_divisor = static_cast<double>(divisor[g]) * batch_divisor;
    if (keep[g]) {
      for (; i < end; ++i) out[i] = static_cast<T>(static_cast<double>(out[i]) / run_divisor);
    } else {
      std::fill(out + i, out + end, T(0));
      i = end;
    }
  }
  return {groups == 0 ? 0.0 : 1.0 - kept / static_cast<double>(groups), batch_mean, batch_std};
}

}  // namespace grpo::host_kernels
