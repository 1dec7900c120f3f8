// SPDX-License-Identifier: Apache-2.0
// Conan test_package: the installed headers compile and compute a known aggregation weight.
#include <cmath>
#include <cstdio>

#include <grpo/grpo.hpp>

int main() {
  const grpo::reference_backend<double> b;
  const auto mask = grpo::full(b, grpo::shape::matrix(2, 3), 1.0);
  const auto weights = grpo::aggregation_weights(mask, grpo::loss_aggregation::seq_mean_token_mean,
                                                 grpo::denominators_from_mask(mask));
  const double total = grpo::sum(weights).item();
  std::printf("grpo %s from Conan: seq-mean-token-mean weights sum to %g\n", grpo::version_string, total);
  return std::fabs(total - 1.0) < 1e-12 ? 0 : 1;
}
