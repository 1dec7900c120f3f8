// SPDX-License-Identifier: Apache-2.0
// Consumer of the installed grpo::mpi component: one process (an MPI singleton) sums a span and checks a config.
#include <cstdio>
#include <vector>

#include "grpo/mpi/communicator.hpp"

int main(int argc, char** argv) {
  const grpo::mpi::session mpi(&argc, &argv);
  grpo::mpi::communicator comm;
  std::vector<double> values{1.5, -2.0};
  comm.all_reduce_sum(values);
  grpo::train::check_same(comm, "config", "config");
  const bool ok = comm.world_size() == 1 && values == std::vector<double>{1.5, -2.0};
  std::printf("grpo::mpi consumer: %zu rank(s), %s\n", comm.world_size(), ok ? "ok" : "WRONG");
  return ok ? 0 : 1;
}
