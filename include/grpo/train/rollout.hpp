// SPDX-License-Identifier: Apache-2.0
// grpo/train/rollout.hpp: the first room of a GRPO step (DeepSeekMath, arXiv:2402.03300, Sec. 4.1;
// R1, arXiv:2501.12948, Sec. 2.2): draw P prompts, sample G completions of each from the current
// policy, and score every completion with the rule-based rewards. What it returns is all the
// later rooms (batching, update) and the metrics need: the completions with their behaviour
// log-probs, each reward part, the total score (NaN when unscorable), accuracy and format.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "grpo/concepts.hpp"
#include "grpo/tasks/rewards.hpp"
#include "grpo/tasks/task.hpp"
#include "grpo/train/codec.hpp"
#include "grpo/train/config.hpp"
#include "grpo/train/metrics.hpp"

namespace grpo::train {

/// How the rollouts of a run are sampled: the config's temperature, top-k, top-p and generation
/// limit, stopping on the codec's stop tokens.
inline sampling_options rollout_sampling(const train_config& c, const text_codec& codec) {
  sampling_options o;
  o.temperature = c.temperature;
  o.top_k = c.top_k;
  o.top_p = c.top_p;
  o.max_new_tokens = c.max_completion_length;
  o.stop_tokens = codec.stop_tokens();
  return o;
}

/// P prompts x G scored completions; row k*G + j is completion j of prompt k.
struct scored_rollout {
  std::int64_t group_size = 1;
  std::vector<tasks::problem> problems;         ///< [P]
  std::vector<std::vector<token_id>> prompts;   ///< [P], encoded
  std::vector<sampled_completion> completions;  ///< [P*G]
  std::vector<double> scores;                   ///< [P*G] sum_q w_q part_q; NaN when a part is unscorable
  std::vector<std::vector<double>> parts;       ///< [Q][P*G] each reward function's value (NaN: unscorable)
  std::vector<double> accuracy;                 ///< [P*G] 1 / 0, NaN when unscorable (always measured)
  std::vector<double> format;                   ///< [P*G] 1 / 0
  double seconds = 0.0;                         ///< wall time of the sampling

  std::size_t rows() const { return completions.size(); }
};

/// Draws `prompts` problems from the task's training split with `data_rng`, samples `group_size`
/// completions of each from `policy` (seeded with `seed`), and scores them with `rewards`.
template <trainable_policy P>
scored_rollout generate_and_score(P& policy, const tasks::task& task, const text_codec& codec,
                                  const std::vector<tasks::named_reward>& rewards, std::int64_t prompts,
                                  std::int64_t group_size, const sampling_options& sampling, std::uint64_t seed,
                                  std::mt19937_64& data_rng) {
  const auto t0 = std::chrono::steady_clock::now();
  scored_rollout out;
  out.group_size = group_size;
  for (std::int64_t k = 0; k < prompts; ++k) {
    out.problems.push_back(task.sample_train(data_rng));
    out.prompts.push_back(codec.encode_prompt(out.problems.back().prompt));
  }
  out.completions = policy.generate(out.prompts, sampling, seed, group_size);
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  const tasks::accuracy_reward accuracy(task);
  const tasks::format_reward format;
  const std::size_t rows = out.completions.size();
  out.scores.assign(rows, 0.0);
  out.accuracy.assign(rows, 0.0);
  out.format.assign(rows, 0.0);
  out.parts.assign(rewards.size(), std::vector<double>(rows));
  for (std::size_t r = 0; r < rows; ++r) {
    const std::string& prompt = out.problems[r / static_cast<std::size_t>(group_size)].prompt;
    const std::string text = codec.decode(out.completions[r].tokens);
    const auto a = accuracy(prompt, text);
    out.accuracy[r] = a ? *a : std::numeric_limits<double>::quiet_NaN();
    out.format[r] = *format(prompt, text);
    double total = 0;
    for (std::size_t q = 0; q < rewards.size(); ++q) {
      out.parts[q][r] = grpo::score(rewards[q].function, prompt, text);
      total += rewards[q].weight * out.parts[q][r];
    }
    out.scores[r] = total;
  }
  return out;
}

/// Mean and unbiased standard deviation of the non-NaN values (NaN when there are none / fewer
/// than two).
inline std::pair<double, double> mean_std(const std::vector<double>& v) {
  double n = 0, s = 0;
  for (const double x : v)
    if (!std::isnan(x)) n += 1, s += x;
  if (n == 0) return {std::nan(""), std::nan("")};
  const double mean = s / n;
  double q = 0;
  for (const double x : v)
    if (!std::isnan(x)) q += (x - mean) * (x - mean);
  return {mean, n > 1 ? std::sqrt(q / (n - 1)) : std::nan("")};
}

/// The rollout's metrics, veRL-style keys: each reward part ("reward/<name>/mean", "/std"),
/// accuracy, format_rate, response lengths and the share truncated at the limit, sampling speed.
inline void add_rollout_metrics(metrics_record& m, const scored_rollout& r,
                                const std::vector<tasks::named_reward>& rewards) {
  for (std::size_t q = 0; q < r.parts.size(); ++q) {
    const auto [mean, std] = mean_std(r.parts[q]);
    m.set("reward/" + rewards[q].name + "/mean", mean);
    m.set("reward/" + rewards[q].name + "/std", std);
  }
  double length_sum = 0, length_max = 0, truncated = 0;
  for (const auto& c : r.completions) {
    const auto len = static_cast<double>(c.tokens.size());
    length_sum += len;
    length_max = std::max(length_max, len);
    truncated += c.stopped ? 0 : 1;
  }
  const double rows = static_cast<double>(std::max<std::size_t>(r.rows(), 1));
  m.set("accuracy", mean_std(r.accuracy).first);
  m.set("format_rate", mean_std(r.format).first);
  m.set("response_length/mean", length_sum / rows);
  m.set("response_length/max", length_max);
  m.set("response_length/clip_ratio", truncated / rows);
  m.set("perf/rollout_tokens_per_s", length_sum / r.seconds);
}

}  // namespace grpo::train
