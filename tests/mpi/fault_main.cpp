// SPDX-License-Identifier: Apache-2.0
// grpo_mpi_fault: a 2-rank job in which rank 1 stops answering after one good collective, for tests/mpi/fault.cmake.
//   grpo_mpi_fault hang        rank 1 sleeps 60 s instead of joining the second collective
//   grpo_mpi_fault rank_dies   rank 1 exits (without MPI_Finalize) instead of joining it
// The good collective runs on a communicator with a 60 s timeout (under `ctest -j` a rank may start late); the one
// under test, duplicated after it, has 1 s: rank 0 prints the backend_error and its wait and exits with 1, as the CLI
// would, with the session inside the try block so that MPI_Finalize is skipped and mpirun ends rank 1 at once.
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "grpo/mpi/communicator.hpp"

int main(int argc, char** argv) {
  const auto start = std::chrono::steady_clock::now();
  const auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  const std::string mode = argc > 1 ? argv[1] : "";
  try {
    const grpo::mpi::session mpi(&argc, &argv);
    grpo::mpi::communicator in_step(grpo::mpi::communicator_options{std::chrono::seconds(60)});
    std::vector<float> values(1000, 1.0f);
    in_step.all_reduce_sum(values);
    grpo::mpi::communicator comm(grpo::mpi::communicator_options{std::chrono::seconds(1)});
    std::cout << "rank " << comm.rank() << ": first collective done, sum " << values[0] << std::endl;
    if (comm.rank() == 1) {
      if (mode == "rank_dies") std::_Exit(0);
      std::this_thread::sleep_for(std::chrono::seconds(60));
    }
    const auto before = seconds();
    try {
      comm.all_reduce_sum(values);
    } catch (const grpo::backend_error& e) {
      std::cout << "rank " << comm.rank() << ": backend_error after " << seconds() - before << " s: " << e.what()
                << std::endl;
      throw;
    }
    std::cout << "rank " << comm.rank() << ": second collective done" << std::endl;
    return 0;
  } catch (const grpo::error&) {
    return 1;
  }
}
