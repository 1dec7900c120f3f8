// SPDX-License-Identifier: Apache-2.0
// The policy loss (PPO-clip / GRPO / DAPO / GSPO with KL, entropy and IS correction): hand-worked values of each
// term, its gradient against central differences in double for every variant, the invariants that matter in
// training (loss ~0 with a nonzero gradient, exact micro-batch accumulation), edge cases and error messages.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "grpo/policy_loss.hpp"
#include "test_support.hpp"

using namespace grpo;
using namespace grpo::testing;

namespace {

constexpr loss_aggregation all_aggregations[] = {loss_aggregation::token_mean, loss_aggregation::seq_mean_token_mean,
                                                 loss_aggregation::seq_mean_token_sum,
                                                 loss_aggregation::seq_mean_token_sum_norm};

// Host-side copy of one batch; make_inputs uploads the parts a test asks for.
struct batch {
  std::int64_t rows = 0, cols = 0;
  std::vector<double> logp, old, ref, rollout, entropy, adv_rows, adv_tokens, mask;
};

struct parts {
  bool old = true, ref = true, rollout = false, entropy = false, token_advantages = false;
};

template <class Backend = ref>
policy_loss_inputs<Backend> make_inputs(const batch& b, const parts& p) {
  const Backend be{};
  const auto m = [&](const std::vector<double>& v) { return make_tensor(be, v, shape::matrix(b.rows, b.cols)); };
  policy_loss_inputs<Backend> in{
      .logprobs = m(b.logp),
      .advantages = p.token_advantages ? m(b.adv_tokens) : make_tensor(be, b.adv_rows, shape::vector(b.rows)),
      .mask = m(b.mask)};
  if (p.old) in.old_logprobs = m(b.old);
  if (p.ref) in.ref_logprobs = m(b.ref);
  if (p.rollout) in.rollout_logprobs = m(b.rollout);
  if (p.entropy) in.entropy = m(b.entropy);
  return in;
}

// A seeded batch of 5 rows x 4 tokens with valid lengths 4, 2, 0, 1, 3 (a fully masked row and a length-1 row).
// The ratios (token level) or the rows' mean log-ratios (sequence level) sit at least ~2% away from every kink of
// the loss (1 - 0.2, 1 + 0.28, delta 2.5, dual clip 3), so central differences are valid; the sequence level gets
// large zero-mean per-token deviations so that the token ratios themselves are spread widely.
batch random_batch(std::uint32_t seed, ratio_level level) {
  batch b;
  b.rows = 5;
  b.cols = 4;
  const std::size_t n = 20;
  const std::int64_t lengths[] = {4, 2, 0, 1, 3};
  const double safe_ratios[] = {0.5, 0.9, 1.0, 1.1, 1.6, 2.2, 2.8, 3.5, 5.0};
  const auto pick = uniform(n, 0.0, 9.0, seed);
  const auto jitter = uniform(n, -0.02, 0.02, seed + 1);
  const auto spread = uniform(n, -0.5, 0.5, seed + 2);
  b.logp = uniform(n, -3.0, -0.1, seed + 3);
  b.mask.assign(n, 0.0);
  for (std::int64_t i = 0; i < b.rows; ++i)
    for (std::int64_t t = 0; t < lengths[i]; ++t) b.mask[static_cast<std::size_t>(i * b.cols + t)] = 1.0;
  std::vector<double> log_ratio(n);
  for (std::size_t k = 0; k < n; ++k)
    log_ratio[k] = std::log(safe_ratios[static_cast<int>(pick[k])]) + jitter[k];
  if (level == ratio_level::sequence) {
    for (std::int64_t i = 0; i < b.rows; ++i) {
      const auto row = static_cast<std::size_t>(i * b.cols);
      double mean_spread = 0;
      for (std::int64_t t = 0; t < lengths[i]; ++t) mean_spread += spread[row + static_cast<std::size_t>(t)];
      if (lengths[i] > 0) mean_spread /= static_cast<double>(lengths[i]);
      for (std::size_t t = 0; t < static_cast<std::size_t>(b.cols); ++t)
        log_ratio[row + t] = log_ratio[row] + spread[row + t] - mean_spread;
    }
  }
  b.old.resize(n);
  for (std::size_t k = 0; k < n; ++k) b.old[k] = b.logp[k] - log_ratio[k];
  const auto ref_shift = uniform(n, -1.0, 1.0, seed + 4);
  const auto rollout_shift = uniform(n, -1.5, 1.5, seed + 5);
  b.ref.resize(n);
  b.rollout.resize(n);
  for (std::size_t k = 0; k < n; ++k) {
    b.ref[k] = b.logp[k] + ref_shift[k];
    b.rollout[k] = b.old[k] + rollout_shift[k];
  }
  b.entropy = uniform(n, 0.0, 2.0, seed + 6);
  b.adv_rows = uniform(5, -1.5, 1.5, seed + 7);
  b.adv_tokens = uniform(n, -1.5, 1.5, seed + 8);
  return b;
}

std::vector<double> slice_rows(const std::vector<double>& v, std::int64_t cols, std::int64_t begin,
                               std::int64_t count) {
  return {v.begin() + begin * cols, v.begin() + (begin + count) * cols};
}

batch rows_of(const batch& b, std::int64_t begin, std::int64_t count) {
  batch out;
  out.rows = count;
  out.cols = b.cols;
  using field = std::vector<double> batch::*;
  for (const field f : {&batch::logp, &batch::old, &batch::ref, &batch::rollout, &batch::entropy, &batch::adv_tokens,
                        &batch::mask})
    out.*f = slice_rows(b.*f, b.cols, begin, count);
  out.adv_rows = slice_rows(b.adv_rows, 1, begin, count);
  return out;
}

// The 2x3 batch of the hand-worked tests: old log-probs, and the ratios r the trainer log-probs are built from.
// Row 0 (A = +1): r = 1.1 (inside the clip range), 1.5 (above 1 + 0.28: high clip), 50 (masked padding).
// Row 1 (A = -0.5): r = 0.6 (below 1 - 0.2: low clip), 4.0 (dual clip / delta cap), 1.2 (inside).
batch hand_batch() {
  batch b;
  b.rows = 2;
  b.cols = 3;
  b.old = {-1.0, -1.2, -0.7, -2.0, -0.9, -1.5};
  const std::vector<double> ratios = {1.1, 1.5, 50.0, 0.6, 4.0, 1.2};
  for (std::size_t k = 0; k < 6; ++k) b.logp.push_back(b.old[k] + std::log(ratios[k]));
  b.adv_rows = {1.0, -0.5};
  b.mask = {1, 1, 0, 1, 1, 1};
  return b;
}

// Aggregation weights of the hand batch (|o| = 2, 3; N_tokens = 5, N_seqs = 2, C = 4) per mode, for the valid
// tokens (0,0) and (1,2), the only ones whose ratio is unclipped in every option set.
struct hand_weights {
  double row0, row1;
};
hand_weights hand_weight(loss_aggregation mode) {
  switch (mode) {
    case loss_aggregation::token_mean: return {1.0 / 5, 1.0 / 5};
    case loss_aggregation::seq_mean_token_mean: return {1.0 / (2 * 2), 1.0 / (3 * 2)};
    case loss_aggregation::seq_mean_token_sum: return {1.0 / 2, 1.0 / 2};
    case loss_aggregation::seq_mean_token_sum_norm: return {1.0 / 8, 1.0 / 8};
  }
  return {0, 0};
}

}  // namespace

TEST_CASE("policy loss: clipped surrogate, dual clip and delta on hand-worked numbers", "[policy_loss]") {
  const auto b = hand_batch();
  const auto in = make_inputs(b, {.ref = false});
  const auto d = denominators_from_mask(in.mask, 4.0);  // N_tokens = 5, N_seqs = 2, C = 4
  policy_loss_options o;
  o.epsilon_low = 0.2;
  o.epsilon_high = 0.28;

  // pg = -min(r A, clip(r, 0.8, 1.28) A):
  //   (0,0) r 1.1,  A  1:   -min(1.1, 1.1)            = -1.1   (inside: d pg/d logp = -A r = -1.1)
  //   (0,1) r 1.5,  A  1:   -min(1.5, 1.28)           = -1.28  (high clip: gradient 0)
  //   (1,0) r 0.6,  A -.5:  -min(-0.3, -0.4)          =  0.4   (low clip: gradient 0)
  //   (1,1) r 4,    A -.5:  -min(-2, -0.64)           =  2.0   (unclipped: d pg/d logp = -A r = 2)
  //                 dual c = 3: min(2.0, 3 * 0.5)      =  1.5   (gradient 0)
  //                 delta = 2: -min(min(4, 2) (-0.5), -0.64) = 1.0 (gradient 0)
  //   (1,2) r 1.2,  A -.5:  -min(-0.6, -0.6)          =  0.6   (inside: d pg/d logp = -A r = 0.6)
  struct option_set {
    const char* name;
    std::optional<double> dual_clip, delta;
    double pg_11, slope_11;  // pg and d pg / d logp at token (1,1)
    // Aggregated losses, per mode, of the per-token losses {-1.1, -1.28, 0 | 0.4, pg_11, 0.6}:
    // token-mean sum / 5; seq-mean-token-mean ((-2.38) / 2 + (1 + pg_11) / 3) / 2; token-sum sum / 2; norm sum / 8.
    double losses[4];
    double clip_fraction_dual;
  };
  const option_set sets[] = {
      // sum = -2.38 + 3.0 = 0.62: 0.62/5 = 0.124, (-1.19 + 1)/2 = -0.095, 0.62/2 = 0.31, 0.62/8 = 0.0775
      {"plain", std::nullopt, std::nullopt, 2.0, 2.0, {0.124, -0.095, 0.31, 0.0775}, 0.0},
      // sum = -2.38 + 2.5 = 0.12: 0.024, (-1.19 + 2.5/3)/2 = -0.178333..., 0.06, 0.015
      {"dual clip 3", 3.0, std::nullopt, 1.5, 0.0, {0.024, (-1.19 + 2.5 / 3) / 2, 0.06, 0.015}, 1.0 / 5},
      // sum = -2.38 + 2.0 = -0.38: -0.076, (-1.19 + 2/3)/2 = -0.261666..., -0.19, -0.0475
      {"delta 2", std::nullopt, 2.0, 1.0, 0.0, {-0.076, (-1.19 + 2.0 / 3) / 2, -0.19, -0.0475}, 0.0},
  };
  for (const auto& set : sets) {
    for (std::size_t k = 0; k < 4; ++k) {
      INFO(set.name << ", " << name_of(all_aggregations[k]));
      o.dual_clip = set.dual_clip;
      o.delta = set.delta;
      o.aggregation = all_aggregations[k];
      const auto result = policy_loss(in, o, d);
      require_close(result.per_token_loss.to_host(), {-1.1, -1.28, 0.0, 0.4, set.pg_11, 0.6});
      require_close(result.loss.item(), set.losses[k]);
      const auto w = hand_weight(all_aggregations[k]);
      // d loss / d logp = W * d pg / d logp: -1.1 W0 at (0,0), slope_11 W1 at (1,1), 0.6 W1 at (1,2).
      require_close(result.grad_logprobs.to_host(), {-1.1 * w.row0, 0, 0, 0, set.slope_11 * w.row1, 0.6 * w.row1});
      // Metrics over the 5 valid tokens: one low clip (1,0), one high clip (0,1).
      require_close(result.metrics.clip_fraction_low, 0.2);
      require_close(result.metrics.clip_fraction_high, 0.2);
      require_close(result.metrics.clip_fraction_dual, set.clip_fraction_dual);
      require_close(result.metrics.ratio_mean, (1.1 + 1.5 + 0.6 + 4.0 + 1.2) / 5);
      require_close(result.metrics.pg_loss, (-2.38 + 1.0 + set.pg_11) / 5);
      require_close(result.metrics.is_weight_mean, 1.0);
      require_close(result.metrics.kl_mean, 0.0);
      CHECK_FALSE(result.grad_entropy.has_value());
    }
  }
}

TEST_CASE("policy loss: KL estimators on hand-worked numbers", "[policy_loss][kl]") {
  // A = 0 and no old log-probs: the policy term vanishes and L = beta KL. x = ref - logp = 0.5, -1, 0.
  const auto logp = mat(1, 3, {-1.0, -2.0, -0.5});
  const auto refp = mat(1, 3, {-0.5, -3.0, -0.5});
  const policy_loss_inputs<ref> in{
      .logprobs = logp, .advantages = vec({0.0}), .mask = mat(1, 3, {1, 1, 1}), .ref_logprobs = refp};
  const auto d = denominators_from_mask(in.mask);  // token-mean over 3 tokens
  policy_loss_options o;
  o.beta = 0.1;
  struct kl_case {
    kl_estimator kl;
    std::vector<double> values, slopes;  // KL per token and d KL / d logp
  };
  const kl_case cases[] = {
      // k1 = -x; d/dlogp = 1
      {kl_estimator::k1, {-0.5, 1.0, 0.0}, {1.0, 1.0, 1.0}},
      // k2 = x^2 / 2; d/dlogp = logp - ref = -x
      {kl_estimator::k2, {0.125, 0.5, 0.0}, {-0.5, 1.0, 0.0}},
      // k3 = e^x - 1 - x: e^0.5 - 1.5, e^-1 - 1 + 1, 0; d/dlogp = 1 - e^x: 1 - e^0.5, 1 - e^-1, 0
      {kl_estimator::k3,
       {0.1487212707001282, 0.36787944117144233, 0.0},
       {-0.6487212707001282, 0.6321205588285577, 0.0}},
  };
  for (const auto& c : cases) {
    INFO(name_of(c.kl));
    o.kl = c.kl;
    const auto result = policy_loss(in, o, d);
    const double kl_sum = c.values[0] + c.values[1] + c.values[2];
    require_close(result.per_token_loss.to_host(), {0.1 * c.values[0], 0.1 * c.values[1], 0.1 * c.values[2]}, 1e-15);
    require_close(result.loss.item(), 0.1 * kl_sum / 3, 1e-15);
    require_close(result.metrics.kl_mean, kl_sum / 3, 1e-15);
    // W beta dKL = (1/3)(0.1) dKL
    require_close(result.grad_logprobs.to_host(), {0.1 * c.slopes[0] / 3, 0.1 * c.slopes[1] / 3, 0.1 * c.slopes[2] / 3},
                  1e-15);
  }
  // beta = 0 with a reference: the KL is reported but does not enter the loss or the gradient.
  o.beta = 0.0;
  o.kl = kl_estimator::k2;
  const auto result = policy_loss(in, o, d);
  require_close(result.metrics.kl_mean, 0.625 / 3);
  require_close(result.loss.item(), 0.0);
  require_close(result.grad_logprobs.to_host(), {0, 0, 0});
}

TEST_CASE("policy loss: rollout importance-sampling correction on hand-worked numbers", "[policy_loss][is]") {
  // r = 1 (logp = old) and A = 1 everywhere, so pg = -1 and L = -rho. old - rollout = log of
  //   row 0: 2, 4, 0.5 (product 4)     row 1: 1.5, 1, 1 (product 1.5)
  batch b;
  b.rows = 2;
  b.cols = 3;
  b.logp = {-1.0, -1.0, -1.0, -2.0, -2.0, -2.0};
  b.old = b.logp;
  const std::vector<double> rho = {2.0, 4.0, 0.5, 1.5, 1.0, 1.0};
  for (std::size_t k = 0; k < 6; ++k) b.rollout.push_back(b.old[k] - std::log(rho[k]));
  b.adv_rows = {1.0, 1.0};
  b.mask = {1, 1, 1, 1, 1, 1};
  const auto in = make_inputs(b, {.ref = false, .rollout = true});
  const auto d = denominators_from_mask(in.mask);  // N_tokens = 6
  struct is_case {
    ratio_level level;
    is_correction_mode mode;
    std::vector<double> weights;
    double masked, truncated;
  };
  const is_case cases[] = {
      // token, cap 3: truncate 4 -> 3; mask 4 -> 0
      {ratio_level::token, is_correction_mode::truncate, {2, 3, 0.5, 1.5, 1, 1}, 0.0, 1.0 / 6},
      {ratio_level::token, is_correction_mode::mask, {2, 0, 0.5, 1.5, 1, 1}, 1.0 / 6, 0.0},
      // sequence: row 0 exp(log 2 + log 4 + log 0.5) = 4 > 3; row 1 = 1.5
      {ratio_level::sequence, is_correction_mode::truncate, {3, 3, 3, 1.5, 1.5, 1.5}, 0.0, 0.5},
      {ratio_level::sequence, is_correction_mode::mask, {0, 0, 0, 1.5, 1.5, 1.5}, 0.5, 0.0},
  };
  for (const auto& c : cases) {
    INFO(name_of(c.level) << " " << name_of(c.mode));
    policy_loss_options o;
    o.is_level = c.level;
    o.is_mode = c.mode;
    const auto result = policy_loss(in, o, d);
    std::vector<double> loss(6), grad(6);
    double weight_sum = 0;
    for (std::size_t k = 0; k < 6; ++k) {
      loss[k] = -c.weights[k];         // L = rho * (-1)
      grad[k] = -c.weights[k] / 6;     // W rho (-A) r = rho (-1) / 6
      weight_sum += c.weights[k];
    }
    require_close(result.per_token_loss.to_host(), loss, 1e-14);
    require_close(result.loss.item(), -weight_sum / 6, 1e-14);
    require_close(result.grad_logprobs.to_host(), grad, 1e-14);
    require_close(result.metrics.is_weight_mean, weight_sum / 6, 1e-14);
    require_close(result.metrics.is_masked_fraction, c.masked);
    require_close(result.metrics.is_truncated_fraction, c.truncated);
  }
}

TEST_CASE("policy loss: GSPO sequence ratio and entropy bonus on hand-worked numbers", "[policy_loss][gspo]") {
  // Row 0 (A = +1, 2 valid tokens): log-ratios 0.1, 0.3 (and 5 on the masked token, ignored): s = e^0.2 = 1.2214...
  //   inside [0.8, 1.28]: pg = -s on both tokens.
  // Row 1 (A = -1, 3 valid): log-ratios -0.5, -0.3, -0.4: s = e^-0.4 = 0.6703... < 0.8 with A < 0: low clip,
  //   pg = -min(-s, -0.8) = 0.8, gradient 0.
  batch b;
  b.rows = 2;
  b.cols = 3;
  b.old = {-1.0, -2.0, -3.0, -1.0, -2.0, -3.0};
  const std::vector<double> log_ratio = {0.1, 0.3, 5.0, -0.5, -0.3, -0.4};
  for (std::size_t k = 0; k < 6; ++k) b.logp.push_back(b.old[k] + log_ratio[k]);
  b.adv_rows = {1.0, -1.0};
  b.mask = {1, 1, 0, 1, 1, 1};
  b.entropy = {0.5, 1.0, 9.0, 2.0, 0.25, 0.25};
  auto in = make_inputs(b, {.ref = false, .entropy = true});
  const auto d = denominators_from_mask(in.mask);  // N_tokens = 5
  policy_loss_options o;
  o.level = ratio_level::sequence;
  o.epsilon_high = 0.28;
  o.entropy_coef = 0.01;
  const double s0 = 1.2214027581601699, s1 = 0.6703200460356393;
  const auto result = policy_loss(in, o, d);
  // L = pg - 0.01 H
  require_close(result.per_token_loss.to_host(),
                {-s0 - 0.005, -s0 - 0.01, 0.0, 0.8 - 0.02, 0.8 - 0.0025, 0.8 - 0.0025});
  // (-2 s0 + 3 (0.8) - 0.01 (0.5 + 1 + 2 + 0.25 + 0.25)) / 5 = (-2.4428055163203397 + 2.4 - 0.04) / 5
  require_close(result.loss.item(), (-2 * s0 + 2.4 - 0.04) / 5);
  // Row 0: sum_t W (-A) = 2 (1/5)(-1) = -0.4, times s0 / |o_0| = s0 / 2 on each valid token: -0.4 s0 / 2.
  require_close(result.grad_logprobs.to_host(), {-0.244280551632034, -0.244280551632034, 0, 0, 0, 0}, 1e-15);
  // d loss / d H = -0.01 W = -0.002 on valid tokens.
  REQUIRE(result.grad_entropy.has_value());
  require_close(result.grad_entropy->to_host(), {-0.002, -0.002, 0, -0.002, -0.002, -0.002});
  require_close(result.metrics.ratio_mean, (2 * s0 + 3 * s1) / 5);  // 0.8907531308854516
  require_close(result.metrics.clip_fraction_low, 3.0 / 5);
  require_close(result.metrics.clip_fraction_high, 0.0);
  require_close(result.metrics.entropy_mean, 4.0 / 5);  // (0.5 + 1 + 2 + 0.25 + 0.25) / 5
  require_close(result.metrics.pg_loss, (-2 * s0 + 2.4) / 5);
}

TEST_CASE("policy loss: gradients match central differences for every variant", "[policy_loss][gradient]") {
  struct variant {
    const char* name;
    std::optional<double> dual_clip, delta;
    double entropy_coef = 0;
    std::optional<ratio_level> is_level;
    is_correction_mode is_mode = is_correction_mode::truncate;
  };
  const variant variants[] = {
      {"plain", {}, {}, 0, {}, {}},
      {"dual clip", 3.0, {}, 0, {}, {}},
      {"delta", {}, 2.5, 0, {}, {}},
      {"entropy", {}, {}, 0.01, {}, {}},
      {"IS token truncate", {}, {}, 0, ratio_level::token, is_correction_mode::truncate},
      {"IS token mask", {}, {}, 0, ratio_level::token, is_correction_mode::mask},
      {"IS sequence truncate", {}, {}, 0, ratio_level::sequence, is_correction_mode::truncate},
      {"IS sequence mask", {}, {}, 0, ratio_level::sequence, is_correction_mode::mask},
      {"everything", 3.0, 2.5, -0.02, ratio_level::sequence, is_correction_mode::mask},
  };
  std::uint32_t seed = 100;
  for (const auto level : {ratio_level::token, ratio_level::sequence}) {
    for (const auto aggregation : all_aggregations) {
      for (const auto kl : {kl_estimator::k1, kl_estimator::k2, kl_estimator::k3}) {
        for (std::size_t v = 0; v < std::size(variants); ++v) {
          const auto& var = variants[v];
          INFO(name_of(level) << ", " << name_of(aggregation) << ", " << name_of(kl) << ", " << var.name);
          const auto b = random_batch(seed++, level);
          const parts p{.rollout = var.is_level.has_value(), .entropy = true, .token_advantages = v % 2 == 1};
          const auto in = make_inputs(b, p);
          const auto d = denominators_from_mask(in.mask, 4.0);
          policy_loss_options o;
          o.level = level;
          o.epsilon_high = 0.28;
          o.aggregation = aggregation;
          o.beta = 0.05;
          o.kl = kl;
          o.dual_clip = var.dual_clip;
          o.delta = var.delta;
          o.entropy_coef = var.entropy_coef;
          o.is_level = var.is_level.value_or(ratio_level::token);
          o.is_mode = var.is_mode;
          const auto result = policy_loss(in, o, d);
          const auto loss_at = [&](const std::vector<double>& logp, const std::vector<double>& entropy) {
            auto moved = in;
            moved.logprobs = mat(b.rows, b.cols, logp);
            moved.entropy = mat(b.rows, b.cols, entropy);
            return policy_loss(moved, o, d).loss.item();
          };
          require_gradient([&](const std::vector<double>& x) { return loss_at(x, b.entropy); }, b.logp,
                           result.grad_logprobs.to_host());
          REQUIRE(result.grad_entropy.has_value());
          require_gradient([&](const std::vector<double>& x) { return loss_at(b.logp, x); }, b.entropy,
                           result.grad_entropy->to_host());
        }
      }
    }
  }
}

TEST_CASE("policy loss: the random batches really exercise every branch", "[policy_loss][gradient]") {
  // Guards the gradient test above against testing only the smooth middle of the loss.
  double low = 0, high = 0, dual = 0, masked = 0;
  for (std::uint32_t seed = 100; seed < 130; ++seed) {
    const auto b = random_batch(seed, ratio_level::token);
    policy_loss_options o;
    o.epsilon_high = 0.28;
    o.dual_clip = 3.0;
    o.is_mode = is_correction_mode::mask;
    const auto in = make_inputs(b, {.ref = false, .rollout = true});
    const auto m = policy_loss(in, o, denominators_from_mask(in.mask)).metrics;
    low += m.clip_fraction_low;
    high += m.clip_fraction_high;
    dual += m.clip_fraction_dual;
    masked += m.is_masked_fraction;
  }
  CHECK(low > 0);
  CHECK(high > 0);
  CHECK(dual > 0);
  CHECK(masked > 0);
}

TEST_CASE("policy loss: ratio 1 gives minus the aggregated advantage, with a nonzero gradient", "[policy_loss]") {
  const auto b = random_batch(7, ratio_level::token);
  for (const auto aggregation : all_aggregations) {
    for (const auto level : {ratio_level::token, ratio_level::sequence}) {
      for (const bool token_advantages : {false, true}) {
        INFO(name_of(aggregation) << ", " << name_of(level) << ", token advantages " << token_advantages);
        // No old log-probs: r = 1 exactly; beta = 0.
        const auto in = make_inputs(b, {.old = false, .ref = false, .token_advantages = token_advantages});
        const auto d = denominators_from_mask(in.mask, 4.0);
        policy_loss_options o;
        o.level = level;
        o.aggregation = aggregation;
        const auto result = policy_loss(in, o, d);
        // Independent host computation of -sum_{i,t} W A and of the gradient.
        const std::int64_t lengths[] = {4, 2, 0, 1, 3};
        double expected = 0;
        std::vector<double> grad(20, 0.0);
        for (std::int64_t i = 0; i < 5; ++i) {
          double w = 0;
          switch (aggregation) {
            case loss_aggregation::token_mean: w = 1.0 / d.tokens; break;
            case loss_aggregation::seq_mean_token_mean: w = 1.0 / (std::max<double>(lengths[i], 1) * 5); break;
            case loss_aggregation::seq_mean_token_sum: w = 1.0 / 5; break;
            case loss_aggregation::seq_mean_token_sum_norm: w = 1.0 / (5 * 4); break;
          }
          double row_sum = 0;
          for (std::int64_t t = 0; t < lengths[i]; ++t) {
            const auto k = static_cast<std::size_t>(i * 4 + t);
            const double a = token_advantages ? b.adv_tokens[k] : b.adv_rows[static_cast<std::size_t>(i)];
            expected -= w * a;
            grad[k] = -w * a;  // token level: W (-A) r, r = 1
            row_sum += w * a;
          }
          if (level == ratio_level::sequence)  // every valid token gets the row's -sum W A / |o_i|
            for (std::int64_t t = 0; t < lengths[i]; ++t)
              grad[static_cast<std::size_t>(i * 4 + t)] = -row_sum / static_cast<double>(lengths[i]);
        }
        require_close(result.loss.item(), expected, 1e-14);
        require_close(result.grad_logprobs.to_host(), grad, 1e-15);
        require_close(result.metrics.ratio_mean, 1.0);
      }
    }
  }
  // Group-centred advantages: the loss is 0, but the gradient is not (TRL #2703).
  const policy_loss_inputs<ref> in{
      .logprobs = mat(2, 2, {-1.0, -2.0, -0.5, -1.5}), .advantages = vec({1.0, -1.0}), .mask = mat(2, 2, {1, 1, 1, 1})};
  const auto result = policy_loss(in, policy_loss_options{}, denominators_from_mask(in.mask));
  require_close(result.loss.item(), 0.0);
  require_close(result.grad_logprobs.to_host(), {-0.25, -0.25, 0.25, 0.25});  // W (-A) r = (1/4)(-A)
}

TEST_CASE("policy loss: absent old log-probs mean old = logprobs held constant", "[policy_loss]") {
  auto b = random_batch(11, ratio_level::token);
  b.old = b.logp;
  policy_loss_options o;
  o.beta = 0.1;
  o.dual_clip = 3.0;
  for (const auto level : {ratio_level::token, ratio_level::sequence}) {
    o.level = level;
    o.is_level = level;
    const auto with = make_inputs(b, {.rollout = true});
    const auto without = make_inputs(b, {.old = false, .rollout = true});
    const auto d = denominators_from_mask(with.mask);
    const auto r1 = policy_loss(with, o, d);
    const auto r2 = policy_loss(without, o, d);
    require_close(r2.loss.item(), r1.loss.item(), 0, 0);
    require_close(r2.grad_logprobs.to_host(), r1.grad_logprobs.to_host(), 0, 0);
    require_close(r2.metrics.is_weight_mean, r1.metrics.is_weight_mean, 0, 0);
  }
}

TEST_CASE("policy loss: micro-batches with the full batch's denominators add up exactly", "[policy_loss]") {
  for (const auto level : {ratio_level::token, ratio_level::sequence}) {
    const auto b = random_batch(21, level);
    const parts p{.rollout = true, .entropy = true, .token_advantages = true};
    const auto full_in = make_inputs(b, p);
    const auto d = denominators_from_mask(full_in.mask, 4.0);  // from the FULL batch's final mask
    for (const auto aggregation : all_aggregations) {
      policy_loss_options o;
      o.level = level;
      o.aggregation = aggregation;
      o.epsilon_high = 0.28;
      o.beta = 0.04;
      o.entropy_coef = 0.01;
      o.dual_clip = 3.0;
      o.is_level = ratio_level::sequence;
      o.is_mode = is_correction_mode::mask;
      const auto whole = policy_loss(full_in, o, d);
      for (const auto& split : {std::vector<std::int64_t>{2, 3}, std::vector<std::int64_t>{1, 4}}) {
        INFO(name_of(level) << ", " << name_of(aggregation) << ", split " << split[0] << "+" << split[1]);
        double loss = 0;
        policy_loss_metrics sum_metrics;
        std::vector<double> grad, grad_entropy, per_token;
        std::int64_t begin = 0;
        for (const auto count : split) {
          const auto part = policy_loss(make_inputs(rows_of(b, begin, count), p), o, d);
          loss += part.loss.item();
          const auto append = [](std::vector<double>& to, const std::vector<double>& from) {
            to.insert(to.end(), from.begin(), from.end());
          };
          append(grad, part.grad_logprobs.to_host());
          append(grad_entropy, part.grad_entropy->to_host());
          append(per_token, part.per_token_loss.to_host());
          sum_metrics.pg_loss += part.metrics.pg_loss;
          sum_metrics.kl_mean += part.metrics.kl_mean;
          sum_metrics.entropy_mean += part.metrics.entropy_mean;
          sum_metrics.clip_fraction_low += part.metrics.clip_fraction_low;
          sum_metrics.clip_fraction_high += part.metrics.clip_fraction_high;
          sum_metrics.clip_fraction_dual += part.metrics.clip_fraction_dual;
          sum_metrics.ratio_mean += part.metrics.ratio_mean;
          sum_metrics.is_weight_mean += part.metrics.is_weight_mean;
          sum_metrics.is_masked_fraction += part.metrics.is_masked_fraction;
          begin += count;
        }
        require_close(loss, whole.loss.item(), 1e-12);
        require_close(grad, whole.grad_logprobs.to_host(), 1e-12);
        require_close(grad_entropy, whole.grad_entropy->to_host(), 1e-12);
        require_close(per_token, whole.per_token_loss.to_host(), 1e-12);
        const auto& m = whole.metrics;
        require_close({sum_metrics.pg_loss, sum_metrics.kl_mean, sum_metrics.entropy_mean,
                       sum_metrics.clip_fraction_low, sum_metrics.clip_fraction_high, sum_metrics.clip_fraction_dual,
                       sum_metrics.ratio_mean, sum_metrics.is_weight_mean, sum_metrics.is_masked_fraction},
                      {m.pg_loss, m.kl_mean, m.entropy_mean, m.clip_fraction_low, m.clip_fraction_high,
                       m.clip_fraction_dual, m.ratio_mean, m.is_weight_mean, m.is_masked_fraction},
                      1e-12);
      }
    }
  }
}

TEST_CASE("policy loss: fully masked rows and length-1 rows", "[policy_loss][edge]") {
  const auto b = random_batch(31, ratio_level::sequence);  // row 2 is fully masked, row 3 has one token
  policy_loss_options o;
  o.beta = 0.1;
  o.entropy_coef = 0.01;
  o.level = ratio_level::sequence;
  for (const auto aggregation : all_aggregations) {
    INFO(name_of(aggregation));
    o.aggregation = aggregation;
    const auto in = make_inputs(b, {.rollout = true, .entropy = true});
    const auto result = policy_loss(in, o, denominators_from_mask(in.mask));
    CHECK(std::isfinite(result.loss.item()));
    const auto grad = result.grad_logprobs.to_host();
    const auto per_token = result.per_token_loss.to_host();
    const auto grad_entropy = result.grad_entropy->to_host();
    for (std::size_t t = 8; t < 12; ++t) {  // row 2
      CHECK(grad[t] == 0.0);
      CHECK(per_token[t] == 0.0);
      CHECK(grad_entropy[t] == 0.0);
    }
  }
  // With one valid token per row the sequence ratio is the token ratio: both levels agree.
  batch single = b;
  single.mask.assign(20, 0.0);
  for (std::size_t i = 0; i < 5; ++i) single.mask[i * 4 + i % 4] = 1.0;
  o.aggregation = loss_aggregation::seq_mean_token_mean;
  const auto in = make_inputs(single, {.entropy = true});
  const auto d = denominators_from_mask(in.mask);
  o.level = ratio_level::sequence;
  const auto seq = policy_loss(in, o, d);
  o.level = ratio_level::token;
  const auto tok = policy_loss(in, o, d);
  require_close(seq.loss.item(), tok.loss.item(), 1e-15);
  require_close(seq.grad_logprobs.to_host(), tok.grad_logprobs.to_host(), 1e-15);
}

TEST_CASE("policy loss: log-ratios of +-100 are clamped, finite, with zero gradient", "[policy_loss][edge]") {
  // Token (0,0): logp - old = 100 with A = -1 (no dual clip): unclipped pg = -A r would have gradient r;
  // clamped r = e^20 and the gradient is 0. Token (0,1): logp - old = -100 with A = -1: clipped (r < 0.8)
  // anyway. KL: ref - logp = +100 and -100 are clamped too: k3 = e^20 - 21 and e^-20 + 19, gradient 0.
  const auto logp = mat(1, 2, {-1.0, -101.0});
  const policy_loss_inputs<ref> in{.logprobs = logp,
                                   .advantages = vec({-1.0}),
                                   .mask = mat(1, 2, {1, 1}),
                                   .old_logprobs = mat(1, 2, {-101.0, -1.0}),
                                   .ref_logprobs = mat(1, 2, {99.0, -201.0})};
  policy_loss_options o;
  o.beta = 0.5;
  const auto result = policy_loss(in, o, denominators_from_mask(in.mask));
  // L = (e^20) + 0.5 (e^20 - 21) and 0.8 + 0.5 (e^-20 + 19)
  const double e20 = 485165195.4097903;
  require_close(result.per_token_loss.to_host(), {e20 + 0.5 * (e20 - 21), 0.8 + 0.5 * (2.061153622438558e-09 + 19)}, 0,
                1e-14);
  require_close(result.grad_logprobs.to_host(), {0.0, 0.0}, 0, 0);
  require_close(result.metrics.ratio_mean, (e20 + 2.061153622438558e-09) / 2, 0, 1e-14);
  CHECK(std::isfinite(result.loss.item()));
}

TEST_CASE("policy loss: an all-masked batch has loss 0", "[policy_loss][edge]") {
  auto b = random_batch(41, ratio_level::token);
  b.mask.assign(20, 0.0);
  policy_loss_options o;
  o.beta = 0.1;
  o.entropy_coef = 0.01;
  for (const auto aggregation : all_aggregations) {
    INFO(name_of(aggregation));
    o.aggregation = aggregation;
    const auto in = make_inputs(b, {.rollout = true, .entropy = true});
    const auto result = policy_loss(in, o, denominators_from_mask(in.mask));
    CHECK(result.loss.item() == 0.0);
    require_close(result.grad_logprobs.to_host(), std::vector<double>(20, 0.0), 0, 0);
    require_close(result.per_token_loss.to_host(), std::vector<double>(20, 0.0), 0, 0);
    CHECK(result.metrics.ratio_mean == 0.0);
    CHECK(result.metrics.is_weight_mean == 0.0);
  }
  // Empty batches, no rows or no columns: loss 0 and an empty gradient of the same shape.
  for (const auto s : {shape::matrix(0, 3), shape::matrix(2, 0)}) {
    INFO(to_string(s));
    const auto empty = full(ref{}, s, 0.0);
    const policy_loss_inputs<ref> in{.logprobs = empty,
                                     .advantages = full(ref{}, shape::vector(s.dims[0]), 1.0),
                                     .mask = empty,
                                     .ref_logprobs = empty};
    o.level = ratio_level::sequence;
    o.entropy_coef = 0.0;
    const auto result = policy_loss(in, o, denominators_from_mask(in.mask));
    CHECK(result.loss.item() == 0.0);
    CHECK(result.grad_logprobs.shape() == s);
  }
}

TEST_CASE("policy loss: reference_backend<float> agrees with double", "[policy_loss][float]") {
  using fref = reference_backend<float>;
  for (const auto level : {ratio_level::token, ratio_level::sequence}) {
    INFO(name_of(level));
    const auto b = random_batch(51, level);
    const parts p{.rollout = true, .entropy = true, .token_advantages = true};
    policy_loss_options o;
    o.level = level;
    o.epsilon_high = 0.28;
    o.beta = 0.04;
    o.entropy_coef = 0.01;
    o.dual_clip = 3.0;
    const auto in64 = make_inputs<ref>(b, p);
    const auto in32 = make_inputs<fref>(b, p);
    const auto d = denominators_from_mask(in64.mask);
    const auto r64 = policy_loss(in64, o, d);
    const auto r32 = policy_loss(in32, o, d);
    // float rounds every input and elementwise step (relative 6e-8 each); a few dozen steps stay below 1e-5.
    require_close(r32.loss.item(), r64.loss.item(), 1e-7, 1e-5);
    require_close(r32.per_token_loss.to_host(), r64.per_token_loss.to_host(), 1e-7, 1e-5);
    require_close(r32.grad_logprobs.to_host(), r64.grad_logprobs.to_host(), 1e-7, 1e-5);
    require_close(r32.metrics.kl_mean, r64.metrics.kl_mean, 1e-7, 1e-5);
  }
}

TEST_CASE("policy loss: TRL loss_type presets", "[policy_loss]") {
  policy_loss_options o;
  CHECK(apply_loss_type(o, loss_type::grpo, 512) == 1.0);
  CHECK(o.aggregation == loss_aggregation::seq_mean_token_mean);
  CHECK(apply_loss_type(o, loss_type::bnpo, 512) == 1.0);
  CHECK(o.aggregation == loss_aggregation::token_mean);
  CHECK(apply_loss_type(o, loss_type::dr_grpo, 512) == 512.0);
  CHECK(o.aggregation == loss_aggregation::seq_mean_token_sum_norm);
  CHECK(apply_loss_type(o, loss_type::dapo, 512) == 1.0);
  CHECK(o.aggregation == loss_aggregation::token_mean);
  require_error([&] { (void)apply_loss_type(o, loss_type::dr_grpo, 0); }, {"max_completion_length", ">= 1", "0"});
}

TEST_CASE("policy loss: invalid options and inputs name the argument", "[policy_loss][errors]") {
  const auto b = random_batch(61, ratio_level::token);
  const auto in = make_inputs(b, {.rollout = true, .entropy = true});
  const auto d = denominators_from_mask(in.mask);
  const auto fails_with = [&](const policy_loss_options& o, const std::vector<std::string>& fragments) {
    require_error([&] { (void)policy_loss(in, o, d); }, fragments);
  };
  const auto with = [](auto change) {
    policy_loss_options o;
    change(o);
    return o;
  };
  fails_with(with([](auto& o) { o.epsilon_low = -0.1; }), {"epsilon_low: must be a finite value >= 0, got -0.1"});
  fails_with(with([](auto& o) { o.epsilon_low = NAN; }), {"epsilon_low:", "finite"});
  fails_with(with([](auto& o) { o.epsilon_low = 1.0; }), {"epsilon_low: must be < 1", "got 1"});
  fails_with(with([](auto& o) { o.epsilon_high = -0.2; }), {"epsilon_high: must be a finite value >= 0, got -0.2"});
  fails_with(with([](auto& o) { o.delta = 1.0; }), {"delta: must be a finite value > 1, got 1"});
  fails_with(with([](auto& o) { o.delta = INFINITY; }), {"delta:", "> 1"});
  fails_with(with([](auto& o) { o.dual_clip = 0.5; }), {"dual_clip: must be a finite value > 1, got 0.5"});
  fails_with(with([](auto& o) { o.log_ratio_bound = 0.0; }), {"log_ratio_bound: must be a finite value > 0"});
  fails_with(with([](auto& o) { o.beta = -0.01; }), {"beta: must be a finite value >= 0, got -0.01"});
  fails_with(with([](auto& o) { o.entropy_coef = INFINITY; }), {"entropy_coef: must be finite"});
  fails_with(with([](auto& o) { o.is_cap = 0.0; }), {"is_cap: must be a finite value > 0"});
  CHECK_THROWS_AS(policy_loss(in, with([](auto& o) { o.delta = 0.5; }), d), config_error);

  // Inputs required by the options.
  const auto no_ref = make_inputs(b, {.ref = false});
  require_error([&] { (void)policy_loss(no_ref, with([](auto& o) { o.beta = 0.1; }), d); },
                {"ref_logprobs: required when beta > 0"});
  const auto no_entropy = make_inputs(b, {});
  require_error([&] { (void)policy_loss(no_entropy, with([](auto& o) { o.entropy_coef = 0.01; }), d); },
                {"entropy: required when entropy_coef != 0"});
  require_error([&] { (void)policy_loss(in, policy_loss_options{}, loss_denominators{.tokens = 0.0}); },
                {"denominators.tokens: must be a finite value > 0"});
  require_error([&] { (void)policy_loss(in, policy_loss_options{}, loss_denominators{.sequences = -1.0}); },
                {"denominators.sequences"});

  // Shapes.
  const auto bad = [&](auto change, const std::vector<std::string>& fragments) {
    auto copy = in;
    change(copy);
    require_error([&] { (void)policy_loss(copy, policy_loss_options{}, d); }, fragments);
  };
  bad([](auto& x) { x.logprobs = vec({1, 2, 3}); }, {"logprobs: expected a rank-2 tensor, got shape [3]"});
  bad([](auto& x) { x.advantages = vec({1, 2}); }, {"advantages: expected shape [5] or [5,4], got [2]"});
  bad([](auto& x) { x.advantages = mat(4, 5, std::vector<double>(20, 0.0)); }, {"advantages:", "got [4,5]"});
  bad([](auto& x) { x.mask = mat(5, 3, std::vector<double>(15, 1.0)); }, {"mask: expected shape [5,4], got [5,3]"});
  bad([](auto& x) { x.old_logprobs = mat(4, 4, std::vector<double>(16, 0.0)); },
      {"old_logprobs: expected shape [5,4]"});
  bad([](auto& x) { x.ref_logprobs = vec({0.0}); }, {"ref_logprobs: expected shape [5,4]"});
  bad([](auto& x) { x.rollout_logprobs = mat(5, 5, std::vector<double>(25, 0.0)); },
      {"rollout_logprobs: expected shape"});
  bad([](auto& x) { x.entropy = mat(1, 4, std::vector<double>(4, 0.0)); }, {"entropy: expected shape [5,4]"});
  {
    auto copy = in;
    copy.mask = mat(5, 3, std::vector<double>(15, 1.0));
    CHECK_THROWS_AS(policy_loss(copy, policy_loss_options{}, d), shape_error);
  }

  // Values: NaN / Inf anywhere (padding included) and non-0/1 masks.
  const auto poisoned = [&](std::vector<double> v, std::size_t k, double value) {
    v[k] = value;
    return mat(5, 4, v);
  };
  bad([&](auto& x) { x.logprobs = poisoned(b.logp, 3, NAN); }, {"logprobs: element 3 is nan"});
  bad([&](auto& x) { x.logprobs = poisoned(b.logp, 11, INFINITY); }, {"logprobs: element 11 is inf"});
  bad([&](auto& x) { x.advantages = vec({0, 0, NAN, 0, 0}); }, {"advantages: element 2 is nan"});
  bad([&](auto& x) { x.old_logprobs = poisoned(b.old, 0, -INFINITY); }, {"old_logprobs: element 0 is -inf"});
  bad([&](auto& x) { x.ref_logprobs = poisoned(b.ref, 5, NAN); }, {"ref_logprobs: element 5 is nan"});
  bad([&](auto& x) { x.rollout_logprobs = poisoned(b.rollout, 19, NAN); }, {"rollout_logprobs: element 19 is nan"});
  bad([&](auto& x) { x.entropy = poisoned(b.entropy, 7, INFINITY); }, {"entropy: element 7 is inf"});
  bad([&](auto& x) { x.mask = poisoned(b.mask, 1, 0.5); }, {"mask: element 1 is 0.5", "0 or 1"});
  {
    auto copy = in;
    copy.logprobs = poisoned(b.logp, 3, NAN);
    CHECK_THROWS_AS(policy_loss(copy, policy_loss_options{}, d), value_error);
  }
}
