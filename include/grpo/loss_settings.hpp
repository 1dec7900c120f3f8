// SPDX-License-Identifier: Apache-2.0
// grpo/loss_settings.hpp: the one translator from user-facing, TRL-named settings (GRPOConfig:
// loss_type, epsilon, epsilon_high, delta, beta, importance_sampling_level, scale_rewards,
// vllm_importance_sampling_*; veRL: loss_agg_mode, clip_ratio_c, entropy_coeff) to the library's
// option structs. `grpo loss` and the trainer both call resolve(), so the same settings mean the
// same loss everywhere. Unset optionals are derived as TRL derives them: epsilon_high = epsilon,
// the aggregation from loss_type, Dr. GRPO's constant C = max_completion_length.
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "grpo/advantages.hpp"
#include "grpo/config.hpp"
#include "grpo/error.hpp"
#include "grpo/policy_loss.hpp"
#include "grpo/validate.hpp"

namespace grpo {

/// The policy-loss and advantage settings as a user spells them. Names are TRL GRPOConfig's where
/// TRL has the setting.
struct loss_settings {
  std::string loss_type = "dapo";               ///< grpo | bnpo | dr_grpo | dapo
  std::optional<std::string> loss_agg_mode{};   ///< veRL's; overrides loss_type's aggregation
  std::string scale_rewards = "group";          ///< group | batch | none
  double adv_epsilon = 1e-4;                    ///< A = (r - mean) / (std + adv_epsilon)
  double epsilon = 0.2;                         ///< lower clip: ratio >= 1 - epsilon
  std::optional<double> epsilon_high{};         ///< upper clip; unset: epsilon (TRL)
  std::optional<double> delta{};                ///< two-sided cap of the unclipped ratio (> 1)
  std::optional<double> dual_clip{};            ///< dual-clip constant c > 1 (veRL clip_ratio_c)
  double beta = 0.0;                            ///< KL coefficient
  std::string kl_estimator = "k3";              ///< k1 | k2 | k3
  std::string importance_sampling_level = "token";  ///< token | sequence (GSPO)
  /// Dr. GRPO's constant C; unset: the fallback resolve() is given (the generation limit, or the
  /// batch's T where there is no generation).
  std::optional<std::int64_t> max_completion_length{};
  std::string is_mode = "truncate";  ///< truncate | mask, or TRL's token_truncate ... sequence_mask
  std::optional<std::string> is_level{};  ///< token | sequence; unset: from is_mode's prefix, else token
  double is_cap = 3.0;
  double log_ratio_bound = 20.0;
  double entropy_coef = 0.0;

  friend bool operator==(const loss_settings&, const loss_settings&) = default;
};

/// The settings as the library's options.
struct resolved_loss_settings {
  loss_type type = loss_type::dapo;
  policy_loss_options policy;
  grpo_advantage_options advantage;
  std::int64_t max_completion_length = 1;
  double constant = 1.0;  ///< the denominators' C (max_completion_length for seq-mean-token-sum-norm)
};

/// Resolves `s`; `max_completion_length` stands in for an unset s.max_completion_length.
/// `prefix` is prepended to every setting name in an error ("--" for command-line flags, whose
/// names then read with dashes: "--epsilon-high").
/// \throws config_error naming the setting for an unknown name, or the option (validate of
///         policy_loss_options and grpo_advantage_options) for an invalid value.
inline resolved_loss_settings resolve(const loss_settings& s, std::int64_t max_completion_length,
                                      std::string_view prefix = "") {
  const auto name = [&](std::string_view setting) {
    std::string out(prefix);
    for (const char c : setting) out += !prefix.empty() && c == '_' ? '-' : c;
    return out;
  };
  resolved_loss_settings r;
  r.type = parse_loss_type(s.loss_type, name("loss_type"));
  r.max_completion_length = s.max_completion_length.value_or(max_completion_length);
  GRPO_CHECK(r.max_completion_length >= 1, config_error, name("max_completion_length"), ": must be >= 1, got ",
             r.max_completion_length);
  apply_loss_type(r.policy, r.type, r.max_completion_length);
  if (s.loss_agg_mode) r.policy.aggregation = parse_loss_aggregation(*s.loss_agg_mode, name("loss_agg_mode"));
  // C only enters seq-mean-token-sum-norm; it is Dr. GRPO's max_completion_length whichever setting chose that mode.
  r.constant = r.policy.aggregation == loss_aggregation::seq_mean_token_sum_norm
                   ? static_cast<double>(r.max_completion_length)
                   : 1.0;
  // The library's validate() below checks the same ranges under the option structs' names
  // (epsilon_low, ...); these checks come first so a message names the setting the user wrote.
  detail::expect_non_negative(s.epsilon, name("epsilon"));
  GRPO_CHECK(s.epsilon < 1.0, config_error, name("epsilon"),
             ": must be < 1 so that the clip interval [1 - epsilon, 1 + epsilon_high] stays positive, got ",
             s.epsilon);
  if (s.epsilon_high) detail::expect_non_negative(*s.epsilon_high, name("epsilon_high"));
  if (s.delta)
    GRPO_CHECK(std::isfinite(*s.delta) && *s.delta > 1.0, config_error, name("delta"),
               ": must be a finite value > 1, got ", *s.delta);
  if (s.dual_clip)
    GRPO_CHECK(std::isfinite(*s.dual_clip) && *s.dual_clip > 1.0, config_error, name("dual_clip"),
               ": must be a finite value > 1, got ", *s.dual_clip);
  detail::expect_non_negative(s.beta, name("beta"));
  detail::expect_positive(s.log_ratio_bound, name("log_ratio_bound"));
  GRPO_CHECK(std::isfinite(s.entropy_coef), config_error, name("entropy_coef"), ": must be finite, got ",
             s.entropy_coef);
  detail::expect_positive(s.is_cap, name("is_cap"));
  detail::expect_non_negative(s.adv_epsilon, name("adv_epsilon"));
  r.policy.epsilon_low = s.epsilon;
  r.policy.epsilon_high = s.epsilon_high.value_or(s.epsilon);
  r.policy.delta = s.delta;
  r.policy.dual_clip = s.dual_clip;
  r.policy.beta = s.beta;
  r.policy.kl = parse_kl_estimator(s.kl_estimator, name("kl_estimator"));
  r.policy.level = parse_ratio_level(s.importance_sampling_level, name("importance_sampling_level"));
  r.policy.log_ratio_bound = s.log_ratio_bound;
  r.policy.entropy_coef = s.entropy_coef;
  r.policy.is_cap = s.is_cap;
  // TRL spells the mode with its level (vllm_importance_sampling_mode = "sequence_mask"); plain
  // truncate | mask take the level from is_level (default token).
  std::string_view mode = s.is_mode;
  std::optional<ratio_level> level_from_mode;
  for (const auto& [mode_prefix, level] :
       {std::pair{std::string_view("token_"), ratio_level::token}, std::pair{std::string_view("sequence_"), ratio_level::sequence}})
    if (mode.starts_with(mode_prefix)) {
      level_from_mode = level;
      mode.remove_prefix(mode_prefix.size());
    }
  r.policy.is_mode = parse_is_correction_mode(mode, name("is_mode"));
  r.policy.is_level = level_from_mode.value_or(ratio_level::token);
  if (s.is_level) {
    const auto level = parse_ratio_level(*s.is_level, name("is_level"));
    GRPO_CHECK(!level_from_mode || *level_from_mode == level, config_error, name("is_level"), ": ", *s.is_level,
               " contradicts ", name("is_mode"), " ", s.is_mode);
    r.policy.is_level = level;
  }
  r.advantage.scale = parse_reward_scale(s.scale_rewards, name("scale_rewards"));
  r.advantage.epsilon = s.adv_epsilon;
  validate(r.policy);
  detail::validate(r.advantage);
  return r;
}

}  // namespace grpo
