// SPDX-License-Identifier: Apache-2.0
// grpo/train/communicator.hpp: the one place a data-parallel trainer talks to its peers. Each rank
// trains on its shard of every batch; the trainer sums the loss denominators before the first
// micro-batch and the gradients after the last, so with global denominators every rank's update
// equals the single-process update of the whole batch, and gathers the scores so that advantage
// statistics and metrics are those of the whole batch. single_process is the identity; the MPI
// (grpo::mpi) and NCCL (grpo::nccl) components implement it across processes.
#pragma once

#include <algorithm>
#include <cstddef>
#include <span>
#include <vector>

#include "grpo/error.hpp"

namespace grpo::train {

/// Collective operations a data-parallel trainer needs. Every collective must be called by every
/// rank, in the same order, and must leave the same values on every rank (the ranks apply the same
/// update and their weights must stay equal bit for bit: an implementation whose reduction could
/// round differently per rank reduces on one rank and broadcasts).
class communicator {
 public:
  virtual ~communicator() = default;
  virtual std::size_t rank() const = 0;
  virtual std::size_t world_size() const = 0;
  /// Replaces `values` on every rank by their elementwise sum over ranks.
  virtual void all_reduce_sum(std::span<float> values) = 0;
  virtual void all_reduce_sum(std::span<double> values) = 0;

  /// Whether all_reduce_sum_device works: the communicator sums buffers in GPU memory.
  virtual bool on_device() const { return false; }
  /// Replaces the `count` floats at device address `data` by their sum over ranks, enqueued on
  /// `stream` (a cudaStream_t; nullptr: the default stream). \throws backend_error unless on_device().
  virtual void all_reduce_sum_device(float* data, std::size_t count, void* stream) {
    (void)data;
    (void)count;
    (void)stream;
    grpo::detail::fail<backend_error>("all_reduce_sum_device: this communicator sums host buffers only");
  }

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

/// Every rank's `local` values, rank after rank, on every rank (each rank passes as many values).
/// A sum of vectors that are zero outside each rank's slot, so it is exact.
inline std::vector<double> all_gather(communicator& comm, std::span<const double> local) {
  std::vector<double> all(local.size() * comm.world_size(), 0.0);
  std::copy(local.begin(), local.end(), all.begin() + static_cast<std::ptrdiff_t>(local.size() * comm.rank()));
  comm.all_reduce_sum(std::span<double>(all));
  return all;
}

}  // namespace grpo::train
