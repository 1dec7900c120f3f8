// SPDX-License-Identifier: Apache-2.0
// grpo/nccl/communicator.hpp: grpo::train::communicator over NCCL, one GPU per rank, for data-parallel training whose
// gradients live on the GPU: all_reduce_sum_device sums a device buffer on the caller's CUDA stream without copies to
// the host. The ranks meet through an ncclUniqueId that rank 0 makes and hands to the others over a host
// communicator (grpo::mpi's, say) or through a rendezvous file. Every wait is bounded: the NCCL communicator is
// non-blocking (ncclConfig_t::blocking = 0), and its set-up and each collective are polled with
// ncclCommGetAsyncError and cudaEventQuery until they finish or the timeout expires; then the communicator is aborted
// (ncclCommAbort, which also ends kernels waiting for a dead peer) and a backend_error names the operation, the rank
// and the timeout. NCCL and CUDA status codes become backend_error with their strings at this boundary.
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "grpo/error.hpp"
#include "grpo/train/collectives.hpp"
#include "grpo/train/communicator.hpp"

#if NCCL_VERSION_CODE < NCCL_VERSION(2, 14, 0)
#error "grpo::nccl needs NCCL 2.14 or later (non-blocking communicators: ncclCommInitRankConfig, ncclCommFinalize)"
#endif

namespace grpo::nccl {

struct communicator_options {
  /// The CUDA device of this rank; unset: this process's rank on its machine from the launcher's environment
  /// (OMPI_COMM_WORLD_LOCAL_RANK, MPI_LOCALRANKID, SLURM_LOCALID or LOCAL_RANK), else its rank. NCCL needs one device
  /// per rank: it refuses two ranks on one device (NVIDIA/nccl#418).
  std::optional<int> device;
  /// Bound on the set-up (the rendezvous included) and on each collective; unset: the seconds in GRPO_NCCL_TIMEOUT,
  /// or 300.
  std::optional<std::chrono::duration<double>> timeout;
};

namespace detail {

inline void check_cuda(cudaError_t status, std::string_view call) {
  if (status == cudaSuccess) return;
  grpo::detail::fail<backend_error>("grpo::nccl: ", call, " failed: ", cudaGetErrorName(status), ": ",
                                    cudaGetErrorString(status));
}

/// This process's rank among those of the job on its machine, when the launcher says.
inline std::optional<int> local_rank_from_environment() {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "LOCAL_RANK"}) {
    const char* value = std::getenv(name);
    if (value == nullptr || *value == '\0') continue;
    char* end = nullptr;
    const long local = std::strtol(value, &end, 10);
    GRPO_CHECK(*end == '\0' && local >= 0 && local < 1 << 20, config_error, name,
               ": expected a local rank (a non-negative integer), got \"", value, "\"");
    return static_cast<int>(local);
  }
  return std::nullopt;
}

/// The device `options` or the environment give this rank. \throws config_error naming `device` when it is not a
/// device of this machine; backend_error when CUDA finds no device at all.
inline int choose_device(const communicator_options& options, std::size_t rank) {
  int count = 0;
  check_cuda(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
  const std::optional<int> local = options.device ? std::nullopt : local_rank_from_environment();
  const int device = options.device ? *options.device : local ? *local : static_cast<int>(rank);
  const char* source = options.device ? "given" : local ? "this process's local rank" : "this process's rank";
  GRPO_CHECK(device >= 0 && device < count, config_error, "device: ", device, " (", source,
             ") is not a CUDA device of this machine, which has ", count,
             " (NCCL needs one device per rank: start at most that many ranks per machine)");
  return device;
}

/// Makes `device` current for the life of the object, then restores the caller's.
class device_guard {
 public:
  explicit device_guard(int device) {
    check_cuda(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device) check_cuda(cudaSetDevice(device), "cudaSetDevice");
  }
  ~device_guard() { cudaSetDevice(previous_); }
  device_guard(const device_guard&) = delete;
  device_guard& operator=(const device_guard&) = delete;

 private:
  int previous_ = 0;
};

inline constexpr std::string_view rendezvous_magic = "grpo-nccl-rendezvous 1";

}  // namespace detail

/// Writes `id` for a job of `world_size` ranks to `path`, as rank 0 does: a text file (a magic line, the world size,
/// the id's 128 bytes in hex) written beside `path` and renamed onto it, so that a reader sees all of it or nothing.
/// \throws io_error when `path` exists already (an earlier job's file would hand this job's other ranks a dead id:
/// give each job a fresh path, or remove it) or cannot be written.
inline void write_rendezvous(const std::filesystem::path& path, const ncclUniqueId& id, std::size_t world_size) {
  GRPO_CHECK(!std::filesystem::exists(path), io_error, path.string(),
             ": the rendezvous file exists already (left by an earlier job?): remove it or use a fresh path per job");
  std::ostringstream text;
  text << detail::rendezvous_magic << "\nworld_size " << world_size << "\nid ";
  constexpr char digits[] = "0123456789abcdef";
  for (const char byte : id.internal) {
    const auto b = static_cast<unsigned char>(byte);
    text << digits[b >> 4] << digits[b & 15];
  }
  text << '\n';
  std::filesystem::path partial = path;
  partial += ".partial";
  {
    std::ofstream out(partial, std::ios::binary | std::ios::trunc);
    out << text.str();
    out.close();
    GRPO_CHECK(out, io_error, partial.string(), ": cannot write the rendezvous file");
  }
  std::error_code error;
  std::filesystem::rename(partial, path, error);
  GRPO_CHECK(!error, io_error, path.string(), ": cannot move the rendezvous file into place: ", error.message());
}

/// Waits until `path` exists (polling every 10 ms, for at most `timeout`) and reads the id rank 0 wrote there.
/// \throws backend_error when no file appears in time; io_error for a file that is not a rendezvous file;
/// config_error when it was written for another world size.
inline ncclUniqueId read_rendezvous(const std::filesystem::path& path, std::size_t world_size,
                                    std::chrono::duration<double> timeout) {
  const auto start = std::chrono::steady_clock::now();
  while (!std::filesystem::exists(path)) {
    GRPO_CHECK(std::chrono::steady_clock::now() - start < timeout, backend_error, "grpo::nccl: ", path.string(),
               ": no rendezvous file after ", timeout.count(),
               " s (GRPO_NCCL_TIMEOUT): rank 0 did not start, failed before writing it, or uses another path");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::ifstream in(path, std::ios::binary);
  std::string magic;
  std::string key;
  std::string hex;
  std::size_t written_world_size = 0;
  std::getline(in, magic);
  GRPO_CHECK(in && magic == detail::rendezvous_magic, io_error, path.string(),
             ": not a grpo rendezvous file (first line \"", magic, "\", expected \"", detail::rendezvous_magic, "\")");
  in >> key >> written_world_size;
  GRPO_CHECK(in && key == "world_size", io_error, path.string(), ": field \"world_size\" missing or malformed");
  GRPO_CHECK(written_world_size == world_size, config_error, path.string(),
             ": field \"world_size\": rank 0 started a job of ", written_world_size,
             " ranks, this rank was started for ", world_size);
  in >> key >> hex;
  GRPO_CHECK(in && key == "id" && hex.size() == 2 * NCCL_UNIQUE_ID_BYTES &&
                 hex.find_first_not_of("0123456789abcdef") == std::string::npos,
             io_error, path.string(), ": field \"id\": expected ", 2 * NCCL_UNIQUE_ID_BYTES, " hex digits");
  ncclUniqueId id{};
  for (std::size_t i = 0; i < NCCL_UNIQUE_ID_BYTES; ++i)
    id.internal[i] = static_cast<char>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  return id;
}

/// The ranks of a job, one GPU each, as a grpo::train::communicator over NCCL. all_reduce_sum_device is
/// ncclAllReduce (ncclSum, float) in place on the caller's stream; the host all_reduce_sum copies through a device
/// staging buffer on the communicator's own stream: the slow path, for the few host values a trainer sums (loss
/// denominators, scores). Every rank gets the same bits: NCCL's all-reduce computes each element's sum once and
/// sends it unchanged to every rank, whatever its algorithm (NVIDIA/nccl#855). Each call returns once the sum is
/// complete, polling the stream with a deadline, so that a dead peer becomes a backend_error here rather than a hang
/// in the caller's next synchronisation; after a timeout or an NCCL error the communicator is aborted and unusable.
/// Not thread-safe: one thread calls it.
class communicator final : public train::communicator {
 public:
  /// Rank host.rank() of host.world_size(): rank 0 makes the unique id and the ranks sum it through `host` (a sum
  /// of one rank's bytes and zeros, exact in doubles), together with a count of the ranks whose device or id failed,
  /// so that a failure on one rank fails every rank instead of leaving them waiting in NCCL's set-up.
  /// \throws config_error for a bad device or timeout (naming it), backend_error from CUDA, NCCL or the timeout.
  explicit communicator(train::communicator& host, communicator_options options = {})
      : rank_(host.rank()), world_size_(host.world_size()), timeout_(resolve_timeout(options)) {
    std::exception_ptr failure;
    ncclUniqueId id{};
    try {
      device_ = detail::choose_device(options, rank_);
      const detail::device_guard guard(device_);
      if (rank_ == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
    } catch (const grpo::error&) {
      failure = std::current_exception();
    }
    std::vector<double> exchange(1 + NCCL_UNIQUE_ID_BYTES, 0.0);
    exchange[0] = failure ? 1.0 : 0.0;
    if (rank_ == 0 && !failure)
      for (std::size_t i = 0; i < NCCL_UNIQUE_ID_BYTES; ++i)
        exchange[1 + i] = static_cast<double>(static_cast<unsigned char>(id.internal[i]));
    host.all_reduce_sum(std::span<double>(exchange));
    if (failure) std::rethrow_exception(failure);
    GRPO_CHECK(exchange[0] == 0.0, backend_error, "grpo::nccl: ", exchange[0], " of ", world_size_,
               " ranks could not choose their CUDA device or make the NCCL id (their own errors say why)");
    for (std::size_t i = 0; i < NCCL_UNIQUE_ID_BYTES; ++i)
      id.internal[i] = static_cast<char>(static_cast<unsigned char>(exchange[1 + i]));
    start(id);
  }

  /// Rank `rank` of `world_size`, meeting the others through the file `rendezvous` on a file system they all see:
  /// rank 0 makes the id and writes it (write_rendezvous), the others wait for it (read_rendezvous), and rank 0
  /// removes the file once every rank has joined (or its set-up failed), so the path can serve the next job.
  /// \throws config_error for a rank outside [0, world_size), a bad device or timeout; io_error for a rendezvous
  /// file that exists already (rank 0) or is malformed; backend_error from CUDA, NCCL or the timeout.
  communicator(const std::filesystem::path& rendezvous, std::size_t rank, std::size_t world_size,
               communicator_options options = {})
      : rank_(rank), world_size_(world_size), timeout_(resolve_timeout(options)) {
    GRPO_CHECK(world_size >= 1 && rank < world_size, config_error, "rank: ", rank,
               " is not in [0, world_size = ", world_size, ")");
    device_ = detail::choose_device(options, rank_);
    ncclUniqueId id{};
    if (rank_ != 0) {
      id = read_rendezvous(rendezvous, world_size_, timeout_);
      start(id);
      return;
    }
    {
      const detail::device_guard guard(device_);
      check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
    }
    write_rendezvous(rendezvous, id, world_size_);
    std::error_code ignored;
    try {
      start(id);
    } catch (const grpo::error&) {
      std::filesystem::remove(rendezvous, ignored);
      throw;
    }
    std::filesystem::remove(rendezvous, ignored);
  }

  ~communicator() override { release(); }
  communicator(const communicator&) = delete;
  communicator& operator=(const communicator&) = delete;

  std::size_t rank() const override { return rank_; }
  std::size_t world_size() const override { return world_size_; }
  int device() const { return device_; }
  std::chrono::duration<double> timeout() const { return timeout_; }

  bool on_device() const override { return true; }

  /// Sums the `count` floats at device address `data` (on this communicator's device) over the ranks, in place, on
  /// `stream` (a cudaStream_t; nullptr: the legacy default stream), and waits for the sum.
  /// \throws backend_error naming the operation, the rank and the timeout, or with NCCL's or CUDA's message.
  void all_reduce_sum_device(float* data, std::size_t count, void* stream) override {
    all_reduce(data, count, ncclFloat, static_cast<cudaStream_t>(stream), "all_reduce_sum_device (float)");
  }

  /// The slow path: through a device staging buffer (host to device, all-reduce, device to host).
  void all_reduce_sum(std::span<float> values) override { host_all_reduce(values, ncclFloat, "float"); }
  void all_reduce_sum(std::span<double> values) override { host_all_reduce(values, ncclDouble, "double"); }

 private:
  static std::chrono::duration<double> resolve_timeout(const communicator_options& options) {
    const auto timeout = options.timeout.value_or(
        train::detail::timeout_from_environment("GRPO_NCCL_TIMEOUT", std::chrono::seconds(300)));
    GRPO_CHECK(timeout.count() > 0, config_error, "timeout: must be positive, got ", timeout.count(), " s");
    return timeout;
  }

  // NCCL's set-up on this device, then the stream and event of the host path and of the waits.
  void start(const ncclUniqueId& id) {
    const detail::device_guard guard(device_);
    try {
      ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
      config.blocking = 0;
      const ncclResult_t result =
          ncclCommInitRankConfig(&comm_, static_cast<int>(world_size_), id, static_cast<int>(rank_), &config);
      settle(result, "set-up (ncclCommInitRankConfig)");
      detail::check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
      detail::check_cuda(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming), "cudaEventCreateWithFlags");
    } catch (...) {
      release();
      throw;
    }
  }

  void all_reduce(void* data, std::size_t count, ncclDataType_t type, cudaStream_t stream, const char* what) {
    const std::string operation = grpo::detail::concat(what, ", ", count, " values");
    GRPO_CHECK(comm_ != nullptr, backend_error, "grpo::nccl: ", operation, " on rank ", rank_, " of ", world_size_,
               ": the communicator was aborted after an earlier failure");
    if (count == 0) return;
    const detail::device_guard guard(device_);
    settle(ncclAllReduce(data, data, count, type, ncclSum, comm_, stream), operation);
    detail::check_cuda(cudaEventRecord(done_, stream), "cudaEventRecord");
    wait_for(operation);
  }

  template <class T>
  void host_all_reduce(std::span<T> values, ncclDataType_t type, const char* type_name) {
    if (values.empty()) return;
    const std::size_t bytes = values.size_bytes();
    const detail::device_guard guard(device_);
    if (bytes > staging_bytes_) {
      detail::check_cuda(cudaFree(staging_), "cudaFree");
      staging_ = nullptr;
      staging_bytes_ = 0;
      detail::check_cuda(cudaMalloc(&staging_, bytes), "cudaMalloc (the host path's staging buffer)");
      staging_bytes_ = bytes;
    }
    detail::check_cuda(cudaMemcpyAsync(staging_, values.data(), bytes, cudaMemcpyHostToDevice, stream_),
                       "cudaMemcpyAsync (host to device)");
    all_reduce(staging_, values.size(), type, stream_,
               grpo::detail::concat("all_reduce_sum (", type_name, ")").c_str());
    // The sum is complete (all_reduce waited), so this copy cannot wait on a peer.
    detail::check_cuda(cudaMemcpyAsync(values.data(), staging_, bytes, cudaMemcpyDeviceToHost, stream_),
                       "cudaMemcpyAsync (device to host)");
    detail::check_cuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }

  // A call on a non-blocking communicator may return ncclInProgress: it has finished when ncclCommGetAsyncError
  // stops saying so (NCCL user guide, "Creating a communication with options").
  void settle(ncclResult_t result, const std::string& operation) {
    const auto start = std::chrono::steady_clock::now();
    for (int polls = 0; result == ncclInProgress; ++polls) {
      if (std::chrono::steady_clock::now() - start > timeout_) fail_timeout(operation);
      pause(polls);
      ncclResult_t state = ncclSuccess;
      const ncclResult_t queried = ncclCommGetAsyncError(comm_, &state);
      result = queried != ncclSuccess ? queried : state;
    }
    check_nccl(result, operation);
  }

  // Polls the event recorded after the collective, and NCCL's asynchronous errors (a peer that failed), until the
  // event completes or the timeout expires.
  void wait_for(const std::string& operation) {
    const auto start = std::chrono::steady_clock::now();
    for (int polls = 0;; ++polls) {
      const cudaError_t status = cudaEventQuery(done_);
      if (status == cudaSuccess) return;
      if (status != cudaErrorNotReady) {
        abort_communicator();
        detail::check_cuda(status, "cudaEventQuery after " + operation);
      }
      ncclResult_t state = ncclSuccess;
      const ncclResult_t queried = ncclCommGetAsyncError(comm_, &state);
      if (queried != ncclSuccess || state != ncclInProgress)
        check_nccl(queried != ncclSuccess ? queried : state, operation);
      if (std::chrono::steady_clock::now() - start > timeout_) fail_timeout(operation);
      pause(polls);
    }
  }

  // A collective answers within microseconds to milliseconds: poll without sleeping at first, then every 50 us.
  static void pause(int polls) {
    if (polls < 1000)
      std::this_thread::yield();
    else
      std::this_thread::sleep_for(std::chrono::microseconds(50));
  }

  void check_nccl(ncclResult_t result, const std::string& operation) {
    if (result == ncclSuccess) return;
    const std::string last = ncclGetLastError(comm_);
    abort_communicator();
    grpo::detail::fail<backend_error>("grpo::nccl: ", operation, " on rank ", rank_, " of ", world_size_, " (device ",
                                      device_, ") failed: ", ncclGetErrorString(result), last.empty() ? "" : ": ",
                                      last);
  }

  [[noreturn]] void fail_timeout(const std::string& operation) {
    abort_communicator();
    grpo::detail::fail<backend_error>("grpo::nccl: ", operation, " on rank ", rank_, " of ", world_size_, " (device ",
                                      device_, ") timed out after ", timeout_.count(),
                                      " s (GRPO_NCCL_TIMEOUT): another rank died, hangs, or called a different "
                                      "collective");
  }

  // Ends the communicator's operations, those stuck on a dead peer included, and frees it.
  void abort_communicator() noexcept {
    if (comm_ == nullptr) return;
    ncclCommAbort(comm_);
    comm_ = nullptr;
  }

  // A healthy communicator is finalised (its operations flushed, bounded by the timeout) and destroyed; one that
  // fails to finalise in time, or that ends during stack unwinding (an error on this rank, while the other ranks may
  // be waiting in a collective for it), is aborted. Then the stream, event and staging buffer go. Never throws.
  void release() noexcept {
    if (device_ < 0) return;
    int previous = 0;
    const bool switched =
        cudaGetDevice(&previous) == cudaSuccess && previous != device_ && cudaSetDevice(device_) == cudaSuccess;
    if (comm_ != nullptr && std::uncaught_exceptions() > uncaught_at_start_) abort_communicator();
    if (comm_ != nullptr) {
      ncclResult_t state = ncclCommFinalize(comm_);
      const auto start = std::chrono::steady_clock::now();
      for (int polls = 0; state == ncclInProgress && std::chrono::steady_clock::now() - start < timeout_; ++polls) {
        pause(polls);
        if (ncclCommGetAsyncError(comm_, &state) != ncclSuccess) break;
      }
      if (state == ncclSuccess)
        ncclCommDestroy(comm_);
      else
        ncclCommAbort(comm_);
      comm_ = nullptr;
    }
    if (done_ != nullptr) cudaEventDestroy(done_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
    if (staging_ != nullptr) cudaFree(staging_);
    done_ = nullptr;
    stream_ = nullptr;
    staging_ = nullptr;
    staging_bytes_ = 0;
    if (switched) cudaSetDevice(previous);
  }

  std::size_t rank_;
  std::size_t world_size_;
  std::chrono::duration<double> timeout_;
  int device_ = -1;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t done_ = nullptr;
  void* staging_ = nullptr;
  std::size_t staging_bytes_ = 0;
  int uncaught_at_start_ = std::uncaught_exceptions();
};

}  // namespace grpo::nccl
