// SPDX-License-Identifier: Apache-2.0
// grpo/train/trainer.hpp: the DeepSeek-R1 recipe (arXiv:2501.12948, Sec. 2.3) on grpo's native
// policy: a cold-start SFT on worked demonstrations, then GRPO (Shao et al. 2024, DeepSeekMath,
// Sec. 4.1, Eq. 3 with outcome advantages (r - mean_g) / std_g) with rule-based accuracy + format
// rewards, mu iterations per batch, a frozen reference for the KL term, and held-out evaluation
// before and after RL. As TRL: one generation batch = per_device_train_batch_size *
// gradient_accumulation_steps completions = one optimizer step per iteration, the loss
// denominators come from the final mask of the whole generation batch (so micro-batching is exact),
// and with mu = 1 the old log-probs are the current ones held constant (ratio 1).
#pragma once

#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <ostream>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "grpo/advantages.hpp"
#include "grpo/aggregation.hpp"
#include "grpo/concepts.hpp"
#include "grpo/config.hpp"
#include "grpo/detail/json.hpp"
#include "grpo/distillation.hpp"
#include "grpo/logits_policy_loss.hpp"
#include "grpo/model/model.hpp"
#include "grpo/policy_loss.hpp"
#include "grpo/safetensors.hpp"
#include "grpo/tasks/tasks.hpp"
#include "grpo/train/checkpoint.hpp"
#include "grpo/train/communicator.hpp"
#include "grpo/train/config.hpp"
#include "grpo/train/evaluation.hpp"
#include "grpo/train/metrics.hpp"
#include "grpo/train/optimizer.hpp"

namespace grpo::train {

/// The task a config names: a JSONL file (`data`, split by prompt hash, checked by `answer_kind`),
/// or the built-in "arithmetic" (with the [task] digit and operation settings) or "countdown". The
/// held-out listing uses seed 0 whatever the run's seed, so every seed is evaluated on the same
/// problems.
inline std::unique_ptr<tasks::task> make_task(const train_config& c) {
  if (!c.data.empty()) {
    auto [train, heldout] = tasks::split_problems(tasks::load_jsonl(c.data), 0.1);
    return std::make_unique<tasks::dataset_task>(std::filesystem::path(c.data).filename().string(),
                                                 tasks::parse_answer_kind(c.answer_kind), std::move(train),
                                                 std::move(heldout));
  }
  if (c.task == "arithmetic") {
    tasks::arithmetic_options o;
    o.min_digits = static_cast<int>(c.min_digits);
    o.max_digits = static_cast<int>(c.max_digits);
    o.operations = c.operations;
    o.heldout_size = static_cast<std::size_t>(c.heldout_size);
    return std::make_unique<tasks::arithmetic_task>(o);
  }
  return tasks::make_task(c.task, 0);
}

/// Where a run stands; with the weights and optimizer it is everything a checkpoint holds.
struct trainer_state {
  std::string phase = "sft";   ///< "sft", "grpo" or "done"
  std::int64_t step = 0;       ///< optimizer steps done in the phase
  std::mt19937_64 data_rng{};  ///< draws the GRPO prompts
  std::optional<eval_result> before{};  ///< held-out evaluation after the cold start
};

namespace detail {

inline std::uint64_t mix(std::uint64_t a, std::uint64_t b) { return tasks::detail::mix64(tasks::detail::mix64(a) ^ b); }

inline std::string to_string(const std::vector<std::byte>& bytes) {
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

inline std::string eval_json(const eval_result& e) {
  std::ostringstream out;
  out << "{\"problems\": " << e.problems << ", \"accuracy\": " << model::detail::json_number(e.accuracy)
      << ", \"format_rate\": " << model::detail::json_number(e.format_rate) << ", \"pass_at\": [";
  for (std::size_t i = 0; i < e.pass_at.size(); ++i)
    out << (i ? ", " : "") << "[" << e.pass_at[i].first << ", " << model::detail::json_number(e.pass_at[i].second)
        << "]";
  return out.str() + "]}";
}

inline double json_double(const grpo::detail::json::value& v) { return std::stod(v.text); }

}  // namespace detail

/// The R1 recipe driver over the native transformer<T>.
template <class T = float>
class trainer {
 public:
  /// Builds the task, the tokenizer's model (from `config.init` or a seeded initialization) and
  /// the optimizer. `log` receives progress lines (nullptr: silent). Validates the config.
  explicit trainer(train_config config, std::ostream* log = nullptr, communicator* comm = nullptr)
      : config_((config.validate(), std::move(config))),
        task_(make_task(config_)),
        model_(initial_weights(), model::transformer_options{config_.threads}),
        optimizer_(model_.weights().config(), config_.sft_adam()),
        grads_(model_.weights().config()),
        log_(log),
        comm_(comm != nullptr ? comm : &single_) {
    state_.data_rng.seed(detail::mix(config_.seed, 2));
    for (std::size_t q = 0; q < config_.reward_funcs.size(); ++q) {
      const std::string& name = config_.reward_funcs[q];
      tasks::reward_fn f;
      if (name == "accuracy") f = tasks::accuracy_reward(*task_);
      else if (name == "partial_accuracy") f = tasks::partial_accuracy_reward(*task_);
      else f = tasks::format_reward{};
      rewards_.push_back({name, config_.reward_weights[q], std::move(f)});
    }
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

  /// The reward functions GRPO optimizes.
  const std::vector<tasks::named_reward>& rewards() const { return rewards_; }

  const train_config& config() const { return config_; }
  const tasks::task& task() const { return *task_; }
  model::transformer<T>& model() { return model_; }
  const trainer_state& state() const { return state_; }
  adamw<T>& optimizer() { return optimizer_; }

  /// Total optimizer steps done, both phases together.
  std::int64_t global_step() const {
    if (state_.phase == "sft") return state_.step;
    if (state_.phase == "grpo") return config_.sft_steps + state_.step;
    return config_.sft_steps + config_.max_steps;
  }

  /// Runs what is left of the recipe. With stop_after >= 0, stops once global_step() reaches it
  /// and saves a checkpoint there (for tests of resumption). Writes metrics to `metrics` when given.
  /// Returns the held-out evaluation after RL (nullopt when stopped early).
  std::optional<eval_result> run(metrics_writer* metrics = nullptr, std::int64_t stop_after = -1) {
    const auto stop = [&] { return stop_after >= 0 && global_step() >= stop_after; };
    while (state_.phase == "sft" && state_.step < config_.sft_steps) {
      if (stop()) return checkpoint_and_stop();
      auto record = sft_step();
      if (metrics) metrics->write(record);
      maybe_save();
    }
    if (state_.phase == "sft") begin_grpo();
    while (state_.phase == "grpo" && state_.step < config_.max_steps) {
      if (stop()) return checkpoint_and_stop();
      auto record = grpo_step();
      if (metrics) metrics->write(record);
      maybe_save();
    }
    const eval_result after = evaluate_heldout();
    state_.phase = "done";
    save_checkpoint(std::filesystem::path(config_.output_dir) / "checkpoint");
    model::save_pretrained(model_.weights(), std::filesystem::path(config_.output_dir) / "model");
    return after;
  }

  /// Greedy accuracy, format rate and pass@k on the held-out split, as configured.
  eval_result evaluate_heldout() {
    eval_options o;
    o.problems = config_.eval_size;
    o.max_new_tokens = config_.max_completion_length;
    o.num_samples = config_.eval_num_samples;
    o.pass_k = config_.eval_num_samples > 0 ? config_.eval_pass_k : std::vector<std::int64_t>{};
    o.temperature = config_.eval_temperature;
    o.seed = detail::mix(config_.seed, 3);
    return evaluate(model_, *task_, o);
  }

  /// One cold-start step: sft_loss (token-mean cross-entropy on the demonstration tokens, <eos>
  /// included) on sft_batch_size demonstrations.
  metrics_record sft_step() {
    const auto t0 = std::chrono::steady_clock::now();
    const auto& tok = task_->tokenizer();
    sequence_batch batch;
    for (std::int64_t i = 0; i < config_.sft_batch_size; ++i) {
      const auto& p = demonstration(state_.step * config_.sft_batch_size + i);
      batch.prompts.push_back(tok.encode_prompt(p.prompt));
      batch.completions.push_back(tok.encode_completion(p.demonstration));
    }
    const auto& b = model_.backend();
    const auto logits = model_.forward(batch, true);
    const auto rows = static_cast<std::int64_t>(batch.rows()), t = batch.max_completion_length();
    std::vector<std::int64_t> targets(static_cast<std::size_t>(rows * t), 0);
    for (std::size_t r = 0; r < batch.rows(); ++r)
      for (std::size_t i = 0; i < batch.completions[r].size(); ++i)
        targets[r * static_cast<std::size_t>(t) + i] = batch.completions[r][i];
    const auto mask_values = batch.completion_mask();
    double tokens = 0;
    for (const double m : mask_values) tokens += m;
    loss_denominators den;
    den.tokens = std::max(tokens, 1.0);
    const auto result = sft_loss(logits, make_index(b, targets, shape::vector(rows * t)),
                                 make_tensor(b, mask_values, shape::vector(rows * t)), den);
    grads_.set_zero();
    model_.backward(std::span<const T>(result.grad_logits.data), grads_);
    const double lr = learning_rate_at(parse_lr_scheduler(config_.sft_lr_scheduler_type), config_.sft_learning_rate,
                                       config_.sft_warmup_ratio, std::max<std::int64_t>(1, config_.sft_steps),
                                       state_.step);
    const double norm = update(lr);
    ++state_.step;
    const double seconds = elapsed(t0);
    metrics_record m;
    m.set("step", static_cast<double>(global_step()));
    m.set("phase/sft", 1);
    m.set("sft/loss", result.loss.item());
    m.set("actor/grad_norm", norm);
    m.set("lr", lr);
    m.set("perf/train_tokens_per_s", tokens / seconds);
    m.set("time/step_s", seconds);
    progress("sft", state_.step, config_.sft_steps, m, {{"loss", "sft/loss"}, {"lr", "lr"}}, seconds);
    return m;
  }

  /// Switches to GRPO: fresh optimizer moments, the frozen reference (beta > 0), and the held-out
  /// evaluation of the cold-started policy.
  void begin_grpo() {
    state_.phase = "grpo";
    state_.step = 0;
    optimizer_ = adamw<T>(model_.weights().config(), config_.adam());
    if (config_.beta > 0) reference_.emplace(model_.weights(), model::transformer_options{config_.threads});
    state_.before = evaluate_heldout();
    say("[eval] after cold start: " + describe(*state_.before));
  }

  /// One GRPO optimizer step (num_iterations updates on one generation batch).
  metrics_record grpo_step() {
    const auto t0 = std::chrono::steady_clock::now();
    const auto& tok = task_->tokenizer();
    const auto& b = model_.backend();
    const std::int64_t g = config_.num_generations, prompts_n = config_.prompts_per_step();
    std::vector<tasks::problem> problems;
    std::vector<std::vector<token_id>> prompts;
    for (std::int64_t k = 0; k < prompts_n; ++k) {
      problems.push_back(task_->sample_train(state_.data_rng));
      prompts.push_back(tok.encode_prompt(problems.back().prompt));
    }
    sampling_options so;
    so.temperature = config_.temperature;
    so.top_k = config_.top_k;
    so.top_p = config_.top_p;
    so.max_new_tokens = config_.max_completion_length;
    so.stop_tokens = {tok.eos_id()};
    const auto sampled = model_.generate(prompts, so, detail::mix(config_.seed, 1000 + static_cast<std::uint64_t>(state_.step)), g);
    const double t_rollout = elapsed(t0);
    const auto rows = static_cast<std::int64_t>(sampled.size());

    // Rewards: every configured function, and accuracy / format always for the metrics.
    const tasks::accuracy_reward accuracy(*task_);
    const tasks::format_reward format;
    std::vector<double> scores(static_cast<std::size_t>(rows)), acc(scores.size()), fmt(scores.size());
    std::vector<std::vector<double>> parts(rewards_.size(), std::vector<double>(scores.size()));
    double length_sum = 0, length_max = 0, truncated = 0, rollout_tokens = 0;
    for (std::int64_t r = 0; r < rows; ++r) {
      const auto ru = static_cast<std::size_t>(r);
      const std::string& prompt = problems[ru / static_cast<std::size_t>(g)].prompt;
      const std::string text = tok.decode(sampled[ru].tokens);
      const auto a = accuracy(prompt, text);
      const auto f = format(prompt, text);
      acc[ru] = a ? *a : std::nan("");
      fmt[ru] = *f;
      double total = 0;
      for (std::size_t q = 0; q < rewards_.size(); ++q) {
        parts[q][ru] = grpo::score(rewards_[q].function, prompt, text);
        total += rewards_[q].weight * parts[q][ru];
      }
      scores[ru] = total;
      const auto len = static_cast<double>(sampled[ru].tokens.size());
      length_sum += len;
      length_max = std::max(length_max, len);
      truncated += sampled[ru].stopped ? 0 : 1;
      rollout_tokens += len;
    }
    grpo_advantage_options ao;
    ao.scale = parse_reward_scale(config_.scale_rewards);
    const auto adv = grpo_advantages(make_tensor(b, scores, shape::vector(rows)), group_layout::consecutive(g), ao);
    const auto adv_host = adv.advantages.to_host();

    // Rows that train: all, or with dynamic sampling those of groups whose scores differ.
    std::vector<std::size_t> kept;
    for (std::int64_t k = 0; k < prompts_n; ++k) {
      // Unscorable (NaN) rows carry no signal: a group varies when two scorable rows differ.
      bool varied = false;
      std::optional<double> first;
      for (std::int64_t j = 0; j < g; ++j) {
        const double x = scores[static_cast<std::size_t>(k * g + j)];
        if (std::isnan(x)) continue;
        if (!first) first = x;
        varied = varied || x != *first;
      }
      for (std::int64_t j = 0; j < g; ++j)
        if (varied || !config_.dynamic_sampling) kept.push_back(static_cast<std::size_t>(k * g + j));
    }

    policy_loss_options po;
    po.level = parse_ratio_level(config_.importance_sampling_level, "importance_sampling_level");
    po.epsilon_low = config_.epsilon;
    po.epsilon_high = config_.epsilon_high;
    if (config_.delta > 0) po.delta = config_.delta;
    po.beta = config_.beta;
    po.kl = parse_kl_estimator(config_.kl_estimator);
    const double constant = apply_loss_type(po, parse_loss_type(config_.loss_type), config_.max_completion_length);

    // Micro-batches of kept rows, and the final mask of the whole (kept) generation batch.
    const auto micro = static_cast<std::size_t>(config_.per_device_train_batch_size);
    std::vector<sequence_batch> chunks;
    std::vector<std::vector<std::size_t>> chunk_rows;
    for (std::size_t start = 0; start < kept.size(); start += micro) {
      sequence_batch sb;
      std::vector<std::size_t> ids;
      for (std::size_t i = start; i < std::min(kept.size(), start + micro); ++i) {
        sb.prompts.push_back(prompts[kept[i] / static_cast<std::size_t>(g)]);
        sb.completions.push_back(sampled[kept[i]].tokens);
        ids.push_back(kept[i]);
      }
      chunks.push_back(std::move(sb));
      chunk_rows.push_back(std::move(ids));
    }
    const auto final_mask = [&](std::size_t c) {
      const auto& sb = chunks[c];
      auto mask = sb.completion_mask();
      const auto t = static_cast<std::size_t>(sb.max_completion_length());
      for (std::size_t r = 0; r < sb.rows(); ++r)
        if (config_.mask_truncated_completions && !sampled[chunk_rows[c][r]].stopped)
          std::fill_n(mask.begin() + static_cast<std::ptrdiff_t>(r * t), t, 0.0);
      return make_tensor(b, mask, shape::matrix(static_cast<std::int64_t>(sb.rows()), static_cast<std::int64_t>(t)));
    };
    loss_denominators den;
    {
      double tokens = 0, sequences = 0;
      for (std::size_t c = 0; c < chunks.size(); ++c) {
        const auto d = denominators_from_mask(final_mask(c), constant);
        tokens += sum(final_mask(c)).item();
        sequences += d.sequences;
      }
      std::vector<double> totals{tokens, sequences};
      comm_->all_reduce_sum(std::span<double>(totals));
      den.tokens = std::max(totals[0], 1.0);
      den.sequences = std::max(totals[1], 1.0);
      den.constant = constant;
    }
    model::transformer_policy<T> policy(model_, config_.temperature);
    std::vector<std::optional<tensor<typename model::transformer<T>::backend_type>>> old(chunks.size()), ref(chunks.size());
    for (std::size_t c = 0; c < chunks.size(); ++c) {
      if (config_.num_iterations > 1) old[c] = policy.completion_logprobs(chunks[c]);
      if (reference_) {
        model::transformer_policy<T> ref_policy(*reference_, config_.temperature);
        ref[c] = ref_policy.completion_logprobs(chunks[c]);
      }
    }

    const double lr = learning_rate_at(parse_lr_scheduler(config_.lr_scheduler_type), config_.learning_rate,
                                       config_.warmup_ratio, std::max<std::int64_t>(1, config_.max_steps), state_.step);
    policy_loss_metrics total{};
    double loss = 0, first_loss = 0, norm = 0, train_tokens = 0;
    double logprob_diff_max = 0, logprob_diff_sum = 0, logprob_diff_n = 0;
    const auto t1 = std::chrono::steady_clock::now();
    for (std::int64_t it = 0; it < config_.num_iterations && !chunks.empty(); ++it) {
      grads_.set_zero();
      total = {};
      loss = 0;
      for (std::size_t c = 0; c < chunks.size(); ++c) {
        const auto& sb = chunks[c];
        const auto r = static_cast<std::int64_t>(sb.rows()), t = sb.max_completion_length();
        if (t == 0) continue;
        std::vector<std::int64_t> ids(static_cast<std::size_t>(r * t), 0);
        std::vector<double> a(static_cast<std::size_t>(r));
        for (std::size_t i = 0; i < sb.rows(); ++i) {
          for (std::size_t j = 0; j < sb.completions[i].size(); ++j) ids[i * static_cast<std::size_t>(t) + j] = sb.completions[i][j];
          a[i] = adv_host[chunk_rows[c][i]];
        }
        const auto logits = model_.forward(sb, true);
        auto grad = fill(b, logits.shape(), 0.0);
        logits_policy_loss_inputs<typename model::transformer<T>::backend_type> in{
            .advantages = make_tensor(b, a, shape::vector(r)), .mask = final_mask(c), .old_logprobs = old[c],
            .ref_logprobs = ref[c]};
        const auto result = policy_loss_from_logits(logits, make_index(b, ids, shape::vector(r * t)),
                                                    config_.temperature, in, po, den, grad);
        model_.backward(std::span<const T>(grad.data), grads_);
        if (it == 0) {
          // The trainer's log-probs before any update must be the sampler's (same weights, same
          // temperature): a mismatch would bias every ratio and advantage-weighted gradient.
          const auto lp = result.tokens.logprobs.to_host();
          for (std::size_t i = 0; i < sb.rows(); ++i) {
            const auto& behaviour = sampled[chunk_rows[c][i]].full_logprobs;
            for (std::size_t j = 0; j < behaviour.size(); ++j) {
              const double d = std::abs(lp[i * static_cast<std::size_t>(t) + j] - behaviour[j]);
              logprob_diff_max = std::max(logprob_diff_max, d);
              logprob_diff_sum += d;
              logprob_diff_n += 1;
            }
          }
        }
        loss += result.policy.loss.item();
        const auto& pm = result.policy.metrics;
        total.pg_loss += pm.pg_loss;
        total.kl_mean += pm.kl_mean;
        total.entropy_mean += pm.entropy_mean;
        total.clip_fraction_low += pm.clip_fraction_low;
        total.clip_fraction_high += pm.clip_fraction_high;
        total.ratio_mean += pm.ratio_mean;
        train_tokens += static_cast<double>(plan_tokens(sb));
      }
      if (it == 0) first_loss = loss;
      norm = update(lr);
    }
    const double t_train = elapsed(t1);
    ++state_.step;

    metrics_record m;
    m.set("step", static_cast<double>(global_step()));
    m.set("actor/loss", loss);
    // With mu > 1 the surrogate of the same batch after mu - 1 updates: below the first
    // iteration's when the updates move the policy the way the advantages ask.
    if (config_.num_iterations > 1) m.set("actor/loss_first_iteration", first_loss);
    m.set("actor/pg_loss", total.pg_loss);
    m.set("actor/kl", total.kl_mean);
    m.set("actor/entropy", total.entropy_mean);
    m.set("actor/pg_clipfrac", total.clip_fraction_low + total.clip_fraction_high);
    m.set("actor/pg_clipfrac_lower", total.clip_fraction_low);
    m.set("actor/ratio_mean", total.ratio_mean);
    m.set("actor/grad_norm", norm);
    m.set("rollout/logprob_diff_max", logprob_diff_max);
    m.set("rollout/logprob_diff_mean", logprob_diff_n > 0 ? logprob_diff_sum / logprob_diff_n : 0.0);
    m.set("critic/score/mean", adv.reward_mean);
    m.set("critic/score/std", adv.reward_std);
    for (std::size_t q = 0; q < parts.size(); ++q) {
      const auto [mean, std] = mean_std(parts[q]);
      m.set("reward/" + rewards_[q].name + "/mean", mean);
      m.set("reward/" + rewards_[q].name + "/std", std);
    }
    m.set("accuracy", mean_std(acc).first);
    m.set("format_rate", mean_std(fmt).first);
    m.set("response_length/mean", length_sum / static_cast<double>(std::max<std::int64_t>(rows, 1)));
    m.set("response_length/max", length_max);
    m.set("response_length/clip_ratio", truncated / static_cast<double>(std::max<std::int64_t>(rows, 1)));
    m.set("frac_reward_zero_std", adv.zero_std_fraction);
    m.set("kept_rows", static_cast<double>(kept.size()));
    m.set("perf/rollout_tokens_per_s", rollout_tokens / t_rollout);
    m.set("perf/train_tokens_per_s", t_train > 0 ? train_tokens / t_train : 0.0);
    m.set("lr", lr);
    m.set("time/step_s", elapsed(t0));
    progress("grpo", state_.step, config_.max_steps, m,
             {{"reward", "critic/score/mean"}, {"acc", "accuracy"}, {"fmt", "format_rate"},
              {"len", "response_length/mean"}, {"kl", "actor/kl"}, {"ent", "actor/entropy"}},
             elapsed(t0));
    return m;
  }

  /// Writes weights, optimizer moments, reference weights (beta > 0), state and the effective
  /// config to `directory`, atomically.
  void save_checkpoint(const std::filesystem::path& directory) const {
    checkpoint_files files;
    safetensors::writer weights;
    weights.add_metadata("format", "pt");
    model::add_tensors(weights, model_.weights());
    files["model.safetensors"] = detail::to_string(weights.serialize());
    files["config.json"] = model::to_json(model_.weights().config());
    safetensors::writer moments;
    model::add_tensors(moments, optimizer_.exp_avg(), "exp_avg.");
    model::add_tensors(moments, optimizer_.exp_avg_sq(), "exp_avg_sq.");
    files["optimizer.safetensors"] = detail::to_string(moments.serialize());
    if (reference_) {
      safetensors::writer ref;
      model::add_tensors(ref, reference_->weights());
      files["reference.safetensors"] = detail::to_string(ref.serialize());
    }
    std::ostringstream rng;
    rng << state_.data_rng;
    std::ostringstream json;
    json << "{\n  \"phase\": " << grpo::detail::json::quote(state_.phase) << ",\n  \"step\": " << state_.step
         << ",\n  \"global_step\": " << global_step() << ",\n  \"optimizer_steps\": " << optimizer_.steps()
         << ",\n  \"data_rng\": " << grpo::detail::json::quote(rng.str())
         << ",\n  \"eval_before\": " << (state_.before ? detail::eval_json(*state_.before) : "null") << "\n}\n";
    files["trainer_state.json"] = json.str();
    files["config.toml"] = to_toml(config_);
    write_checkpoint_directory(directory, files);
  }

  /// Restores a checkpoint written by save_checkpoint (the config is the caller's: normally the
  /// checkpoint's config.toml). \throws io_error naming the file that is missing or malformed.
  void load_checkpoint(const std::filesystem::path& directory) {
    namespace json = grpo::detail::json;
    const auto state_path = directory / "trainer_state.json";
    const auto root = json::parse(read_text_file(state_path), state_path.string());
    const auto find = [&](std::string_view key) -> const json::value& {
      for (const auto& m : root.members)
        if (m.key == key) return m.value;
      grpo::detail::fail<io_error>(state_path.string(), ": missing \"", key, "\"");
    };
    state_.phase = find("phase").text;
    state_.step = std::stoll(find("step").text);
    std::istringstream rng(find("data_rng").text);
    rng >> state_.data_rng;
    GRPO_CHECK(!rng.fail(), io_error, state_path.string(), ": malformed data_rng");
    const auto& before = find("eval_before");
    if (before.kind == json::kind::object) {
      eval_result e;
      for (const auto& m : before.members) {
        if (m.key == "problems") e.problems = std::stoll(m.value.text);
        if (m.key == "accuracy") e.accuracy = detail::json_double(m.value);
        if (m.key == "format_rate") e.format_rate = detail::json_double(m.value);
        if (m.key == "pass_at")
          for (const auto& pair : m.value.items)
            e.pass_at.emplace_back(std::stoll(pair.items.at(0).text), detail::json_double(pair.items.at(1)));
      }
      state_.before = e;
    }
    model::read_tensors(safetensors::file::read(directory / "model.safetensors"), model_.weights());
    const auto moments = safetensors::file::read(directory / "optimizer.safetensors");
    optimizer_ = adamw<T>(model_.weights().config(), state_.phase == "grpo" ? config_.adam() : config_.sft_adam());
    model::read_tensors(moments, optimizer_.exp_avg(), "exp_avg.");
    model::read_tensors(moments, optimizer_.exp_avg_sq(), "exp_avg_sq.");
    optimizer_.set_steps(std::stoll(find("optimizer_steps").text));
    reference_.reset();
    if (state_.phase == "grpo" && config_.beta > 0) {
      model::parameters<T> ref(model_.weights().config());
      model::read_tensors(safetensors::file::read(directory / "reference.safetensors"), ref);
      reference_.emplace(std::move(ref), model::transformer_options{config_.threads});
    }
  }

  static std::string describe(const eval_result& e) {
    std::ostringstream out;
    out.setf(std::ios::fixed);
    out.precision(1);
    out << "accuracy " << 100 * e.accuracy << "% | format " << 100 * e.format_rate << "%";
    for (const auto& [k, v] : e.pass_at) out << " | pass@" << k << " " << 100 * v << "%";
    out << " (" << e.problems << " held-out problems)";
    return out.str();
  }

 private:
  train_config config_;
  std::unique_ptr<tasks::task> task_;
  model::transformer<T> model_;
  std::optional<model::transformer<T>> reference_;
  std::vector<tasks::named_reward> rewards_;
  adamw<T> optimizer_;
  model::parameters<T> grads_;
  trainer_state state_;
  std::vector<tasks::problem> demonstrations_;
  std::ostream* log_;
  single_process single_;
  communicator* comm_;

  model::parameters<T> initial_weights() const {
    if (!config_.init.empty()) return model::load_pretrained<T>(config_.init);
    model::parameters<T> w(config_.model_config(task_->tokenizer().vocab_size()));
    model::initialize(w, detail::mix(config_.seed, 1), config_.init_std);
    return w;
  }

  /// Demonstration `index` of the endless stream: epochs over sft_examples fixed problems, each
  /// epoch in its own seeded order.
  const tasks::problem& demonstration(std::int64_t index) {
    const auto n = static_cast<std::size_t>(config_.sft_examples);
    if (demonstrations_.empty()) {
      std::mt19937_64 rng(detail::mix(config_.seed, 4));
      for (std::size_t i = 0; i < n; ++i) demonstrations_.push_back(task_->sample_train(rng));
      GRPO_CHECK(!demonstrations_.front().demonstration.empty(), config_error,
                 "sft.steps: the task has no demonstrations (user data); set sft.steps = 0 and start from model.init");
    }
    const auto epoch = static_cast<std::uint64_t>(index) / n, position = static_cast<std::size_t>(index) % n;
    if (epoch != order_epoch_ || order_.empty()) {
      order_.resize(n);
      for (std::size_t i = 0; i < n; ++i) order_[i] = i;
      std::mt19937_64 rng(detail::mix(config_.seed, 5000 + epoch));
      for (std::size_t i = n; i > 1; --i) std::swap(order_[i - 1], order_[tasks::detail::uniform_below(rng, i)]);
      order_epoch_ = epoch;
    }
    return demonstrations_[order_[position]];
  }
  std::vector<std::size_t> order_;
  std::uint64_t order_epoch_ = 0;

  /// All-reduce, clip, AdamW; returns the gradient norm before clipping.
  double update(double lr) {
    comm_->all_reduce_sum(grads_.values());
    const double norm = clip_grad_norm(grads_.values(), config_.max_grad_norm);
    optimizer_.step(model_.weights(), grads_, lr);
    return norm;
  }

  std::optional<eval_result> checkpoint_and_stop() {
    save_checkpoint(std::filesystem::path(config_.output_dir) / "checkpoint");
    return std::nullopt;
  }

  void maybe_save() {
    if (config_.save_steps > 0 && global_step() % config_.save_steps == 0)
      save_checkpoint(std::filesystem::path(config_.output_dir) / "checkpoint");
  }

  static std::int64_t plan_tokens(const sequence_batch& sb) {
    std::int64_t n = 0;
    for (std::size_t r = 0; r < sb.rows(); ++r)
      if (!sb.completions[r].empty()) n += static_cast<std::int64_t>(sb.prompts[r].size() + sb.completions[r].size()) - 1;
    return n;
  }

  static std::pair<double, double> mean_std(const std::vector<double>& v) {
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

  static double elapsed(std::chrono::steady_clock::time_point since) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
  }

  void say(const std::string& line) const {
    if (log_) *log_ << line << std::endl;
  }

  void progress(std::string_view phase, std::int64_t step, std::int64_t total, const metrics_record& m,
                const std::vector<std::pair<std::string, std::string>>& keys, double seconds) {
    if (!log_) return;
    if (step % config_.logging_steps != 0 && step != total) return;
    const double alpha = 0.3;
    auto& avg = phase == "sft" ? sft_seconds_ : grpo_seconds_;
    avg = avg == 0 ? seconds : alpha * seconds + (1 - alpha) * avg;
    say(progress_line(phase, step, total, m, keys, avg));
  }
  double sft_seconds_ = 0, grpo_seconds_ = 0;
};

}  // namespace grpo::train
