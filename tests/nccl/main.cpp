// SPDX-License-Identifier: Apache-2.0
// The Catch2 main of grpo::nccl's tests. With --require-gpu (the ctest entries of the [gpu] cases) it exits 77, which
// ctest reports as skipped, when CUDA sees no device; without it the cases run and a [gpu] case fails where there is
// no device.
#define CATCH_CONFIG_RUNNER
#include <cuda_runtime_api.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <string_view>
#include <vector>

int main(int argc, char** argv) {
  std::vector<char*> args;
  bool require_gpu = false;
  for (int i = 0; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--require-gpu")
      require_gpu = true;
    else
      args.push_back(argv[i]);
  }
  int devices = 0;
  const cudaError_t status = cudaGetDeviceCount(&devices);
  if (require_gpu && (status != cudaSuccess || devices == 0)) {
    std::printf("skipped: no CUDA device (%s)\n", status == cudaSuccess ? "count 0" : cudaGetErrorString(status));
    return 77;
  }
  return Catch::Session().run(static_cast<int>(args.size()), args.data());
}
