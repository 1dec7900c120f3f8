// SPDX-License-Identifier: Apache-2.0
// Uses the installed grpo::torch component: fused token log-probs into the fused GRPO loss, then autograd.
#include <cmath>
#include <cstdio>
#include <grpo/libtorch/autograd.hpp>

int main() {
  // Two tokens over V = 2 with logits (0, ln 3): log p[1] = ln 3/4 for both; old = the same values, A = (1, -1):
  // ratio 1, token-mean loss -(1 - 1) / 2 = 0, gradient d loss / d logp = (-1/2, 1/2).
  auto logits = at::tensor({0.0, std::log(3.0), 0.0, std::log(3.0)}, at::kDouble).reshape({2, 2}).requires_grad_(true);
  const auto lp = grpo::libtorch::token_logprobs(logits, at::tensor({1, 1}, at::kLong));
  grpo::libtorch::policy_loss_tensors in{lp.logprobs.reshape({2, 1}), at::tensor({1.0, -1.0}, at::kDouble),
                                         at::ones({2, 1}, at::kDouble)};
  in.old_logprobs = lp.logprobs.detach().reshape({2, 1});
  const auto out = grpo::libtorch::policy_loss(in, {}, {2.0, 2.0, 1.0});
  out.loss.backward();
  // d loss / d z = d loss / d logp (onehot - p) = -1/2 (-1/4, 1/4) for the first row.
  const double g = logits.grad()[0][0].item<double>();
  const bool ok = std::fabs(out.loss.item<double>()) < 1e-15 && std::fabs(g - 0.125) < 1e-15;
  std::printf("grpo::torch consumer: loss %g, d loss / d z[0][0] %g: %s\n", out.loss.item<double>(), g,
              ok ? "ok" : "WRONG");
  return ok ? 0 : 1;
}
