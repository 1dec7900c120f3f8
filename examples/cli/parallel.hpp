// SPDX-License-Identifier: Apache-2.0
// The ranks of a training command. Started by an MPI launcher (`mpirun -np N grpo train ...`) in a
// build with grpo::mpi, every process runs the same command on its share of each batch and they
// sum through MPI; the torch policy on CUDA with several ranks sums its gradients through NCCL
// instead, one GPU per rank (the launcher's local rank), set up over MPI. Started alone, it is one
// process and MPI is not started at all. Every rank must run the same config: that is checked first.
#pragma once

#include <cstdlib>
#include <optional>
#include <string>

#include "grpo/train/collectives.hpp"
#include "grpo/train/communicator.hpp"
#include "grpo/train/config.hpp"

#ifdef GRPO_CLI_WITH_MPI
#include "grpo/mpi/communicator.hpp"
#endif
#ifdef GRPO_CLI_WITH_NCCL
#include "grpo/nccl/communicator.hpp"
#endif

namespace grpo::cli {

/// Whether an MPI launcher started this process (Open MPI, MPICH / Hydra, PMIx).
inline bool launched_by_mpi() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
    if (std::getenv(name) != nullptr) return true;
  return false;
}

class rank_group {
 public:
  /// Joins the ranks (when launched by MPI), points a CUDA torch run at this rank's GPU
  /// (c.device = "cuda:<local rank>"), and checks that every rank runs the same config.
  /// \throws config_error under an MPI launcher in a build without grpo::mpi, or naming the first
  ///         rank whose config differs; backend_error from MPI or NCCL.
  explicit rank_group(train::train_config& c) {
    const std::string config = train::to_toml(c);  // before this rank's device is chosen
    if (launched_by_mpi()) {
#ifdef GRPO_CLI_WITH_MPI
      session_.emplace();
      world_.emplace();
      comm_ = &*world_;
#ifdef GRPO_CLI_WITH_NCCL
      if (c.policy == "torch" && c.device.starts_with("cuda") && world_->world_size() > 1) {
        gpus_.emplace(*world_);
        c.device = "cuda:" + std::to_string(gpus_->device());
        comm_ = &*gpus_;
      }
#endif
#else
      grpo::detail::fail<config_error>(
          "mpirun: this grpo was built without MPI (cmake -DGRPO_WITH_MPI=ON, as the ci preset does)");
#endif
    }
    train::check_same(*comm_, config, "config");
  }

  train::communicator& comm() { return *comm_; }
  /// Rank 0 prints and writes; the others only compute.
  bool main_rank() const { return comm_->rank() == 0; }

 private:
#ifdef GRPO_CLI_WITH_MPI
  std::optional<mpi::session> session_;
  std::optional<mpi::communicator> world_;
#endif
#ifdef GRPO_CLI_WITH_NCCL
  std::optional<nccl::communicator> gpus_;
#endif
  train::single_process single_;
  train::communicator* comm_ = &single_;
};

}  // namespace grpo::cli
