// SPDX-License-Identifier: Apache-2.0
// grpo/config.hpp: the enumerations that select algorithm variants, and their parsing from the
// names TRL, veRL and OpenRLHF use in their configs. Unknown names raise grpo::config_error naming
// the argument and listing the accepted values.
#pragma once

#include <array>
#include <string>
#include <string_view>
#include <utility>

#include "grpo/error.hpp"

namespace grpo {

/// How GRPO divides the group-centred reward (TRL `scale_rewards`).
enum class reward_scale { group, batch, none };

/// How the per-token loss is reduced to a scalar (veRL `loss_agg_mode`).
///   token_mean:              sum_{i,t} m L / N_tokens
///   seq_mean_token_mean:     (1/N_seqs) sum_i [|o_i| > 0] sum_t m L / |o_i|
///   seq_mean_token_sum:      (1/N_seqs) sum_i sum_t m L
///   seq_mean_token_sum_norm: (1/N_seqs) sum_i sum_t m L / C          (Dr. GRPO, C constant)
/// N_tokens, N_seqs and C are explicit inputs (grpo::loss_denominators).
enum class loss_aggregation { token_mean, seq_mean_token_mean, seq_mean_token_sum, seq_mean_token_sum_norm };

/// Estimator of KL(pi_theta || pi_ref) per token from x = logp_ref - logp (Schulman 2020,
/// "Approximating KL divergence"): k1 = -x, k2 = x^2 / 2, k3 = e^x - 1 - x.
enum class kl_estimator { k1, k2, k3 };

/// Importance-ratio level: per token (PPO, GRPO) or per sequence (GSPO, Zheng et al. 2025, Eq. 7).
enum class ratio_level { token, sequence };

/// What the rollout-vs-trainer importance-sampling correction does with weights above the cap:
/// truncate clamps them to the cap (TIS), mask zeroes them (MIS).
enum class is_correction_mode { truncate, mask };

/// How several reward functions combine (TRL `multi_objective_aggregation`).
enum class reward_combination { sum_then_normalize, normalize_then_sum };

/// The TRL `loss_type` presets.
enum class loss_type { grpo, bnpo, dr_grpo, dapo };

namespace detail {

template <class Enum, std::size_t N>
Enum parse_enum(std::string_view argument, std::string_view value,
                const std::array<std::pair<std::string_view, Enum>, N>& names) {
  for (const auto& [name, e] : names)
    if (name == value) return e;
  std::string accepted;
  for (const auto& [name, e] : names) accepted += (accepted.empty() ? "" : ", ") + std::string(name);
  fail<config_error>(argument, ": unknown value '", value, "' (expected one of: ", accepted, ")");
}

template <class Enum, std::size_t N>
std::string_view enum_name(Enum value, const std::array<std::pair<std::string_view, Enum>, N>& names) {
  for (const auto& [name, e] : names)
    if (e == value) return name;
  return "?";
}

inline constexpr std::array<std::pair<std::string_view, reward_scale>, 3> reward_scale_names{
    {{"group", reward_scale::group}, {"batch", reward_scale::batch}, {"none", reward_scale::none}}};
inline constexpr std::array<std::pair<std::string_view, loss_aggregation>, 4> loss_aggregation_names{
    {{"token-mean", loss_aggregation::token_mean},
     {"seq-mean-token-mean", loss_aggregation::seq_mean_token_mean},
     {"seq-mean-token-sum", loss_aggregation::seq_mean_token_sum},
     {"seq-mean-token-sum-norm", loss_aggregation::seq_mean_token_sum_norm}}};
inline constexpr std::array<std::pair<std::string_view, kl_estimator>, 5> kl_estimator_names{
    {{"k1", kl_estimator::k1}, {"k2", kl_estimator::k2}, {"k3", kl_estimator::k3}, {"mse", kl_estimator::k2},
     {"low_var_kl", kl_estimator::k3}}};
inline constexpr std::array<std::pair<std::string_view, ratio_level>, 2> ratio_level_names{
    {{"token", ratio_level::token}, {"sequence", ratio_level::sequence}}};
inline constexpr std::array<std::pair<std::string_view, is_correction_mode>, 2> is_correction_mode_names{
    {{"truncate", is_correction_mode::truncate}, {"mask", is_correction_mode::mask}}};
inline constexpr std::array<std::pair<std::string_view, reward_combination>, 2> reward_combination_names{
    {{"sum_then_normalize", reward_combination::sum_then_normalize},
     {"normalize_then_sum", reward_combination::normalize_then_sum}}};
inline constexpr std::array<std::pair<std::string_view, loss_type>, 4> loss_type_names{
    {{"grpo", loss_type::grpo}, {"bnpo", loss_type::bnpo}, {"dr_grpo", loss_type::dr_grpo}, {"dapo", loss_type::dapo}}};

}  // namespace detail

inline reward_scale parse_reward_scale(std::string_view value, std::string_view argument = "scale_rewards") {
  return detail::parse_enum(argument, value, detail::reward_scale_names);
}
inline loss_aggregation parse_loss_aggregation(std::string_view value, std::string_view argument = "loss_agg_mode") {
  return detail::parse_enum(argument, value, detail::loss_aggregation_names);
}
inline kl_estimator parse_kl_estimator(std::string_view value, std::string_view argument = "kl_estimator") {
  return detail::parse_enum(argument, value, detail::kl_estimator_names);
}
inline ratio_level parse_ratio_level(std::string_view value,
                                     std::string_view argument = "importance_sampling_level") {
  return detail::parse_enum(argument, value, detail::ratio_level_names);
}
inline is_correction_mode parse_is_correction_mode(std::string_view value,
                                                   std::string_view argument = "is_correction_mode") {
  return detail::parse_enum(argument, value, detail::is_correction_mode_names);
}
inline reward_combination parse_reward_combination(std::string_view value,
                                                   std::string_view argument = "multi_objective_aggregation") {
  return detail::parse_enum(argument, value, detail::reward_combination_names);
}
inline loss_type parse_loss_type(std::string_view value, std::string_view argument = "loss_type") {
  return detail::parse_enum(argument, value, detail::loss_type_names);
}

inline std::string_view name_of(reward_scale v) { return detail::enum_name(v, detail::reward_scale_names); }
inline std::string_view name_of(loss_aggregation v) { return detail::enum_name(v, detail::loss_aggregation_names); }
inline std::string_view name_of(kl_estimator v) { return detail::enum_name(v, detail::kl_estimator_names); }
inline std::string_view name_of(ratio_level v) { return detail::enum_name(v, detail::ratio_level_names); }
inline std::string_view name_of(is_correction_mode v) { return detail::enum_name(v, detail::is_correction_mode_names); }
inline std::string_view name_of(reward_combination v) { return detail::enum_name(v, detail::reward_combination_names); }
inline std::string_view name_of(loss_type v) { return detail::enum_name(v, detail::loss_type_names); }

/// The aggregation a TRL loss_type maps onto, once its denominator is an explicit input:
///   grpo    -> seq-mean-token-mean
///   bnpo    -> token-mean (TRL divides by the micro-batch's token count; pass that as N_tokens)
///   dr_grpo -> seq-mean-token-sum-norm with C = max_completion_length
///   dapo    -> token-mean over the whole generation batch (TRL's num_items_in_batch)
inline loss_aggregation aggregation_of(loss_type type) {
  switch (type) {
    case loss_type::grpo: return loss_aggregation::seq_mean_token_mean;
    case loss_type::bnpo: return loss_aggregation::token_mean;
    case loss_type::dr_grpo: return loss_aggregation::seq_mean_token_sum_norm;
    case loss_type::dapo: return loss_aggregation::token_mean;
  }
  detail::fail<config_error>("loss_type: unknown value");
}

}  // namespace grpo
