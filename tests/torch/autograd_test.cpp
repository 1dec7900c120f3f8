// SPDX-License-Identifier: Apache-2.0
// Gradients on the LibTorch backend: torch autograd of the composite algorithms (the generic code of include/grpo
// run through torch ops) against the library's analytic gradients; the fused autograd Functions of
// grpo/libtorch/autograd.hpp against autograd of the composite paths, in double and float, bf16 inputs included;
// finite differences of the fused token log-prob; which inputs receive gradients; errors through the fused API.
#include "grpo/libtorch/autograd.hpp"

#include <torch/cuda.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "grpo/distillation.hpp"
#include "grpo/logits.hpp"
#include "grpo/logits_policy_loss.hpp"
#include "grpo/policy_loss.hpp"
#include "grpo/value_loss.hpp"
#include "test_support.hpp"
#include "torch_support.hpp"

using namespace grpo;
using namespace grpo::testing;
using libtorch::wrap;
using libtorch::wrap_index;

namespace {

constexpr std::int64_t rows = 4, cols = 6;

// One batch of B = 4 sequences of T = 6 tokens: ratios spread across both clip bounds, a fully masked row,
// advantages of both signs.
struct batch {
  std::vector<double> logp = uniform(24, -3.0, -0.1, 101);
  std::vector<double> old, ref, rollout;
  std::vector<double> entropy = uniform(24, 0.0, 2.0, 105);
  std::vector<double> adv = {1.0, -1.5, 0.5, -0.25};
  std::vector<double> mask = {1, 1, 1, 1, 0, 0,  //
                              1, 1, 1, 1, 1, 1,  //
                              0, 0, 0, 0, 0, 0,  //
                              1, 1, 0, 1, 1, 0};
  batch() {
    const auto d_old = uniform(24, -0.6, 0.6, 102), d_ref = uniform(24, -1.0, 1.0, 103),
               d_roll = uniform(24, -0.4, 0.4, 104);
    for (std::size_t i = 0; i < 24; ++i) {
      old.push_back(logp[i] + d_old[i]);
      ref.push_back(logp[i] + d_ref[i]);
      rollout.push_back(old[i] + d_roll[i]);
    }
  }
};

struct loss_config {
  std::string name;
  policy_loss_options options;
  bool ref = false, rollout = false, entropy = false;
};

std::vector<loss_config> loss_configs() {
  std::vector<loss_config> out;
  for (const auto aggregation : {loss_aggregation::token_mean, loss_aggregation::seq_mean_token_mean,
                                 loss_aggregation::seq_mean_token_sum, loss_aggregation::seq_mean_token_sum_norm}) {
    for (const auto level : {ratio_level::token, ratio_level::sequence}) {
      const std::string tag = std::string(level == ratio_level::token ? "token" : "sequence") + " agg " +
                              std::to_string(static_cast<int>(aggregation));
      policy_loss_options o;
      o.aggregation = aggregation;
      o.level = level;
      out.push_back({tag + " plain", o});
      for (const auto kl : {kl_estimator::k1, kl_estimator::k2, kl_estimator::k3}) {
        auto k = o;
        k.beta = 0.04;
        k.kl = kl;
        out.push_back({tag + " kl " + std::to_string(static_cast<int>(kl)), k, true});
      }
      auto c = o;
      c.epsilon_high = 0.28;
      c.dual_clip = 3.0;
      c.delta = 1.5;
      out.push_back({tag + " dual clip, delta, clip-higher", c});
      auto t = o;
      t.is_cap = 1.2;
      out.push_back({tag + " IS truncate", t, false, true});
      auto m = t;
      m.is_mode = is_correction_mode::mask;
      m.is_level = ratio_level::sequence;
      m.is_cap = 1.5;
      out.push_back({tag + " IS mask, sequence", m, false, true});
      auto e = o;
      e.entropy_coef = 0.01;
      out.push_back({tag + " entropy bonus", e, false, false, true});
    }
  }
  return out;
}

at::Tensor t2(const std::vector<double>& v, at::ScalarType dtype = at::kDouble) {
  return torch_tensor(v, {rows, cols}, dtype);
}

policy_loss_inputs<torch_backend> composite_inputs(const torch_backend& b, const batch& x, const loss_config& c,
                                                   const at::Tensor& logp, const at::Tensor& entropy) {
  const auto type = logp.scalar_type();
  return {.logprobs = wrap(b, logp),
          .advantages = wrap(b, torch_tensor(x.adv, {rows}, type)),
          .mask = wrap(b, t2(x.mask, type)),
          .old_logprobs = wrap(b, t2(x.old, type)),
          .ref_logprobs = c.ref ? std::optional(wrap(b, t2(x.ref, type))) : std::nullopt,
          .rollout_logprobs = c.rollout ? std::optional(wrap(b, t2(x.rollout, type))) : std::nullopt,
          .entropy = c.entropy ? std::optional(wrap(b, entropy)) : std::nullopt};
}

libtorch::policy_loss_tensors fused_inputs(const batch& x, const loss_config& c, const at::Tensor& logp,
                                           const at::Tensor& entropy) {
  const auto type = logp.scalar_type() == at::kBFloat16 ? at::kFloat : logp.scalar_type();
  libtorch::policy_loss_tensors in{logp, torch_tensor(x.adv, {rows}, type), t2(x.mask, type)};
  in.old_logprobs = t2(x.old, type);
  if (c.ref) in.ref_logprobs = t2(x.ref, type);
  if (c.rollout) in.rollout_logprobs = t2(x.rollout, type);
  if (c.entropy) in.entropy = entropy;
  return in;
}

const loss_denominators denominators{15.0, 4.0, 6.0};  // N_tokens = 15 valid tokens, N_seqs = 4, C = 6

}  // namespace

TEST_CASE("libtorch autograd: the composite policy loss differentiates to the library's analytic gradient",
          "[torch][autograd][policy_loss]") {
  const batch x;
  const auto b = cpu_backend();
  for (const auto& c : loss_configs()) {
    INFO(c.name);
    auto logp = t2(x.logp).requires_grad_(true);
    auto entropy = t2(x.entropy).requires_grad_(true);
    const auto result = grpo::policy_loss(composite_inputs(b, x, c, logp, entropy), c.options, denominators);
    result.loss.raw().backward();
    // Autograd chains the same elementwise steps the analytic gradient multiplies out: only rounding differs.
    require_close(host(logp.grad()), result.grad_logprobs.to_host(), 1e-15, 1e-12);
    if (c.entropy) require_close(host(entropy.grad()), result.grad_entropy->to_host(), 1e-15, 1e-12);
  }
}

TEST_CASE("libtorch autograd: without old_logprobs the composite loss holds logprobs constant too",
          "[torch][autograd][policy_loss]") {
  // The ratio is 1 but its gradient is d r / d logp = 1 (TRL's exp(logp - logp.detach())): autograd of the
  // generic algorithm must agree with its analytic gradient, through the backend's stop_gradient hook.
  const batch x;
  const auto b = cpu_backend();
  auto logp = t2(x.logp).requires_grad_(true);
  const auto result = grpo::policy_loss(
      policy_loss_inputs<torch_backend>{.logprobs = wrap(b, logp), .advantages = wrap(b, torch_tensor(x.adv, {rows})),
                                        .mask = wrap(b, t2(x.mask))},
      policy_loss_options{}, denominators);
  result.loss.raw().backward();
  require_close(host(logp.grad()), result.grad_logprobs.to_host(), 1e-15, 1e-12);
  REQUIRE(result.metrics.ratio_mean > 0.0);
}

TEST_CASE("libtorch autograd: the fused policy loss equals the composite path in value, metrics and gradient",
          "[torch][autograd][policy_loss]") {
  const batch x;
  for (const auto type : {at::kDouble, at::kFloat}) {
    // On CPU fp32 / fp64 tensors the fused Function takes the backend's fused host path (fused_losses.hpp: the same
    // formulas, fp32 SIMD lanes for float, another order of rounding) while the composite path records torch ops:
    // values and metrics agree within rounding (fp64 1e-12 relative; fp32 the conformance budget, 1e-5 relative and
    // 1e-6 absolute, clip fractions within one of the 15 tokens); float gradients also differ by the rounding of
    // autograd's chain of fp32 steps against the analytic product.
    const double grad_rtol = type == at::kDouble ? 1e-12 : 2e-5;
    const double value_atol = type == at::kDouble ? 1e-15 : 1e-6, value_rtol = type == at::kDouble ? 1e-12 : 1e-5;
    const auto near = [&](double got, double want) {
      return std::fabs(got - want) <= value_atol + value_rtol * std::fabs(want);
    };
    const auto same_count = [&](double got, double want) {
      return type == at::kDouble ? got == want : std::fabs(got - want) <= 1.0 / 15.0 + 1e-12;
    };
    const auto b = cpu_backend(type);
    for (const auto& c : loss_configs()) {
      INFO(c.name << (type == at::kDouble ? " (double)" : " (float)"));
      auto logp = t2(x.logp, type).requires_grad_(true);
      auto entropy = t2(x.entropy, type).requires_grad_(true);
      const auto composite = grpo::policy_loss(composite_inputs(b, x, c, logp, entropy), c.options, denominators);
      composite.loss.raw().backward();
      auto fused_logp = t2(x.logp, type).requires_grad_(true);
      auto fused_entropy = t2(x.entropy, type).requires_grad_(true);
      const auto fused = libtorch::policy_loss(fused_inputs(x, c, fused_logp, fused_entropy), c.options, denominators);
      CHECK(fused.loss.requires_grad());
      CHECK(fused.loss.dim() == 0);
      require_close(host(fused.loss), {composite.loss.item()}, value_atol, value_rtol);
      require_close(host(fused.per_token_loss), composite.per_token_loss.to_host(), value_atol, value_rtol);
      CHECK(near(fused.metrics.pg_loss, composite.metrics.pg_loss));
      CHECK(near(fused.metrics.kl_mean, composite.metrics.kl_mean));
      CHECK(same_count(fused.metrics.clip_fraction_low, composite.metrics.clip_fraction_low));
      CHECK(same_count(fused.metrics.clip_fraction_high, composite.metrics.clip_fraction_high));
      CHECK(same_count(fused.metrics.clip_fraction_dual, composite.metrics.clip_fraction_dual));
      CHECK(near(fused.metrics.is_weight_mean, composite.metrics.is_weight_mean));
      fused.loss.backward();
      CHECK(fused_logp.grad().scalar_type() == type);
      require_close(host(fused_logp.grad()), host(logp.grad()), 1e-9, grad_rtol);
      if (c.entropy) {
        require_close(host(fused_entropy.grad()), host(entropy.grad()), 1e-9, grad_rtol);
      } else {
        CHECK_FALSE(fused_entropy.grad().defined());
      }
    }
  }
}

TEST_CASE("libtorch autograd: the fused policy loss matches finite differences in double",
          "[torch][autograd][policy_loss][gradient]") {
  const batch x;
  loss_config c{"token-mean, k3, entropy", {}, true, true, true};
  c.options.beta = 0.04;
  c.options.entropy_coef = 0.01;
  const auto loss_at = [&](const std::vector<double>& logp) {
    return libtorch::policy_loss(fused_inputs(x, c, t2(logp), t2(x.entropy)), c.options, denominators)
        .loss.item<double>();
  };
  auto logp = t2(x.logp).requires_grad_(true);
  libtorch::policy_loss(fused_inputs(x, c, logp, t2(x.entropy)), c.options, denominators).loss.backward();
  require_gradient(loss_at, x.logp, host(logp.grad()));
}

TEST_CASE("libtorch autograd: without old_logprobs the fused loss holds logprobs constant (TRL's detach)",
          "[torch][autograd][policy_loss]") {
  const batch x;
  const loss_config c{"plain", {}};
  auto logp = t2(x.logp).requires_grad_(true);
  libtorch::policy_loss_tensors in{logp, torch_tensor(x.adv, {rows}), t2(x.mask)};
  const auto without_old = libtorch::policy_loss(in, c.options, denominators);
  without_old.loss.backward();
  // old = logprobs.detach(): ratio 1 and d ratio / d logp = 1, so the gradient is -A W per valid token.
  auto logp2 = t2(x.logp).requires_grad_(true);
  in.logprobs = logp2;
  in.old_logprobs = logp2.detach();
  const auto with_old = libtorch::policy_loss(in, c.options, denominators);
  with_old.loss.backward();
  require_close(host(without_old.loss), host(with_old.loss), 0, 0);
  require_close(host(logp.grad()), host(logp2.grad()), 0, 0);
  // Row 0 (A = 1) has four valid tokens, each weighted 1 / N_tokens = 1 / 15: gradient -1/15.
  require_close(host(logp.grad())[0], -1.0 / 15.0, 1e-16, 1e-14);
}

TEST_CASE("libtorch autograd: only logprobs and entropy receive gradients", "[torch][autograd][policy_loss]") {
  const batch x;
  auto logp = t2(x.logp).requires_grad_(true);
  auto adv = torch_tensor(x.adv, {rows}).requires_grad_(true);
  auto old = t2(x.old).requires_grad_(true);
  libtorch::policy_loss_tensors in{logp, adv, t2(x.mask)};
  in.old_logprobs = old;
  in.entropy = t2(x.entropy);  // given, but no gradient wanted
  policy_loss_options o;
  o.entropy_coef = 0.01;
  libtorch::policy_loss(in, o, denominators).loss.backward();
  CHECK(logp.grad().defined());
  CHECK_FALSE(adv.grad().defined());  // constants, as in TRL, whatever their requires_grad
  CHECK_FALSE(old.grad().defined());
  // Entropy alone: the logprobs gradient is skipped (needs_input_grad) and entropy gets -entropy_coef W.
  auto entropy = t2(x.entropy).requires_grad_(true);
  libtorch::policy_loss_tensors only_entropy{t2(x.logp), torch_tensor(x.adv, {rows}), t2(x.mask)};
  only_entropy.entropy = entropy;
  libtorch::policy_loss(only_entropy, o, denominators).loss.backward();
  std::vector<double> want(24);
  for (std::size_t i = 0; i < 24; ++i) want[i] = -0.01 * x.mask[i] / 15.0;
  require_close(host(entropy.grad()), want, 1e-18, 1e-14);
  // Nothing differentiable: a plain tensor without a graph.
  const auto detached = libtorch::policy_loss({t2(x.logp), torch_tensor(x.adv, {rows}), t2(x.mask)}, {}, denominators);
  CHECK_FALSE(detached.loss.requires_grad());
}

TEST_CASE("libtorch autograd: bf16 log-probs compute in fp32 and receive a bf16 gradient",
          "[torch][autograd][policy_loss][bf16]") {
  batch x;
  x.logp = rounded(x.logp, at::kBFloat16);
  loss_config c{"k3 + entropy", {}, true, false, true};
  c.options.beta = 0.04;
  c.options.entropy_coef = 0.01;
  auto logp = t2(x.logp, at::kBFloat16).requires_grad_(true);
  const auto fused =
      libtorch::policy_loss(fused_inputs(x, c, logp, t2(x.entropy, at::kFloat)), c.options, denominators);
  CHECK(fused.loss.scalar_type() == at::kFloat);
  fused.loss.backward();
  CHECK(logp.grad().scalar_type() == at::kBFloat16);
  auto want_logp = t2(x.logp).requires_grad_(true);
  const auto b = cpu_backend();
  const auto want = grpo::policy_loss(composite_inputs(b, x, c, want_logp, t2(x.entropy)), c.options, denominators);
  // fp32 arithmetic on the same (bf16-exact) log-probs: float rounding on the loss; the gradient then rounds to
  // bf16 (8 significant bits, relative 2^-9).
  require_close(fused.loss.item<double>(), want.loss.item(), 1e-6, 1e-5);
  require_close(host(logp.grad()), want.grad_logprobs.to_host(), 1e-6, 1.0 / 256);
}

namespace {

const std::vector<std::int64_t> targets = {4, 0, 2, 3, 1, 4};
std::vector<double> logits_values() { return uniform(30, -3, 3, 201); }
const std::vector<double> g_logp = {0.3, -1.2, 0.8, 0.0, 0.5, -0.4};
const std::vector<double> g_entropy = {0.5, 0.25, -0.7, 1.0, 0.0, 0.2};

}  // namespace

TEST_CASE("libtorch autograd: fused token log-prob on hand-worked numbers", "[torch][autograd][logits]") {
  // z = (0, ln 3), id 1: p = (1/4, 3/4), log p[1] = ln 3/4 = -0.2876820724517809,
  // H = -(1/4 ln 1/4 + 3/4 ln 3/4) = 0.5623351446188083.
  auto z = torch_tensor({0.0, std::log(3.0)}, {1, 2}).requires_grad_(true);
  const auto out = libtorch::token_logprobs(z, torch_ids({1}, {1}));
  require_close(host(out.logprobs), {-0.2876820724517809}, 1e-16, 1e-15);
  require_close(host(out.entropy), {0.5623351446188083}, 1e-16, 1e-15);
  // d log p[1] / dz = onehot - p = (-1/4, 1/4).
  out.logprobs.sum().backward();
  require_close(host(z.grad()), {-0.25, 0.25}, 1e-16, 1e-15);
  // dH/dz_v = -p_v (log p_v + H): -1/4 (ln 1/4 + H) = 1/4 (1.3862943611 - 0.5623351446) = 0.2059898041 and
  // -3/4 (ln 3/4 + H) = -3/4 (0.5623351446 - 0.2876820725) = -0.2059898041 (they sum to 0, as softmax gradients do).
  z.mutable_grad().zero_();
  libtorch::token_logprobs(z, torch_ids({1}, {1})).entropy.sum().backward();
  require_close(host(z.grad()), {0.20598980412527057, -0.20598980412527054}, 1e-16, 1e-14);
}

TEST_CASE("libtorch autograd: composite and fused token log-probs against the analytic backward",
          "[torch][autograd][logits]") {
  const auto z = logits_values();
  for (const double temperature : {1.0, 0.7}) {
    for (const auto type : {at::kDouble, at::kFloat}) {
      INFO("temperature " << temperature << (type == at::kDouble ? " (double)" : " (float)"));
      const double tol = type == at::kDouble ? 1e-13 : 1e-6;
      const auto b = cpu_backend(type);
      // Composite: torch autograd through the backend's differentiable row statistics.
      auto composite_z = torch_tensor(z, {6, 5}, type).requires_grad_(true);
      const auto ids = wrap_index(b, torch_ids(targets, {6}));
      const auto composite = grpo::token_logprobs(wrap(b, composite_z), ids, temperature);
      (composite.logprobs.raw() * torch_tensor(g_logp, {6}, type) +
       composite.entropy.raw() * torch_tensor(g_entropy, {6}, type))
          .sum()
          .backward();
      // The library's analytic backward.
      at::Tensor analytic;
      grpo::token_logprobs_backward(wrap(b, composite_z.detach()), ids, temperature, composite,
                                    wrap(b, torch_tensor(g_logp, {6}, type)),
                                    wrap(b, torch_tensor(g_entropy, {6}, type)), analytic);
      require_close(host(composite_z.grad()), host(analytic), tol, tol);
      // Fused: the same values, and the backward equals autograd of the composite path.
      auto fused_z = torch_tensor(z, {6, 5}, type).requires_grad_(true);
      const auto fused = libtorch::token_logprobs(fused_z, torch_ids(targets, {6}), temperature);
      require_close(host(fused.logprobs), composite.logprobs.to_host(), 0, 0);
      require_close(host(fused.entropy), composite.entropy.to_host(), 0, 0);
      (fused.logprobs * torch_tensor(g_logp, {6}, type) + fused.entropy * torch_tensor(g_entropy, {6}, type))
          .sum()
          .backward();
      CHECK(fused_z.grad().scalar_type() == type);
      require_close(host(fused_z.grad()), host(composite_z.grad()), tol, tol);
    }
  }
}

TEST_CASE("libtorch autograd: the fused token log-prob matches finite differences in double",
          "[torch][autograd][logits][gradient]") {
  auto z = uniform(30, -3, 3, 202);
  const auto objective = [&](const std::vector<double>& values) {
    const auto out = libtorch::token_logprobs(torch_tensor(values, {6, 5}), torch_ids(targets, {6}), 0.8);
    return (out.logprobs * torch_tensor(g_logp, {6}) + out.entropy * torch_tensor(g_entropy, {6})).sum().item<double>();
  };
  auto zt = torch_tensor(z, {6, 5}).requires_grad_(true);
  const auto out = libtorch::token_logprobs(zt, torch_ids(targets, {6}), 0.8);
  (out.logprobs * torch_tensor(g_logp, {6}) + out.entropy * torch_tensor(g_entropy, {6})).sum().backward();
  require_gradient(objective, z, host(zt.grad()));
}

TEST_CASE("libtorch autograd: the fused token log-prob on bf16 logits", "[torch][autograd][logits][bf16]") {
  const auto z = rounded(uniform(30, -3, 3, 203), at::kBFloat16);
  auto zb = torch_tensor(z, {6, 5}, at::kBFloat16).requires_grad_(true);
  const auto fused = libtorch::token_logprobs(zb, torch_ids(targets, {6}));
  CHECK(fused.logprobs.scalar_type() == at::kFloat);
  (fused.logprobs * torch_tensor(g_logp, {6}, at::kFloat)).sum().backward();
  CHECK(zb.grad().scalar_type() == at::kBFloat16);
  // Against the double composite path on the same (bf16-exact) logits: fp32 output rounding on the statistics,
  // bf16 rounding (relative 2^-9) on the gradient.
  auto zd = torch_tensor(z, {6, 5}).requires_grad_(true);
  const auto want = libtorch::token_logprobs(zd, torch_ids(targets, {6}));
  (want.logprobs * torch_tensor(g_logp, {6})).sum().backward();
  require_close(host(fused.logprobs), host(want.logprobs), 1e-7, 2e-7);
  require_close(host(fused.entropy), host(want.entropy), 1e-7, 2e-7);
  require_close(host(zb.grad()), host(zd.grad()), 1e-6, 1.0 / 256);
}

TEST_CASE("libtorch autograd: fused token log-probs feeding the fused policy loss equal the composite chain",
          "[torch][autograd][logits][policy_loss]") {
  // [B, T] = [2, 3] tokens over V = 5: logits [6, 5] -> log-probs and entropies [6] -> [2, 3] -> GRPO loss.
  const auto z = uniform(30, -2, 2, 204);
  const auto old = uniform(6, -2.5, -0.5, 205);
  const std::vector<double> adv = {0.7, -1.1}, mask = {1, 1, 0, 1, 1, 1};
  policy_loss_options o;
  o.beta = 0.0;
  o.entropy_coef = 0.02;
  o.aggregation = loss_aggregation::seq_mean_token_mean;
  const loss_denominators d{5.0, 2.0, 3.0};
  auto fused_z = torch_tensor(z, {6, 5}).requires_grad_(true);
  const auto lp = libtorch::token_logprobs(fused_z, torch_ids(targets, {6}), 0.9);
  libtorch::policy_loss_tensors in{lp.logprobs.reshape({2, 3}), torch_tensor(adv, {2}), torch_tensor(mask, {2, 3})};
  in.old_logprobs = torch_tensor(old, {2, 3});
  in.entropy = lp.entropy.reshape({2, 3});
  const auto fused = libtorch::policy_loss(in, o, d);
  fused.loss.backward();
  const auto b = cpu_backend();
  auto composite_z = torch_tensor(z, {6, 5}).requires_grad_(true);
  const auto clp = grpo::token_logprobs(wrap(b, composite_z), wrap_index(b, torch_ids(targets, {6})), 0.9);
  const auto composite =
      grpo::policy_loss(policy_loss_inputs<torch_backend>{.logprobs = reshape(clp.logprobs, shape::matrix(2, 3)),
                                                          .advantages = wrap(b, torch_tensor(adv, {2})),
                                                          .mask = wrap(b, torch_tensor(mask, {2, 3})),
                                                          .old_logprobs = wrap(b, torch_tensor(old, {2, 3})),
                                                          .entropy = reshape(clp.entropy, shape::matrix(2, 3))},
                        o, d);
  composite.loss.raw().backward();
  require_close(fused.loss.item<double>(), composite.loss.item(), 0, 0);
  require_close(host(fused_z.grad()), host(composite_z.grad()), 1e-15, 1e-12);
}

TEST_CASE("libtorch autograd: the composite policy loss from logits differentiates to its analytic grad_logits",
          "[torch][autograd][logits][policy_loss]") {
  const auto z = uniform(30, -2, 2, 206);
  const auto old = uniform(6, -2.5, -0.5, 207), ref = uniform(6, -2.5, -0.5, 208);
  const std::vector<double> adv = {0.7, -1.1}, mask = {1, 1, 0, 1, 1, 1};
  const loss_denominators d{5.0, 2.0, 3.0};
  const auto b = cpu_backend();
  for (const auto level : {ratio_level::token, ratio_level::sequence}) {
    policy_loss_options o;
    o.level = level;
    o.beta = 0.04;
    o.entropy_coef = 0.02;
    auto logits = torch_tensor(z, {6, 5}).requires_grad_(true);
    at::Tensor grad_logits;
    const auto result = policy_loss_from_logits(
        wrap(b, logits), wrap_index(b, torch_ids(targets, {6})), 0.9,
        logits_policy_loss_inputs<torch_backend>{.advantages = wrap(b, torch_tensor(adv, {2})),
                                                 .mask = wrap(b, torch_tensor(mask, {2, 3})),
                                                 .old_logprobs = wrap(b, torch_tensor(old, {2, 3})),
                                                 .ref_logprobs = wrap(b, torch_tensor(ref, {2, 3}))},
        o, d, grad_logits);
    result.policy.loss.raw().backward();
    require_close(host(logits.grad()), host(grad_logits), 1e-15, 1e-12);
  }
}

TEST_CASE("libtorch autograd: distillation losses, composite and fused, against the analytic grad_logits",
          "[torch][autograd][distillation]") {
  // Finite logits (the losses reject -inf; the primitives' -inf handling is in backend_test.cpp).
  const auto zs = uniform(30, -2, 2, 301), zt = uniform(30, -2, 2, 302);
  const std::vector<double> mask = {1, 1, 0, 1, 1, 1};
  const std::vector<std::int64_t> tids = {0, 2, 1, 3, 4, 0, 2, 1, 3, 4, 0, 1};
  auto tlp = uniform(12, -3, -0.2, 303);
  tlp[5] = -INFINITY;  // probability 0: allowed for a teacher's log-prob
  const std::vector<std::int64_t> sft_targets = {1, 4, -100, 0, 3, 2};  // the masked row's -100 is never read
  const loss_denominators d{7.0, 1.0, 1.0};
  for (const auto type : {at::kDouble, at::kFloat}) {
    // The row primitives compute in double in both paths; float adds the rounding of the fp32 results.
    const double tol = type == at::kDouble ? 1e-14 : 1e-6;
    const auto b = cpu_backend(type);
    const auto in = [&](const std::vector<double>& v, std::vector<std::int64_t> sizes) {
      return torch_tensor(v, std::move(sizes), type);
    };
    const auto check = [&](const auto& composite_fn, const auto& fused_fn) {
      auto composite_z = in(zs, {6, 5}).requires_grad_(true);
      const auto composite = composite_fn(composite_z);
      composite.loss.raw().backward();
      require_close(host(composite_z.grad()), host(composite.grad_logits), tol, tol);
      // The fused path runs the same generic code with autograd off: the same numbers exactly.
      auto fused_z = in(zs, {6, 5}).requires_grad_(true);
      const auto fused = fused_fn(fused_z);
      require_close(host(fused.loss), {composite.loss.item()}, 0, 0);
      require_close(host(fused.per_token_loss), composite.per_token_loss.to_host(), 0, 0);
      CHECK(fused.token_count == composite.token_count);
      (fused.loss * 2.0).backward();  // grad_output 2: the backward scales the saved gradient
      CHECK(fused_z.grad().scalar_type() == type);
      require_close(host(fused_z.grad()), host(composite.grad_logits * 2.0), 0, 0);
    };
    for (const double beta : {0.0, 0.5, 1.0}) {
      for (const double temperature : {1.0, 0.7}) {
        INFO("dense, beta " << beta << ", temperature " << temperature << ", dtype " << toString(type));
        const distillation_options o{temperature, beta};
        check(
            [&](const at::Tensor& s) {
              return grpo::distillation_loss(wrap(b, s), wrap(b, in(zt, {6, 5})), wrap(b, in(mask, {6})), o, d);
            },
            [&](const at::Tensor& s) {
              return libtorch::distillation_loss(s, in(zt, {6, 5}), in(mask, {6}), o, d);
            });
      }
    }
    for (const bool renormalize : {false, true}) {
      INFO("top-k, renormalize " << renormalize << ", dtype " << toString(type));
      const distillation_options o{0.8, 0.0};
      check(
          [&](const at::Tensor& s) {
            return grpo::topk_distillation_loss(wrap(b, s), wrap_index(b, torch_ids(tids, {6, 2})),
                                                wrap(b, in(tlp, {6, 2})), wrap(b, in(mask, {6})), o, d, renormalize);
          },
          [&](const at::Tensor& s) {
            return libtorch::topk_distillation_loss(s, torch_ids(tids, {6, 2}), in(tlp, {6, 2}), in(mask, {6}), o, d,
                                                    renormalize);
          });
    }
    INFO("sft, dtype " << toString(type));
    check(
        [&](const at::Tensor& s) {
          return grpo::sft_loss(wrap(b, s), wrap_index(b, torch_ids(sft_targets, {6})), wrap(b, in(mask, {6})), d, 1.3);
        },
        [&](const at::Tensor& s) { return libtorch::sft_loss(s, torch_ids(sft_targets, {6}), in(mask, {6}), d, 1.3); });
  }
}

TEST_CASE("libtorch autograd: fused distillation losses on fp16 and bf16 logits under a loss scale",
          "[torch][autograd][distill][bf16]") {
  // The fused Functions compute the gradient in the forward, unscaled (entries about p / tokens), and multiply by
  // the upstream gradient in the backward. A loss scale of 65536 (GradScaler's default, above fp16's largest value)
  // must neither overflow nor leave the fp16 gradient flushed to zero: the fp16 buffer is fp32.
  const std::int64_t rows = 32, vocab = 256;
  const loss_denominators d{4096.0, 1.0, 1.0};
  const auto zs = uniform(static_cast<std::size_t>(rows * vocab), -3.0, 3.0, 451);
  const auto zt = uniform(static_cast<std::size_t>(rows * vocab), -3.0, 3.0, 452);
  std::vector<std::int64_t> targets(static_cast<std::size_t>(rows));
  for (std::size_t i = 0; i < targets.size(); ++i) targets[i] = static_cast<std::int64_t>((i * 37) % vocab);
  const auto mask = torch_tensor(std::vector<double>(static_cast<std::size_t>(rows), 1.0), {rows}, at::kFloat);
  const auto ids = torch_ids(targets, {rows});
  struct low_case {
    at::ScalarType dtype;
    double scale, rtol;
  };
  // fp16: one rounding of the scaled fp32 gradient (2^-11, subnormals below 6.1e-5 absolutely); bf16: the buffer
  // holds the unscaled gradient in bf16 and the product with a scale that is not a power of two rounds again.
  for (const auto lc : {low_case{at::kHalf, 65536.0, 1.0 / 1024}, low_case{at::kHalf, 1.0, 1.0 / 1024},
                        low_case{at::kBFloat16, 65536.0, 1.0 / 128}, low_case{at::kBFloat16, 1.0 / 3.0, 1.0 / 128}}) {
    INFO(toString(lc.dtype) << ", loss scale " << lc.scale);
    const auto low = [&](const std::vector<double>& v) { return torch_tensor(v, {rows, vocab}, lc.dtype); };
    const auto check = [&](const char* what, const auto& loss_of) {
      INFO(what);
      auto z_low = low(zs).requires_grad_(true);
      auto z_wide = low(zs).to(at::kDouble).requires_grad_(true);
      (loss_of(z_low) * lc.scale).backward();
      (loss_of(z_wide) * lc.scale).backward();
      REQUIRE(z_low.grad().scalar_type() == lc.dtype);
      const auto got = host(z_low.grad()), want = host(z_wide.grad());
      std::size_t zeros = 0;
      for (std::size_t i = 0; i < got.size(); ++i) {
        REQUIRE(std::isfinite(got[i]));
        REQUIRE(std::fabs(got[i] - want[i]) <= lc.rtol * std::fabs(want[i]) + 6e-8);
        zeros += got[i] == 0.0 && want[i] != 0.0;
      }
      // Under the scale, only entries that nearly cancel may flush (an fp16 buffer flushed most of them).
      if (lc.scale > 1.0) CHECK(zeros * 100 <= got.size());
    };
    check("sft_loss", [&](const at::Tensor& z) { return libtorch::sft_loss(z, ids, mask, d, 1.0).loss; });
    for (const double beta : {0.0, 0.5}) {
      INFO("beta " << beta);
      const distillation_options o{1.0, beta};
      check("distillation_loss", [&](const at::Tensor& z) {
        return libtorch::distillation_loss(z, low(zt).to(z.scalar_type()), mask, o, d).loss;
      });
    }
  }
}

TEST_CASE("libtorch autograd: value loss, composite and fused, against the analytic grad_values",
          "[torch][autograd][value_loss]") {
  const auto values = uniform(24, -1, 1, 401), old = uniform(24, -1, 1, 402), returns = uniform(24, -2, 2, 403);
  const batch x;
  for (const auto type : {at::kDouble, at::kFloat}) {
    // Autograd and the analytic gradient multiply the same fp32 factors in a different order: a few ulps.
    const double tol = type == at::kDouble ? 1e-13 : 1e-6;
    const auto b = cpu_backend(type);
    for (const std::optional<double> clip : {std::optional<double>(0.2), std::optional<double>()}) {
      for (const auto aggregation : {loss_aggregation::token_mean, loss_aggregation::seq_mean_token_mean}) {
        INFO("clip " << clip.value_or(-1) << ", aggregation " << static_cast<int>(aggregation) << ", dtype "
                     << toString(type));
        const value_loss_options o{clip, aggregation};
        auto v = t2(values, type).requires_grad_(true);
        const auto composite = grpo::value_loss(wrap(b, v), wrap(b, t2(old, type)), wrap(b, t2(returns, type)),
                                                wrap(b, t2(x.mask, type)), o, denominators);
        composite.loss.raw().backward();
        require_close(host(v.grad()), composite.grad_values.to_host(), 1e-15, tol);
        auto fused_v = t2(values, type).requires_grad_(true);
        const auto fused =
            libtorch::value_loss(fused_v, t2(old, type), t2(returns, type), t2(x.mask, type), o, denominators);
        require_close(host(fused.loss), {composite.loss.item()}, 0, 0);
        CHECK(fused.clip_fraction == composite.clip_fraction);
        fused.loss.backward();
        CHECK(fused_v.grad().scalar_type() == type);
        require_close(host(fused_v.grad()), composite.grad_values.to_host(), 0, 0);
      }
    }
  }
}

TEST_CASE("libtorch autograd: the fused API's errors name the argument", "[torch][autograd][errors]") {
  const batch x;
  require_error(
      [&] {
        (void)libtorch::policy_loss({t2(x.logp), at::Tensor(), t2(x.mask)}, {}, denominators);
      },
      {"advantages: the tensor is undefined"});
  require_error(
      [&] {
        (void)libtorch::policy_loss({t2(x.logp), torch_tensor(x.adv, {rows}), torch_tensor(x.mask, {3, 8})}, {},
                                    denominators);
      },
      {"mask: expected shape [4,6], got [3,8]"});
  auto nan_logp = x.logp;
  nan_logp[3] = NAN;
  require_error(
      [&] {
        (void)libtorch::policy_loss({t2(nan_logp), torch_tensor(x.adv, {rows}), t2(x.mask)}, {}, denominators);
      },
      {"logprobs: element 3 is nan"});
  policy_loss_options bad;
  bad.epsilon_low = -0.1;
  require_error(
      [&] {
        (void)libtorch::policy_loss({t2(x.logp), torch_tensor(x.adv, {rows}), t2(x.mask)}, bad, denominators);
      },
      {"epsilon_low: must be a finite value >= 0, got -0.1"});
  const auto z = torch_tensor(uniform(10, -1, 1, 5), {2, 5});
  require_error(
      [&] {
        (void)libtorch::token_logprobs(z, torch_ids({0, 9}, {2}));
      },
      {"ids: element 1 is 9, out of range [0, 5)"});
  require_error([&] { (void)libtorch::token_logprobs(z, torch_ids({0}, {1})); }, {"ids: expected shape [2], got [1]"});
  require_error([&] { (void)libtorch::token_logprobs(z, torch_ids({0, 1}, {2}), 0.0); }, {"temperature"});
  auto inf_z = uniform(10, -1, 1, 5);
  inf_z[7] = INFINITY;
  require_error(
      [&] {
        (void)libtorch::token_logprobs(torch_tensor(inf_z, {2, 5}), torch_ids({0, 1}, {2}));
      },
      {"logits: element [1, 2] is inf"});
  require_error([&] { (void)libtorch::token_logprobs(at::Tensor(), torch_ids({0, 1}, {2})); }, {"logits", "undefined"});
  require_error(
      [&] {
        (void)libtorch::value_loss(t2(x.logp), t2(x.logp), torch_tensor(x.adv, {rows}), t2(x.mask), {}, denominators);
      },
      {"returns: expected shape [4,6], got [4]"});
  require_error(
      [&] {
        (void)libtorch::distillation_loss(z, torch_tensor(uniform(12, -1, 1, 6), {2, 6}), torch_tensor({1, 1}, {2}), {},
                                          denominators);
      },
      {"teacher_logits: expected shape [2,5]"});
  // A non-finite upstream gradient is rejected in the backward, naming it.
  auto zg = z.clone().requires_grad_(true);
  const auto out = libtorch::token_logprobs(zg, torch_ids({0, 1}, {2}));
  require_error([&] { (out.logprobs * torch_tensor({NAN, 1.0}, {2})).sum().backward(); }, {"d_logprobs: element 0"});
}

TEST_CASE("libtorch autograd: the fused paths on CUDA tensors", "[torch][autograd][cuda]") {
  if (!torch::cuda::is_available()) {
    WARN("skipped: no CUDA device");
    return;
  }
  const auto cuda = at::Device(at::kCUDA, 0);
  const auto z = logits_values();
  for (const auto type : {at::kFloat, at::kBFloat16}) {
    auto zc = torch_tensor(z, {6, 5}, type).to(cuda).requires_grad_(true);
    auto zh = torch_tensor(z, {6, 5}, type).requires_grad_(true);
    const auto on_device = libtorch::token_logprobs(zc, torch_ids(targets, {6}).to(cuda));
    const auto on_host = libtorch::token_logprobs(zh, torch_ids(targets, {6}));
    CHECK(on_device.logprobs.is_cuda());
    require_close(host(on_device.logprobs), host(on_host.logprobs), 1e-6, 1e-6);
    on_device.entropy.sum().backward();
    on_host.entropy.sum().backward();
    CHECK(zc.grad().is_cuda());
    require_close(host(zc.grad()), host(zh.grad()), 1e-6, type == at::kFloat ? 1e-5 : 1.0 / 256);
  }
  const batch x;
  auto logp = t2(x.logp, at::kFloat).to(cuda).requires_grad_(true);
  libtorch::policy_loss_tensors in{logp, torch_tensor(x.adv, {rows}, at::kFloat).to(cuda),
                                   t2(x.mask, at::kFloat).to(cuda)};
  in.old_logprobs = t2(x.old, at::kFloat).to(cuda);
  const auto loss = libtorch::policy_loss(in, {}, denominators);
  loss.loss.backward();
  auto logp_h = t2(x.logp, at::kFloat).requires_grad_(true);
  libtorch::policy_loss_tensors in_h{logp_h, torch_tensor(x.adv, {rows}, at::kFloat), t2(x.mask, at::kFloat)};
  in_h.old_logprobs = t2(x.old, at::kFloat);
  const auto loss_h = libtorch::policy_loss(in_h, {}, denominators);
  loss_h.loss.backward();
  require_close(loss.loss.item<double>(), loss_h.loss.item<double>(), 1e-6, 1e-5);
  require_close(host(logp.grad()), host(logp_h.grad()), 1e-7, 1e-5);
}
