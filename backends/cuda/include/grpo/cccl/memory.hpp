// SPDX-License-Identifier: Apache-2.0
// grpo/cccl/memory.hpp: the workspace a grpo::cccl backend shares with its copies: its stream (CUDA system),
// a caching pool, so that once a size has been seen nothing more comes from cudaMalloc or the heap (cudaMalloc
// and cudaFree would also synchronise the device), and the device error slot (device_error.hpp). Also
// device_buffer<T>, the storage of the backend's tensors, and the execution policy of every Thrust call.
// Not a general allocator: a freed block is reused at once, which is safe because one workspace has one stream.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <unordered_map>
#include <utility>
#include <vector>

#include "grpo/cccl/config.hpp"
#include "grpo/cccl/device_error.hpp"
#include "grpo/error.hpp"

#if GRPO_CCCL_CUDA
#include <cuda_runtime_api.h>
#include <thrust/system/cuda/execution_policy.h>
#elif THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_OMP
#include <thrust/system/omp/execution_policy.h>
#else
#include <thrust/system/cpp/execution_policy.h>
#endif

namespace grpo::cccl {
inline namespace GRPO_CCCL_SYSTEM_NAMESPACE {

namespace detail {
#if GRPO_CCCL_CUDA
/// The one place where a CUDA status becomes an exception: backend_error naming the operation. The
/// last-error state is cleared, so a failure reported here does not resurface at the next check.
inline void cuda_check(cudaError_t status, const char* what) {
  if (status == cudaSuccess) return;
  (void)cudaGetLastError();
  grpo::detail::fail<backend_error>(what, ": CUDA error ", cudaGetErrorName(status), " (", cudaGetErrorString(status),
                                    ")");
}
#endif
}  // namespace detail

/// Counters of a workspace's pool.
struct pool_statistics {
  std::size_t upstream_allocations = 0;  ///< blocks obtained from cudaMalloc (or the heap) so far
  std::size_t bytes_reserved = 0;        ///< bytes held from upstream: in use plus cached
  std::size_t bytes_cached = 0;          ///< bytes free in the pool, ready for reuse
};

/// Stream, memory pool and device error slot; shared (through std::shared_ptr) by a backend, its copies
/// and every buffer allocated from it, so it lives until the last of them is gone. Thread-safe.
class workspace {
 public:
#if GRPO_CCCL_CUDA
  /// Work is queued on `stream` (the caller's; not owned, must outlive the workspace).
  explicit workspace(cudaStream_t stream) : stream_(stream) { init_error_slot(); }
  cudaStream_t stream() const noexcept { return stream_; }
#else
  workspace() { init_error_slot(); }
#endif
  workspace(const workspace&) = delete;
  workspace& operator=(const workspace&) = delete;
  ~workspace() {
    deallocate(error_slot_, error_slot_bytes);
    release_cached();
  }

  /// Uninitialised memory of at least `bytes` bytes, 256-byte aligned; nullptr for 0 bytes. Served from the
  /// pool when a block of the same size class is free, otherwise from upstream (after releasing the cache
  /// and retrying once if upstream is out of memory). Throws backend_error when that fails too.
  void* allocate(std::size_t bytes) {
    if (bytes == 0) return nullptr;
    const std::size_t block = size_class(bytes);
    {
      const std::lock_guard lock(mutex_);
      auto found = cached_.find(block);
      if (found != cached_.end() && !found->second.empty()) {
        void* p = found->second.back();
        found->second.pop_back();
        stats_.bytes_cached -= block;
        return p;
      }
    }
    void* p = upstream_allocate(block);
    if (p == nullptr) {
      release_cached();
      p = upstream_allocate(block);
    }
    GRPO_CHECK(p != nullptr, backend_error, "workspace: allocating ", block, " bytes failed (out of memory)");
    const std::lock_guard lock(mutex_);
    ++stats_.upstream_allocations;
    stats_.bytes_reserved += block;
    return p;
  }

  /// Returns a block to the pool. Under CUDA, work already queued on the stream may still be using it;
  /// whatever reuses it is queued after that work, on the same stream.
  void deallocate(void* p, std::size_t bytes) noexcept {
    if (p == nullptr) return;
    const std::size_t block = size_class(bytes);
    const std::lock_guard lock(mutex_);
    try {
      cached_[block].push_back(p);
      stats_.bytes_cached += block;
    } catch (...) {  // no memory for the free list's bookkeeping: give the block back instead
      upstream_free(p);
      stats_.bytes_reserved -= block;
    }
  }

  /// Frees every cached block upstream (under CUDA, cudaFree waits for the device first).
  void release_cached() noexcept {
    const std::lock_guard lock(mutex_);
    for (auto& [block, blocks] : cached_) {
      for (void* p : blocks) upstream_free(p);
      stats_.bytes_reserved -= block * blocks.size();
      stats_.bytes_cached -= block * blocks.size();
      blocks.clear();
    }
  }

  pool_statistics statistics() const {
    const std::lock_guard lock(mutex_);
    return stats_;
  }

  /// The three-word slot device code reports bad indices into (device_error.hpp).
  std::int64_t* error_slot() const noexcept { return error_slot_; }

  /// Waits for every operation queued so far, then throws the error a device function reported, if any
  /// (and clears it). The only synchronisation point besides downloads, which call it.
  void synchronize() {
    std::int64_t slot[3] = {0, 0, 0};
#if GRPO_CCCL_CUDA
    detail::cuda_check(cudaMemcpyAsync(slot, error_slot_, sizeof slot, cudaMemcpyDeviceToHost, stream_), "synchronize");
    detail::cuda_check(cudaStreamSynchronize(stream_), "synchronize");
    if (slot[0] != 0) detail::cuda_check(cudaMemsetAsync(error_slot_, 0, sizeof slot, stream_), "synchronize");
#else
    std::memcpy(slot, error_slot_, sizeof slot);
    std::memset(error_slot_, 0, sizeof slot);
#endif
    if (slot[0] != 0) detail::throw_device_error(slot);
  }

 private:
  static constexpr std::size_t error_slot_bytes = 3 * sizeof(std::int64_t);

  // Eight size classes per power of two: at most 12.5% of a block goes unused, and a training loop whose
  // shapes vary a little still finds its blocks again.
  static std::size_t size_class(std::size_t bytes) {
    constexpr std::size_t granule = 512;
    if (bytes <= granule) return granule;
    const std::size_t step = std::max(granule, std::bit_floor(bytes - 1) / 8);
    return (bytes + step - 1) / step * step;
  }

  static void* upstream_allocate(std::size_t bytes) noexcept {
#if GRPO_CCCL_CUDA
    void* p = nullptr;
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
      (void)cudaGetLastError();
      return nullptr;
    }
    return p;
#else
    return ::operator new (bytes, std::align_val_t{256}, std::nothrow);
#endif
  }

  static void upstream_free(void* p) noexcept {
#if GRPO_CCCL_CUDA
    // At program exit the runtime may already be gone; nothing useful can be done about a failure here.
    if (cudaFree(p) != cudaSuccess) (void)cudaGetLastError();
#else
    ::operator delete (p, std::align_val_t{256});
#endif
  }

  void init_error_slot() {
    error_slot_ = static_cast<std::int64_t*>(allocate(error_slot_bytes));
#if GRPO_CCCL_CUDA
    detail::cuda_check(cudaMemsetAsync(error_slot_, 0, error_slot_bytes, stream_), "workspace");
#else
    std::memset(error_slot_, 0, error_slot_bytes);
#endif
  }

#if GRPO_CCCL_CUDA
  cudaStream_t stream_;
#endif
  mutable std::mutex mutex_;
  std::unordered_map<std::size_t, std::vector<void*>> cached_;
  pool_statistics stats_;
  std::int64_t* error_slot_ = nullptr;
};

namespace detail {

// Byte copies between the host and the workspace's memory, queued on its stream. Host to device from
// pageable memory returns once the source has been staged, so the source may be freed at once; device to
// host is followed by workspace::synchronize() before the destination is read.
inline void bytes_to_device(workspace& ws, void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return;
#if GRPO_CCCL_CUDA
  cuda_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, ws.stream()), "upload");
#else
  (void)ws;
  std::memcpy(dst, src, bytes);
#endif
}

inline void bytes_to_host(workspace& ws, void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return;
#if GRPO_CCCL_CUDA
  cuda_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, ws.stream()), "download");
#else
  (void)ws;
  std::memcpy(dst, src, bytes);
#endif
}

inline void bytes_on_device(workspace& ws, void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return;
#if GRPO_CCCL_CUDA
  cuda_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, ws.stream()), "device copy");
#else
  (void)ws;
  std::memcpy(dst, src, bytes);
#endif
}

}  // namespace detail

/// Owning, uninitialised storage of `size` elements of T from a workspace. Copies are deep (a copy queued
/// on the stream); moves are free; destruction returns the block to the pool.
template <class T>
class device_buffer {
 public:
  device_buffer() = default;
  device_buffer(std::shared_ptr<workspace> owner, std::size_t size)
      : owner_(std::move(owner)), size_(size), data_(static_cast<T*>(owner_->allocate(size * sizeof(T)))) {}
  device_buffer(const device_buffer& other)
      : owner_(other.owner_),
        size_(other.size_),
        data_(owner_ ? static_cast<T*>(owner_->allocate(size_ * sizeof(T))) : nullptr) {
    if (owner_) detail::bytes_on_device(*owner_, data_, other.data_, size_ * sizeof(T));
  }
  device_buffer(device_buffer&& other) noexcept
      : owner_(std::move(other.owner_)),
        size_(std::exchange(other.size_, 0)),
        data_(std::exchange(other.data_, nullptr)) {}
  device_buffer& operator=(device_buffer other) noexcept {
    swap(other);
    return *this;
  }
  ~device_buffer() {
    if (owner_) owner_->deallocate(data_, size_ * sizeof(T));
  }

  void swap(device_buffer& other) noexcept {
    std::swap(owner_, other.owner_);
    std::swap(size_, other.size_);
    std::swap(data_, other.data_);
  }

  /// Device pointer (host memory under CPP and OMP); nullptr when empty.
  T* data() noexcept { return data_; }
  const T* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  const std::shared_ptr<workspace>& owner() const noexcept { return owner_; }

 private:
  std::shared_ptr<workspace> owner_;
  std::size_t size_ = 0;
  T* data_ = nullptr;
};

// Its own namespace, holding nothing else: the allocator's type becomes a template argument of every
// execution policy, so argument-dependent lookup inside Thrust searches this namespace and must find no
// function named like a Thrust algorithm there.
namespace workspace_allocation {

/// Thrust's temporary storage (sort, scan) drawn from the workspace's pool.
struct temporary_allocator {
  using value_type = char;
  workspace* owner = nullptr;
  char* allocate(std::ptrdiff_t bytes) { return static_cast<char*>(owner->allocate(static_cast<std::size_t>(bytes))); }
  void deallocate(char* p, std::size_t bytes) noexcept { owner->deallocate(p, bytes); }
};

}  // namespace workspace_allocation

/// The policy every Thrust algorithm of the backend runs on: CUDA: par_nosync on the workspace's stream (no
/// synchronisation after each algorithm); OMP and CPP: par. Temporaries come from the pool in all three.
inline auto execution_policy(workspace& ws) {
  const workspace_allocation::temporary_allocator alloc{&ws};
#if GRPO_CCCL_CUDA
  return thrust::cuda::par_nosync(alloc).on(ws.stream());
#elif THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_OMP
  return thrust::omp::par(alloc);
#else
  return thrust::cpp::par(alloc);
#endif
}

}  // namespace GRPO_CCCL_SYSTEM_NAMESPACE
}  // namespace grpo::cccl
