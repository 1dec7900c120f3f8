// SPDX-License-Identifier: Apache-2.0
// grpo/model/sampling.hpp: drawing one token from a logits row with temperature, top-k and top-p
// (Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration", Sec. 3.1), applied in
// that order as Hugging Face's logits processors and vLLM do: p = softmax(z / T); keep the k most
// probable; keep the smallest prefix of those (most probable first, ties by lower id) whose mass
// reaches top_p of the kept mass; draw from the kept tokens renormalized. T = 0 is greedy.
// Log-probs (TRL issue #6789): with truncation the distribution actually sampled from is not the
// full softmax, so two are reported. `logprob` is log q(token) under the truncated, renormalized
// distribution (the true behaviour policy, 0 for greedy); `full_logprob` is log softmax(z / T)
// (T = 1 for greedy), which is what a trainer recomputes from the logits (TRL, veRL and OpenRLHF
// trainers use the full vocabulary). logprob = full_logprob - log(kept mass) >= full_logprob, with
// equality when nothing is truncated (vLLM's processed log-probs are the renormalized kind).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include "grpo/concepts.hpp"
#include "grpo/detail/random.hpp"
#include "grpo/error.hpp"
#include "grpo/model/parameters.hpp"

namespace grpo::model {

/// One drawn token.
struct sampled_token {
  token_id id = 0;
  double logprob = 0.0;       ///< log q(id) under the distribution actually sampled from
  double full_logprob = 0.0;  ///< log softmax(z / T)[id] over the whole vocabulary (T = 1 when greedy)
};

/// The generator seed of row `row` of a sampling call with `seed`.
inline std::uint64_t row_seed(std::uint64_t seed, std::uint64_t row) {
  return grpo::detail::mix_seed(seed, row);
}

/// Throws config_error naming the field: temperature 0 or finite and > 0 with a finite inverse,
/// top_k >= 0, top_p in (0, 1], max_new_tokens >= 0, every stop token in [0, vocab).
inline void validate(const sampling_options& options, std::int64_t vocab) {
  GRPO_CHECK(std::isfinite(options.temperature) && options.temperature >= 0.0 &&
                 (options.temperature == 0.0 || std::isfinite(1.0 / options.temperature)),
             config_error, "options.temperature: must be 0 (greedy) or a finite value > 0 with a finite inverse, got ",
             options.temperature);
  GRPO_CHECK(options.top_k >= 0, config_error, "options.top_k: must be >= 0 (0 disables it), got ", options.top_k);
  GRPO_CHECK(std::isfinite(options.top_p) && options.top_p > 0.0 && options.top_p <= 1.0, config_error,
             "options.top_p: must be in (0, 1], got ", options.top_p);
  GRPO_CHECK(options.max_new_tokens >= 0, config_error, "options.max_new_tokens: must be >= 0, got ",
             options.max_new_tokens);
  for (std::size_t i = 0; i < options.stop_tokens.size(); ++i)
    GRPO_CHECK(options.stop_tokens[i] >= 0 && options.stop_tokens[i] < vocab, config_error,
               "options.stop_tokens: element ", i, " is ", options.stop_tokens[i], ", out of range [0, ", vocab, ")");
}

/// Draws one token from `logits` (finite) with options already validated. `lse` is
/// log sum_v exp(z_v / T) at the temperature used for full_logprob (1 when greedy), as
/// row_softmax_stats computes it; `scratch` is reused between calls.
template <class T>
sampled_token sample_token(std::span<const T> logits, double lse, const sampling_options& options, std::mt19937_64& gen,
                           std::vector<std::pair<double, token_id>>& scratch) {
  const auto vocab = static_cast<std::int64_t>(logits.size());
  if (options.temperature == 0.0) {
    const auto best = std::max_element(logits.begin(), logits.end()) - logits.begin();  // first of ties
    return {static_cast<token_id>(best), 0.0, static_cast<double>(logits[static_cast<std::size_t>(best)]) - lse};
  }
  const double inverse = 1.0 / options.temperature;
  const auto log_p = [&](std::int64_t v) {
    return inverse * static_cast<double>(logits[static_cast<std::size_t>(v)]) - lse;
  };
  const bool top_k = options.top_k > 0 && options.top_k < vocab;
  const bool top_p = options.top_p < 1.0;
  const double u = grpo::detail::uniform01(gen);
  if (!top_k && !top_p) {
    // Inverse CDF in id order. Rounding can leave u above the accumulated total; the draw then
    // falls to the last token of positive probability.
    double total = 0.0;
    std::int64_t chosen = -1;
    for (std::int64_t v = 0; v < vocab; ++v) {
      const double p = std::exp(log_p(v));
      if (p <= 0.0) continue;
      chosen = v;
      total += p;
      if (u < total) break;
    }
    return {static_cast<token_id>(chosen), log_p(chosen), log_p(chosen)};
  }
  scratch.clear();
  for (std::int64_t v = 0; v < vocab; ++v) scratch.emplace_back(std::exp(log_p(v)), static_cast<token_id>(v));
  std::sort(scratch.begin(), scratch.end(), [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  std::size_t kept = top_k ? static_cast<std::size_t>(options.top_k) : scratch.size();
  if (top_p) {
    double top_k_mass = 0.0;
    for (std::size_t i = 0; i < kept; ++i) top_k_mass += scratch[i].first;
    double before = 0.0;
    std::size_t prefix = 0;
    while (prefix < kept && (prefix == 0 || before < options.top_p * top_k_mass)) before += scratch[prefix++].first;
    kept = prefix;
  }
  double mass = 0.0;
  for (std::size_t i = 0; i < kept; ++i) mass += scratch[i].first;
  const double target = u * mass;
  double total = 0.0;
  std::size_t pick = 0;
  for (; pick + 1 < kept; ++pick) {
    total += scratch[pick].first;
    if (target < total) break;
  }
  const auto id = scratch[pick].second;
  if (kept == scratch.size()) return {id, log_p(id), log_p(id)};
  return {id, log_p(id) - std::log(mass), log_p(id)};
}

}  // namespace grpo::model
