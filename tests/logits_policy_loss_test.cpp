// SPDX-License-Identifier: Apache-2.0
// The policy loss driven from logits: its value equals the log-prob-driven loss, its gradient
// with respect to the logits matches central differences in double for each variant, and the
// in-place gradient equals the out-of-place one.
#include <cmath>

#include "grpo/logits_policy_loss.hpp"
#include "test_support.hpp"

using namespace grpo;
using namespace grpo::testing;

namespace {

constexpr std::int64_t rows = 3, cols = 4, vocab = 5;

struct logits_case {
  std::vector<double> logits = uniform(rows * cols * vocab, -2.0, 2.0, 31);
  std::vector<std::int64_t> ids{0, 3, 1, 4, 2, 2, 0, 1, 4, 3, 3, 0};
  std::vector<double> mask{1, 1, 1, 0, 1, 1, 1, 1, 1, 0, 0, 0};
  std::vector<double> old_logprobs = uniform(rows * cols, -2.5, -0.5, 32);
  std::vector<double> ref_logprobs = uniform(rows * cols, -2.5, -0.5, 33);
  std::vector<double> advantages{0.8, -1.1, 0.4};
  double temperature = 0.7;

  logits_policy_loss_inputs<ref> inputs() const {
    return {.advantages = vec(advantages),
            .mask = mat(rows, cols, mask),
            .old_logprobs = mat(rows, cols, old_logprobs),
            .ref_logprobs = mat(rows, cols, ref_logprobs)};
  }

  double loss_at(const std::vector<double>& z, const policy_loss_options& options) const {
    reference_tensor<double> grad;
    const auto d = denominators_from_mask(mat(rows, cols, mask), cols);
    return policy_loss_from_logits(mat(rows * cols, vocab, z), grpo::testing::ids(ids), temperature, inputs(), options,
                                   d, grad)
        .policy.loss.item();
  }
};

}  // namespace

TEST_CASE("policy loss from logits equals the loss from the same log-probs", "[logits_policy_loss]") {
  const logits_case c;
  policy_loss_options options;
  options.beta = 0.05;
  options.entropy_coef = 0.01;
  const auto d = denominators_from_mask(mat(rows, cols, c.mask));
  reference_tensor<double> grad;
  const auto from_logits = policy_loss_from_logits(mat(rows * cols, vocab, c.logits), ids(c.ids), c.temperature,
                                                   c.inputs(), options, d, grad);
  const auto tokens = token_logprobs(mat(rows * cols, vocab, c.logits), ids(c.ids), c.temperature);
  const auto direct = policy_loss(policy_loss_inputs<ref>{.logprobs = reshape(tokens.logprobs, shape::matrix(rows, cols)),
                                                          .advantages = vec(c.advantages),
                                                          .mask = mat(rows, cols, c.mask),
                                                          .old_logprobs = mat(rows, cols, c.old_logprobs),
                                                          .ref_logprobs = mat(rows, cols, c.ref_logprobs),
                                                          .entropy = reshape(tokens.entropy, shape::matrix(rows, cols))},
                                  options, d);
  require_close(from_logits.policy.loss.item(), direct.loss.item(), 0, 0);
  require_close(from_logits.policy.grad_logprobs.to_host(), direct.grad_logprobs.to_host(), 0, 0);
  REQUIRE(from_logits.policy.metrics.entropy_mean > 0.0);
}

TEST_CASE("policy loss from logits: gradient matches finite differences", "[logits_policy_loss][gradient]") {
  const logits_case c;
  for (const auto level : {ratio_level::token, ratio_level::sequence}) {
    for (const auto aggregation : {loss_aggregation::token_mean, loss_aggregation::seq_mean_token_mean,
                                   loss_aggregation::seq_mean_token_sum_norm}) {
      for (const double entropy_coef : {0.0, 0.02}) {
        policy_loss_options options;
        options.level = level;
        options.aggregation = aggregation;
        options.beta = 0.04;
        options.kl = kl_estimator::k3;
        options.entropy_coef = entropy_coef;
        // Wide clip range: the finite differences must not straddle a clip boundary.
        options.epsilon_low = options.epsilon_high = 0.95;
        const auto d = denominators_from_mask(mat(rows, cols, c.mask), cols);
        reference_tensor<double> grad;
        (void)policy_loss_from_logits(mat(rows * cols, vocab, c.logits), ids(c.ids), c.temperature, c.inputs(),
                                      options, d, grad);
        INFO("level " << name_of(level) << ", aggregation " << name_of(aggregation) << ", entropy_coef "
                      << entropy_coef);
        require_gradient([&](const std::vector<double>& z) { return c.loss_at(z, options); }, c.logits,
                         download(ref{}, grad));
      }
    }
  }
}

TEST_CASE("policy loss from logits: the gradient may overwrite the logits", "[logits_policy_loss]") {
  const logits_case c;
  policy_loss_options options;
  options.entropy_coef = 0.01;
  const auto d = denominators_from_mask(mat(rows, cols, c.mask));
  reference_tensor<double> separate;
  const auto logits = mat(rows * cols, vocab, c.logits);
  const auto expected = policy_loss_from_logits(logits, ids(c.ids), c.temperature, c.inputs(), options, d, separate);
  auto in_place = mat(rows * cols, vocab, c.logits);
  const auto got = policy_loss_from_logits(in_place, ids(c.ids), c.temperature, c.inputs(), options, d, in_place.raw());
  require_close(got.policy.loss.item(), expected.policy.loss.item(), 0, 0);
  require_close(in_place.to_host(), download(ref{}, separate), 0, 0);
}

TEST_CASE("policy loss from logits: errors name the argument", "[logits_policy_loss][errors]") {
  const logits_case c;
  const auto d = denominators_from_mask(mat(rows, cols, c.mask));
  reference_tensor<double> grad;
  require_error(
      [&] {
        (void)policy_loss_from_logits(mat(rows * cols - 1, vocab, std::vector<double>((rows * cols - 1) * vocab, 0.0)),
                                      ids(c.ids), 1.0, c.inputs(), policy_loss_options{}, d, grad);
      },
      {"logits", "[3,4]"});
  require_error(
      [&] {
        (void)policy_loss_from_logits(mat(rows * cols, vocab, c.logits), ids(c.ids), -1.0, c.inputs(),
                                      policy_loss_options{}, d, grad);
      },
      {"temperature"});
}
