// SPDX-License-Identifier: Apache-2.0
// Consumer of the installed grpo::cuda component: per-token log-probs on the CCCL backend (CPP system) must equal
// the reference backend's.
#include <cstdio>
#include <grpo/cccl/backend.hpp>
#include <grpo/logits.hpp>
#include <grpo/reference_backend.hpp>
#include <vector>

int main() {
  const std::vector<double> z{0.0, 1.0, 2.0, -1.0, 0.5, 0.25};
  const std::vector<std::int64_t> ids{2, 0};
  const grpo::cccl::backend<double> b;
  const auto got = grpo::token_logprobs(grpo::make_tensor(b, z, grpo::shape::matrix(2, 3)),
                                        grpo::make_index(b, ids, grpo::shape::vector(2)))
                       .logprobs.to_host();
  const grpo::reference_backend<double> r;
  const auto want = grpo::token_logprobs(grpo::make_tensor(r, z, grpo::shape::matrix(2, 3)),
                                         grpo::make_index(r, ids, grpo::shape::vector(2)))
                        .logprobs.to_host();
  if (got != want) {
    std::printf("consumer: cccl and reference log-probs differ\n");
    return 1;
  }
  std::printf("consumer: grpo::cuda on %s ok\n", grpo::cccl::device_system_name);
  return 0;
}
