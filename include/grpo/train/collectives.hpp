// SPDX-License-Identifier: Apache-2.0
// grpo/train/collectives.hpp: what data-parallel code builds on any grpo::train::communicator. check_same
// verifies at start-up that every rank holds the same text (the config: ranks started with different configs
// would train different models while summing each other's gradients); timeout_from_environment reads the bound
// on a collective that the MPI (grpo::mpi) and NCCL (grpo::nccl) communicators take from GRPO_MPI_TIMEOUT and
// GRPO_NCCL_TIMEOUT.
#pragma once

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <ios>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "grpo/detail/random.hpp"
#include "grpo/error.hpp"
#include "grpo/train/communicator.hpp"

namespace grpo::train {

/// \throws config_error, on every rank, unless every rank passed the same `text`; the message names `what` and the
/// first rank whose text differs from rank 0's. Collective: every rank calls it at the same point. Each rank
/// contributes its text's FNV-1a hash (as two 32-bit halves, each exact in a double) and length through all_gather,
/// so every rank sees the same table and raises the same error.
inline void check_same(communicator& comm, std::string_view text, std::string_view what) {
  const std::uint64_t hash = grpo::detail::fnv1a_64(text);
  const double mine[3] = {static_cast<double>(hash >> 32), static_cast<double>(hash & 0xffffffffull),
                          static_cast<double>(text.size())};
  const std::vector<double> all = all_gather(comm, mine);
  const auto hash_of = [&](std::size_t rank) {
    return static_cast<std::uint64_t>(all[3 * rank]) << 32 | static_cast<std::uint64_t>(all[3 * rank + 1]);
  };
  for (std::size_t rank = 1; rank < comm.world_size(); ++rank) {
    if (hash_of(rank) == hash_of(0) && all[3 * rank + 2] == all[2]) continue;
    std::ostringstream hashes;
    hashes << std::hex << hash_of(rank) << " vs " << hash_of(0);
    grpo::detail::fail<config_error>(what, ": rank ", rank, " of ", comm.world_size(), " holds a different ", what,
                               " than rank 0 (FNV-1a ", hashes.str(), ", ", all[3 * rank + 2], " vs ", all[2],
                               " bytes): start every rank with the same ", what);
  }
}

namespace detail {

/// The seconds in environment variable `name` (a positive number, e.g. "300" or "0.5"), or `fallback` when it is
/// unset or empty. \throws config_error naming the variable when it is set to anything else.
inline std::chrono::duration<double> timeout_from_environment(const char* name,
                                                              std::chrono::duration<double> fallback) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return fallback;
  char* end = nullptr;
  const double seconds = std::strtod(value, &end);
  GRPO_CHECK(*end == '\0' && std::isfinite(seconds) && seconds > 0, config_error, name,
             ": expected a positive number of seconds, got \"", value, "\"");
  return std::chrono::duration<double>(seconds);
}

}  // namespace detail
}  // namespace grpo::train
