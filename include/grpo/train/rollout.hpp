// SPDX-License-Identifier: Apache-2.0
// grpo/train/rollout.hpp: the first room of a GRPO step (DeepSeekMath, arXiv:2402.03300, Sec. 4.1;
// R1, arXiv:2501.12948, Sec. 2.2): sample G completions of each of this rank's prompts from the
// current policy, and score every completion with the rule-based rewards. What it returns is all
// the later rooms (batching, update) need: the completions with their behaviour log-probs, each
// reward part, the total score (NaN when unscorable), accuracy and format; gather_rollout
// collects every rank's numbers for the advantages and the metrics.
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
#include "grpo/train/communicator.hpp"
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

/// Samples `group_size` completions of each problem from `policy` (seeded with `seed`, rows
/// numbered from sampling.first_row) and scores them with `rewards`.
template <trainable_policy P>
scored_rollout generate_and_score(P& policy, const tasks::task& task, const text_codec& codec,
                                  const std::vector<tasks::named_reward>& rewards, std::vector<tasks::problem> problems,
                                  std::int64_t group_size, const sampling_options& sampling, std::uint64_t seed) {
  const auto t0 = std::chrono::steady_clock::now();
  scored_rollout out;
  out.group_size = group_size;
  out.problems = std::move(problems);
  for (const auto& p : out.problems) out.prompts.push_back(codec.encode_prompt(p.prompt));
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

/// The per-row numbers of the whole generation batch, every data-parallel rank's rows in order:
/// what the advantages and the metrics are computed from, the same on every rank.
struct rollout_view {
  std::vector<double> scores;
  std::vector<std::vector<double>> parts;
  std::vector<double> accuracy;
  std::vector<double> format;
  std::vector<double> lengths;    ///< completion tokens
  std::vector<double> truncated;  ///< 1 when the completion did not stop
  double seconds = 0.0;           ///< the slowest rank's sampling time
};

/// Gathers every rank's rows of `local` (each rank holds as many).
inline rollout_view gather_rollout(communicator& comm, const scored_rollout& local) {
  rollout_view v;
  v.scores = all_gather(comm, local.scores);
  for (const auto& part : local.parts) v.parts.push_back(all_gather(comm, part));
  v.accuracy = all_gather(comm, local.accuracy);
  v.format = all_gather(comm, local.format);
  std::vector<double> lengths, truncated;
  for (const auto& c : local.completions) {
    lengths.push_back(static_cast<double>(c.tokens.size()));
    truncated.push_back(c.stopped ? 0.0 : 1.0);
  }
  v.lengths = all_gather(comm, lengths);
  v.truncated = all_gather(comm, truncated);
  const auto seconds = all_gather(comm, std::vector<double>{local.seconds});
  v.seconds = *std::max_element(seconds.begin(), seconds.end());
  return v;
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
inline void add_rollout_metrics(metrics_record& m, const rollout_view& r,
                                const std::vector<tasks::named_reward>& rewards) {
  for (std::size_t q = 0; q < r.parts.size(); ++q) {
    const auto [mean, std] = mean_std(r.parts[q]);
    m.set("reward/" + rewards[q].name + "/mean", mean);
    m.set("reward/" + rewards[q].name + "/std", std);
  }
  double length_sum = 0, length_max = 0, truncated = 0;
  for (std::size_t i = 0; i < r.lengths.size(); ++i) {
    length_sum += r.lengths[i];
    length_max = std::max(length_max, r.lengths[i]);
    truncated += r.truncated[i];
  }
  const double rows = static_cast<double>(std::max<std::size_t>(r.lengths.size(), 1));
  m.set("accuracy", mean_std(r.accuracy).first);
  m.set("format_rate", mean_std(r.format).first);
  m.set("response_length/mean", length_sum / rows);
  m.set("response_length/max", length_max);
  m.set("response_length/clip_ratio", truncated / rows);
  m.set("perf/rollout_tokens_per_s", length_sum / r.seconds);
}

}  // namespace grpo::train
