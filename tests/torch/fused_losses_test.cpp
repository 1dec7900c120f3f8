// SPDX-License-Identifier: Apache-2.0
// The LibTorch backend's fused policy loss and GRPO advantages (grpo/libtorch/fused_losses.hpp: the core's host row
// kernels over CPU fp32 / fp64 tensors): which inputs take them (policy_loss_path, grpo_advantages_path, one
// condition at a time), every loss variant the kernels cover (token and sequence ratios, the four aggregations,
// rollout IS correction at both levels and in both modes, dual clip, delta, entropy, the three KL estimators,
// advantages per row or per token, no old log-probs) against reference_backend<double> on the same (rounded) inputs
// within the conformance suite's fp32 (1e-5 relative, 1e-6 absolute) and fp64 budgets, results independent of
// torch's thread count, and a bad value (NaN, Inf, a mask entry of 0.5) still named by the generic checks.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "grpo/advantages.hpp"
#include "grpo/libtorch/autograd.hpp"
#include "grpo/libtorch/backend.hpp"
#include "grpo/policy_loss.hpp"
#include "grpo/reference_backend.hpp"
#include "torch_support.hpp"

namespace {

using grpo::shape;
using grpo::libtorch::loss_path;
using grpo::testing::host;
using grpo::testing::require_same;
using grpo::testing::torch_backend;
using reference = grpo::reference_backend<double>;

static_assert(grpo::detail::has_fused_policy_loss<torch_backend>);
static_assert(grpo::detail::has_fused_grpo_advantages<torch_backend>);

constexpr double not_a_number = std::numeric_limits<double>::quiet_NaN();

/// The comparison budget of a storage type: the conformance fixtures' (fp32: each step rounds to float once, sums in
/// double; fp64: the reference's own arithmetic, only the summation order differs).
struct budget {
  double atol, rtol;
};
budget budget_of(at::ScalarType dtype) { return dtype == at::kFloat ? budget{1e-6, 1e-5} : budget{1e-12, 1e-12}; }

/// A GRPO batch of 23 rows of 1100 tokens (over one block of 1024, not a multiple of the SIMD width), with every
/// optional input, rounded to the storage type so that only the arithmetic is compared.
struct policy_batch {
  std::int64_t rows = 23, cols = 1100;
  std::vector<double> logp, old, ref, rollout, entropy, row_advantages, token_advantages, mask;

  explicit policy_batch(at::ScalarType dtype) {
    const auto n = static_cast<std::size_t>(rows * cols);
    logp = grpo::testing::uniform(n, -4.0, -0.01, 61);
    old = logp, ref = logp, rollout = logp;
    const auto a = grpo::testing::uniform(n, -0.4, 0.4, 62), b = grpo::testing::uniform(n, -0.6, 0.6, 63);
    const auto c = grpo::testing::uniform(n, -0.5, 0.5, 64);
    for (std::size_t i = 0; i < n; ++i) old[i] += a[i], ref[i] += b[i], rollout[i] += c[i];
    entropy = grpo::testing::uniform(n, 0.0, 3.0, 65);
    row_advantages = grpo::testing::uniform(static_cast<std::size_t>(rows), -2.0, 2.0, 66);
    token_advantages = grpo::testing::uniform(n, -2.0, 2.0, 67);
    const auto lengths = grpo::testing::uniform(static_cast<std::size_t>(rows), 0.0, static_cast<double>(cols), 68);
    mask.assign(n, 0.0);
    for (std::int64_t i = 0; i < rows; ++i) {
      // Row 0 is empty (|o_i| = 0), row 1 full; the others end at random.
      const auto length = i == 0 ? 0 : i == 1 ? cols : static_cast<std::int64_t>(lengths[static_cast<std::size_t>(i)]);
      for (std::int64_t t = 0; t < length; ++t) mask[static_cast<std::size_t>(i * cols + t)] = 1.0;
    }
    for (auto* v : {&logp, &old, &ref, &rollout, &entropy, &row_advantages, &token_advantages})
      *v = grpo::testing::rounded(*v, dtype);
  }

  /// Which optional inputs a variant gives.
  struct present {
    bool old = true, ref = true, rollout = true, entropy = true, per_token_advantages = false;
  };

  template <class B>
  grpo::policy_loss_inputs<B> inputs(const B& b, const present& p) const {
    const auto s = shape::matrix(rows, cols);
    grpo::policy_loss_inputs<B> in{
        .logprobs = grpo::make_tensor(b, logp, s),
        .advantages = p.per_token_advantages ? grpo::make_tensor(b, token_advantages, s)
                                             : grpo::make_tensor(b, row_advantages, shape::vector(rows)),
        .mask = grpo::make_tensor(b, mask, s)};
    if (p.old) in.old_logprobs = grpo::make_tensor(b, old, s);
    if (p.ref) in.ref_logprobs = grpo::make_tensor(b, ref, s);
    if (p.rollout) in.rollout_logprobs = grpo::make_tensor(b, rollout, s);
    if (p.entropy) in.entropy = grpo::make_tensor(b, entropy, s);
    return in;
  }
};

torch_backend cpu(at::ScalarType dtype) { return grpo::testing::cpu_backend(dtype); }

/// One named variant of the loss: options and which inputs are present.
struct variant {
  std::string name;
  grpo::policy_loss_options options;
  policy_batch::present inputs;
};

std::vector<variant> every_variant() {
  std::vector<variant> out;
  for (const auto level : {grpo::ratio_level::token, grpo::ratio_level::sequence}) {
    const std::string at_level = level == grpo::ratio_level::token ? "token" : "sequence";
    const auto base = [&] {
      grpo::policy_loss_options o;
      o.level = level;
      return o;
    };
    // Plain PPO-clip: no optional input beyond old.
    out.push_back({at_level + " clip", base(), {true, false, false, false, false}});
    out.push_back({at_level + " no old_logprobs", base(), {false, false, false, false, false}});
    for (const auto aggregation :
         {grpo::loss_aggregation::token_mean, grpo::loss_aggregation::seq_mean_token_mean,
          grpo::loss_aggregation::seq_mean_token_sum, grpo::loss_aggregation::seq_mean_token_sum_norm}) {
      auto o = base();
      o.aggregation = aggregation;
      o.epsilon_high = 0.28;
      out.push_back({at_level + " aggregation " + std::to_string(static_cast<int>(aggregation)), o,
                     {true, false, false, false, true}});
    }
    for (const auto kl : {grpo::kl_estimator::k1, grpo::kl_estimator::k2, grpo::kl_estimator::k3}) {
      auto o = base();
      o.beta = 0.04;
      o.kl = kl;
      out.push_back({at_level + " kl " + std::to_string(static_cast<int>(kl)), o, {true, true, false, false, false}});
    }
    for (const auto is_level : {grpo::ratio_level::token, grpo::ratio_level::sequence}) {
      for (const auto mode : {grpo::is_correction_mode::truncate, grpo::is_correction_mode::mask}) {
        auto o = base();
        o.is_level = is_level;
        o.is_mode = mode;
        o.is_cap = 1.2;  // low enough that both modes act on some tokens
        out.push_back({at_level + " IS level " + std::to_string(static_cast<int>(is_level)) + " mode " +
                           std::to_string(static_cast<int>(mode)),
                       o,
                       {true, false, true, false, false}});
      }
    }
    auto dual = base();
    dual.dual_clip = 1.5;
    dual.epsilon_low = 0.05;
    out.push_back({at_level + " dual clip", dual, {true, false, false, false, true}});
    auto capped = base();
    capped.delta = 1.3;
    out.push_back({at_level + " delta", capped, {true, false, false, false, false}});
    auto entropy = base();
    entropy.entropy_coef = 0.01;
    out.push_back({at_level + " entropy bonus", entropy, {true, false, false, true, false}});
    auto everything = base();
    everything.epsilon_high = 0.28;
    everything.delta = 1.5;
    everything.dual_clip = 3.0;
    everything.beta = 0.04;
    everything.entropy_coef = -0.01;
    everything.is_level = level;
    everything.aggregation = grpo::loss_aggregation::seq_mean_token_sum_norm;
    out.push_back({at_level + " every option", everything, {true, true, true, true, true}});
  }
  return out;
}

void require_metrics(const grpo::policy_loss_metrics& got, const grpo::policy_loss_metrics& want, const budget& tol) {
  const auto near = [&](double g, double w) { return std::fabs(g - w) <= tol.atol + tol.rtol * std::fabs(w); };
  CHECK(near(got.pg_loss, want.pg_loss));
  CHECK(near(got.kl_mean, want.kl_mean));
  CHECK(near(got.entropy_mean, want.entropy_mean));
  // Clip fractions count tokens at a threshold: a ratio within rounding of 1 +- epsilon may fall either side in
  // fp32, so a few tokens in the 20 000 may move (1 / 12 000 each).
  const double count_tol = tol.atol < 1e-9 ? 1e-12 : 5e-4;
  CHECK(std::fabs(got.clip_fraction_low - want.clip_fraction_low) <= count_tol);
  CHECK(std::fabs(got.clip_fraction_high - want.clip_fraction_high) <= count_tol);
  CHECK(std::fabs(got.clip_fraction_dual - want.clip_fraction_dual) <= count_tol);
  CHECK(near(got.ratio_mean, want.ratio_mean));
  CHECK(near(got.is_weight_mean, want.is_weight_mean));
  CHECK(std::fabs(got.is_masked_fraction - want.is_masked_fraction) <= count_tol);
  CHECK(std::fabs(got.is_truncated_fraction - want.is_truncated_fraction) <= count_tol);
}

}  // namespace

TEST_CASE("libtorch fused losses: the host path is taken exactly for CPU fp32 / fp64 inputs autograd does not record",
          "[torch][fused_losses]") {
  for (const auto dtype : {at::kFloat, at::kDouble}) {
    const policy_batch batch(dtype);
    const auto b = cpu(dtype);
    auto in = batch.inputs(b, {});
    CHECK(policy_loss_path(b, in) == loss_path::host_rows);
    CHECK(grpo_advantages_path(b, in.advantages.raw()) == loss_path::host_rows);
    // A bool mask is lifted to b's dtype by every operation: still the host path.
    auto bool_mask = in;
    bool_mask.mask = grpo::libtorch::wrap(b, in.mask.raw().to(at::kBool));
    CHECK(policy_loss_path(b, bool_mask) == loss_path::host_rows);
    // An input of another dtype, or a backend of another dtype: the torch ops (their promotions decide the result).
    const auto other = dtype == at::kFloat ? at::kDouble : at::kFloat;
    auto mixed = in;
    mixed.ref_logprobs = grpo::libtorch::wrap(b, in.ref_logprobs->raw().to(other));
    CHECK(policy_loss_path(b, mixed) == loss_path::torch_ops);
    CHECK(policy_loss_path(cpu(other), in) == loss_path::torch_ops);
    auto half = in;
    half.logprobs = grpo::libtorch::wrap(b, in.logprobs.raw().to(at::kBFloat16));
    CHECK(policy_loss_path(b, half) == loss_path::torch_ops);
    // An input that requires grad with grad mode on: the composite path, which autograd differentiates.
    for (const bool logprobs_grad : {true, false}) {
      auto graphed = in;
      auto& t = logprobs_grad ? graphed.logprobs : *graphed.entropy;
      t = grpo::libtorch::wrap(b, t.raw().detach().requires_grad_(true));
      CHECK(policy_loss_path(b, graphed) == loss_path::torch_ops);
      const at::NoGradGuard no_grad;
      CHECK(policy_loss_path(b, graphed) == loss_path::host_rows);
    }
    const auto scores = in.advantages.raw().detach().requires_grad_(true);
    CHECK(grpo_advantages_path(b, scores) == loss_path::torch_ops);
    const at::NoGradGuard no_grad;
    CHECK(grpo_advantages_path(b, scores) == loss_path::host_rows);
  }
  // With grad mode on and logprobs requiring grad the loss stays differentiable, its autograd gradient the analytic
  // one (the composite path, as before the fused path existed).
  const policy_batch batch(at::kDouble);
  const auto b = cpu(at::kDouble);
  auto in = batch.inputs(b, {});
  const auto leaf = in.logprobs.raw().detach().requires_grad_(true);
  in.logprobs = grpo::libtorch::wrap(b, leaf);
  grpo::policy_loss_options o;
  o.beta = 0.04;
  const auto d = grpo::denominators_from_mask(in.mask);
  const auto result = grpo::policy_loss(in, o, d);
  REQUIRE(result.loss.raw().requires_grad());
  result.loss.raw().backward();
  require_same(host(leaf.grad()), host(result.grad_logprobs.raw()), 1e-15, 1e-12);
}

TEST_CASE("libtorch fused policy loss: every variant matches the reference on fp32 and fp64 CPU tensors",
          "[torch][fused_losses]") {
  const reference r;
  for (const auto dtype : {at::kFloat, at::kDouble}) {
    const policy_batch batch(dtype);
    const auto b = cpu(dtype);
    const auto tol = budget_of(dtype);
    for (const auto& v : every_variant()) {
      for (const bool per_token : {false, true}) {
        auto present = v.inputs;
        present.per_token_advantages = per_token;
        INFO((dtype == at::kFloat ? "fp32 " : "fp64 ") << v.name << (per_token ? ", advantages per token" : ""));
        const auto in = batch.inputs(b, present);
        const auto want_in = batch.inputs(r, present);
        const auto d = grpo::denominators_from_mask(want_in.mask, 512.0);
        REQUIRE(policy_loss_path(b, in) == loss_path::host_rows);
        const auto got = grpo::policy_loss(in, v.options, d);
        const auto want = grpo::policy_loss(want_in, v.options, d);
        CHECK(got.loss.raw().scalar_type() == dtype);
        CHECK(got.per_token_loss.raw().scalar_type() == dtype);
        require_same({got.loss.item()}, {want.loss.item()}, tol.atol, tol.rtol);
        require_same(host(got.per_token_loss.raw()), want.per_token_loss.to_host(), tol.atol, tol.rtol);
        require_same(host(got.grad_logprobs.raw()), want.grad_logprobs.to_host(), tol.atol, tol.rtol);
        REQUIRE(got.grad_entropy.has_value() == want.grad_entropy.has_value());
        if (want.grad_entropy)
          require_same(host(got.grad_entropy->raw()), want.grad_entropy->to_host(), tol.atol, tol.rtol);
        require_metrics(got.metrics, want.metrics, tol);
      }
    }
  }
}

TEST_CASE("libtorch fused policy loss: the same bits for one and two threads, and through libtorch::policy_loss",
          "[torch][fused_losses]") {
  const auto threads = at::get_num_threads();
  for (const auto dtype : {at::kFloat, at::kDouble}) {
    const policy_batch batch(dtype);
    const auto b = cpu(dtype);
    for (const auto level : {grpo::ratio_level::token, grpo::ratio_level::sequence}) {
      const auto in = batch.inputs(b, {});
      grpo::policy_loss_options o;
      o.level = level;
      o.is_level = level;
      o.beta = 0.04;
      o.entropy_coef = 0.01;
      const auto d = grpo::denominators_from_mask(in.mask);
      at::set_num_threads(1);
      const auto one = grpo::policy_loss(in, o, d);
      at::set_num_threads(2);
      const auto two = grpo::policy_loss(in, o, d);
      at::set_num_threads(threads);
      CHECK(one.loss.item() == two.loss.item());
      CHECK(host(one.per_token_loss.raw()) == host(two.per_token_loss.raw()));
      CHECK(host(one.grad_logprobs.raw()) == host(two.grad_logprobs.raw()));
      CHECK(one.metrics.kl_mean == two.metrics.kl_mean);
      CHECK(one.metrics.entropy_mean == two.metrics.entropy_mean);
      // The autograd Function runs the algorithm with grad mode off (the fused path) and hands autograd its gradient.
      const auto logp = in.logprobs.raw().detach().requires_grad_(true);
      const auto entropy = in.entropy->raw().detach().requires_grad_(true);
      const auto fused = grpo::libtorch::policy_loss({.logprobs = logp,
                                                      .advantages = in.advantages.raw(),
                                                      .mask = in.mask.raw(),
                                                      .old_logprobs = in.old_logprobs->raw(),
                                                      .ref_logprobs = in.ref_logprobs->raw(),
                                                      .rollout_logprobs = in.rollout_logprobs->raw(),
                                                      .entropy = entropy},
                                                     o, d);
      fused.loss.backward();
      CHECK(fused.loss.item<double>() == one.loss.item());
      CHECK(host(logp.grad()) == host(one.grad_logprobs.raw()));
      CHECK(host(entropy.grad()) == host(one.grad_entropy->raw()));
    }
  }
}

TEST_CASE("libtorch fused policy loss: NaN, Inf and a bad mask fall back to the generic checks, which name them",
          "[torch][fused_losses]") {
  for (const auto dtype : {at::kFloat, at::kDouble}) {
    const policy_batch batch(dtype);
    const auto b = cpu(dtype);
    grpo::policy_loss_options o;
    o.beta = 0.04;
    o.entropy_coef = 0.01;
    const auto d = grpo::denominators_from_mask(batch.inputs(b, {}).mask);
    const auto poisoned = [&](auto member, std::int64_t index, double value) {
      auto in = batch.inputs(b, {});
      grpo::tensor<torch_backend>& t = member(in);
      auto values = host(t.raw());
      values[static_cast<std::size_t>(index)] = value;
      t = grpo::make_tensor(b, values, t.shape());
      return in;
    };
    const std::int64_t padding = batch.rows * batch.cols - 1;  // row 22's last token: masked (padding)
    using inputs = grpo::policy_loss_inputs<torch_backend>;
    const auto expect = [&](const inputs& in, const char* name) {
      INFO(name);
      grpo::testing::require_error([&] { (void)grpo::policy_loss(in, o, d); }, {name});
    };
    expect(poisoned([](inputs& in) -> auto& { return in.logprobs; }, 5, not_a_number), "logprobs");
    expect(poisoned([](inputs& in) -> auto& { return *in.old_logprobs; }, padding, INFINITY), "old_logprobs");
    expect(poisoned([](inputs& in) -> auto& { return *in.ref_logprobs; }, padding, not_a_number), "ref_logprobs");
    expect(poisoned([](inputs& in) -> auto& { return *in.rollout_logprobs; }, 2000, -INFINITY), "rollout_logprobs");
    expect(poisoned([](inputs& in) -> auto& { return *in.entropy; }, padding, not_a_number), "entropy");
    expect(poisoned([](inputs& in) -> auto& { return in.advantages; }, 3, INFINITY), "advantages");
    expect(poisoned([](inputs& in) -> auto& { return in.mask; }, 1200, 0.5), "mask");
  }
}

TEST_CASE("libtorch fused advantages: explicit ids, NaN members and every scale match the reference",
          "[torch][fused_losses]") {
  const reference r;
  auto scores = grpo::testing::uniform(60, 0.0, 1.0, 71);
  scores[4] = not_a_number;
  for (std::size_t i = 10; i < 15; ++i) scores[i] = 0.25;  // a constant group (ids below put 10..14 together)
  scores[20] = scores[21] = scores[22] = scores[23] = not_a_number;  // a group of one scorable member
  std::vector<std::int64_t> ids(60);
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int64_t>((i / 5) * 7 % 12);
  for (const auto dtype : {at::kFloat, at::kDouble}) {
    const auto b = cpu(dtype);
    const auto tol = budget_of(dtype);
    const auto x = grpo::testing::rounded(scores, dtype);
    for (const auto& layout : {grpo::group_layout::from_ids(ids), grpo::group_layout::consecutive(5)}) {
      for (const auto scale : {grpo::reward_scale::group, grpo::reward_scale::batch, grpo::reward_scale::none}) {
        INFO((dtype == at::kFloat ? "fp32" : "fp64") << " scale " << static_cast<int>(scale));
        const grpo::grpo_advantage_options options{scale, 1e-4, 1e-6};
        const auto in = grpo::make_tensor(b, x, shape::vector(60));
        REQUIRE(grpo_advantages_path(b, in.raw()) == loss_path::host_rows);
        const auto got = grpo::grpo_advantages(in, layout, options);
        const auto want = grpo::grpo_advantages(grpo::make_tensor(r, x, shape::vector(60)), layout, options);
        CHECK(got.advantages.raw().scalar_type() == dtype);
        require_same(host(got.advantages.raw()), want.advantages.to_host(), tol.atol, tol.rtol);
        CHECK(got.zero_std_fraction == want.zero_std_fraction);
        CHECK(got.reward_mean == Approx(want.reward_mean).epsilon(1e-12));
        CHECK(got.reward_std == Approx(want.reward_std).epsilon(1e-12));
      }
    }
    // Scores autograd records a graph for: the generic path, differentiable as before.
    const auto leaf = grpo::testing::torch_tensor(x, {60}, dtype).requires_grad_(true);
    const auto graphed = grpo::grpo_advantages(grpo::libtorch::wrap(b, leaf), grpo::group_layout::consecutive(5));
    CHECK(graphed.advantages.raw().requires_grad());
    grpo::testing::require_error(
        [&] {
          auto bad = x;
          bad[7] = INFINITY;
          (void)grpo::grpo_advantages(grpo::make_tensor(b, bad, shape::vector(60)), grpo::group_layout::consecutive(5));
        },
        {"scores"});
  }
}
