// SPDX-License-Identifier: Apache-2.0
// The main of grpo_tests_torch_cuda and grpo_tests_torch_cuda_kernels: exits with 77 (ctest's SKIP_RETURN_CODE for
// them) when LibTorch sees no CUDA device, so a GPU run is reported as skipped rather than passed or failed.
#define CATCH_CONFIG_RUNNER
#include <torch/cuda.h>

#include <catch2/catch.hpp>
#include <iostream>

int main(int argc, char* argv[]) {
  if (!torch::cuda::is_available()) {
    std::cout << (argc > 0 ? argv[0] : "grpo_tests_torch_cuda") << ": no CUDA device visible to LibTorch; skipped\n";
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
