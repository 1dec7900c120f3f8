// SPDX-License-Identifier: Apache-2.0
// grpo/mpi/communicator.hpp: grpo::train::communicator over MPI, for data-parallel training on CPU ranks started by
// `mpirun -np N grpo train ...` on one or many machines, or alone as an MPI singleton. session initialises and
// finalises MPI; communicator sums by reducing to rank 0 and broadcasting the result, so every rank holds the same
// bits, with each collective non-blocking and polled against a deadline, so that a rank that died or hangs becomes a
// backend_error naming the operation, the rank and the timeout instead of a hang. MPI's error codes become
// backend_error with MPI_Error_string's text.
#pragma once

#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <exception>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <thread>

#include "grpo/error.hpp"
#include "grpo/train/collectives.hpp"
#include "grpo/train/communicator.hpp"

namespace grpo::mpi {

namespace detail {

/// Set once a collective failed or timed out. MPI_Finalize synchronises with the other ranks (Open MPI's ends in a
/// fence), which would then wait forever for a rank that died or hangs: the session skips it, the process exits,
/// and the launcher (mpirun) ends the job's other processes.
inline std::atomic<bool>& collective_failed() {
  static std::atomic<bool> failed{false};
  return failed;
}

inline std::string error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return "MPI error code " + std::to_string(code);
  return std::string(text, static_cast<std::size_t>(length));
}

}  // namespace detail

/// MPI for the life of the object: MPI_Init_thread with MPI_THREAD_FUNNELED (LibTorch and OpenMP threads compute,
/// only the thread that made the session talks to MPI), errors returned as codes on MPI_COMM_WORLD rather than
/// aborting, and MPI_Finalize at the end. Works under mpirun and as a singleton (one process started alone). Where
/// MPI was initialised already (by the caller's own code) the session borrows it and finalises nothing. MPI_Finalize
/// is skipped when the session ends during stack unwinding or after a failed collective: it would wait for ranks
/// that may never arrive, while a process that exits without it makes mpirun end the job (create the session inside
/// the block whose exceptions end the program, so that an error on one rank ends every rank at once).
class session {
 public:
  /// `argc`/`argv` may be null (MPI-2 and later: the launcher passes what MPI needs through the environment).
  /// \throws backend_error when MPI was finalised already, fails to start, or lacks MPI_THREAD_FUNNELED.
  explicit session(int* argc = nullptr, char*** argv = nullptr) : uncaught_at_start_(std::uncaught_exceptions()) {
    int initialized = 0;
    int finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    GRPO_CHECK(finalized == 0, backend_error, "grpo::mpi::session: MPI was finalised already and cannot start again");
    if (initialized != 0) return;
    int provided = MPI_THREAD_SINGLE;
    const int code = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    GRPO_CHECK(code == MPI_SUCCESS, backend_error,
               "grpo::mpi::session: MPI_Init_thread failed: ", detail::error_string(code));
    if (provided < MPI_THREAD_FUNNELED) {
      MPI_Finalize();
      grpo::detail::fail<backend_error>("grpo::mpi::session: this MPI provides thread level ", provided,
                                        " below MPI_THREAD_FUNNELED (", MPI_THREAD_FUNNELED, ")");
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    owner_ = true;
  }
  ~session() {
    if (!owner_ || detail::collective_failed() || std::uncaught_exceptions() > uncaught_at_start_) return;
    MPI_Finalize();
  }
  session(const session&) = delete;
  session& operator=(const session&) = delete;

  /// Whether this session initialised MPI (and so finalises it).
  bool owns_mpi() const { return owner_; }

 private:
  int uncaught_at_start_;
  bool owner_ = false;
};

struct communicator_options {
  /// Bound on each collective, from this rank's call to its completion; unset: the seconds in GRPO_MPI_TIMEOUT, or
  /// 300. It must exceed the longest time one rank can spend away from the others (rank 0's evaluations and
  /// checkpoints, the slowest rank's generation).
  std::optional<std::chrono::duration<double>> timeout;
  /// Values per MPI call (MPI counts are int): longer spans are summed in chunks of this many.
  std::size_t max_chunk = static_cast<std::size_t>(std::numeric_limits<int>::max());
};

/// The ranks of an MPI communicator (MPI_COMM_WORLD by default) as a grpo::train::communicator, on a duplicate of it
/// so that its messages never meet the caller's. all_reduce_sum is MPI_Ireduce to rank 0 then MPI_Ibcast from it:
/// MPI_Allreduce may leave different roundings on different ranks (the standard only recommends that a reduction
/// give the same result whenever applied to the same arguments in the same order: MPI 3.1, section 5.9.1, advice to
/// implementors), while one reduction broadcast leaves the same bits on every rank, at the cost of a second
/// collective. Every collective polls MPI_Test until it completes or the timeout expires; after a timeout or an MPI
/// error the communicator is unusable and the session does not finalise MPI (see session).
class communicator final : public train::communicator {
 public:
  explicit communicator(communicator_options options = {}) : communicator(MPI_COMM_WORLD, options) {}
  /// Duplicates `parent` (collective over its ranks, bounded by the timeout).
  /// \throws config_error for a timeout that is not positive or a max_chunk outside [1, INT_MAX] (naming it),
  /// backend_error when MPI is not initialised or the duplication fails.
  explicit communicator(MPI_Comm parent, communicator_options options = {})
      : timeout_(options.timeout.value_or(
            train::detail::timeout_from_environment("GRPO_MPI_TIMEOUT", std::chrono::seconds(300)))),
        max_chunk_(options.max_chunk) {
    GRPO_CHECK(timeout_.count() > 0, config_error, "timeout: must be positive, got ", timeout_.count(), " s");
    GRPO_CHECK(max_chunk_ >= 1 && max_chunk_ <= static_cast<std::size_t>(std::numeric_limits<int>::max()), config_error,
               "max_chunk: must be in [1, ", std::numeric_limits<int>::max(), "], got ", max_chunk_);
    int initialized = 0;
    MPI_Initialized(&initialized);
    GRPO_CHECK(initialized != 0, backend_error,
               "grpo::mpi::communicator: MPI is not initialised (create a grpo::mpi::session first)");
    int rank = 0;
    int size = 0;
    // Local calls: a failure here (an invalid parent) leaves MPI usable.
    for (const auto& [code, call] : {std::pair{MPI_Comm_rank(parent, &rank), "MPI_Comm_rank"},
                                     std::pair{MPI_Comm_size(parent, &size), "MPI_Comm_size"}})
      GRPO_CHECK(code == MPI_SUCCESS, backend_error, "grpo::mpi::communicator: ", call,
                 " of the parent communicator failed: ", detail::error_string(code));
    rank_ = static_cast<std::size_t>(rank);
    world_size_ = static_cast<std::size_t>(size);
    MPI_Request request = MPI_REQUEST_NULL;
    check(MPI_Comm_idup(parent, &comm_, &request), "MPI_Comm_idup", "setup");
    wait(request, "setup (MPI_Comm_idup)");
    check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler", "setup");
  }
  ~communicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (comm_ != MPI_COMM_NULL && !broken_ && finalized == 0) MPI_Comm_free(&comm_);
  }
  communicator(const communicator&) = delete;
  communicator& operator=(const communicator&) = delete;

  std::size_t rank() const override { return rank_; }
  std::size_t world_size() const override { return world_size_; }
  std::chrono::duration<double> timeout() const { return timeout_; }
  /// The duplicated communicator the collectives run on.
  MPI_Comm handle() const { return comm_; }

  /// \throws backend_error naming the operation, this rank and the timeout when the other ranks do not join in
  /// time, or with MPI's message when MPI reports an error (a count that differs between ranks, for one).
  void all_reduce_sum(std::span<float> values) override { reduce_and_broadcast(values, MPI_FLOAT, "float"); }
  void all_reduce_sum(std::span<double> values) override { reduce_and_broadcast(values, MPI_DOUBLE, "double"); }

 private:
  template <class T>
  void reduce_and_broadcast(std::span<T> values, MPI_Datatype type, const char* type_name) {
    const std::string operation = grpo::detail::concat("all_reduce_sum (", type_name, ", ", values.size(), " values)");
    GRPO_CHECK(!broken_, backend_error, "grpo::mpi: ", operation, " on rank ", rank_, " of ", world_size_,
               ": the communicator is unusable after an earlier collective failed");
    for (std::size_t offset = 0; offset < values.size(); offset += max_chunk_) {
      const int count = static_cast<int>(std::min(max_chunk_, values.size() - offset));
      T* data = values.data() + offset;
      MPI_Request request = MPI_REQUEST_NULL;
      // At the root the sum replaces the input (MPI_IN_PLACE); elsewhere the receive buffer is not used.
      check(rank_ == 0 ? MPI_Ireduce(MPI_IN_PLACE, data, count, type, MPI_SUM, 0, comm_, &request)
                       : MPI_Ireduce(data, nullptr, count, type, MPI_SUM, 0, comm_, &request),
            "MPI_Ireduce", operation);
      wait(request, operation);
      check(MPI_Ibcast(data, count, type, 0, comm_, &request), "MPI_Ibcast", operation);
      wait(request, operation);
    }
  }

  // Polls without sleeping for the first 10 ms, then sleeps 50 us between polls so that a long wait (a rank still
  // computing) leaves the core to the other ranks of an oversubscribed machine. Non-blocking collectives progress
  // only inside MPI_Test: a transfer of megabytes needs thousands of polls, and sleeping between them made a 2-rank sum
  // of 2 MB take 38 ms instead of 1 ms, so the busy phase is bounded by time, not by a count.
  void wait(MPI_Request& request, const std::string& operation) {
    const auto start = std::chrono::steady_clock::now();
    while (true) {
      int done = 0;
      check(MPI_Test(&request, &done, MPI_STATUS_IGNORE), "MPI_Test", operation);
      if (done != 0) return;
      if (std::chrono::steady_clock::now() - start > timeout_) {
        // A started non-blocking collective can be neither cancelled nor freed (MPI 3.1, section 5.12): it is
        // left behind.
        mark_broken();
        grpo::detail::fail<backend_error>("grpo::mpi: ", operation, " on rank ", rank_, " of ", world_size_,
                                          " timed out after ", timeout_.count(),
                                          " s (GRPO_MPI_TIMEOUT): another rank died, hangs, or called a different "
                                          "collective");
      }
      if (std::chrono::steady_clock::now() - start < std::chrono::milliseconds(10))
        std::this_thread::yield();
      else
        std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  void check(int code, const char* call, const std::string& operation) {
    if (code == MPI_SUCCESS) return;
    mark_broken();
    grpo::detail::fail<backend_error>("grpo::mpi: ", call, " in ", operation, " on rank ", rank_, " of ", world_size_,
                                      " failed: ", detail::error_string(code));
  }

  void mark_broken() {
    broken_ = true;
    detail::collective_failed() = true;
  }

  std::chrono::duration<double> timeout_;
  std::size_t max_chunk_;
  std::size_t rank_ = 0;
  std::size_t world_size_ = 1;
  MPI_Comm comm_ = MPI_COMM_NULL;
  bool broken_ = false;
};

}  // namespace grpo::mpi
