// SPDX-License-Identifier: Apache-2.0
// The PPO critic side: the clipped value loss on hand-worked numbers, its gradient against finite
// differences for every aggregation mode, micro-batch additivity, and the KL controllers'
// hand-worked updates; with their error messages.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "grpo/kl_controller.hpp"
#include "grpo/value_loss.hpp"
#include "test_support.hpp"

using namespace grpo;
using namespace grpo::testing;

namespace {

// Six tokens in two rows of three, chosen so that each case of the max and the clamp occurs:
//   t0 v 1.0, v_old 0.9, R 2.0: v inside [0.4, 1.4], both terms 1.0, L 0.5, dL/dv = v - R = -1.
//   t1 v 2.0, v_old 1.0, R 0.0: v_clip 1.5; 4 > 2.25, unclipped: L 2, dL/dv 2.
//   t2 v 2.0, v_old 1.0, R 3.0: v_clip 1.5; 2.25 > 1, clipped: L 1.125, dL/dv 0 (v outside the range).
//   t3 v 0.0, v_old 1.0, R 0.2: v_clip 0.5; 0.09 > 0.04, clipped: L 0.045, dL/dv 0.
//   t4 masked out.
//   t5 v 0.3, v_old 0.2, R 0.5: inside, L 0.5 * 0.04 = 0.02, dL/dv -0.2.
const std::vector<double> values_data{1.0, 2.0, 2.0, 0.0, 5.0, 0.3};
const std::vector<double> old_data{0.9, 1.0, 1.0, 1.0, 0.0, 0.2};
const std::vector<double> returns_data{2.0, 0.0, 3.0, 0.2, -5.0, 0.5};
const std::vector<double> mask_data{1, 1, 1, 1, 0, 1};

value_loss_result<ref> run(const std::vector<double>& v, const value_loss_options& options,
                           const loss_denominators& d) {
  return value_loss(mat(2, 3, v), mat(2, 3, old_data), mat(2, 3, returns_data), mat(2, 3, mask_data), options, d);
}

}  // namespace

TEST_CASE("value_loss: hand-worked clipped loss, gradient and clip fraction", "[value_loss]") {
  const loss_denominators d{.tokens = 5, .sequences = 2, .constant = 4};
  // token-mean: (0.5 + 2 + 1.125 + 0.045 + 0.02) / 5 = 3.69 / 5 = 0.738; gradient dL/dv / 5.
  const auto r = run(values_data, {}, d);
  require_close(r.loss.item(), 0.738);
  require_close(r.grad_values.to_host(), {-0.2, 0.4, 0, 0, 0, -0.04});
  require_close(r.clip_fraction, 0.4);  // t2 and t3 of 5 valid tokens
  // seq-mean-token-mean: (3.625 / 3 + 0.065 / 2) / 2 = 0.6204166666666666.
  require_close(run(values_data, {.aggregation = loss_aggregation::seq_mean_token_mean}, d).loss.item(),
                0.6204166666666666);
  // seq-mean-token-sum: 3.69 / 2 = 1.845; seq-mean-token-sum-norm: 3.69 / (2 * 4) = 0.46125.
  require_close(run(values_data, {.aggregation = loss_aggregation::seq_mean_token_sum}, d).loss.item(), 1.845);
  require_close(run(values_data, {.aggregation = loss_aggregation::seq_mean_token_sum_norm}, d).loss.item(), 0.46125);
}

TEST_CASE("value_loss: without clipping it is half the squared error", "[value_loss]") {
  const loss_denominators d{.tokens = 5, .sequences = 2, .constant = 4};
  // 0.5 * (1 + 4 + 1 + 0.04 + 0.04) = 3.04, / 5 = 0.608; gradient (v - R) / 5.
  const auto r = run(values_data, {.clip_range = std::nullopt}, d);
  require_close(r.loss.item(), 0.608);
  require_close(r.grad_values.to_host(), {-0.2, 0.4, -0.2, -0.04, 0, -0.04});
  CHECK(r.clip_fraction == 0.0);
  // clip_range 0 pins v_clip to v_old: t1 (2.0 - 0)^2 = 4 vs (1.0 - 0)^2 = 1 stays unclipped.
  const auto zero = run(values_data, {.clip_range = 0.0}, d);
  CHECK(zero.grad_values.to_host()[1] == 0.4);
}

TEST_CASE("value_loss: gradient matches finite differences for every aggregation", "[value_loss][gradient]") {
  const std::int64_t rows = 3, cols = 5;
  const auto v = uniform(15, -1, 1, 31), old = uniform(15, -1, 1, 32), ret = uniform(15, -1.5, 1.5, 33);
  const auto mask = mat(rows, cols, {1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0});
  const auto d = denominators_from_mask(mask, 5.0);
  for (const auto mode : {loss_aggregation::token_mean, loss_aggregation::seq_mean_token_mean,
                          loss_aggregation::seq_mean_token_sum, loss_aggregation::seq_mean_token_sum_norm}) {
    for (const auto clip : {std::optional<double>(0.2), std::optional<double>()}) {
      const value_loss_options options{.clip_range = clip, .aggregation = mode};
      const auto loss_at = [&](const std::vector<double>& x) {
        return value_loss(mat(rows, cols, x), mat(rows, cols, old), mat(rows, cols, ret), mask, options, d).loss.item();
      };
      const auto r = value_loss(mat(rows, cols, v), mat(rows, cols, old), mat(rows, cols, ret), mask, options, d);
      require_gradient(loss_at, v, r.grad_values.to_host());
    }
  }
}

TEST_CASE("value_loss: micro-batches with the batch's denominators add up", "[value_loss]") {
  const auto v = uniform(12, -1, 1, 41), old = uniform(12, -1, 1, 42), ret = uniform(12, -2, 2, 43);
  const std::vector<double> m{1, 1, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0};
  const auto d = denominators_from_mask(mat(4, 3, m));
  const value_loss_options options{.clip_range = 0.3};
  const auto full_batch = value_loss(mat(4, 3, v), mat(4, 3, old), mat(4, 3, ret), mat(4, 3, m), options, d);
  const auto part = [&](std::size_t first) {
    const auto slice = [&](const std::vector<double>& x) {
      return mat(2, 3, std::vector<double>(x.begin() + static_cast<std::ptrdiff_t>(first),
                                           x.begin() + static_cast<std::ptrdiff_t>(first + 6)));
    };
    return value_loss(slice(v), slice(old), slice(ret), slice(m), options, d);
  };
  const auto a = part(0), b = part(6);
  require_close(a.loss.item() + b.loss.item(), full_batch.loss.item(), 1e-15);
  require_close(a.clip_fraction + b.clip_fraction, full_batch.clip_fraction, 1e-15);
}

TEST_CASE("value_loss: error messages name the argument", "[value_loss][errors]") {
  const loss_denominators d{};
  const auto x = mat(1, 2, {0, 0}), mask = mat(1, 2, {1, 1});
  require_error([&] { (void)value_loss(vec({0, 0}), x, x, mask, {}, d); }, {"values", "rank-2"});
  require_error([&] { (void)value_loss(x, mat(2, 1, {0, 0}), x, mask, {}, d); }, {"old_values", "[1,2]", "[2,1]"});
  require_error([&] { (void)value_loss(x, x, mat(1, 3, {0, 0, 0}), mask, {}, d); }, {"returns", "[1,3]"});
  require_error([&] { (void)value_loss(x, x, x, mat(1, 2, {1, 2}), {}, d); }, {"mask", "element 1", "0 or 1"});
  require_error([&] { (void)value_loss(mat(1, 2, {0, NAN}), x, x, mask, {}, d); }, {"values", "element 1"});
  require_error([&] { (void)value_loss(x, x, mat(1, 2, {INFINITY, 0}), mask, {}, d); }, {"returns", "element 0"});
  require_error([&] { (void)value_loss(x, x, x, mask, {.clip_range = -0.5}, d); }, {"clip_range", ">= 0", "-0.5"});
  require_error([&] { (void)value_loss(x, x, x, mask, {}, {.tokens = 0}); }, {"denominators.tokens", "> 0"});
}

TEST_CASE("kl controllers: hand-worked adaptive updates", "[kl_controller]") {
  adaptive_kl_controller c(0.1, 0.05, 100);
  require_close(c.value(), 0.1);
  c.update(0.055, 10);  // e = 0.055 / 0.05 - 1 = 0.1: 0.1 * (1 + 0.1 * 10 / 100) = 0.101
  require_close(c.value(), 0.101, 1e-15);
  c.update(1.0, 10);  // e = 19 clipped to 0.2: 0.101 * 1.02 = 0.10302
  require_close(c.value(), 0.10302, 1e-15);
  c.update(0.0, 10);  // e = -1 clipped to -0.2: 0.10302 * 0.98 = 0.1009596
  require_close(c.value(), 0.1009596, 1e-15);
  c.update(-3.0, 0);  // no samples, no change; a negative k1 estimate is accepted
  require_close(c.value(), 0.1009596, 1e-15);
  c.update(0.0, 1000);  // 1 - 0.2 * 1000 / 100 = -1: floored at 0 rather than flipping the sign
  CHECK(c.value() == 0.0);

  fixed_kl_controller f(0.04);
  f.update(10.0, 1000);
  CHECK(f.value() == 0.04);
  STATIC_REQUIRE(kl_controller<fixed_kl_controller>);
}

TEST_CASE("kl controllers: error messages name the argument", "[kl_controller][errors]") {
  require_error([] { (void)fixed_kl_controller(-0.1); }, {"coef", ">= 0", "-0.1"});
  require_error([] { (void)adaptive_kl_controller(-1, 0.1, 10); }, {"init_coef"});
  require_error([] { (void)adaptive_kl_controller(0.1, 0.0, 10); }, {"target", "> 0"});
  require_error([] { (void)adaptive_kl_controller(0.1, 0.1, -10); }, {"horizon", "> 0"});
  adaptive_kl_controller c(0.1, 0.1, 10);
  require_error([&] { c.update(NAN, 1); }, {"current_kl", "finite"});
  require_error([&] { c.update(0.1, -1); }, {"n_steps", ">= 0", "-1"});
  fixed_kl_controller f(0.1);
  require_error([&] { f.update(INFINITY, 1); }, {"current_kl"});
}
