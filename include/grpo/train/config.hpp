// SPDX-License-Identifier: Apache-2.0
// grpo/train/config.hpp: every setting of `grpo sft` / `grpo train` / `grpo eval` in one struct,
// read from a TOML file (toml.hpp) and overridden by `--set key=value`. GRPO fields at the top
// level carry TRL GRPOConfig's names (learning_rate, num_generations, beta, epsilon, ...);
// [model] uses Hugging Face config.json names, [task], [sft] and [eval] hold the rest. The
// effective config is written back as TOML with every checkpoint, and reads back identically.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "grpo/config.hpp"
#include "grpo/error.hpp"
#include "grpo/loss_settings.hpp"
#include "grpo/model/config.hpp"
#include "grpo/tasks/rewards.hpp"
#include "grpo/train/limits.hpp"
#include "grpo/train/optimizer.hpp"
#include "grpo/train/toml.hpp"
#include "grpo/validate.hpp"

namespace grpo::train {

/// The system prompt of chat-formatted prompts unless a config sets one: it asks for the R1 format
/// (DeepSeek-R1, arXiv:2501.12948, Table 1 describes the same protocol in its template).
inline constexpr std::string_view default_system_prompt =
    "You are a careful assistant. First think through the problem step by step inside <think> </think>, "
    "then give only the final answer inside <answer> </answer>.";

/// The settings of a run. Defaults are the built-in main job (see examples/configs/default.toml).
struct train_config {
  // Top level: GRPO (TRL GRPOConfig names where TRL has the field).
  std::uint64_t seed = 1;
  std::string output_dir = "grpo-run";
  std::int64_t max_steps = 60;                     ///< GRPO optimizer steps
  double learning_rate = 1e-3;
  std::string lr_scheduler_type = "constant";
  double warmup_ratio = 0.0;
  double max_grad_norm = 1.0;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.99;
  double adam_epsilon = 1e-8;
  double weight_decay = 0.0;
  std::int64_t num_generations = 8;                ///< G
  std::int64_t per_device_train_batch_size = 64;   ///< completions per micro-batch
  std::int64_t gradient_accumulation_steps = 2;    ///< micro-batches per optimizer step
  std::int64_t max_completion_length = 48;
  double temperature = 1.0;
  double top_p = 1.0;
  std::int64_t top_k = 0;
  /// The loss and advantage settings (TRL names, top-level keys: beta, epsilon, epsilon_high,
  /// loss_type, ...); resolve() turns them into options once, for the trainer as for `grpo loss`.
  /// Unset epsilon_high means epsilon (TRL).
  loss_settings loss{};
  std::int64_t num_iterations = 1;                 ///< mu
  bool mask_truncated_completions = true;
  bool dynamic_sampling = false;                   ///< drop groups whose rewards are all equal (DAPO)
  std::vector<std::string> reward_funcs = {"accuracy", "format"};  ///< accuracy, partial_accuracy, format
  std::vector<double> reward_weights = {1.0, 0.5};
  std::int64_t logging_steps = 1;
  std::int64_t save_steps = 0;                     ///< 0: a checkpoint only at the end
  std::size_t threads = 0;                         ///< 0: all cores
  /// The native model's matrix kernels: auto (the best this CPU runs), generic, avx2 or avx512. AVX2 and
  /// AVX-512 give the same bits; generic (no fma) differs in rounding. For CPUs where AVX-512 lowers the clock.
  std::string kernels = "auto";
  // [chat]: how a task's prompt becomes the policy's input (Hugging Face tokenizers only; the
  // built-in character tokenizer always feeds <bos> + the prompt).
  std::string chat_template = "auto";              ///< auto (chatml when the tokenizer has <|im_start|>), chatml, plain
  std::string system_prompt{default_system_prompt};
  // [task]
  std::string task = "arithmetic";
  std::string data = "";                           ///< JSONL file of {"prompt", "answer"} (overrides task)
  std::string answer_kind = "integer";             ///< checker for data
  std::int64_t min_digits = 1;
  std::int64_t max_digits = 2;
  std::string operations = "+-*";
  std::int64_t heldout_size = 200;
  /// arithmetic with "+" only: share of digit pairs the demonstrations' weak teacher gets wrong
  /// (tasks::arithmetic_options::teacher_errors); answers and rewards stay exact
  double teacher_errors = 0;
  // [model]
  std::int64_t hidden_size = 128;
  std::int64_t intermediate_size = 352;
  std::int64_t num_hidden_layers = 3;
  std::int64_t num_attention_heads = 4;
  std::int64_t num_key_value_heads = 2;
  std::int64_t max_position_embeddings = 96;
  double init_std = 0.02;
  std::string init = "";                           ///< a model directory to start from (skips nothing)
  std::string policy = "native";                   ///< native (grpo's CPU transformer) or torch (LibTorch)
  std::string device = "cpu";                      ///< torch policy: cpu or cuda
  // [sft]
  std::int64_t sft_steps = 150;
  std::int64_t sft_examples = 2000;                ///< demonstrations drawn
  /// Keep only the drawn demonstrations whose answer the task's verifier accepts (R1's rejection
  /// sampling of cold-start data, arXiv:2501.12948 Sec. 2.3.3).
  bool sft_verified_only = false;
  std::int64_t sft_batch_size = 32;
  double sft_learning_rate = 2e-3;
  double sft_warmup_ratio = 0.05;
  std::string sft_lr_scheduler_type = "cosine";
  /// The cold start's own Adam epsilon: GRPO's large one (1e-2 damps sampling noise on a tiny
  /// model) stalls supervised learning, so the two phases do not share it.
  double sft_adam_epsilon = 1e-8;
  // [eval]
  std::int64_t eval_size = 200;                    ///< held-out problems (<= heldout_size)
  std::int64_t eval_num_samples = 4;               ///< n samples per problem for pass@k (0: skip)
  std::vector<std::int64_t> eval_pass_k = {1, 4};
  double eval_temperature = 1.0;

  model::transformer_config model_config(std::int64_t vocab) const {
    model::transformer_config c;
    c.vocab_size = vocab;
    c.hidden_size = hidden_size;
    c.intermediate_size = intermediate_size;
    c.num_hidden_layers = num_hidden_layers;
    c.num_attention_heads = num_attention_heads;
    c.num_key_value_heads = num_key_value_heads;
    c.max_position_embeddings = max_position_embeddings;
    return c;
  }

  adamw_options adam() const { return {adam_beta1, adam_beta2, adam_epsilon, weight_decay}; }
  adamw_options sft_adam() const { return {adam_beta1, adam_beta2, sft_adam_epsilon, weight_decay}; }
  /// Completions per optimizer step: per_device_train_batch_size * gradient_accumulation_steps.
  /// \throws config_error naming both keys when the product overflows (validate() bounds it first).
  std::int64_t generation_batch_size() const {
    const auto n = limits::checked_product(per_device_train_batch_size, gradient_accumulation_steps);
    GRPO_CHECK(n.has_value(), config_error, "per_device_train_batch_size * gradient_accumulation_steps: ",
               per_device_train_batch_size, " * ", gradient_accumulation_steps, " is not a valid completion count");
    return *n;
  }
  std::int64_t prompts_per_step() const { return generation_batch_size() / num_generations; }
  /// The loss settings resolved against the generation limit (Dr. GRPO's C = max_completion_length).
  resolved_loss_settings resolved_loss() const { return resolve(loss, max_completion_length); }

  /// Checks every field and every size derived from them, before any work, and throws config_error
  /// naming the first invalid one by its config key (section.key), with the allowed range. Sizes
  /// have the upper bounds of limits.hpp, derived sizes are computed with overflow checks. What
  /// needs the task, the tokenizer or model.init's weights is checked by check_run (setup.hpp).
  void validate() const {
    const auto in_range = [](std::int64_t v, std::int64_t lo, std::int64_t hi, std::string_view name) {
      GRPO_CHECK(v >= lo && v <= hi, config_error, name, ": must be an integer in [", lo, ", ", hi, "], got ", v);
    };
    const auto product_at_most = [](std::int64_t a, std::int64_t b, std::int64_t hi, std::string_view what) {
      const auto n = limits::checked_product(a, b);
      GRPO_CHECK(n && *n <= hi, config_error, what, ": ", a, " * ", b, " = ", n ? std::to_string(*n) : "overflow",
                 " exceeds the limit of ", hi, " (grpo/train/limits.hpp)");
    };
    const auto finite_in = [](double v, double lo, double hi, std::string_view name) {
      GRPO_CHECK(std::isfinite(v) && v >= lo && v <= hi, config_error, name, ": must be in [", lo, ", ", hi,
                 "], got ", v);
    };
    GRPO_CHECK(!output_dir.empty(), config_error,
               "output_dir: must name a directory, got an empty string (use \".\" for the current directory)");
    in_range(max_steps, 0, limits::steps, "max_steps");
    in_range(num_generations, 2, limits::completions_per_step, "num_generations");
    in_range(per_device_train_batch_size, 1, limits::micro_batch, "per_device_train_batch_size");
    in_range(gradient_accumulation_steps, 1, limits::accumulation_steps, "gradient_accumulation_steps");
    product_at_most(per_device_train_batch_size, gradient_accumulation_steps, limits::completions_per_step,
                    "per_device_train_batch_size * gradient_accumulation_steps (completions per step)");
    GRPO_CHECK(generation_batch_size() % num_generations == 0, config_error,
               "num_generations: must divide per_device_train_batch_size * gradient_accumulation_steps = ",
               generation_batch_size(), ", got ", num_generations);
    in_range(max_completion_length, 1, limits::completion_length, "max_completion_length");
    product_at_most(generation_batch_size(), max_completion_length, limits::tokens_per_step,
                    "per_device_train_batch_size * gradient_accumulation_steps * max_completion_length (tokens per "
                    "step)");
    in_range(num_iterations, 1, limits::iterations, "num_iterations");
    in_range(logging_steps, 1, limits::steps, "logging_steps");
    in_range(save_steps, 0, limits::steps, "save_steps");
    GRPO_CHECK(threads <= static_cast<std::size_t>(limits::threads), config_error, "threads: must be an integer in [0, ",
               limits::threads, "] (0: all cores), got ", threads);
    GRPO_CHECK(kernels == "auto" || kernels == "generic" || kernels == "avx2" || kernels == "avx512", config_error,
               "kernels: unknown instruction set \"", kernels, "\" (expected auto, generic, avx2 or avx512)");
    in_range(min_digits, 1, 9, "task.min_digits");
    in_range(max_digits, min_digits, 9, "task.max_digits");
    in_range(heldout_size, 1, limits::problems, "task.heldout_size");
    GRPO_CHECK(std::isfinite(teacher_errors) && teacher_errors >= 0 && teacher_errors < 1, config_error,
               "task.teacher_errors: must be in [0, 1), got ", teacher_errors);
    GRPO_CHECK(teacher_errors == 0 || (task == "arithmetic" && data.empty() && operations == "+"), config_error,
               "task.teacher_errors: the weak teacher writes column additions only (task.name = \"arithmetic\", "
               "task.operations = \"+\", no task.data), got task.name \"", task, "\", task.operations \"", operations,
               "\"", data.empty() ? "" : ", task.data set");
    in_range(sft_steps, 0, limits::steps, "sft.steps");
    in_range(sft_examples, 1, limits::problems, "sft.examples");
    in_range(sft_batch_size, 1, limits::micro_batch, "sft.batch_size");
    in_range(eval_size, 0, limits::problems, "eval.size");
    in_range(eval_num_samples, 0, limits::eval_samples, "eval.num_samples");
    product_at_most(eval_size, eval_num_samples, limits::eval_completions,
                    "eval.size * eval.num_samples (completions of an evaluation)");
    for (const auto k : eval_pass_k)
      GRPO_CHECK(k >= 1 && (eval_num_samples == 0 || k <= eval_num_samples), config_error,
                 "eval.pass_k: each k must be in [1, eval.num_samples = ", eval_num_samples, "], got ", k);
    GRPO_CHECK(std::isfinite(learning_rate) && learning_rate >= 0, config_error,
               "learning_rate: must be a finite value >= 0, got ", learning_rate);
    GRPO_CHECK(std::isfinite(sft_learning_rate) && sft_learning_rate >= 0, config_error,
               "sft.learning_rate: must be a finite value >= 0, got ", sft_learning_rate);
    finite_in(warmup_ratio, 0.0, 1.0, "warmup_ratio");
    finite_in(sft_warmup_ratio, 0.0, 1.0, "sft.warmup_ratio");
    GRPO_CHECK(!std::isnan(max_grad_norm), config_error, "max_grad_norm: must be a number (<= 0: no clipping), got ",
               max_grad_norm);
    GRPO_CHECK(std::isfinite(temperature) && temperature > 0 && std::isfinite(1.0 / temperature), config_error,
               "temperature: must be a finite value > 0 with a finite inverse, got ", temperature);
    GRPO_CHECK(eval_temperature == 0 || (std::isfinite(eval_temperature) && eval_temperature > 0 &&
                                         std::isfinite(1.0 / eval_temperature)),
               config_error, "eval.temperature: must be 0 (greedy) or a finite value > 0 with a finite inverse, got ",
               eval_temperature);
    GRPO_CHECK(std::isfinite(top_p) && top_p > 0 && top_p <= 1, config_error, "top_p: must be in (0, 1], got ", top_p);
    in_range(top_k, 0, std::numeric_limits<std::int32_t>::max(), "top_k");
    resolved_loss();
    GRPO_CHECK(reward_funcs.size() == reward_weights.size(), config_error, "reward_weights: expected ",
               reward_funcs.size(), " weights (one per reward_funcs entry), got ", reward_weights.size());
    for (const double w : reward_weights)
      GRPO_CHECK(std::isfinite(w), config_error, "reward_weights: each weight must be finite, got ", w);
    for (const auto& name : reward_funcs) tasks::check_reward_name(name);
    parse_lr_scheduler(lr_scheduler_type);
    parse_lr_scheduler(sft_lr_scheduler_type, "sft.lr_scheduler_type");
    GRPO_CHECK(policy == "native" || policy == "torch", config_error, "model.policy: unknown policy \"", policy,
               "\" (expected native or torch)");
    GRPO_CHECK(device == "cpu" || device == "cuda" || device.starts_with("cuda:"), config_error,
               "model.device: unknown device \"", device, "\" (expected cpu, cuda or cuda:N)");
    GRPO_CHECK(policy == "torch" || device == "cpu", config_error, "model.device: the native policy runs on the cpu, got \"",
               device, "\" (set model.policy = \"torch\")");
    GRPO_CHECK(policy == "native" || !init.empty(), config_error,
               "model.init: the torch policy needs a Hugging Face model directory (--model DIR)");
    GRPO_CHECK(chat_template == "auto" || chat_template == "chatml" || chat_template == "plain", config_error,
               "chat.template: unknown template \"", chat_template, "\" (expected auto, chatml or plain)");
    validate(adam());
    grpo::detail::expect_positive(sft_adam_epsilon, "sft.adam_epsilon");
    grpo::detail::expect_positive(init_std, "model.init_std");
    validate_architecture();
  }

  /// Parameters of the [model] architecture over `vocab` tokens (tied embeddings, as
  /// model_config), or nullopt on overflow.
  std::optional<std::int64_t> parameter_count(std::int64_t vocab) const {
    const auto c = model_config(vocab);
    using limits::checked_product;
    const auto add = [](std::optional<std::int64_t> a, std::optional<std::int64_t> b) -> std::optional<std::int64_t> {
      if (!a || !b || *a > std::numeric_limits<std::int64_t>::max() - *b) return std::nullopt;
      return *a + *b;
    };
    const std::int64_t head_dim = c.hidden_size / c.num_attention_heads;
    const auto kv = checked_product(c.num_key_value_heads, head_dim);
    auto layer = add(checked_product(c.hidden_size, c.hidden_size), checked_product(c.hidden_size, c.hidden_size));
    if (kv) layer = add(layer, checked_product(2 * c.hidden_size, *kv));
    else layer = std::nullopt;
    layer = add(layer, checked_product(3 * c.hidden_size, c.intermediate_size));
    layer = add(layer, 2 * c.hidden_size);
    auto total = layer ? checked_product(*layer, c.num_hidden_layers) : std::nullopt;
    total = add(total, checked_product(c.vocab_size, c.hidden_size));
    return add(total, c.hidden_size);
  }

 private:
  /// [model]: each size in range (model_config's rules, with the model. keys), and for a model
  /// initialized here (no model.init) the bounds of limits.hpp on its positions and parameters,
  /// and room for a prompt token beside max_completion_length.
  void validate_architecture() const {
    try {
      model_config(1).validate();
    } catch (const config_error& e) {
      grpo::detail::fail<config_error>("model.", e.what());
    }
    if (!init.empty()) return;  // the architecture is model.init's (checked against it by check_run)
    GRPO_CHECK(max_position_embeddings <= limits::positions, config_error,
               "model.max_position_embeddings: must be an integer in [1, ", limits::positions, "], got ",
               max_position_embeddings);
    GRPO_CHECK(max_completion_length < max_position_embeddings, config_error, "max_completion_length: ",
               max_completion_length, " leaves no position for the prompt in model.max_position_embeddings = ",
               max_position_embeddings);
    const auto n = parameter_count(1);
    GRPO_CHECK(n && *n <= limits::parameters, config_error,
               "model: hidden_size, intermediate_size and num_hidden_layers give ",
               n ? std::to_string(*n) : "more than 2^63", " parameters, above the limit of ", limits::parameters,
               " for a model initialized from [model] (grpo/train/limits.hpp)");
  }

  static void validate(const adamw_options& o) { train::validate(o); }
};

namespace detail {

/// One config field: its TOML key (section.key), how to set it from a value, how to print it.
struct field {
  std::string key;
  std::function<void(train_config&, const toml::value&)> set;
  std::function<std::optional<std::string>(const train_config&)> get;  ///< nullopt: unset
};

[[noreturn]] inline void type_error(std::string_view key, std::string_view expected, const toml::value& v) {
  grpo::detail::fail<config_error>(key, ": expected ", expected, ", got ", toml::kind_name(v.type), " ", v.text);
}

inline std::int64_t as_integer(std::string_view key, const toml::value& v) {
  if (v.type != toml::kind::integer) type_error(key, "an integer", v);
  return v.integer;
}
inline double as_float(std::string_view key, const toml::value& v) {
  if (v.type == toml::kind::integer) return static_cast<double>(v.integer);
  if (v.type != toml::kind::floating) type_error(key, "a number", v);
  return v.floating;
}

template <class T>
struct is_optional : std::false_type {};
template <class T>
struct is_optional<std::optional<T>> : std::true_type {};

template <class M>
M parse_value(const std::string& key, const toml::value& v) {
  if constexpr (is_optional<M>::value) {
    return parse_value<typename M::value_type>(key, v);
  } else if constexpr (std::is_same_v<M, std::string>) {
    if (v.type != toml::kind::string) type_error(key, "a string", v);
    return v.string;
  } else if constexpr (std::is_same_v<M, bool>) {
    if (v.type != toml::kind::boolean) type_error(key, "true or false", v);
    return v.boolean;
  } else if constexpr (std::is_same_v<M, double>) {
    return as_float(key, v);
  } else if constexpr (std::is_same_v<M, std::vector<double>>) {
    if (v.type != toml::kind::array) type_error(key, "an array of numbers", v);
    std::vector<double> out;
    for (const auto& x : v.array) out.push_back(as_float(key, x));
    return out;
  } else if constexpr (std::is_same_v<M, std::vector<std::int64_t>>) {
    if (v.type != toml::kind::array) type_error(key, "an array of integers", v);
    std::vector<std::int64_t> out;
    for (const auto& x : v.array) out.push_back(as_integer(key, x));
    return out;
  } else if constexpr (std::is_same_v<M, std::vector<std::string>>) {
    if (v.type != toml::kind::array) type_error(key, "an array of strings", v);
    std::vector<std::string> out;
    for (const auto& x : v.array) {
      if (x.type != toml::kind::string) type_error(key, "an array of strings", x);
      out.push_back(x.string);
    }
    return out;
  } else {
    const std::int64_t x = as_integer(key, v);
    GRPO_CHECK(x >= 0 || std::is_signed_v<M>, config_error, key, ": must be >= 0, got ", x);
    return static_cast<M>(x);
  }
}

template <class M>
std::string format_value(const M& x) {
  if constexpr (std::is_same_v<M, std::string>) {
    return toml::quote(x);
  } else if constexpr (std::is_same_v<M, bool>) {
    return x ? "true" : "false";
  } else if constexpr (std::is_same_v<M, double>) {
    return toml::format_float(x);
  } else if constexpr (std::is_same_v<M, std::vector<double>> || std::is_same_v<M, std::vector<std::int64_t>> ||
                       std::is_same_v<M, std::vector<std::string>>) {
    std::string out = "[";
    for (std::size_t i = 0; i < x.size(); ++i) out += (i ? ", " : "") + format_value(x[i]);
    return out + "]";
  } else {
    return std::to_string(x);
  }
}

/// The field `key` of the member that `member(config)` returns (member takes a train_config or a
/// const one). An optional member is unset when
/// its key is absent, and left out of the TOML written back.
template <class Member>
field make_field(std::string key, Member member) {
  using M = std::remove_reference_t<decltype(member(std::declval<train_config&>()))>;
  field f;
  f.key = key;
  f.set = [key, member](train_config& c, const toml::value& v) { member(c) = parse_value<M>(key, v); };
  f.get = [member](const train_config& c) -> std::optional<std::string> {
    const M& x = member(c);
    if constexpr (is_optional<M>::value) {
      if (!x) return std::nullopt;
      return format_value(*x);
    } else {
      return format_value(x);
    }
  };
  return f;
}

template <class M>
field make_field(std::string key, M train_config::*member) {
  return make_field(std::move(key), [member](auto& c) -> auto& { return c.*member; });
}

/// A field of the loss settings, under its top-level TRL key.
template <class M>
field loss_field(std::string key, M loss_settings::*member) {
  return make_field(std::move(key), [member](auto& c) -> auto& { return c.loss.*member; });
}

inline const std::vector<field>& fields() {
  using c = train_config;
  static const std::vector<field> all = {
      make_field("seed", &c::seed),
      make_field("output_dir", &c::output_dir),
      make_field("max_steps", &c::max_steps),
      make_field("learning_rate", &c::learning_rate),
      make_field("lr_scheduler_type", &c::lr_scheduler_type),
      make_field("warmup_ratio", &c::warmup_ratio),
      make_field("max_grad_norm", &c::max_grad_norm),
      make_field("adam_beta1", &c::adam_beta1),
      make_field("adam_beta2", &c::adam_beta2),
      make_field("adam_epsilon", &c::adam_epsilon),
      make_field("weight_decay", &c::weight_decay),
      make_field("num_generations", &c::num_generations),
      make_field("per_device_train_batch_size", &c::per_device_train_batch_size),
      make_field("gradient_accumulation_steps", &c::gradient_accumulation_steps),
      make_field("max_completion_length", &c::max_completion_length),
      make_field("temperature", &c::temperature),
      make_field("top_p", &c::top_p),
      make_field("top_k", &c::top_k),
      loss_field("beta", &loss_settings::beta),
      loss_field("kl_estimator", &loss_settings::kl_estimator),
      loss_field("epsilon", &loss_settings::epsilon),
      loss_field("epsilon_high", &loss_settings::epsilon_high),
      loss_field("delta", &loss_settings::delta),
      loss_field("dual_clip", &loss_settings::dual_clip),
      loss_field("loss_type", &loss_settings::loss_type),
      loss_field("loss_agg_mode", &loss_settings::loss_agg_mode),
      loss_field("scale_rewards", &loss_settings::scale_rewards),
      loss_field("adv_epsilon", &loss_settings::adv_epsilon),
      loss_field("importance_sampling_level", &loss_settings::importance_sampling_level),
      loss_field("log_ratio_bound", &loss_settings::log_ratio_bound),
      loss_field("entropy_coef", &loss_settings::entropy_coef),
      make_field("num_iterations", &c::num_iterations),
      make_field("mask_truncated_completions", &c::mask_truncated_completions),
      make_field("dynamic_sampling", &c::dynamic_sampling),
      make_field("reward_funcs", &c::reward_funcs),
      make_field("reward_weights", &c::reward_weights),
      make_field("logging_steps", &c::logging_steps),
      make_field("save_steps", &c::save_steps),
      make_field("threads", &c::threads),
      make_field("kernels", &c::kernels),
      make_field("task.name", &c::task),
      make_field("task.data", &c::data),
      make_field("task.answer_kind", &c::answer_kind),
      make_field("task.min_digits", &c::min_digits),
      make_field("task.max_digits", &c::max_digits),
      make_field("task.operations", &c::operations),
      make_field("task.heldout_size", &c::heldout_size),
      make_field("task.teacher_errors", &c::teacher_errors),
      make_field("model.hidden_size", &c::hidden_size),
      make_field("model.intermediate_size", &c::intermediate_size),
      make_field("model.num_hidden_layers", &c::num_hidden_layers),
      make_field("model.num_attention_heads", &c::num_attention_heads),
      make_field("model.num_key_value_heads", &c::num_key_value_heads),
      make_field("model.max_position_embeddings", &c::max_position_embeddings),
      make_field("model.init_std", &c::init_std),
      make_field("model.init", &c::init),
      make_field("model.policy", &c::policy),
      make_field("model.device", &c::device),
      make_field("sft.steps", &c::sft_steps),
      make_field("sft.examples", &c::sft_examples),
      make_field("sft.verified_only", &c::sft_verified_only),
      make_field("sft.batch_size", &c::sft_batch_size),
      make_field("sft.learning_rate", &c::sft_learning_rate),
      make_field("sft.warmup_ratio", &c::sft_warmup_ratio),
      make_field("sft.lr_scheduler_type", &c::sft_lr_scheduler_type),
      make_field("sft.adam_epsilon", &c::sft_adam_epsilon),
      make_field("eval.size", &c::eval_size),
      make_field("eval.num_samples", &c::eval_num_samples),
      make_field("eval.pass_k", &c::eval_pass_k),
      make_field("eval.temperature", &c::eval_temperature),
      make_field("chat.template", &c::chat_template),
      make_field("chat.system_prompt", &c::system_prompt),
  };
  return all;
}

inline const field& find_field(std::string_view key) {
  for (const auto& f : fields())
    if (f.key == key) return f;
  std::string known;
  for (const auto& f : fields()) known += (known.empty() ? "" : ", ") + f.key;
  grpo::detail::fail<config_error>(key, ": unknown setting (known: ", known, ")");
}

}  // namespace detail

/// Sets one field by its key ("learning_rate", "sft.steps", "model.hidden_size", ...).
/// \throws config_error naming the key when it is unknown or the value has the wrong type.
inline void set_value(train_config& config, std::string_view key, const toml::value& v) {
  detail::find_field(key).set(config, v);
}

/// Applies `key=value` (value in TOML syntax, or a bare string), as `--set` does.
/// \throws config_error naming "--set" when there is no '=', else as set_value.
inline void apply_override(train_config& config, std::string_view assignment) {
  const std::size_t eq = assignment.find('=');
  GRPO_CHECK(eq != std::string_view::npos && eq > 0, config_error, "--set: expected key=value, got '", assignment,
             "'");
  const std::string_view key = assignment.substr(0, eq);
  const detail::field& f = detail::find_field(key);
  toml::value v;
  try {
    v = toml::parse_override_value(assignment.substr(eq + 1));
  } catch (const config_error& e) {
    grpo::detail::fail<config_error>(key, ": ", e.what());
  }
  f.set(config, v);
}

/// Applies every entry of a TOML document (unknown keys are errors naming the file and line).
inline void apply(train_config& config, const toml::document& doc, std::string_view source) {
  for (const auto& e : doc.entries) {
    try {
      set_value(config, e.key, e.item);
    } catch (const config_error& ex) {
      grpo::detail::fail<config_error>(source, ":", e.line, ": ", ex.what());
    }
  }
}

/// Reads a TOML file over the defaults.
/// \throws io_error naming the path when it is a directory or cannot be read, config_error
///         "PATH:LINE: ..." for a syntax error or an invalid entry.
inline train_config load_config(const std::filesystem::path& path, train_config config = {}) {
  std::error_code ec;
  GRPO_CHECK(!std::filesystem::is_directory(path, ec), io_error, path.string(),
             ": is a directory, expected a TOML config file");
  std::ifstream in(path, std::ios::binary);
  GRPO_CHECK(in.good(), io_error, path.string(), ": cannot open for reading");
  std::string text;
  try {
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  } catch (const std::exception& e) {
    grpo::detail::fail<io_error>(path.string(), ": read failed (", e.what(), ")");
  }
  GRPO_CHECK(!in.bad(), io_error, path.string(), ": read failed");
  apply(config, toml::parse(text, path.string()), path.string());
  return config;
}

/// The whole config as TOML (every field, top-level keys first, then one [section] each).
inline std::string to_toml(const train_config& config) {
  std::ostringstream out;
  std::string section;
  out << "# grpo effective config\n";
  for (const auto& f : detail::fields()) {
    const std::size_t dot = f.key.find('.');
    const std::string s = dot == std::string::npos ? "" : f.key.substr(0, dot);
    if (s != section) {
      out << "\n[" << s << "]\n";
      section = s;
    }
    const std::optional<std::string> value = f.get(config);
    if (value) out << (dot == std::string::npos ? f.key : f.key.substr(dot + 1)) << " = " << *value << "\n";
  }
  return out.str();
}

}  // namespace grpo::train
