// SPDX-License-Identifier: Apache-2.0
// Conan test_package, component cuda: GRPO advantages on the CUDA/Thrust backend (CPP system) equal the reference's.
#include <cstdio>
#include <vector>

#include <grpo/advantages.hpp>
#include <grpo/cccl/backend.hpp>
#include <grpo/reference_backend.hpp>

int main() {
  const std::vector<double> rewards{1.0, 0.0, 0.0, 1.0, 1.0, 1.0};
  const auto groups = grpo::group_layout::consecutive(3);
  const grpo::cccl::backend<double> device;
  const grpo::reference_backend<double> reference;
  const auto got =
      grpo::grpo_advantages(grpo::make_tensor(device, rewards, grpo::shape::vector(6)), groups).advantages.to_host();
  const auto want =
      grpo::grpo_advantages(grpo::make_tensor(reference, rewards, grpo::shape::vector(6)), groups).advantages.to_host();
  std::printf("grpo::cuda from Conan on %s: %s\n", grpo::cccl::device_system_name, got == want ? "ok" : "WRONG");
  return got == want ? 0 : 1;
}
