// SPDX-License-Identifier: Apache-2.0
// grpo train / sft / eval / sample: the R1 recipe, its cold start alone, the held-out evaluation
// and a look at completions, for whichever policy the config names (policies.hpp). Each writes
// progress to standard output.
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <optional>
#include <ostream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "commands.hpp"
#include "grpo/error.hpp"
#include "grpo/tasks/rewards.hpp"
#include "grpo/train/train.hpp"
#include "grpo/train/run_directory.hpp"
#include "parallel.hpp"
#include "policies.hpp"

namespace grpo::cli {

train::train_config make_config(const run_flags& flags) {
  train::train_config c;
  // A resumed run starts from the checkpoint's config.toml (the run's effective settings); a
  // --config given beside --resume is read over it, so each of its keys wins, as a TRL user who
  // resumes with the same script and GRPOConfig expects; --set comes last.
  if (!flags.resume.empty()) c = train::load_config(train::resolve_checkpoint(flags.resume) / "config.toml");
  if (!flags.config_path.empty()) c = train::load_config(flags.config_path, c);
  for (const auto& o : flags.overrides) train::apply_override(c, o);
  if (flags.seed) c.seed = *flags.seed;
  if (!flags.output_dir.empty()) c.output_dir = flags.output_dir;
  if (!flags.model.empty()) c.init = flags.model;
  if (!flags.policy.empty()) c.policy = flags.policy;
  if (!flags.device.empty()) c.device = flags.device;
  c.validate();
  return c;
}

int train_command(train::train_config c, const std::string& resume, std::int64_t stop_after, bool sft_only,
                  bool overwrite) {
  if (sft_only) c.max_steps = 0;
  rank_group ranks(c);
  std::ostream* log = ranks.main_rank() ? &std::cout : nullptr;
  if (ranks.main_rank()) {
    // Fail before loading anything when the directory is another run's; the trainer holds the lock for the run.
    const train::run_directory_lock probe(c.output_dir);
    train::check_run_directory(c.output_dir, resume, overwrite, c.init);
  }
  auto task = train::make_task(c);
  auto codec = make_codec(c, *task);
  train::check_run(c, *task, *codec);
  const std::int64_t vocab = codec->vocab_size();
  if (log)
    *log << "grpo train: task " << (c.data.empty() ? c.task : c.data) << ", seed " << c.seed << ", output "
         << c.output_dir << (ranks.comm().world_size() > 1 ? ", " + std::to_string(ranks.comm().world_size()) + " ranks" : "")
         << std::endl;
  return with_policy(c, vocab, [&](auto& policy) {
    using policy_type = std::remove_reference_t<decltype(policy)>;
    if (log) *log << "model: " << policy.describe() << std::endl;
    // From here rank 0 holds the output directory's lock: what it checks and writes is this run's alone.
    train::trainer<policy_type> t(c, std::move(policy), std::move(task), std::move(codec), log, &ranks.comm());
    if (ranks.main_rank()) train::prepare_run_directory(c.output_dir, resume, overwrite, c.init);
    if (!resume.empty()) {
      t.load_checkpoint(resume);
      if (log) *log << "resumed from " << resume << " at step " << t.global_step() << std::endl;
    }
    std::optional<train::metrics_writer> metrics;
    if (ranks.main_rank())
      metrics.emplace(std::filesystem::path(c.output_dir) / train::run_files::metrics, !resume.empty());
    const auto after = t.run(metrics ? &*metrics : nullptr, stop_after);
    if (!log) return 0;
    if (!after) {
      *log << "stopped at step " << t.global_step() << "; checkpoint in " << c.output_dir << "/checkpoint" << std::endl;
      return 0;
    }
    if (sft_only) {
      *log << "[eval] after SFT: " << train::describe(*after) << std::endl;
    } else {
      if (t.state().before)
        *log << "held-out accuracy after cold start: " << train::describe(*t.state().before) << std::endl;
      *log << "held-out accuracy after GRPO:       " << train::describe(*after) << std::endl;
    }
    *log << "model saved to " << c.output_dir << "/model, metrics in " << c.output_dir << "/metrics.jsonl" << std::endl;
    return 0;
  });
}

int eval_command(train::train_config c) {
  GRPO_CHECK(!c.init.empty(), config_error, "--model: a model directory is required");
  rank_group ranks(c);
  const auto task = train::make_task(c);
  const auto codec = make_codec(c, *task);
  train::check_run(c, *task, *codec);
  return with_policy(c, codec->vocab_size(), [&](auto& policy) {
    const auto result = train::evaluate(policy, *task, *codec, train::eval_options_for(c), ranks.comm());
    if (ranks.main_rank()) std::cout << "held-out: " << train::describe(result) << std::endl;
    return 0;
  });
}

int sample_command(const train::train_config& c, std::int64_t count, const std::vector<std::string>& prompts,
                   bool greedy) {
  GRPO_CHECK(!c.init.empty(), config_error, "--model: a model directory is required");
  GRPO_CHECK(count >= 0, config_error, "--count: must be >= 0, got ", count);
  const auto task = train::make_task(c);
  const auto codec = make_codec(c, *task);
  train::check_run(c, *task, *codec);
  std::vector<tasks::problem> problems;
  for (const auto& p : prompts) problems.push_back({p, "", ""});
  for (std::int64_t i = 0; prompts.empty() && i < count && i < static_cast<std::int64_t>(task->heldout_size()); ++i)
    problems.push_back(task->heldout(static_cast<std::size_t>(i)));
  std::vector<std::vector<token_id>> ids;
  for (const auto& p : problems) ids.push_back(codec->encode_prompt(p.prompt));
  return with_policy(c, codec->vocab_size(), [&](auto& policy) {
    auto sampling = train::rollout_sampling(c, *codec);
    if (greedy) sampling.temperature = 0.0;
    const auto out = policy.generate(ids, sampling, c.seed, 1);
    const tasks::accuracy_reward accuracy(*task);
    for (std::size_t i = 0; i < out.size(); ++i) {
      const auto text = codec->decode(out[i].tokens);
      std::cout << "prompt: " << problems[i].prompt << "\ncompletion: " << text << "\n[";
      if (problems[i].answer.empty()) {
        std::cout << out[i].tokens.size() << " tokens, " << (out[i].stopped ? "stopped" : "truncated");
      } else {
        const auto r = accuracy(problems[i].prompt, text);
        std::cout << (r && *r == 1 ? "correct" : "wrong") << ", expected " << problems[i].answer;
      }
      std::cout << ", format " << (tasks::has_r1_format(text) ? "ok" : "bad") << "]\n\n";
    }
    return 0;
  });
}

}  // namespace grpo::cli
