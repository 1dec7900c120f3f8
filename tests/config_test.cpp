// SPDX-License-Identifier: Apache-2.0
// Variant names as TRL, veRL and OpenRLHF spell them, the loss-type presets, and the errors for
// names that do not exist; the up-front validation of a training config (ranges, limits,
// overflow-checked derived sizes, messages naming the config key) and of the loss settings.
#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "grpo/config.hpp"
#include "grpo/loss_settings.hpp"
#include "grpo/train/config.hpp"
#include "grpo/train/limits.hpp"
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

// ---------------------------------------------------------------------------------------------
// train_config: the whole configuration is validated up front (issue 15), errors name the key.

namespace {

grpo::train::train_config with(std::initializer_list<const char*> overrides) {
  grpo::train::train_config c;
  for (const auto* o : overrides) grpo::train::apply_override(c, o);
  return c;
}

void refused(std::initializer_list<const char*> overrides, const std::vector<std::string>& fragments) {
  require_error([&] { with(overrides).validate(); }, fragments);
}

}  // namespace

TEST_CASE("train_config: derived sizes are overflow-checked and bounded", "[config][train][errors]") {
  // Issue 15: 2^62 * 4 overflowed to 0 completions per step and ran 1,500 empty steps.
  refused({"per_device_train_batch_size=4611686018427387904", "gradient_accumulation_steps=4", "num_generations=2"},
          {"per_device_train_batch_size: must be an integer in [1, 65536], got 4611686018427387904"});
  refused({"per_device_train_batch_size=9223372036854775807"}, {"per_device_train_batch_size", "9223372036854775807"});
  refused({"per_device_train_batch_size=65536", "gradient_accumulation_steps=2"},
          {"completions per step", "65536 * 2 = 131072", "exceeds the limit of 65536"});
  refused({"per_device_train_batch_size=1024", "gradient_accumulation_steps=64", "max_completion_length=4096",
           "model.max_position_embeddings=8192"},
          {"tokens per step", "65536 * 4096 = 268435456", "134217728"});
  refused({"eval.size=1000000", "eval.num_samples=1000"}, {"eval.size * eval.num_samples", "1000000000", "1048576"});
  grpo::train::train_config c;
  c.per_device_train_batch_size = std::numeric_limits<std::int64_t>::max();
  c.gradient_accumulation_steps = 4;
  require_error([&] { (void)c.generation_batch_size(); }, {"per_device_train_batch_size * gradient_accumulation_steps"});
  REQUIRE(grpo::train::limits::checked_product(std::int64_t{1} << 31, std::int64_t{1} << 31) == std::int64_t{1} << 62);
  REQUIRE(!grpo::train::limits::checked_product(std::int64_t{1} << 32, std::int64_t{1} << 31));
  REQUIRE(!grpo::train::limits::checked_product(-1, 1));
}

TEST_CASE("train_config: memory budgets name the key and the limit", "[config][train][errors]") {
  refused({"sft.batch_size=1000000000000"}, {"sft.batch_size: must be an integer in [1, 65536], got 1000000000000"});
  refused({"sft.examples=5000000"}, {"sft.examples", "[1, 4194304]"});
  refused({"eval.num_samples=2000"}, {"eval.num_samples", "[0, 1024]"});
  refused({"num_iterations=5000"}, {"num_iterations", "[1, 1024]"});
  refused({"max_steps=2000000000000000"}, {"max_steps", "[0, 1099511627776]"});
  refused({"threads=100000"}, {"threads", "[0, 4096]"});
  refused({"kernels=sse9"}, {"kernels", "sse9", "auto, generic, avx2 or avx512"});
  refused({"model.hidden_size=65536", "model.intermediate_size=1000000"},
          {"model: hidden_size, intermediate_size and num_hidden_layers give", "1073741824"});
  refused({"model.max_position_embeddings=2000000"}, {"model.max_position_embeddings", "1048576"});
  // With model.init the architecture is the checkpoint's: [model] bounds are not applied here.
  with({"model.init=some/dir", "max_completion_length=200"}).validate();
}

TEST_CASE("train_config: ranges and cross-field checks name the config key", "[config][train][errors]") {
  refused({"task.min_digits=4294967297"}, {"task.min_digits: must be an integer in [1, 9], got 4294967297"});
  refused({"task.min_digits=3", "task.max_digits=2"}, {"task.max_digits", "[3, 9]", "got 2"});
  refused({"task.heldout_size=-1"}, {"task.heldout_size: must be an integer in [1, 4194304], got -1"});
  refused({"output_dir="}, {"output_dir", "empty"});
  refused({"top_p=0"}, {"top_p: must be in (0, 1]"});
  refused({"top_k=-1"}, {"top_k", "got -1"});
  refused({"warmup_ratio=2"}, {"warmup_ratio: must be in [0, 1], got 2"});
  refused({"sft.warmup_ratio=-1"}, {"sft.warmup_ratio", "-1"});
  refused({"eval.temperature=-1"}, {"eval.temperature", "-1"});
  refused({"epsilon=-0.1"}, {"epsilon: must be a finite value >= 0, got -0.1"});
  refused({"epsilon=1"}, {"epsilon: must be < 1"});
  refused({"epsilon_high=-0.1"}, {"epsilon_high: must be a finite value >= 0"});
  refused({"adv_epsilon=-1"}, {"adv_epsilon: must be"});
  refused({"max_completion_length=96"}, {"max_completion_length: 96 leaves no position", "max_position_embeddings = 96"});
  refused({"model.hidden_size=130"}, {"model.hidden_size: must be divisible by num_attention_heads"});
  refused({"reward_weights=[1, 1e400]"}, {"reward_weights"});
  refused({"task.operations=+", "task.teacher_errors=1"}, {"task.teacher_errors: must be in [0, 1), got 1"});
  refused({"task.operations=+", "task.teacher_errors=-0.1"}, {"task.teacher_errors: must be in [0, 1), got -0.1"});
  refused({"task.teacher_errors=0.3"}, {"task.teacher_errors: the weak teacher writes column additions only",
                                        "task.operations \"+-*\""});
  refused({"task.operations=+", "task.teacher_errors=0.3", "task.name=countdown"}, {"task.teacher_errors", "countdown"});
  with({"task.operations=+", "task.teacher_errors=0.3", "sft.verified_only=true"}).validate();
  with({}).validate();
}

TEST_CASE("train_config: --set integers past 64 bits and --config directories are errors naming them",
          "[config][train][errors]") {
  grpo::train::train_config c;
  require_error([&] { grpo::train::apply_override(c, "task.min_digits=99999999999999999999"); },
                {"task.min_digits: integer '99999999999999999999' is out of range"});
  require_error([&] { grpo::train::apply_override(c, "seed=-99999999999999999999"); }, {"seed: integer", "out of range"});
  require_error([&] { (void)grpo::train::toml::parse("x = 9223372036854775808\n", "c.toml"); },
                {"c.toml:1: integer '9223372036854775808' is out of range"});
  REQUIRE(grpo::train::toml::parse("x = -9223372036854775808\n").entries[0].item.integer ==
          std::numeric_limits<std::int64_t>::min());
  require_error([&] { grpo::train::apply_override(c, "seed=-1"); }, {"seed: must be >= 0, got -1"});
  grpo::train::apply_override(c, "task.name=countdown");  // a bare word is still a string
  REQUIRE(c.task == "countdown");
  const auto dir = std::filesystem::temp_directory_path();
  require_error([&] { (void)grpo::train::load_config(dir); }, {dir.string(), "is a directory"});
}

TEST_CASE("loss_settings: resolve names the user's setting, with the flag prefix", "[config][errors]") {
  grpo::loss_settings s;
  s.epsilon = -0.1;
  require_error([&] { (void)grpo::resolve(s, 8); }, {"epsilon: must be a finite value >= 0, got -0.1"});
  require_error([&] { (void)grpo::resolve(s, 8, "--"); }, {"--epsilon: must be"});
  s = {};
  s.epsilon_high = -1.0;
  require_error([&] { (void)grpo::resolve(s, 8, "--"); }, {"--epsilon-high: must be"});
  s = {};
  s.adv_epsilon = -1.0;
  require_error([&] { (void)grpo::resolve(s, 8); }, {"adv_epsilon: must be"});
  s = {};
  s.is_cap = 0.0;
  require_error([&] { (void)grpo::resolve(s, 8, "--"); }, {"--is-cap: must be"});
}
