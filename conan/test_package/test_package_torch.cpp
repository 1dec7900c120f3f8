// SPDX-License-Identifier: Apache-2.0
// Conan test_package, component torch: the fused GRPO loss on torch tensors, differentiated by autograd.
#include <cmath>
#include <cstdio>

#include <grpo/libtorch/autograd.hpp>

int main() {
  // One token, A = 1, ratio 1 (no old log-probs), token-mean over 1 token: loss = -1 and d loss / d logp = -1.
  auto logp = at::full({1, 1}, -0.5, at::kDouble).requires_grad_(true);
  const auto out = grpo::libtorch::policy_loss({.logprobs = logp, .advantages = at::ones({1}, at::kDouble),
                                                .mask = at::ones({1, 1}, at::kDouble)},
                                               {}, {1.0, 1.0, 1.0});
  out.loss.backward();
  const double loss = out.loss.item<double>(), grad = logp.grad().item<double>();
  std::printf("grpo::torch from Conan: loss %g, gradient %g\n", loss, grad);
  return std::fabs(loss + 1.0) < 1e-15 && std::fabs(grad + 1.0) < 1e-15 ? 0 : 1;
}
