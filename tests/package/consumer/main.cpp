// SPDX-License-Identifier: Apache-2.0
// The consumer project's program: includes the umbrella header, computes one loss, checks a value.
#include <cmath>
#include <cstdio>

#include <grpo/grpo.hpp>

int main() {
  const grpo::reference_backend<double> b;
  const auto mask = grpo::full(b, grpo::shape::matrix(2, 2), 1.0);
  const auto weights = grpo::aggregation_weights(mask, grpo::loss_aggregation::token_mean,
                                                 grpo::denominators_from_mask(mask));
  const double total = grpo::sum(weights).item();
  std::printf("grpo %s: token-mean weights sum to %g\n", grpo::version_string, total);
  return std::fabs(total - 1.0) < 1e-12 ? 0 : 1;
}
