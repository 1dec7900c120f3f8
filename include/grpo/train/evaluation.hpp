// SPDX-License-Identifier: Apache-2.0
// grpo/train/evaluation.hpp: held-out evaluation of any trainable policy on a task: greedy accuracy, format
// rate and pass@k by the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language
// Models Trained on Code", Eq. 1 and its numerically stable product form):
//   pass@k = E_problems[ 1 - C(n - c, k) / C(n, k) ]  with n samples per problem, c correct,
//   1 - prod_{i = n-c+1}^{n} (1 - k / i), and exactly 1 when n - c < k.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "grpo/error.hpp"
#include "grpo/concepts.hpp"
#include "grpo/detail/random.hpp"
#include "grpo/tasks/rewards.hpp"
#include "grpo/tasks/task.hpp"
#include "grpo/train/codec.hpp"
#include "grpo/train/communicator.hpp"
#include "grpo/train/config.hpp"

namespace grpo::train {

/// Unbiased pass@k of one problem from n samples of which c are correct.
/// \throws value_error naming "n", "c" or "k" unless 0 <= c <= n, 1 <= k <= n.
inline double pass_at_k(std::int64_t n, std::int64_t c, std::int64_t k) {
  GRPO_CHECK(n >= 1, value_error, "n: must be >= 1, got ", n);
  GRPO_CHECK(c >= 0 && c <= n, value_error, "c: must be in [0, n] = [0, ", n, "], got ", c);
  GRPO_CHECK(k >= 1 && k <= n, value_error, "k: must be in [1, n] = [1, ", n, "], got ", k);
  if (n - c < k) return 1.0;
  double all_wrong = 1.0;
  for (std::int64_t i = n - c + 1; i <= n; ++i) all_wrong *= 1.0 - static_cast<double>(k) / static_cast<double>(i);
  return 1.0 - all_wrong;
}

/// What evaluate() measures.
struct eval_options {
  std::int64_t problems = 200;          ///< first problems of the held-out split (clamped to its size)
  std::int64_t max_new_tokens = 64;
  std::int64_t num_samples = 0;         ///< n for pass@k; 0: greedy only
  std::vector<std::int64_t> pass_k{};   ///< each in [1, num_samples]
  double temperature = 1.0;             ///< of the pass@k samples
  std::uint64_t seed = 0;
};

struct eval_result {
  std::int64_t problems = 0;
  double accuracy = 0.0;     ///< greedy
  double format_rate = 0.0;  ///< greedy completions with the exact R1 format
  std::vector<std::pair<std::int64_t, double>> pass_at{};  ///< (k, pass@k)
};

/// The held-out evaluation a config asks for: its eval.* settings, the generation limit, and the
/// run's evaluation seed (the same for `grpo train` before and after RL and for `grpo eval`).
inline eval_options eval_options_for(const train_config& c) {
  eval_options o;
  o.problems = c.eval_size;
  o.max_new_tokens = c.max_completion_length;
  o.num_samples = c.eval_num_samples;
  o.pass_k = c.eval_num_samples > 0 ? c.eval_pass_k : std::vector<std::int64_t>{};
  o.temperature = c.eval_temperature;
  o.seed = grpo::detail::mix_seed(c.seed, 3);
  return o;
}

/// Greedy (and, with num_samples, sampled) completions of the held-out problems, scored by the
/// task's checker exactly as the accuracy reward scores them (the prompt string passed as given).
/// With several data-parallel ranks each evaluates a contiguous share of the problems (rows
/// seeded by their index in the whole set, so the result equals one process evaluating all).
template <trainable_policy P>
eval_result evaluate(P& policy, const tasks::task& task, const text_codec& codec, const eval_options& options,
                     communicator& comm) {
  GRPO_CHECK(options.problems >= 0, config_error, "problems: must be >= 0, got ", options.problems);
  const auto count = std::min<std::int64_t>(options.problems, static_cast<std::int64_t>(task.heldout_size()));
  eval_result result;
  result.problems = count;
  if (count == 0) return result;
  const auto world = static_cast<std::int64_t>(comm.world_size()), rank = static_cast<std::int64_t>(comm.rank());
  const std::int64_t share = (count + world - 1) / world;
  const std::int64_t begin = std::min(count, rank * share), end = std::min(count, begin + share);
  std::vector<tasks::problem> problems;
  std::vector<std::vector<token_id>> prompts;
  for (std::int64_t i = begin; i < end; ++i) {
    problems.push_back(task.heldout(static_cast<std::size_t>(i)));
    prompts.push_back(codec.encode_prompt(problems.back().prompt));
  }
  const tasks::accuracy_reward accuracy(task);
  const auto correct = [&](std::size_t i, const completion& c) {
    const auto r = accuracy(problems[i].prompt, codec.decode(c.tokens));
    return r && *r == 1.0;
  };
  // Per problem of the whole set, zero outside this rank's share, summed over ranks.
  std::vector<double> hits(static_cast<std::size_t>(count), 0.0), formatted(hits.size(), 0.0), solved(hits.size(), 0.0);
  sampling_options greedy;
  greedy.temperature = 0.0;
  greedy.max_new_tokens = options.max_new_tokens;
  greedy.stop_tokens = codec.stop_tokens();
  greedy.first_row = static_cast<std::uint64_t>(begin);
  const bool sample = options.num_samples > 0 && !options.pass_k.empty();
  if (!prompts.empty()) {
    const auto out = policy.generate(prompts, greedy, options.seed, 1);
    for (std::size_t i = 0; i < out.size(); ++i) {
      hits[static_cast<std::size_t>(begin) + i] = correct(i, out[i]) ? 1 : 0;
      formatted[static_cast<std::size_t>(begin) + i] = tasks::has_r1_format(codec.decode(out[i].tokens)) ? 1 : 0;
    }
    if (sample) {
      sampling_options sampled = greedy;
      sampled.temperature = options.temperature;
      sampled.first_row = static_cast<std::uint64_t>(begin * options.num_samples);
      const auto samples = policy.generate(prompts, sampled, options.seed ^ 0x5eedULL, options.num_samples);
      for (std::size_t i = 0; i < problems.size(); ++i)
        for (std::int64_t j = 0; j < options.num_samples; ++j)
          solved[static_cast<std::size_t>(begin) + i] +=
              correct(i, samples[i * static_cast<std::size_t>(options.num_samples) + static_cast<std::size_t>(j)]) ? 1 : 0;
    }
  }
  for (auto* v : {&hits, &formatted, &solved}) comm.all_reduce_sum(std::span<double>(*v));
  double hit_total = 0, formatted_total = 0;
  for (std::int64_t i = 0; i < count; ++i) {
    hit_total += hits[static_cast<std::size_t>(i)];
    formatted_total += formatted[static_cast<std::size_t>(i)];
  }
  result.accuracy = hit_total / static_cast<double>(count);
  result.format_rate = formatted_total / static_cast<double>(count);
  if (sample) {
    std::vector<double> totals(options.pass_k.size(), 0.0);
    for (std::int64_t i = 0; i < count; ++i)
      for (std::size_t q = 0; q < options.pass_k.size(); ++q)
        totals[q] += pass_at_k(options.num_samples, static_cast<std::int64_t>(solved[static_cast<std::size_t>(i)]),
                               options.pass_k[q]);
    for (std::size_t q = 0; q < options.pass_k.size(); ++q)
      result.pass_at.emplace_back(options.pass_k[q], totals[q] / static_cast<double>(count));
  }
  return result;
}

/// One process evaluating every problem.
template <trainable_policy P>
eval_result evaluate(P& policy, const tasks::task& task, const text_codec& codec, const eval_options& options) {
  single_process one;
  return evaluate(policy, task, codec, options, one);
}

/// One line: "accuracy 66.0% | format 100.0% | pass@1 26.0% | pass@4 61.5% (200 held-out problems)".
inline std::string describe(const eval_result& e) {
  std::ostringstream out;
  out.setf(std::ios::fixed);
  out.precision(1);
  out << "accuracy " << 100 * e.accuracy << "% | format " << 100 * e.format_rate << "%";
  for (const auto& [k, v] : e.pass_at) out << " | pass@" << k << " " << 100 * v << "%";
  out << " (" << e.problems << " held-out problems)";
  return out.str();
}

}  // namespace grpo::train
