// SPDX-License-Identifier: Apache-2.0
// grpo/tasks/tasks.hpp: everything of the verifiable tasks in one include (tokenizer, checkers,
// arithmetic, Countdown, rewards, JSONL user data) and make_task, which builds a built-in task by
// the name a config file or command line gives. Not an RL algorithm: the tasks feed the trainer.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "grpo/error.hpp"
#include "grpo/tasks/arithmetic.hpp"
#include "grpo/tasks/countdown.hpp"
#include "grpo/tasks/expression.hpp"
#include "grpo/tasks/jsonl.hpp"
#include "grpo/tasks/rewards.hpp"
#include "grpo/tasks/task.hpp"
#include "grpo/tasks/tokenizer.hpp"

namespace grpo::tasks {

/// The built-in task called `name` ("arithmetic" or "countdown") with default options and the
/// held-out seed `seed`. Throws config_error for any other name.
inline std::unique_ptr<task> make_task(std::string_view name, std::uint64_t seed = 0) {
  if (name == "arithmetic") {
    arithmetic_options options;
    options.seed = seed;
    return std::make_unique<arithmetic_task>(options);
  }
  if (name == "countdown") {
    countdown_options options;
    options.seed = seed;
    return std::make_unique<countdown_task>(options);
  }
  grpo::detail::fail<config_error>("task: unknown task \"", name, "\" (expected arithmetic or countdown)");
}

}  // namespace grpo::tasks
