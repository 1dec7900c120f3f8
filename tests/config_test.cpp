// SPDX-License-Identifier: Apache-2.0
// Variant names as TRL, veRL and OpenRLHF spell them, the loss-type presets, and the errors for
// names that do not exist.
#include "grpo/config.hpp"
#include "test_support.hpp"

using namespace grpo;
using namespace grpo::testing;

TEST_CASE("config: every name parses and prints back", "[config]") {
  for (const auto* name : {"group", "batch", "none"}) REQUIRE(name_of(parse_reward_scale(name)) == name);
  for (const auto* name : {"token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"})
    REQUIRE(name_of(parse_loss_aggregation(name)) == name);
  for (const auto* name : {"k1", "k2", "k3"}) REQUIRE(name_of(parse_kl_estimator(name)) == name);
  for (const auto* name : {"token", "sequence"}) REQUIRE(name_of(parse_ratio_level(name)) == name);
  for (const auto* name : {"truncate", "mask"}) REQUIRE(name_of(parse_is_correction_mode(name)) == name);
  for (const auto* name : {"sum_then_normalize", "normalize_then_sum"})
    REQUIRE(name_of(parse_reward_combination(name)) == name);
  for (const auto* name : {"grpo", "bnpo", "dr_grpo", "dapo"}) REQUIRE(name_of(parse_loss_type(name)) == name);
  // veRL's names for the same estimators.
  REQUIRE(parse_kl_estimator("low_var_kl") == kl_estimator::k3);
  REQUIRE(parse_kl_estimator("mse") == kl_estimator::k2);
}

TEST_CASE("config: TRL loss types map onto aggregation modes", "[config]") {
  REQUIRE(aggregation_of(loss_type::grpo) == loss_aggregation::seq_mean_token_mean);
  REQUIRE(aggregation_of(loss_type::bnpo) == loss_aggregation::token_mean);
  REQUIRE(aggregation_of(loss_type::dr_grpo) == loss_aggregation::seq_mean_token_sum_norm);
  REQUIRE(aggregation_of(loss_type::dapo) == loss_aggregation::token_mean);
}

TEST_CASE("config: an unknown name is an error naming the argument and the accepted values", "[config][errors]") {
  require_error([] { (void)parse_loss_type("ppo"); }, {"loss_type", "'ppo'", "grpo, bnpo, dr_grpo, dapo"});
  require_error([] { (void)parse_loss_aggregation("token-sum"); }, {"loss_agg_mode", "'token-sum'"});
  require_error([] { (void)parse_reward_scale("std"); }, {"scale_rewards", "'std'"});
  require_error([] { (void)parse_kl_estimator("k4", "--kl-estimator"); }, {"--kl-estimator", "'k4'"});
  require_error([] { (void)parse_ratio_level(""); }, {"importance_sampling_level"});
  require_error([] { (void)parse_is_correction_mode("clip"); }, {"is_correction_mode", "'clip'"});
  require_error([] { (void)parse_reward_combination("mean"); }, {"multi_objective_aggregation"});
}
