// SPDX-License-Identifier: Apache-2.0
// grpo/train/setup.hpp: the application's assembly of a run from its config: the task (a JSONL
// file or a built-in task), grpo's native CPU transformer as the policy (from a model directory or
// a seeded initialization) and the built-in character codec. The generic trainer (trainer.hpp)
// takes these pieces, or any others a user builds: a LibTorch policy, a Hugging Face tokenizer.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>

#include "grpo/detail/random.hpp"
#include "grpo/hf/model_config.hpp"
#include "grpo/model/native_policy.hpp"
#include "grpo/model/parameters.hpp"
#include "grpo/tasks/tasks.hpp"
#include "grpo/train/codec.hpp"
#include "grpo/train/communicator.hpp"
#include "grpo/train/config.hpp"
#include "grpo/train/limits.hpp"
#include "grpo/train/trainer.hpp"

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
    o.teacher_errors = c.teacher_errors;
    return std::make_unique<tasks::arithmetic_task>(o);
  }
  return tasks::make_task(c.task, 0);
}

/// The architecture a run's policy has: model.init's config.json (read, not the weights) when set,
/// else [model] over `vocab` tokens. With model.init, a [model] key the user changed from its
/// default must agree with the checkpoint: the architecture comes from model.init, and a setting
/// that would be ignored (and recorded in config.toml as if used) is refused instead.
/// \throws config_error naming the [model] key, io_error / config_error for an unreadable config.json.
inline model::transformer_config run_architecture(const train_config& c, std::int64_t vocab) {
  if (c.init.empty()) return c.model_config(vocab);
  const auto path = std::filesystem::path(c.init) / "config.json";
  const hf::model_config loaded = hf::read_model_config(path);
  const train_config defaults;
  const auto agree = [&](std::int64_t train_config::*key, std::int64_t from_init, std::string_view name) {
    GRPO_CHECK(c.*key == defaults.*key || c.*key == from_init, config_error, "model.", name, ": ", c.*key,
               " differs from the ", from_init, " of model.init (", path.string(),
               "); the architecture comes from model.init, so drop model.", name);
  };
  agree(&train_config::hidden_size, loaded.hidden_size, "hidden_size");
  agree(&train_config::intermediate_size, loaded.intermediate_size, "intermediate_size");
  agree(&train_config::num_hidden_layers, loaded.num_hidden_layers, "num_hidden_layers");
  agree(&train_config::num_attention_heads, loaded.num_attention_heads, "num_attention_heads");
  agree(&train_config::num_key_value_heads, loaded.num_key_value_heads, "num_key_value_heads");
  agree(&train_config::max_position_embeddings, loaded.max_position_embeddings, "max_position_embeddings");
  model::transformer_config out;
  out.vocab_size = loaded.vocab_size;
  out.hidden_size = loaded.hidden_size;
  out.intermediate_size = loaded.intermediate_size;
  out.num_hidden_layers = loaded.num_hidden_layers;
  out.num_attention_heads = loaded.num_attention_heads;
  out.num_key_value_heads = loaded.num_key_value_heads;
  out.max_position_embeddings = loaded.max_position_embeddings;
  return out;
}

/// The checks of a run that need its task and tokenizer, before any weights are read or any step
/// runs: the architecture (run_architecture), the tokenizer's ids within the model's vocab_size,
/// the [model] parameter count under limits::parameters, and the longest held-out prompt plus
/// max_completion_length within max_position_embeddings (training prompts come from the same
/// distribution; a longer one still fails when it is sampled, naming the row).
/// \throws config_error naming the key (model.vocab_size, max_completion_length, ...).
inline void check_run(const train_config& c, const tasks::task& task, const text_codec& codec) {
  const std::int64_t vocab = codec.vocab_size();
  const model::transformer_config a = run_architecture(c, vocab);
  const std::string source = c.init.empty() ? std::string("[model]") : "model.init (" + c.init + ")";
  GRPO_CHECK(vocab <= a.vocab_size, config_error, "model.vocab_size: ", source, " has ", a.vocab_size,
             " tokens, the tokenizer ", vocab, " (ids ", a.vocab_size, " to ", vocab - 1,
             " would fall outside its embedding)");
  if (c.init.empty()) {
    const auto n = c.parameter_count(vocab);
    GRPO_CHECK(n && *n <= limits::parameters, config_error, "model: the [model] architecture over ", vocab,
               " tokens has ", n ? std::to_string(*n) : "more than 2^63", " parameters, above the limit of ",
               limits::parameters, " (grpo/train/limits.hpp)");
  }
  std::int64_t longest = 1;
  for (std::size_t i = 0; i < task.heldout_size(); ++i)
    longest = std::max<std::int64_t>(longest,
                                     static_cast<std::int64_t>(codec.encode_prompt(task.heldout(i).prompt).size()));
  GRPO_CHECK(longest + c.max_completion_length <= a.max_position_embeddings, config_error, "max_completion_length: ",
             c.max_completion_length, " tokens after the longest held-out prompt (", longest,
             " tokens) exceed max_position_embeddings = ", a.max_position_embeddings, " of ", source,
             longest < a.max_position_embeddings
                 ? "; at most " + std::to_string(a.max_position_embeddings - longest) + " fit"
                 : std::string("; the prompt alone fills them (a shorter system_prompt or chat.template helps)"));
}

/// The native model's options of a config: `threads` threads and the `kernels` instruction set ("auto": the best
/// this CPU runs). Throws config_error naming `kernels` when this CPU or build cannot run the one asked for.
inline model::transformer_options native_options(const train_config& c) {
  if (c.kernels == "auto") return model::transformer_options(c.threads, model::best_isa());
  const auto kernels = model::isa_from_name(c.kernels);
  GRPO_CHECK(kernels.has_value(), config_error, "kernels: unknown instruction set \"", c.kernels,
             "\" (expected auto, generic, avx2 or avx512)");
  GRPO_CHECK(model::supported(*kernels), config_error, "kernels: ", c.kernels,
             " is not available on this CPU or build (it runs up to ", model::isa_name(model::best_isa()),
             "; auto picks that)");
  return model::transformer_options(c.threads, *kernels);
}

/// The native policy of a config: the weights of `model.init` when set (a model directory), else
/// the [model] architecture over `vocab` tokens initialized from the seed's stream 1, with
/// native_options(c).
template <class T = float>
model::native_policy<T> make_native_policy(const train_config& c, std::int64_t vocab) {
  run_architecture(c, vocab);
  if (!c.init.empty()) return model::native_policy<T>(model::load_pretrained<T>(c.init), native_options(c), c.init);
  model::parameters<T> w(c.model_config(vocab));
  model::initialize(w, grpo::detail::mix_seed(c.seed, stream::initial_weights), c.init_std);
  return model::native_policy<T>(std::move(w), native_options(c));
}

/// The built-in run: the config's task, the native policy and the task's character codec.
template <class T = float>
trainer<model::native_policy<T>> make_native_trainer(train_config c, std::ostream* log = nullptr,
                                                     communicator* comm = nullptr) {
  c.validate();
  auto task = make_task(c);
  auto codec = std::make_unique<tasks::char_codec>(task->tokenizer());
  check_run(c, *task, *codec);
  auto policy = make_native_policy<T>(c, codec->vocab_size());
  return trainer<model::native_policy<T>>(std::move(c), std::move(policy), std::move(task), std::move(codec), log,
                                          comm);
}

}  // namespace grpo::train
