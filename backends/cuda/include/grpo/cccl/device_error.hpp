// SPDX-License-Identifier: Apache-2.0
// grpo/cccl/device_error.hpp: how code running on the device reports bad input without throwing. A functor
// or kernel that meets an index out of range records (operation, index, bound) in a three-word slot of the
// workspace, first writer wins, and carries on with a NaN result; the host reads the slot at the next
// synchronisation point (every download) and throws the same shape_error the reference backend throws at
// once. No extra synchronisation is added to find out.
#pragma once

#include <atomic>
#include <cstdint>

#include "grpo/cccl/config.hpp"
#include "grpo/error.hpp"

namespace grpo::cccl {
inline namespace GRPO_CCCL_SYSTEM_NAMESPACE {
namespace detail {

/// Codes stored in slot[0]; 0 means no error.
enum device_error_code : std::int64_t {
  device_error_none = 0,
  device_error_gather = 1,
  device_error_sum_segments = 2,
  device_error_row_softmax_stats = 3,
  device_error_row_sparse_forward_kl = 4,
};

/// Records the first out-of-range index seen: slot = {code, index, bound}. Safe to call from many
/// threads at once: only the thread that wins the compare-and-swap on slot[0] writes the rest.
GRPO_CCCL_HOST_DEVICE inline void report_index_error(std::int64_t* slot, std::int64_t code, std::int64_t index,
                                                     std::int64_t bound) {
  if (slot == nullptr) return;
#if defined(__CUDA_ARCH__)
  auto* word = reinterpret_cast<unsigned long long*>(slot);
  if (atomicCAS(word, 0ull, static_cast<unsigned long long>(code)) != 0ull) return;
#else
  std::int64_t expected = 0;
  if (!std::atomic_ref<std::int64_t>(slot[0]).compare_exchange_strong(expected, code)) return;
#endif
  slot[1] = index;
  slot[2] = bound;
}

/// Throws the shape_error for a non-empty slot, in the reference backend's words ("gather: index 5 out
/// of range [0, 3)") followed by where it was found.
[[noreturn]] inline void throw_device_error(const std::int64_t (&slot)[3]) {
  const char* op = "device operation";
  switch (slot[0]) {
    case device_error_gather: op = "gather"; break;
    case device_error_sum_segments: op = "sum_segments"; break;
    case device_error_row_softmax_stats: op = "row_softmax_stats"; break;
    case device_error_row_sparse_forward_kl: op = "row_sparse_forward_kl"; break;
    default: break;
  }
  grpo::detail::fail<shape_error>(op, ": index ", slot[1], " out of range [0, ", slot[2],
                                  ") (found on the device, reported at the next synchronisation)");
}

}  // namespace detail
}  // namespace GRPO_CCCL_SYSTEM_NAMESPACE
}  // namespace grpo::cccl
