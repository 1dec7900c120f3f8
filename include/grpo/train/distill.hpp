// SPDX-License-Identifier: Apache-2.0
// grpo/train/distill.hpp: a teacher policy trains a student policy (any two grpo::trainable_policy
// types sharing a vocabulary), in one of three modes (distill_config.hpp):
//   traces     R1's recipe (arXiv:2501.12948, Sec. 2.3.3 and 2.4): the teacher samples k completions
//              per prompt, the verifier keeps the correct ones (traces.hpp), the student is trained
//              by SFT (sft_loss) on them;
//   on_policy  GKD (Agarwal et al. 2024, arXiv:2306.13649, Algorithm 1 with lambda = 1): the student
//              samples, the teacher scores the student's tokens, the loss is the per-token reverse
//              KL or JSD(beta) between both full distributions (distillation_loss);
//   topk       the teacher's top-k log-probs over fixed sequences (topk_file.hpp), the student
//              trained with the sparse forward KL (topk_distillation_loss).
// The losses are in distill_losses.hpp (each hands its analytic d loss / d student logits to the
// student's backward). Checkpoints, resumption, metrics and progress lines work as
// grpo::train::trainer's.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <ostream>
#include <random>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "grpo/concepts.hpp"
#include "grpo/detail/random.hpp"
#include "grpo/distillation.hpp"
#include "grpo/error.hpp"
#include "grpo/tasks/rewards.hpp"
#include "grpo/tasks/task.hpp"
#include "grpo/tensor.hpp"
#include "grpo/train/checkpoint.hpp"
#include "grpo/train/codec.hpp"
#include "grpo/train/cold_start.hpp"
#include "grpo/train/distill_config.hpp"
#include "grpo/train/distill_losses.hpp"
#include "grpo/train/evaluation.hpp"
#include "grpo/train/metrics.hpp"
#include "grpo/train/optimizer.hpp"
#include "grpo/train/rollout.hpp"
#include "grpo/train/run_directory.hpp"
#include "grpo/train/topk_file.hpp"
#include "grpo/train/traces.hpp"
#include "grpo/train/update.hpp"

namespace grpo::train {

/// Index `index` of an endless stream over [0, n): epochs, epoch e in the order of a Fisher-Yates
/// shuffle seeded with stream 8000 + e of `seed`.
class epoch_order {
 public:
  epoch_order(std::size_t n, std::uint64_t seed) : n_(n), seed_(seed) {}
  std::size_t at(std::int64_t index) {
    const auto epoch = static_cast<std::uint64_t>(index) / n_;
    if (order_.empty() || epoch != epoch_) {
      order_.resize(n_);
      for (std::size_t i = 0; i < n_; ++i) order_[i] = i;
      std::mt19937_64 rng(grpo::detail::mix_seed(seed_, 8000 + epoch));
      for (std::size_t i = n_; i > 1; --i) std::swap(order_[i - 1], order_[grpo::detail::uniform_below(rng, i)]);
      epoch_ = epoch;
    }
    return order_[static_cast<std::size_t>(index) % n_];
  }

 private:
  std::size_t n_;
  std::uint64_t seed_;
  std::vector<std::size_t> order_;
  std::uint64_t epoch_ = 0;
};

/// The distillation driver: prepares the mode's data (traces or top-k file, reused when the file
/// exists), evaluates teacher and student on the held-out split, trains distill.steps optimizer
/// steps, evaluates again, and saves OUTPUT_DIR/model and OUTPUT_DIR/checkpoint. It holds the
/// output directory locked (run_directory_lock) while it exists, as the trainer does.
template <trainable_policy S, trainable_policy T>
class distiller {
 public:
  /// \throws config_error naming the first invalid setting, "distill.teacher" when the teacher's
  ///         vocabulary differs from the student's, "distill.top_k" when k exceeds it.
  distiller(distill_run_config config, S student, T teacher, std::unique_ptr<tasks::task> task,
            std::unique_ptr<text_codec> codec, std::ostream* log = nullptr)
      : config_(std::move(config)), student_(std::move(student)), teacher_(std::move(teacher)),
        task_(std::move(task)), codec_(std::move(codec)), log_(log) {
    config_.train.validate();
    config_.distill.validate();
    GRPO_CHECK(task_ != nullptr && codec_ != nullptr, config_error, "distiller: a task and a codec are required");
    GRPO_CHECK(teacher_.vocab_size() == student_.vocab_size(), config_error, "distill.teacher: ",
               config_.distill.teacher, " has a vocabulary of ", teacher_.vocab_size(), " tokens, the student ",
               student_.vocab_size(), " (teacher and student must share a tokenizer)");
    GRPO_CHECK(codec_->vocab_size() <= student_.vocab_size(), config_error, "model.vocab_size: the tokenizer has ",
               codec_->vocab_size(), " tokens, the policy only ", student_.vocab_size());
    GRPO_CHECK(mode() != "topk" || config_.distill.top_k <= student_.vocab_size(), config_error,
               "distill.top_k: k = ", config_.distill.top_k, " exceeds the vocabulary of ", student_.vocab_size(),
               " tokens");
    state_.data_rng.seed(grpo::detail::mix_seed(config_.train.seed, 2));
    student_.reset_optimizer(config_.train.sft_adam());
    lock_.emplace(config_.train.output_dir);
  }

  const distill_run_config& config() const { return config_; }
  const trainer_state& state() const { return state_; }
  S& student() { return student_; }
  T& teacher() { return teacher_; }
  const std::vector<trace>& traces() const { return traces_; }
  const topk_sequences& topk() const { return topk_; }
  const std::string& mode() const { return config_.distill.mode; }

  /// Runs what is left. With stop_after >= 0, stops (with a checkpoint) once that many optimizer
  /// steps are done. Returns the student's held-out evaluation after distillation (nullopt when
  /// stopped early).
  std::optional<eval_result> run(metrics_writer* metrics = nullptr, std::int64_t stop_after = -1) {
    prepare();
    // After a resume, the records logged past the checkpoint are cut off, so each step is logged once.
    if (metrics && state_.metrics_bytes) metrics->truncate(*state_.metrics_bytes);
    if (state_.phase == "sft" && !state_.before) {
      say("[eval] teacher: " + describe(evaluate(teacher_, *task_, *codec_, eval_options_for(config_.train))));
      state_.before = evaluate_heldout();
      say("[eval] student before distillation: " + describe(*state_.before));
    }
    while (state_.phase == "sft" && state_.step < config_.distill.steps) {
      if (stop_after >= 0 && state_.step >= stop_after) {
        save_checkpoint(output() / "checkpoint", metrics);
        return std::nullopt;
      }
      const auto record = step();
      if (metrics) metrics->write(record);
      if (config_.train.save_steps > 0 && state_.step % config_.train.save_steps == 0)
        save_checkpoint(output() / "checkpoint", metrics);
    }
    const eval_result after = evaluate_heldout();
    state_.phase = "done";
    save_checkpoint(output() / "checkpoint", metrics);
    student_.save_pretrained(output() / "model");
    return after;
  }

  /// The student's greedy accuracy, format rate and pass@k on the held-out split, as configured.
  eval_result evaluate_heldout() { return evaluate(student_, *task_, *codec_, eval_options_for(config_.train)); }

  /// Makes the mode's data ready: the traces (read from distill.traces_file when it exists, else
  /// sampled from the teacher, filtered and written there) or the top-k file (likewise).
  void prepare() {
    const auto& d = config_.distill;
    const bool needs_traces = mode() == "traces" || (mode() == "topk" && d.topk_source == "traces");
    if (needs_traces && traces_.empty()) load_or_generate_traces();
    if (mode() == "topk" && topk_.size() == 0) load_or_generate_topk();
  }

  /// One optimizer step of the mode on distill.batch_size sequences (prompts for on_policy), in
  /// micro-batches of per_device_train_batch_size rows sharing the whole batch's token count.
  /// Metrics: distill/loss; distill/kl (traces: sampled forward KL of the teacher's tokens;
  /// on_policy: sampled reverse KL of the student's tokens; topk: the sparse forward KL);
  /// distill/top1_agreement (the share of positions where the student's top-1 token is the
  /// teacher's, for traces the teacher's sampled token); on_policy adds the samples' accuracy and
  /// length; actor/grad_norm, lr, throughput and time.
  metrics_record step() {
    const auto t0 = std::chrono::steady_clock::now();
    const auto& d = config_.distill;
    const double lr = learning_rate_at(parse_lr_scheduler(d.lr_scheduler_type, "distill.lr_scheduler_type"),
                                       d.learning_rate, d.warmup_ratio, std::max<std::int64_t>(1, d.steps),
                                       state_.step);
    metrics_record m;
    sequence_batch batch;
    std::vector<std::vector<double>> teacher_logprobs;
    std::vector<std::size_t> rows;
    if (mode() == "on_policy") {
      std::vector<tasks::problem> problems;
      std::vector<std::vector<token_id>> prompts;
      for (std::int64_t i = 0; i < d.batch_size; ++i) {
        problems.push_back(task_->sample_train(state_.data_rng));
        prompts.push_back(codec_->encode_prompt(problems.back().prompt));
      }
      auto sampling = rollout_sampling(config_.train, *codec_);
      sampling.temperature = d.sample_temperature;
      const auto completions = student_.generate(
          prompts, sampling, grpo::detail::mix_seed(config_.train.seed, 1000 + static_cast<std::uint64_t>(state_.step)),
          d.num_samples);
      const tasks::accuracy_reward accuracy(*task_);
      double correct = 0, length = 0;
      for (std::size_t r = 0; r < completions.size(); ++r) {
        const auto& p = problems[r / static_cast<std::size_t>(d.num_samples)];
        batch.prompts.push_back(codec_->encode_prompt(p.prompt));
        batch.completions.push_back(completions[r].tokens);
        const auto a = accuracy(p.prompt, codec_->decode(completions[r].tokens));
        correct += a && *a == 1.0 ? 1 : 0;
        length += static_cast<double>(completions[r].tokens.size());
      }
      m.set("accuracy", correct / static_cast<double>(completions.size()));
      m.set("response_length/mean", length / static_cast<double>(completions.size()));
    } else {
      const std::size_t total = mode() == "traces" ? traces_.size() : topk_.size();
      if (!order_) order_.emplace(total, config_.train.seed);
      for (std::int64_t i = 0; i < d.batch_size; ++i) rows.push_back(order_->at(state_.step * d.batch_size + i));
      for (const auto r : rows) {
        if (mode() == "traces") {
          batch.prompts.push_back(codec_->encode_prompt(traces_[r].prompt));
          batch.completions.push_back(traces_[r].completion_ids);
          teacher_logprobs.push_back(traces_[r].teacher_logprobs);
        } else {
          batch.completions.push_back(topk_.completions[r]);
        }
      }
    }
    loss_denominators den;
    double tokens = 0;
    for (const auto& c : batch.completions) tokens += static_cast<double>(c.size());
    den.tokens = std::max(tokens, 1.0);
    // distill.beta is the on-policy divergence; the top-k loss is the forward KL.
    const distillation_options options{d.temperature, mode() == "topk" ? 0.0 : d.beta};
    const auto micro = static_cast<std::size_t>(config_.train.per_device_train_batch_size);
    distill_loss_result total;
    student_.zero_grad();
    for (std::size_t start = 0; start < batch.rows(); start += micro) {
      const std::size_t end = std::min(batch.rows(), start + micro);
      distill_loss_result part;
      if (mode() == "topk") {
        part = topk_loss(student_, topk_, std::span<const std::size_t>(rows).subspan(start, end - start), options,
                         d.renormalize, den);
      } else {
        sequence_batch mb;
        mb.prompts.assign(batch.prompts.begin() + static_cast<std::ptrdiff_t>(start),
                          batch.prompts.begin() + static_cast<std::ptrdiff_t>(end));
        mb.completions.assign(batch.completions.begin() + static_cast<std::ptrdiff_t>(start),
                              batch.completions.begin() + static_cast<std::ptrdiff_t>(end));
        part = mode() == "traces"
                   ? traces_loss(student_, mb,
                                 std::span<const std::vector<double>>(teacher_logprobs).subspan(start, end - start), den)
                   : on_policy_loss(student_, teacher_, mb, options, den);
      }
      total.loss += part.loss;
      total.kl += part.kl;
      total.agreement += part.agreement;
      total.tokens += part.tokens;
    }
    single_process one;
    double communication = 0;
    const double grad_norm = apply_update(student_, one, config_.train.max_grad_norm, lr, communication);
    ++state_.step;
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    m.set("step", static_cast<double>(state_.step));
    m.set("distill/loss", total.loss);
    m.set("distill/kl", total.kl);
    m.set("distill/top1_agreement", total.tokens > 0 ? total.agreement / total.tokens : std::nan(""));
    m.set("actor/grad_norm", grad_norm);
    m.set("lr", lr);
    m.set("perf/train_tokens_per_s", total.tokens / seconds);
    m.set("time/step_s", seconds);
    progress(m, seconds);
    return m;
  }

  /// Writes the student's state, trainer_state.json (phase "sft" while distilling, "done" after;
  /// with the size of `metrics` when given, for the cut on resume) and the effective config.toml,
  /// [distill] included, atomically.
  void save_checkpoint(const std::filesystem::path& directory, const metrics_writer* metrics = nullptr) {
    state_.metrics_bytes = metrics ? std::optional<std::uint64_t>(metrics->size()) : std::nullopt;
    write_checkpoint_directory(directory, [&](const std::filesystem::path& temporary) {
      student_.save_state(temporary);
      write_text_file(temporary / "trainer_state.json", to_json(state_, state_.step));
      write_text_file(temporary / "config.toml", to_toml(config_));
    });
  }

  /// Restores a checkpoint written by save_checkpoint (the config is the caller's, normally the
  /// checkpoint's config.toml). \throws io_error naming the file that is missing or malformed.
  void load_checkpoint(const std::filesystem::path& directory) {
    const auto found = resolve_checkpoint(directory);
    state_ = read_trainer_state(found / "trainer_state.json");
    student_.load_state(found, config_.train.sft_adam());
  }

 private:
  distill_run_config config_;
  S student_;
  T teacher_;
  std::unique_ptr<tasks::task> task_;
  std::unique_ptr<text_codec> codec_;
  std::ostream* log_;
  trainer_state state_;
  std::vector<trace> traces_;
  topk_sequences topk_;
  std::optional<epoch_order> order_;
  double average_seconds_ = 0;
  std::optional<run_directory_lock> lock_;

  std::filesystem::path output() const { return config_.train.output_dir; }

  void say(const std::string& line) {
    if (log_) *log_ << line << std::endl;
  }

  void progress(const metrics_record& m, double seconds) {
    if (!log_) return;
    const auto total = config_.distill.steps;
    if (state_.step % config_.train.logging_steps != 0 && state_.step != total) return;
    average_seconds_ = average_seconds_ == 0 ? seconds : 0.3 * seconds + 0.7 * average_seconds_;
    say(progress_line("distill", state_.step, total, m,
                      {{"loss", "distill/loss"}, {"kl", "distill/kl"}, {"agree", "distill/top1_agreement"},
                       {"acc", "accuracy"}, {"lr", "lr"}},
                      average_seconds_));
  }

  void load_or_generate_traces() {
    const auto& d = config_.distill;
    const auto path = d.traces_path(config_.train);
    if (std::filesystem::exists(path)) {
      traces_ = read_traces(path, student_.vocab_size());
      say("traces: " + std::to_string(traces_.size()) + " verified completions read from " + path.string());
    } else {
      trace_options o;
      o.num_prompts = d.num_prompts;
      o.num_samples = d.num_samples;
      o.chunk = d.batch_size;
      o.require_format = d.require_format;
      o.sampling = rollout_sampling(config_.train, *codec_);
      o.sampling.temperature = d.sample_temperature;
      o.seed = config_.train.seed;
      std::int64_t sampled = 0;
      const auto t0 = std::chrono::steady_clock::now();
      traces_ = generate_traces(teacher_, *task_, *codec_, o, sampled, [&](std::int64_t done, std::int64_t kept) {
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        say("[traces] prompts " + std::to_string(done) + "/" + std::to_string(d.num_prompts) + " | kept " +
            std::to_string(kept) + " | ETA " +
            format_duration(s / static_cast<double>(done) * static_cast<double>(d.num_prompts - done)));
      });
      write_traces(path, traces_);
      say("traces: kept " + std::to_string(traces_.size()) + " of " + std::to_string(sampled) +
          " teacher completions (verified), written to " + path.string());
    }
    GRPO_CHECK(!traces_.empty(), value_error, "distill.traces_file: ", path.string(),
               " holds no verified trace to train on (the teacher solved none: raise distill.num_prompts or "
               "distill.num_samples, or use a stronger teacher)");
  }

  void load_or_generate_topk() {
    const auto& d = config_.distill;
    const auto path = d.topk_path(config_.train);
    if (std::filesystem::exists(path)) {
      topk_ = read_topk_file(path, student_.vocab_size());
      GRPO_CHECK(topk_.k == d.top_k, config_error, "distill.top_k: ", path.string(), " holds k = ", topk_.k,
                 ", the config asks for ", d.top_k);
      GRPO_CHECK(std::abs(topk_.temperature - d.temperature) <= 1e-12 * d.temperature, config_error,
                 "distill.temperature: ", path.string(), " was written at T = ", topk_.temperature, ", the config has ",
                 d.temperature);
      say("top-k: " + std::to_string(topk_.size()) + " sequences read from " + path.string());
      return;
    }
    topk_ = topk_sequences{};
    topk_.k = d.top_k;
    topk_.temperature = d.temperature;
    topk_.teacher = d.teacher;
    std::vector<std::pair<std::vector<token_id>, std::vector<token_id>>> sequences;
    if (d.topk_source == "traces") {
      for (const auto& t : traces_) sequences.emplace_back(codec_->encode_prompt(t.prompt), t.completion_ids);
    } else {
      demonstration_stream demonstrations(*task_, config_.train.sft_examples, config_.train.seed,
                                          config_.train.sft_verified_only);
      for (std::size_t i = 0; i < demonstrations.size(); ++i) {
        const auto& p = demonstrations.at(static_cast<std::int64_t>(i));
        sequences.emplace_back(codec_->encode_prompt(p.prompt), codec_->encode_completion(p.demonstration));
      }
    }
    const auto chunk = static_cast<std::size_t>(config_.train.per_device_train_batch_size);
    for (std::size_t start = 0; start < sequences.size(); start += chunk) {
      sequence_batch batch;
      for (std::size_t i = start; i < std::min(sequences.size(), start + chunk); ++i) {
        batch.prompts.push_back(sequences[i].first);
        batch.completions.push_back(sequences[i].second);
      }
      append_teacher_topk(teacher_, batch, topk_);
    }
    write_topk_file(path, topk_);
    say("top-k: teacher log-probs (k = " + std::to_string(d.top_k) + ") of " + std::to_string(topk_.size()) +
        " " + d.topk_source + " written to " + path.string());
  }
};

}  // namespace grpo::train
