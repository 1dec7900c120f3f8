// SPDX-License-Identifier: Apache-2.0
// Advantage estimators on hand-worked numbers (GRPO in every scale mode, RLOO, whitening,
// REINFORCE++ and its baseline, GAE against a direct loop, multi-reward combination), their
// invariants and edge cases (NaN scores, singleton and constant groups, float storage), and
// their error messages.
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "grpo/advantages.hpp"
#include "test_support.hpp"

using namespace grpo;
using namespace grpo::testing;

namespace {

constexpr double nan_v = std::numeric_limits<double>::quiet_NaN();

using fref = reference_backend<float>;

tensor<fref> fvec(const std::vector<double>& v) {
  return make_tensor(fref{}, v, shape::vector(static_cast<std::int64_t>(v.size())));
}

// The example of the tests below: two groups of four, one success in two and one in four.
const std::vector<double> example_scores{1, 0, 0, 1, 0, 0, 0, 1};

}  // namespace

TEST_CASE("grpo_advantages: hand-worked example, scale group", "[advantages][grpo]") {
  const auto r = grpo_advantages(vec(example_scores), group_layout::consecutive(4));
  // Group 0: mean 0.5, deviations +-0.5, var = 4 * 0.25 / 3 = 1/3, std = 0.5773502691896258:
  //   0.5 / (0.5773502691896258 + 1e-4) = 0.8658754297607016.
  // Group 1: mean 0.25, deviations -0.25 (x3), 0.75, var = (3 * 0.0625 + 0.5625) / 3 = 0.25, std = 0.5:
  //   0.25 / 0.5001 = 0.4999000199960008, 0.75 / 0.5001 = 1.4997000599880024.
  const double a = 0.8658754297607016, b = 0.4999000199960008, c = 1.4997000599880024;
  require_close(r.advantages.to_host(), {a, -a, -a, a, -b, -b, -b, c});
  require_close(r.zero_std_fraction, 0.0);
  // Batch: mean 3/8; sum of squares 3 * 0.625^2 + 5 * 0.375^2 = 1.875, var = 1.875 / 7.
  require_close(r.reward_mean, 0.375);
  require_close(r.reward_std, std::sqrt(1.875 / 7.0));
}

TEST_CASE("grpo_advantages: hand-worked example, scale batch keeps the group mean", "[advantages][grpo]") {
  const auto r =
      grpo_advantages(vec(example_scores), group_layout::consecutive(4), {.scale = reward_scale::batch});
  // Batch std sqrt(1.875 / 7) = 0.5175491695067657, + 1e-4 = 0.5176491695067657; group deviations:
  //   0.5 / 0.5176491695067657 = 0.9659051524730883, 0.25 / ... = 0.48295257623654414, 0.75 / ... = 1.4488577287096325.
  const double a = 0.9659051524730883, b = 0.48295257623654414, c = 1.4488577287096325;
  require_close(r.advantages.to_host(), {a, -a, -a, a, -b, -b, -b, c});
}

TEST_CASE("grpo_advantages: hand-worked example, scale none (Dr. GRPO)", "[advantages][grpo]") {
  const auto r = grpo_advantages(vec(example_scores), group_layout::consecutive(4), {.scale = reward_scale::none});
  require_close(r.advantages.to_host(), {0.5, -0.5, -0.5, 0.5, -0.25, -0.25, -0.25, 0.75});
}

TEST_CASE("grpo_advantages: with scale none, the advantages of each group sum to 0", "[advantages][grpo]") {
  const auto scores = uniform(24, -3.0, 5.0, 11);
  std::vector<std::int64_t> group_ids(24);
  for (std::size_t i = 0; i < group_ids.size(); ++i) group_ids[i] = static_cast<std::int64_t>((i * 7) % 5);
  for (const auto& layout : {group_layout::consecutive(6), group_layout::from_ids(group_ids)}) {
    const auto a = grpo_advantages(vec(scores), layout, {.scale = reward_scale::none}).advantages.to_host();
    const auto g = grpo_advantages(vec(scores), layout).advantages.to_host();
    std::vector<double> sums(6, 0.0), scaled_sums(6, 0.0);
    for (std::size_t i = 0; i < a.size(); ++i) {
      const auto k = static_cast<std::size_t>(layout.group_ids.empty() ? static_cast<std::int64_t>(i) / 6
                                                                        : layout.group_ids[i]);
      sums[k] += a[i];
      scaled_sums[k] += g[i];
    }
    require_close(sums, std::vector<double>(6, 0.0), 1e-12);
    require_close(scaled_sums, std::vector<double>(6, 0.0), 1e-12);
  }
}

TEST_CASE("grpo_advantages: explicit ids equal the consecutive layout, any labels work", "[advantages][grpo]") {
  const auto consecutive = grpo_advantages(vec(example_scores), group_layout::consecutive(4)).advantages.to_host();
  const auto explicit_ids =
      grpo_advantages(vec(example_scores), group_layout::from_ids({0, 0, 0, 0, 1, 1, 1, 1})).advantages.to_host();
  require_close(explicit_ids, consecutive, 0.0, 0.0);
  // Sparse, unsorted labels (prompt indices of a filtered batch) group the same way.
  const auto labels =
      grpo_advantages(vec(example_scores), group_layout::from_ids({42, 42, 42, 42, 7, 7, 7, 7})).advantages.to_host();
  require_close(labels, consecutive, 0.0, 0.0);
  // Interleaved rows: permuting rows together with their ids permutes the advantages.
  const std::vector<std::size_t> perm{4, 0, 5, 1, 6, 2, 7, 3};
  std::vector<double> permuted_scores(8), want(8);
  std::vector<std::int64_t> permuted_ids(8);
  for (std::size_t i = 0; i < 8; ++i) {
    permuted_scores[i] = example_scores[perm[i]];
    permuted_ids[i] = static_cast<std::int64_t>(perm[i] / 4);
    want[i] = consecutive[perm[i]];
  }
  require_close(grpo_advantages(vec(permuted_scores), group_layout::from_ids(permuted_ids)).advantages.to_host(), want,
                0.0, 0.0);
}

TEST_CASE("grpo_advantages: NaN scores are excluded from the statistics and get 0", "[advantages][grpo]") {
  const auto r = grpo_advantages(vec({1, nan_v, 0, 0.5}), group_layout::consecutive(4));
  // Scorable {1, 0, 0.5}: mean 0.5, deviations 0.5, -0.5, 0, var = 0.5 / 2 = 0.25, std 0.5.
  require_close(r.advantages.to_host(), {0.5 / 0.5001, 0.0, -0.5 / 0.5001, 0.0});
  require_close(r.reward_mean, 0.5);
  require_close(r.reward_std, 0.5);
  const auto none = grpo_advantages(vec({1, nan_v, 0, 0.5}), group_layout::consecutive(4), {.scale = reward_scale::none});
  require_close(none.advantages.to_host(), {0.5, 0.0, -0.5, 0.0});
}

TEST_CASE("grpo_advantages: groups with < 2 scorable members get 0 in every mode", "[advantages][grpo]") {
  // Group 0 {1, 0} is normal; group 1 is a singleton {5}; group 2 {NaN, 3} has one scorable member.
  const auto scores = vec({1, 0, 5, nan_v, 3});
  const auto layout = group_layout::from_ids({0, 0, 1, 2, 2});
  // Group 0: mean 0.5, std sqrt(0.5) = 0.7071067811865476: 0.5 / 0.7072067811865476 = 0.7070067953266834.
  const double a = 0.7070067953266834;
  const auto group = grpo_advantages(scores, layout);
  require_close(group.advantages.to_host(), {a, -a, 0, 0, 0});
  require_close(group.zero_std_fraction, 2.0 / 3.0);
  require_close(grpo_advantages(scores, layout, {.scale = reward_scale::none}).advantages.to_host(),
                {0.5, -0.5, 0, 0, 0});
  // Batch: scorable {1, 0, 5, 3}, mean 2.25, sum of squares 1.5625 + 5.0625 + 7.5625 + 0.5625 = 14.75.
  const double batch_std = std::sqrt(14.75 / 3.0);
  require_close(grpo_advantages(scores, layout, {.scale = reward_scale::batch}).advantages.to_host(),
                {0.5 / (batch_std + 1e-4), -0.5 / (batch_std + 1e-4), 0, 0, 0});
  const auto rloo = rloo_advantages(scores, layout);
  require_close(rloo.advantages.to_host(), {1, -1, 0, 0, 0});
}

TEST_CASE("grpo_advantages: constant groups are exactly 0, also in float storage", "[advantages][grpo][float]") {
  // float(0.45) = 0.449999988079071; three of them sum (in double, rounded to float) to
  // 1.3499999046325684, whose float mean differs from 0.45f by 2.98e-8 = one deviation per member;
  // that gives a residue std of 3.65e-8 and, without a floor and epsilon = 0, an advantage of
  // 2.98e-8 / 3.65e-8 = 0.8165 for every member: rounding turned into a signal (NeMo-RL #4161).
  const auto residue = fvec({0.45, 0.45, 0.45, 1, 0, 0});
  const auto layout = group_layout::consecutive(3);
  // Group 1: mean 1/3, deviations 2/3, -1/3, -1/3, std sqrt(1/3):
  //   (2/3) / (0.5773502691896258 + 1e-4) = 1.1545005730142688, (1/3) / ... = 0.5772502865071344.
  for (const auto scale : {reward_scale::group, reward_scale::none, reward_scale::batch}) {
    const auto a = grpo_advantages(residue, layout, {.scale = scale}).advantages.to_host();
    CHECK(a[0] == 0.0);
    CHECK(a[1] == 0.0);
    CHECK(a[2] == 0.0);
  }
  require_close(grpo_advantages(residue, layout).advantages.to_host(),
                {0, 0, 0, 1.1545005730142688, -0.5772502865071344, -0.5772502865071344}, 1e-6, 1e-6);
  const auto unfloored =
      grpo_advantages(residue, layout, {.epsilon = 0.0, .std_floor = 0.0}).advantages.to_host();
  require_close({unfloored[0], unfloored[1], unfloored[2]}, {0.8164965510368347, 0.8164965510368347, 0.8164965510368347},
                1e-6, 1e-6);
  CHECK(grpo_advantages(residue, layout).zero_std_fraction == 0.5);
  const auto rloo = rloo_advantages(residue, layout).advantages.to_host();
  CHECK((rloo[0] == 0.0 && rloo[1] == 0.0 && rloo[2] == 0.0));

  // The non-dyadic 0.35 in a group of 13 also leaves float residue (sum 4.55 rounded to float).
  std::vector<double> thirteen(13, 0.35);
  thirteen.push_back(1.0);
  thirteen.push_back(0.0);
  const auto r = grpo_advantages(fvec(thirteen), group_layout::from_ids({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1}));
  const auto a = r.advantages.to_host();
  for (std::size_t i = 0; i < 13; ++i) CHECK(a[i] == 0.0);
  require_close({a[13], a[14]}, {0.7070067953266834, -0.7070067953266834}, 1e-6, 1e-6);
  // Integer 0/1 rewards are exact in float: an all-zero group is 0 without needing the floor.
  const auto zeros = grpo_advantages(fvec({0, 0, 0, 0}), group_layout::consecutive(4), {.std_floor = 0.0});
  require_close(zeros.advantages.to_host(), {0, 0, 0, 0}, 0.0, 0.0);
  CHECK(zeros.zero_std_fraction == 1.0);
}

TEST_CASE("grpo_advantages: std_floor decides what counts as constant", "[advantages][grpo]") {
  // {0.35, 0.35 + 1e-9, 0.35}: std = 5.77e-10; with no floor and no epsilon the 1e-9 becomes
  // deviations -1/3e-9, 2/3e-9 over that std: -0.57735, 1.1547.
  const auto scores = vec({0.35, 0.35 + 1e-9, 0.35});
  const auto layout = group_layout::consecutive(3);
  require_close(grpo_advantages(scores, layout).advantages.to_host(), {0, 0, 0}, 0.0, 0.0);
  require_close(grpo_advantages(scores, layout, {.epsilon = 0.0, .std_floor = 0.0}).advantages.to_host(),
                {-0.5773502050908695, 1.1547006024780024, -0.5773502050908695}, 1e-6, 1e-6);
  // Exactly equal scores with floor and epsilon 0 are still 0, not 0/0.
  require_close(grpo_advantages(vec({2, 2, 2}), layout, {.epsilon = 0.0, .std_floor = 0.0}).advantages.to_host(),
                {0, 0, 0}, 0.0, 0.0);
  // Batch scale: the group {1, 0} has a std above the floor, but a floor above the batch std zeroes all.
  const auto batch = grpo_advantages(vec({1, 0, 1, 1}), group_layout::consecutive(2),
                                     {.scale = reward_scale::batch, .std_floor = 0.6});
  require_close(batch.advantages.to_host(), {0, 0, 0, 0}, 0.0, 0.0);
}

TEST_CASE("grpo_advantages: empty and unscorable batches", "[advantages][grpo]") {
  const auto empty = grpo_advantages(vec({}), group_layout::consecutive(4));
  CHECK(empty.advantages.shape() == shape::vector(0));
  CHECK(empty.zero_std_fraction == 0.0);
  CHECK(std::isnan(empty.reward_mean));
  const auto unscorable = grpo_advantages(vec({nan_v, nan_v}), group_layout::consecutive(2));
  require_close(unscorable.advantages.to_host(), {0, 0}, 0.0, 0.0);
  CHECK(unscorable.zero_std_fraction == 1.0);
  CHECK(std::isnan(unscorable.reward_mean));
  CHECK(std::isnan(unscorable.reward_std));
  const auto one = grpo_advantages(vec({nan_v, 4}), group_layout::consecutive(2));
  CHECK(one.reward_mean == 4.0);
  CHECK(std::isnan(one.reward_std));
}

TEST_CASE("rloo_advantages: hand-worked leave-one-out baselines", "[advantages][rloo]") {
  const auto r = rloo_advantages(vec(example_scores), group_layout::consecutive(4));
  // Group 0: 1 - (0 + 0 + 1) / 3 = 2/3 and 0 - 2/3. Group 1: 0 - 1/3 (x3) and 1 - 0.
  require_close(r.advantages.to_host(), {2.0 / 3, -2.0 / 3, -2.0 / 3, 2.0 / 3, -1.0 / 3, -1.0 / 3, -1.0 / 3, 1.0});
  require_close(r.reward_mean, 0.375);
  // NaN left out: scorable {1, 0, 0.5}: 1 - (0 + 0.5) / 2 = 0.75, 0 - 0.75, 0.5 - 0.5.
  require_close(rloo_advantages(vec({1, nan_v, 0, 0.5}), group_layout::consecutive(4)).advantages.to_host(),
                {0.75, 0, -0.75, 0});
  // Each group's advantages sum to 0.
  const auto a = rloo_advantages(vec(uniform(12, -1, 1, 3)), group_layout::consecutive(4)).advantages.to_host();
  for (std::size_t g = 0; g < 3; ++g) require_close(a[4 * g] + a[4 * g + 1] + a[4 * g + 2] + a[4 * g + 3], 0.0, 1e-14);
}

TEST_CASE("advantage estimators model the concept", "[advantages][estimator]") {
  STATIC_REQUIRE(advantage_estimator<grpo_estimator, ref>);
  STATIC_REQUIRE(advantage_estimator<rloo_estimator, fref>);
  const auto run = [](const auto& estimator) {
    return estimator.compute(vec(example_scores), group_layout::consecutive(4)).advantages.to_host();
  };
  require_close(run(grpo_estimator{{.scale = reward_scale::none}}), {0.5, -0.5, -0.5, 0.5, -0.25, -0.25, -0.25, 0.75});
  require_close(run(rloo_estimator{}),
                rloo_advantages(vec(example_scores), group_layout::consecutive(4)).advantages.to_host());
}

TEST_CASE("masked_whiten: hand-worked, unbiased and population", "[advantages][whiten]") {
  const auto x = mat(2, 3, {1, 2, 100, 3, 4, -7});
  const auto mask = mat(2, 3, {1, 1, 0, 1, 1, 0});
  // Masked-in {1, 2, 3, 4}: mean 2.5, sum of squares 5; unbiased var 5/3, population var 1.25.
  const double su = 1.0 / std::sqrt(5.0 / 3.0 + 1e-8), sp = 1.0 / std::sqrt(1.25 + 1e-8);
  require_close(masked_whiten(x, mask).to_host(), {-1.5 * su, -0.5 * su, 0, 0.5 * su, 1.5 * su, 0});
  require_close(masked_whiten(x, mask, {.unbiased = false}).to_host(), {-1.5 * sp, -0.5 * sp, 0, 0.5 * sp, 1.5 * sp, 0});
  require_close(masked_whiten(x, mask, {.shift_mean = false}).to_host(), {su, 2 * su, 0, 3 * su, 4 * su, 0});
  // Whitened values have mean 0 and unbiased variance var / (var + eps) ~ 1.
  const auto w = masked_whiten(mat(3, 4, uniform(12, -5, 5, 9)), mat(3, 4, {1, 1, 1, 0, 1, 0, 1, 1, 1, 1, 1, 1}))
                     .to_host();
  double total = 0, squares = 0;
  for (double v : w) total += v, squares += v * v;
  require_close(total, 0.0, 1e-12);
  require_close(squares / 9.0, 1.0, 1e-7);
}

TEST_CASE("masked_whiten: empty mask and a single token", "[advantages][whiten]") {
  require_close(masked_whiten(mat(1, 2, {3, 4}), mat(1, 2, {0, 0})).to_host(), {0, 0}, 0.0, 0.0);
  require_close(masked_whiten(mat(1, 2, {3, 4}), mat(1, 2, {0, 1})).to_host(), {0, 0}, 0.0, 0.0);
  // Uncentred, one token: variance 0, so 4 / sqrt(1e-8) = 4e4.
  require_close(masked_whiten(mat(1, 2, {3, 4}), mat(1, 2, {0, 1}), {.shift_mean = false}).to_host(), {0, 4e4}, 0.0,
                1e-12);
}

TEST_CASE("reinforce_pp_advantages: discounted returns through a hole, then whitening", "[advantages][reinforce]") {
  const auto rewards = mat(2, 4, {0, 0, 0, 1, 0, 7, 1, 0});
  const auto mask = mat(2, 4, {1, 1, 1, 1, 1, 0, 1, 0});
  // gamma 0.5. Row 0: 1, 0.5, 0.25, 0.125 from the end. Row 1: t3 padding 0; t2 = 1; t1 is a hole
  // (its 7 is ignored, the return passes undiscounted); t0 = 0 + 0.5 * 1 = 0.5.
  // (veRL would reset at the hole and give t0 = 0; OpenRLHF would discount across it: 0.25.)
  // Masked-in returns {0.125, 0.25, 0.5, 1, 0.5, 1}: mean 0.5625, sum of squared deviations
  // 0.6796875, unbiased var 0.1359375; times 1 / sqrt(0.1359375 + 1e-8):
  const double a = -1.186611087690954, b = -0.8475793483506813, c = -0.16951586967013627, d = 1.186611087690954;
  require_close(reinforce_pp_advantages(rewards, mask, 0.5).to_host(), {a, b, c, d, c, 0, d, 0});
  // gamma = 0: every token's return is its own reward.
  const auto r0 = reinforce_pp_advantages(rewards, mask, 0.0, {.shift_mean = false}).to_host();
  // Masked-in rewards {0, 0, 0, 1, 0, 1}: mean 1/3, var (4/9 * 4 + 2 * 4/9) / 5 = 8/30.
  const double s = 1.0 / std::sqrt(8.0 / 30.0 + 1e-8);
  require_close(r0, {0, 0, 0, s, 0, 0, s, 0});
}

TEST_CASE("reinforce_pp_baseline_advantages: centred scores over tokens, then whitening",
          "[advantages][reinforce]") {
  // Groups {1, 0} and {0, 1}: centred +-0.5. Row lengths 3, 2, 1, 3. Tokens 0.5 (x3), -0.5 (x2),
  // -0.5 (x1), 0.5 (x3): mean 1.5 / 9 = 1/6; deviations 1/3 (x6), -2/3 (x3); sum of squares
  // 6/9 + 12/9 = 2, var 2 / 8 = 0.25: (1/3) / sqrt(0.25 + 1e-8) = 0.6666666533333336, -1.3333333066666673.
  const double p = 0.6666666533333336, n = -1.3333333066666673;
  const auto mask = mat(4, 3, {1, 1, 1, 1, 1, 0, 1, 0, 0, 1, 1, 1});
  require_close(
      reinforce_pp_baseline_advantages(vec({1, 0, 0, 1}), group_layout::consecutive(2), mask).to_host(),
      {p, p, p, n, n, 0, n, 0, 0, p, p, p});
  // A singleton group and an unscorable row get 0 and do not move the statistics.
  const auto mask6 = mat(6, 3, {1, 1, 1, 1, 1, 0, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0});
  require_close(reinforce_pp_baseline_advantages(vec({1, 0, 0, 1, 9, nan_v}), group_layout::from_ids({0, 0, 1, 1, 2, 1}),
                                                 mask6)
                    .to_host(),
                {p, p, p, n, n, 0, n, 0, 0, p, p, p, 0, 0, 0, 0, 0, 0});
}

namespace {

// veRL's GAE loop, written out: masked-out tokens carry the next value and the running advantage.
std::pair<std::vector<double>, std::vector<double>> gae_loop(std::int64_t rows, std::int64_t cols,
                                                             const std::vector<double>& r, const std::vector<double>& v,
                                                             const std::vector<double>& m, double gamma,
                                                             double lambda) {
  std::vector<double> adv(r.size()), ret(r.size());
  for (std::int64_t i = 0; i < rows; ++i) {
    double next_value = 0, last = 0;
    for (std::int64_t t = cols - 1; t >= 0; --t) {
      const auto k = static_cast<std::size_t>(i * cols + t);
      const double delta = r[k] + gamma * next_value - v[k];
      const double candidate = delta + gamma * lambda * last;
      next_value = m[k] * v[k] + (1 - m[k]) * next_value;
      last = m[k] * candidate + (1 - m[k]) * last;
      adv[k] = m[k] * last;
      ret[k] = m[k] * (last + v[k]);
    }
  }
  return {adv, ret};
}

}  // namespace

TEST_CASE("gae_advantages: hand-worked, with a masked middle token", "[advantages][gae]") {
  // gamma 0.9, lambda 0.8 (gamma lambda 0.72). Row 0, all valid: delta = 0.9*0.6 - 0.5 = 0.04,
  // 0.9*0.7 - 0.6 = 0.03, 1 - 0.7 = 0.3; A2 = 0.3, A1 = 0.03 + 0.72*0.3 = 0.246, A0 = 0.04 + 0.72*0.246
  // = 0.21712; returns A + V = 0.71712, 0.846, 1.0.
  // Row 1, middle masked (its reward 9 and value 9 are skipped): A2 = 0.3; t1 carries A = 0.3 and
  // V = 0.7; delta0 = 0.9*0.7 - 0.5 = 0.13, A0 = 0.13 + 0.72*0.3 = 0.346; returns 0.846, -, 1.0.
  const auto rewards = mat(2, 3, {0, 0, 1, 0, 9, 1});
  const auto values = mat(2, 3, {0.5, 0.6, 0.7, 0.5, 9, 0.7});
  const auto mask = mat(2, 3, {1, 1, 1, 1, 0, 1});
  const auto r = gae_advantages(rewards, values, mask, 0.9, 0.8, false);
  require_close(r.advantages.to_host(), {0.21712, 0.246, 0.3, 0.346, 0, 0.3}, 1e-15);
  require_close(r.returns.to_host(), {0.71712, 0.846, 1.0, 0.846, 0, 1.0}, 1e-15);
  // Whitened advantages are masked_whiten of the raw ones; returns are unchanged.
  const auto w = gae_advantages(rewards, values, mask, 0.9, 0.8);
  require_close(w.advantages.to_host(), masked_whiten(r.advantages, mask).to_host());
  require_close(w.returns.to_host(), r.returns.to_host());
}

TEST_CASE("gae_advantages: matches the direct loop on random rows with holes and padding", "[advantages][gae]") {
  const std::int64_t rows = 4, cols = 7;
  const auto r = uniform(28, -1, 1, 5), v = uniform(28, -2, 2, 6);
  const std::vector<double> m{1, 1, 1, 1, 1, 1, 1,  //
                              1, 0, 0, 1, 1, 0, 0,  //
                              0, 1, 1, 0, 1, 1, 1,  //
                              0, 0, 0, 0, 0, 0, 0};
  for (const auto& [gamma, lambda] : {std::pair{1.0, 1.0}, std::pair{0.99, 0.95}, std::pair{0.5, 0.0}}) {
    const auto [adv, ret] = gae_loop(rows, cols, r, v, m, gamma, lambda);
    const auto got = gae_advantages(mat(rows, cols, r), mat(rows, cols, v), mat(rows, cols, m), gamma, lambda, false);
    require_close(got.advantages.to_host(), adv, 1e-14);
    require_close(got.returns.to_host(), ret, 1e-14);
  }
}

TEST_CASE("multi_reward_advantages: both combinations, hand-worked", "[advantages][multi]") {
  // Two groups of two, two functions, weights {1, 0.5}; row 2's second function could not score.
  const auto rewards = mat(4, 2, {1, 0, 0, 1, 1, nan_v, 0, 0});
  const std::vector<double> weights{1.0, 0.5};
  const auto layout = group_layout::consecutive(2);
  // Raw weighted sums: 1, 0.5, 1 (nansum), 0: mean 0.625, var (0.375^2 * 2 + 0.125^2 + 0.625^2) / 3 = 0.6875 / 3.
  const double raw_std = 0.47871355387816905;

  // sum_then_normalize: groups {1, 0.5} (std sqrt(0.125)) and {1, 0} (std sqrt(0.5)):
  // 0.25 / (0.3535533905932738 + 1e-4) = 0.7069068377390945, 0.5 / (0.7071067811865476 + 1e-4) = 0.7070067953266834.
  const auto s = multi_reward_advantages(rewards, weights, layout, reward_combination::sum_then_normalize);
  require_close(s.advantages.to_host(), {0.7069068377390945, -0.7069068377390945, 0.7070067953266834,
                                         -0.7070067953266834});
  require_close(s.reward_mean, 0.625);
  require_close(s.reward_std, raw_std);

  // normalize_then_sum: function 0 z = +-0.5 / (sqrt(0.5) + 1e-4) = +-z with z = 0.7070067953266834 in
  // both groups; function 1: group 0 -+z, group 1 {NaN, 0} has one scorable member: 0.
  // R = z - 0.5z, -z + 0.5z, z, -z = 0.5z, -0.5z, z, -z: mean 0, sum of squares 2.5 z^2, batch std
  // z sqrt(2.5 / 3) = 0.6454059501831043; R / (0.6454059501831043 + 1e-4):
  const auto n = multi_reward_advantages(rewards, weights, layout, reward_combination::normalize_then_sum);
  require_close(n.advantages.to_host(), {0.5476377058384464, -0.5476377058384464, 1.0952754116768928,
                                         -1.0952754116768928});
  require_close(n.reward_mean, 0.625);
  require_close(n.reward_std, raw_std);
  CHECK(n.zero_std_fraction == 0.0);
}

TEST_CASE("multi_reward_advantages: unscorable rows and the single-function case", "[advantages][multi]") {
  const std::vector<double> one{2.0};
  // One function with weight w: sum_then_normalize is grpo_advantages of w r.
  const auto scores = uniform(8, 0, 1, 21);
  require_close(multi_reward_advantages(mat(8, 1, scores), one, group_layout::consecutive(4),
                                        reward_combination::sum_then_normalize)
                    .advantages.to_host(),
                grpo_advantages(vec(scores) * 2.0, group_layout::consecutive(4)).advantages.to_host());
  // A row every function failed on is unscorable: advantage 0, left out of the group.
  const std::vector<double> weights{1.0, 1.0};
  const auto rewards = mat(3, 2, {1, 0, nan_v, nan_v, 0, 0});
  for (const auto combination : {reward_combination::sum_then_normalize, reward_combination::normalize_then_sum}) {
    const auto r = multi_reward_advantages(rewards, weights, group_layout::consecutive(3), combination);
    const auto a = r.advantages.to_host();
    CHECK(a[1] == 0.0);
    CHECK(a[0] > 0.0);
    CHECK(a[2] < 0.0);
    require_close(r.reward_mean, 0.5);
  }
  // A group constant in every function has exactly 0 advantages in both modes.
  const auto constant = mat(4, 2, {0.3, 1, 0.3, 1, 1, 0, 0, 0});
  for (const auto combination : {reward_combination::sum_then_normalize, reward_combination::normalize_then_sum}) {
    const auto r = multi_reward_advantages(constant, weights, group_layout::consecutive(2), combination);
    const auto a = r.advantages.to_host();
    CHECK((a[0] == 0.0 && a[1] == 0.0));
    CHECK(r.zero_std_fraction == 0.5);
  }
}

TEST_CASE("advantages: error messages name the argument", "[advantages][errors]") {
  const auto scores = vec(example_scores);
  require_error([&] { (void)grpo_advantages(mat(2, 4, example_scores), group_layout::consecutive(4)); },
                {"scores", "rank-1", "[2,4]"});
  require_error([&] { (void)grpo_advantages(scores, group_layout::consecutive(3)); },
                {"group_size: 3 does not divide the batch of 8"});
  require_error([&] { (void)grpo_advantages(scores, group_layout{}); }, {"group_size", "> 0", "got 0"});
  require_error([&] { (void)grpo_advantages(scores, group_layout::consecutive(-2)); }, {"group_size", "got -2"});
  require_error([&] { (void)grpo_advantages(scores, group_layout::from_ids({0, 0, 1})); },
                {"group_ids", "expected 8", "got 3"});
  require_error([&] { (void)grpo_advantages(scores, group_layout::from_ids({0, 0, 0, 0, 1, 1, -1, 1})); },
                {"group_ids", "element 6", "-1"});
  require_error([&] { (void)grpo_advantages(scores, group_layout::consecutive(4), {.epsilon = -0.1}); },
                {"epsilon", ">= 0", "-0.1"});
  require_error([&] { (void)grpo_advantages(scores, group_layout::consecutive(4), {.std_floor = nan_v}); },
                {"std_floor", ">= 0"});
  require_error([&] { (void)grpo_advantages(vec({1, INFINITY}), group_layout::consecutive(2)); },
                {"scores", "element 1", "inf"});
  require_error([&] { (void)rloo_advantages(vec({1, -INFINITY}), group_layout::consecutive(2)); },
                {"scores", "element 1"});
  require_error([&] { (void)rloo_advantages(scores, group_layout::consecutive(5)); }, {"group_size"});

  const auto x = mat(1, 3, {1, 2, 3}), mask = mat(1, 3, {1, 1, 0});
  require_error([&] { (void)masked_whiten(x, mat(1, 2, {1, 1})); }, {"mask", "[1,3]", "[1,2]"});
  require_error([&] { (void)masked_whiten(x, mat(1, 3, {1, 0.5, 0})); }, {"mask", "element 1", "0 or 1"});
  require_error([&] { (void)masked_whiten(mat(1, 3, {1, nan_v, 3}), mask); }, {"x", "element 1"});
  require_error([&] { (void)masked_whiten(x, mask, {.epsilon = 0.0}); }, {"epsilon", "> 0"});

  require_error([&] { (void)reinforce_pp_advantages(x, mask, 1.5); }, {"gamma", "[0, 1]", "1.5"});
  require_error([&] { (void)reinforce_pp_advantages(vec({1, 2}), mask); }, {"token_rewards", "rank-2"});
  require_error([&] { (void)reinforce_pp_advantages(mat(1, 3, {1, INFINITY, 0}), mask); },
                {"token_rewards", "element 1"});
  require_error([&] { (void)reinforce_pp_baseline_advantages(vec({1, 0}), group_layout::consecutive(2), mask); },
                {"mask", "expected 2 rows"});

  require_error([&] { (void)gae_advantages(x, x, mask, 0.9, -0.1); }, {"lambda", "[0, 1]", "-0.1"});
  require_error([&] { (void)gae_advantages(x, x, mask, NAN, 0.9); }, {"gamma", "[0, 1]"});
  require_error([&] { (void)gae_advantages(x, mat(3, 1, {1, 2, 3}), mask, 0.9, 0.9); }, {"values", "[1,3]", "[3,1]"});
  require_error([&] { (void)gae_advantages(x, mat(1, 3, {0, 0, nan_v}), mask, 0.9, 0.9); }, {"values", "element 2"});

  const auto rewards = mat(2, 2, {1, 0, 0, 1});
  const std::vector<double> two{1.0, 1.0}, three{1.0, 1.0, 1.0}, bad{1.0, INFINITY};
  const auto layout = group_layout::consecutive(2);
  require_error([&] { (void)multi_reward_advantages(rewards, three, layout, reward_combination::sum_then_normalize); },
                {"weights", "expected 2", "got 3"});
  require_error([&] { (void)multi_reward_advantages(rewards, bad, layout, reward_combination::normalize_then_sum); },
                {"weights", "element 1", "finite"});
  require_error([&] { (void)multi_reward_advantages(vec({1, 2}), two, layout, reward_combination::sum_then_normalize); },
                {"rewards", "rank-2"});
  require_error(
      [&] {
        (void)multi_reward_advantages(mat(2, 2, {1, INFINITY, 0, 0}), two, layout, reward_combination::sum_then_normalize);
      },
      {"rewards", "element 1", "inf"});
  require_error(
      [&] { (void)multi_reward_advantages(rewards, two, group_layout::consecutive(3), reward_combination::normalize_then_sum); },
      {"group_size: 3 does not divide the batch of 2"});
}
