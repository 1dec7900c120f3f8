// SPDX-License-Identifier: Apache-2.0
// grpo/train/setup.hpp: the application's assembly of a run from its config: the task (a JSONL
// file or a built-in task), grpo's native CPU transformer as the policy (from a model directory or
// a seeded initialization) and the built-in character codec. The generic trainer (trainer.hpp)
// takes these pieces, or any others a user builds: a LibTorch policy, a Hugging Face tokenizer.
#pragma once

#include <filesystem>
#include <memory>
#include <ostream>
#include <utility>

#include "grpo/detail/random.hpp"
#include "grpo/model/native_policy.hpp"
#include "grpo/model/parameters.hpp"
#include "grpo/tasks/tasks.hpp"
#include "grpo/train/communicator.hpp"
#include "grpo/train/config.hpp"
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
    return std::make_unique<tasks::arithmetic_task>(o);
  }
  return tasks::make_task(c.task, 0);
}

/// The native policy of a config: the weights of `model.init` when set (a model directory), else
/// the [model] architecture over `vocab` tokens initialized from the seed's stream 1, on
/// `threads` threads.
template <class T = float>
model::native_policy<T> make_native_policy(const train_config& c, std::int64_t vocab) {
  if (!c.init.empty())
    return model::native_policy<T>(model::load_pretrained<T>(c.init), model::transformer_options{c.threads}, c.init);
  model::parameters<T> w(c.model_config(vocab));
  model::initialize(w, grpo::detail::mix_seed(c.seed, stream::initial_weights), c.init_std);
  return model::native_policy<T>(std::move(w), model::transformer_options{c.threads});
}

/// The built-in run: the config's task, the native policy and the task's character codec.
template <class T = float>
trainer<model::native_policy<T>> make_native_trainer(train_config c, std::ostream* log = nullptr,
                                                     communicator* comm = nullptr) {
  c.validate();
  auto task = make_task(c);
  auto codec = std::make_unique<tasks::char_codec>(task->tokenizer());
  auto policy = make_native_policy<T>(c, codec->vocab_size());
  return trainer<model::native_policy<T>>(std::move(c), std::move(policy), std::move(task), std::move(codec), log,
                                          comm);
}

}  // namespace grpo::train
