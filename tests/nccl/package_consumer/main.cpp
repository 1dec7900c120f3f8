// SPDX-License-Identifier: Apache-2.0
// Consumer of the installed grpo::nccl component: a one-rank communicator through a rendezvous file (given as the
// first argument) summing one device buffer.
#include <cstdio>

#include "grpo/nccl/communicator.hpp"

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  grpo::nccl::communicator comm(argv[1], 0, 1);
  float* data = nullptr;
  if (cudaMalloc(&data, sizeof(float)) != cudaSuccess) return 1;
  comm.all_reduce_sum_device(data, 1, nullptr);
  cudaFree(data);
  std::printf("grpo::nccl consumer: device %d\n", comm.device());
  return 0;
}
