// SPDX-License-Identifier: Apache-2.0
// grpo/train/trainer.hpp: the DeepSeek-R1 recipe (arXiv:2501.12948, Sec. 2.3) over any
// grpo::trainable_policy: a cold-start SFT on worked demonstrations (cold_start.hpp), then GRPO
// (Shao et al. 2024, DeepSeekMath, Sec. 4.1, Eq. 3 with outcome advantages (r - mean_g) / std_g)
// with rule-based rewards, mu iterations per batch and a frozen reference for the KL term, and
// held-out evaluation before and after RL. Each GRPO step goes through three rooms: rollout.hpp
// (generate and score), batching.hpp (kept rows, micro-batches, global denominators) and
// update.hpp (loss, backward, optimizer). As TRL: one generation batch =
// per_device_train_batch_size * gradient_accumulation_steps completions = one optimizer step per
// iteration. This file orchestrates, keeps the run's state and writes checkpoints and metrics
// into the output directory, which it holds locked (run_directory.hpp) while it exists.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "grpo/advantages.hpp"
#include "grpo/concepts.hpp"
#include "grpo/detail/random.hpp"
#include "grpo/loss_settings.hpp"
#include "grpo/tasks/rewards.hpp"
#include "grpo/tasks/task.hpp"
#include "grpo/train/batching.hpp"
#include "grpo/train/checkpoint.hpp"
#include "grpo/train/codec.hpp"
#include "grpo/train/cold_start.hpp"
#include "grpo/train/communicator.hpp"
#include "grpo/train/config.hpp"
#include "grpo/train/evaluation.hpp"
#include "grpo/train/metrics.hpp"
#include "grpo/train/optimizer.hpp"
#include "grpo/train/rollout.hpp"
#include "grpo/train/run_directory.hpp"
#include "grpo/train/update.hpp"

namespace grpo::train {

/// The seed streams of a run (grpo::detail::mix_seed(seed, stream)).
namespace stream {
inline constexpr std::uint64_t initial_weights = 1;
inline constexpr std::uint64_t data_order = 2;
inline constexpr std::uint64_t evaluation = 3;  ///< see eval_options_for
inline constexpr std::uint64_t rollout = 1000;  ///< + the GRPO step
}  // namespace stream

/// The R1 recipe driver.
template <trainable_policy P>
class trainer {
 public:
  /// Validates the config and takes the run's pieces: the policy, the task it is trained on and
  /// the codec between the task's text and the policy's tokens. `log` receives progress lines
  /// (nullptr: silent); `comm` sums gradients and denominators over data-parallel ranks (nullptr:
  /// one process). The policy starts with the cold start's optimizer settings. Rank 0 locks
  /// config.output_dir (run_directory_lock) until the trainer is destroyed, so that no other run,
  /// in this process or another, writes there meanwhile.
  /// \throws config_error naming the first invalid setting, or "model.vocab_size" when the codec's
  ///         vocabulary does not fit the policy's; io_error naming the output directory and the
  ///         pid of the run that holds it.
  trainer(train_config config, P policy, std::unique_ptr<tasks::task> task, std::unique_ptr<text_codec> codec,
          std::ostream* log = nullptr, communicator* comm = nullptr)
      : config_((config.validate(), std::move(config))),
        loss_(config_.resolved_loss()),
        task_(std::move(task)),
        codec_(std::move(codec)),
        policy_(std::move(policy)),
        log_(log),
        comm_(comm) {
    GRPO_CHECK(task_ != nullptr && codec_ != nullptr, config_error, "trainer: a task and a codec are required");
    GRPO_CHECK(codec_->vocab_size() <= policy_.vocab_size(), config_error, "model.vocab_size: the tokenizer has ",
               codec_->vocab_size(), " tokens, the policy only ", policy_.vocab_size());
    const auto world = static_cast<std::int64_t>(this->comm().world_size());
    GRPO_CHECK(config_.prompts_per_step() % world == 0, config_error, "num_generations: ", world,
               " data-parallel ranks must share the ", config_.prompts_per_step(),
               " prompts of a step evenly (per_device_train_batch_size * gradient_accumulation_steps / num_generations)");
    GRPO_CHECK(config_.sft_steps == 0 || config_.sft_batch_size % world == 0, config_error, "sft.batch_size: ",
               config_.sft_batch_size, " demonstrations cannot be shared evenly by ", world, " data-parallel ranks");
    if (this->comm().rank() == 0) lock_.emplace(config_.output_dir);
    sampling_ = rollout_sampling(config_, *codec_);
    state_.data_rng.seed(grpo::detail::mix_seed(config_.seed, stream::data_order));
    for (std::size_t q = 0; q < config_.reward_funcs.size(); ++q)
      rewards_.push_back({config_.reward_funcs[q], config_.reward_weights[q],
                          tasks::make_reward(config_.reward_funcs[q], *task_)});
    policy_.reset_optimizer(config_.sft_adam());
  }

  /// Replaces the configured reward functions (config().reward_funcs / reward_weights) with
  /// `parts`: each GRPO step scores a completion by sum_i weight_i * part_i (NaN, so advantage 0
  /// and out of its group's statistics, when a part is unscorable) and logs each part under
  /// "reward/<name>/mean" and "/std". Accuracy and format are still measured for the metrics.
  /// Call before run(); a checkpoint does not record the functions, so a resumed run must set
  /// them again. \throws config_error as tasks::weighted_sum (no parts, an empty or repeated
  /// name, a non-finite weight, an empty function).
  void set_rewards(std::vector<tasks::named_reward> parts) {
    tasks::weighted_sum check(parts);
    rewards_ = std::move(parts);
  }

  /// One user reward function (anything satisfying grpo::reward_function) as the only reward,
  /// logged under "reward/<name>/...".
  template <reward_function F>
  void set_reward(std::string name, F f) {
    set_rewards({{std::move(name), 1.0, tasks::reward_fn(std::move(f))}});
  }

  const std::vector<tasks::named_reward>& rewards() const { return rewards_; }
  const train_config& config() const { return config_; }
  const resolved_loss_settings& loss() const { return loss_; }
  const tasks::task& task() const { return *task_; }
  const text_codec& codec() const { return *codec_; }
  P& policy() { return policy_; }
  const trainer_state& state() const { return state_; }

  /// Total optimizer steps done, both phases together.
  std::int64_t global_step() const {
    if (state_.phase == "sft") return state_.step;
    if (state_.phase == "grpo") return config_.sft_steps + state_.step;
    return config_.sft_steps + config_.max_steps;
  }

  /// Runs what is left of the recipe. With stop_after >= 0, stops once global_step() reaches it
  /// and saves a checkpoint there (for tests of resumption). Writes metrics to `metrics` when given:
  /// after load_checkpoint it first cuts the file back to the size the checkpoint recorded
  /// (metrics_writer::truncate), so a resumed run logs each step once; every checkpoint records
  /// the file's size. Returns the held-out evaluation after RL (nullopt when stopped early).
  std::optional<eval_result> run(metrics_writer* metrics = nullptr, std::int64_t stop_after = -1) {
    const auto stop = [&] { return stop_after >= 0 && global_step() >= stop_after; };
    // Only rank 0 writes: metrics, checkpoints, the model, progress lines.
    if (comm().rank() != 0) metrics = nullptr;
    if (metrics && state_.metrics_bytes) metrics->truncate(*state_.metrics_bytes);
    while (state_.phase == "sft" && state_.step < config_.sft_steps) {
      if (stop()) return checkpoint_and_stop(metrics);
      auto record = sft_step();
      if (metrics) metrics->write(record);
      maybe_save(metrics);
    }
    if (state_.phase == "sft") begin_grpo();
    while (state_.phase == "grpo" && state_.step < config_.max_steps) {
      if (stop()) return checkpoint_and_stop(metrics);
      auto record = grpo_step();
      if (metrics) metrics->write(record);
      maybe_save(metrics);
    }
    const eval_result after = evaluate_heldout();
    state_.phase = "done";
    if (comm().rank() == 0) {
      save_run_checkpoint(metrics);
      policy_.save_pretrained(output() / run_files::model);
    }
    return after;
  }

  /// Greedy accuracy, format rate and pass@k on the held-out split, as configured.
  eval_result evaluate_heldout() { return evaluate(policy_, *task_, *codec_, eval_options_for(config_), comm()); }

  /// One cold-start step on sft_batch_size demonstrations.
  metrics_record sft_step() {
    const auto t0 = std::chrono::steady_clock::now();
    if (!demonstrations_) {
      demonstrations_.emplace(*task_, config_.sft_examples, config_.seed, config_.sft_verified_only);
      if (config_.sft_verified_only)
        say(grpo::detail::concat("[sft] the verifier keeps ", demonstrations_->size(), " of ", config_.sft_examples,
                                 " demonstrations"));
    }
    // This rank's contiguous share of the batch.
    const auto share = config_.sft_batch_size / static_cast<std::int64_t>(comm().world_size());
    std::vector<const tasks::problem*> problems;
    for (std::int64_t i = 0; i < share; ++i)
      problems.push_back(
          &demonstrations_->at(state_.step * config_.sft_batch_size + static_cast<std::int64_t>(comm().rank()) * share + i));
    const double lr = learning_rate_at(sft_schedule_, config_.sft_learning_rate, config_.sft_warmup_ratio,
                                       std::max<std::int64_t>(1, config_.sft_steps), state_.step);
    const auto result = train::sft_step(policy_, *codec_, problems, lr, config_.max_grad_norm, comm());
    ++state_.step;
    const double seconds = elapsed(t0);
    metrics_record m;
    m.set("step", static_cast<double>(global_step()));
    m.set("phase/sft", 1);
    m.set("sft/loss", result.loss);
    m.set("actor/grad_norm", result.grad_norm);
    m.set("lr", lr);
    m.set("perf/train_tokens_per_s", result.tokens / seconds);
    if (comm().world_size() > 1) m.set("perf/allreduce_s", result.communication_seconds);
    m.set("time/step_s", seconds);
    progress("sft", state_.step, config_.sft_steps, m, {{"loss", "sft/loss"}, {"lr", "lr"}}, seconds);
    return m;
  }

  /// Switches to GRPO: fresh optimizer moments with GRPO's settings, the frozen reference
  /// (beta > 0), and the held-out evaluation of the cold-started policy.
  void begin_grpo() {
    state_.phase = "grpo";
    state_.step = 0;
    policy_.reset_optimizer(config_.adam());
    if (loss_.policy.beta > 0) policy_.freeze_reference();
    state_.before = evaluate_heldout();
    say("[eval] after cold start: " + describe(*state_.before));
  }

  /// One GRPO optimizer step (num_iterations updates on one generation batch). With several
  /// data-parallel ranks every rank draws the same prompts and samples its contiguous share of
  /// them (a group never spans ranks); the scores are gathered, so advantages, dynamic sampling
  /// and metrics are the whole batch's, and the denominators and gradients are summed.
  metrics_record grpo_step() {
    const auto t0 = std::chrono::steady_clock::now();
    const auto& b = policy_.backend();
    const std::int64_t g = config_.num_generations;
    const auto world = static_cast<std::int64_t>(comm().world_size()), rank = static_cast<std::int64_t>(comm().rank());
    const std::int64_t share = config_.prompts_per_step() / world;
    std::vector<tasks::problem> problems;
    for (std::int64_t k = 0; k < config_.prompts_per_step(); ++k) {
      auto p = task_->sample_train(state_.data_rng);
      if (k / share == rank) problems.push_back(std::move(p));
    }
    sampling_options sampling = sampling_;
    sampling.first_row = static_cast<std::uint64_t>(rank * share * g);
    const auto rollout = generate_and_score(
        policy_, *task_, *codec_, rewards_, std::move(problems), g, sampling,
        grpo::detail::mix_seed(config_.seed, stream::rollout + static_cast<std::uint64_t>(state_.step)));
    const auto all = gather_rollout(comm(), rollout);
    const auto rows = static_cast<std::int64_t>(all.scores.size());
    const auto adv = grpo_advantages(make_tensor(b, all.scores, shape::vector(rows)), group_layout::consecutive(g),
                                     loss_.advantage);
    const auto all_advantages = adv.advantages.to_host();
    const auto offset = static_cast<std::size_t>(rank * share * g), local_rows = rollout.rows();
    const std::vector<double> advantages(all_advantages.begin() + static_cast<std::ptrdiff_t>(offset),
                                         all_advantages.begin() + static_cast<std::ptrdiff_t>(offset + local_rows));

    const auto kept_all = kept_rows(all.scores, g, config_.dynamic_sampling);
    std::vector<std::size_t> kept;
    for (const auto row : kept_all)
      if (row >= offset && row < offset + local_rows) kept.push_back(row - offset);
    const auto rows_to_train =
        make_masked_micro_batches(b, rollout.prompts, rollout.completions, kept, g,
                                  config_.per_device_train_batch_size, config_.mask_truncated_completions);
    const update_batch<typename P::backend_type> batch{
        rows_to_train.micro_batches, rows_to_train.masks, advantages, rollout.completions,
        global_denominators<typename P::backend_type>(rows_to_train.masks, loss_.constant, comm()),
        !kept_all.empty()};
    const double lr = learning_rate_at(grpo_schedule_, config_.learning_rate, config_.warmup_ratio,
                                       std::max<std::int64_t>(1, config_.max_steps), state_.step);
    auto update = grpo_update(policy_, batch, loss_, config_.temperature, config_.num_iterations, lr,
                              config_.max_grad_norm, comm());
    reduce_over_ranks(comm(), update);
    ++state_.step;

    metrics_record m;
    m.set("step", static_cast<double>(global_step()));
    m.set("actor/loss", update.loss);
    // With mu > 1 the surrogate of the same batch after mu - 1 updates: below the first
    // iteration's when the updates move the policy the way the advantages ask.
    if (config_.num_iterations > 1) m.set("actor/loss_first_iteration", update.first_loss);
    m.set("actor/pg_loss", update.totals.pg_loss);
    m.set("actor/kl", update.totals.kl_mean);
    m.set("actor/entropy", update.totals.entropy_mean);
    m.set("actor/pg_clipfrac", update.totals.clip_fraction_low + update.totals.clip_fraction_high);
    m.set("actor/pg_clipfrac_lower", update.totals.clip_fraction_low);
    m.set("actor/ratio_mean", update.totals.ratio_mean);
    m.set("actor/grad_norm", update.grad_norm);
    m.set("rollout/logprob_diff_max", update.logprob_diff_max);
    m.set("rollout/logprob_diff_mean", update.logprob_diff_mean());
    m.set("critic/score/mean", adv.reward_mean);
    m.set("critic/score/std", adv.reward_std);
    add_rollout_metrics(m, all, rewards_);
    m.set("frac_reward_zero_std", adv.zero_std_fraction);
    m.set("kept_rows", static_cast<double>(kept_all.size()));
    m.set("perf/train_tokens", update.train_tokens);
    m.set("perf/train_tokens_per_s", update.seconds > 0 ? update.train_tokens / update.seconds : 0.0);
    if (comm().world_size() > 1) m.set("perf/allreduce_s", update.communication_seconds);
    m.set("lr", lr);
    // The step's time split: sampling and scoring (the slowest rank's), then the update.
    m.set("time/rollout_s", all.seconds);
    m.set("time/update_s", update.seconds);
    m.set("time/step_s", elapsed(t0));
    progress("grpo", state_.step, config_.max_steps, m,
             {{"reward", "critic/score/mean"}, {"acc", "accuracy"}, {"fmt", "format_rate"},
              {"len", "response_length/mean"}, {"kl", "actor/kl"}, {"ent", "actor/entropy"}},
             elapsed(t0));
    return m;
  }

  /// Writes the policy's state (weights, optimizer, reference), trainer_state.json and the
  /// effective config.toml to `directory`, atomically.
  void save_checkpoint(const std::filesystem::path& directory) const {
    write_checkpoint_directory(directory, [&](const std::filesystem::path& temporary) {
      policy_.save_state(temporary);
      write_text_file(temporary / "trainer_state.json", to_json(state_, global_step()));
      write_text_file(temporary / "config.toml", to_toml(config_));
    });
  }

  /// Restores a checkpoint written by save_checkpoint (the config is the caller's: normally the
  /// checkpoint's config.toml), with the optimizer settings of the phase it was in; a save that was
  /// killed half-way is found by resolve_checkpoint.
  /// \throws io_error naming the file that is missing or malformed.
  void load_checkpoint(const std::filesystem::path& directory) {
    const auto found = resolve_checkpoint(directory);
    state_ = read_trainer_state(found / "trainer_state.json");
    policy_.load_state(found, state_.phase == "grpo" ? config_.adam() : config_.sft_adam());
  }

 private:
  train_config config_;
  resolved_loss_settings loss_;
  std::unique_ptr<tasks::task> task_;
  std::unique_ptr<text_codec> codec_;
  P policy_;
  std::vector<tasks::named_reward> rewards_;
  sampling_options sampling_;
  lr_scheduler grpo_schedule_ = parse_lr_scheduler(config_.lr_scheduler_type);
  lr_scheduler sft_schedule_ = parse_lr_scheduler(config_.sft_lr_scheduler_type, "sft_lr_scheduler_type");
  trainer_state state_;
  std::optional<demonstration_stream> demonstrations_;
  std::ostream* log_;
  single_process single_;
  communicator* comm_;  ///< nullptr: single_
  std::optional<run_directory_lock> lock_;  ///< rank 0's hold on the output directory
  double sft_seconds_ = 0, grpo_seconds_ = 0;

  std::filesystem::path output() const { return config_.output_dir; }
  communicator& comm() { return comm_ != nullptr ? *comm_ : single_; }

  /// OUTPUT_DIR/checkpoint, recording how much of the metrics file it covers.
  void save_run_checkpoint(const metrics_writer* metrics) {
    state_.metrics_bytes = metrics ? std::optional<std::uint64_t>(metrics->size()) : std::nullopt;
    save_checkpoint(output() / run_files::checkpoint);
  }

  std::optional<eval_result> checkpoint_and_stop(const metrics_writer* metrics) {
    if (comm().rank() == 0) save_run_checkpoint(metrics);
    return std::nullopt;
  }

  void maybe_save(const metrics_writer* metrics) {
    if (comm().rank() == 0 && config_.save_steps > 0 && global_step() % config_.save_steps == 0)
      save_run_checkpoint(metrics);
  }

  static double elapsed(std::chrono::steady_clock::time_point since) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
  }

  void say(const std::string& line) {
    if (log_ && comm().rank() == 0) *log_ << line << std::endl;
  }

  void progress(std::string_view phase, std::int64_t step, std::int64_t total, const metrics_record& m,
                const std::vector<std::pair<std::string, std::string>>& keys, double seconds) {
    if (!log_ || comm().rank() != 0) return;
    if (step % config_.logging_steps != 0 && step != total) return;
    const double alpha = 0.3;
    auto& avg = phase == "sft" ? sft_seconds_ : grpo_seconds_;
    avg = avg == 0 ? seconds : alpha * seconds + (1 - alpha) * avg;
    say(progress_line(phase, step, total, m, keys, avg));
  }
};

}  // namespace grpo::train
