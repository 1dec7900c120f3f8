// SPDX-License-Identifier: Apache-2.0
// The Catch2 main of grpo_tests_mpi: MPI for the whole run (grpo::mpi::session), under mpirun or as a singleton.
// Every rank runs every test case in the same order, since each is collective; the cases use CHECK rather than
// REQUIRE around collectives so that a failed check on one rank never skips a collective the others wait in.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "grpo/mpi/communicator.hpp"

int main(int argc, char** argv) {
  const grpo::mpi::session mpi(&argc, &argv);
  return Catch::Session().run(argc, argv);
}
