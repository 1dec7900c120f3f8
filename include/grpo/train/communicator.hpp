// SPDX-License-Identifier: Apache-2.0
// grpo/train/communicator.hpp: the one place a data-parallel trainer talks to its peers. The
// trainer sums gradients (all_reduce_sum) after the last micro-batch and sums the loss
// denominators before the first, so with global denominators every rank's update equals the
// single-process update of the concatenated batch. single_process is the identity.
#pragma once

#include <cstddef>
#include <span>

namespace grpo::train {

/// Collective operations a data-parallel trainer needs.
class communicator {
 public:
  virtual ~communicator() = default;
  virtual std::size_t rank() const = 0;
  virtual std::size_t world_size() const = 0;
  /// Replaces `values` on every rank by their elementwise sum over ranks.
  virtual void all_reduce_sum(std::span<float> values) = 0;
  virtual void all_reduce_sum(std::span<double> values) = 0;

 protected:
  communicator() = default;
  communicator(const communicator&) = default;
  communicator& operator=(const communicator&) = default;
};

/// One process: every collective is the identity.
class single_process final : public communicator {
 public:
  std::size_t rank() const override { return 0; }
  std::size_t world_size() const override { return 1; }
  void all_reduce_sum(std::span<float>) override {}
  void all_reduce_sum(std::span<double>) override {}
};

}  // namespace grpo::train
