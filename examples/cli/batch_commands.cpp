// SPDX-License-Identifier: Apache-2.0
// grpo prompts / grad: the two commands that put grpo's GRPO step beside another framework's on the
// same data (bench/trl_compare.py runs them against TRL's GRPOTrainer). `prompts` writes a run's
// task prompts as the trainer would draw and encode them; `grad` computes the loss and the gradient
// norm of one GRPO update on given token ids and rewards, through the trainer's own code path
// (advantages, kept rows, micro-batches, final masks, whole-batch denominators, grpo_update), with no
// change to the weights (learning rate 0, nothing saved). Formats are an interface scripts rely on.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <limits>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "commands.hpp"
#include "json_io.hpp"
#include "grpo/advantages.hpp"
#include "grpo/detail/json.hpp"
#include "grpo/detail/random.hpp"
#include "grpo/error.hpp"
#include "grpo/train/batching.hpp"
#include "grpo/train/communicator.hpp"
#include "grpo/train/trainer.hpp"
#include "grpo/train/update.hpp"
#include "policies.hpp"

namespace grpo::cli {

namespace {

namespace json = grpo::detail::json;

/// One line of the grad input: a prompt and a completion as token ids, whether the completion
/// ended on a stop token, its reward and optionally its advantage.
struct grad_row {
  std::vector<token_id> prompt;
  std::vector<token_id> completion;
  bool stopped = true;
  double reward = 0;
  std::optional<double> advantage;
};

const json::value* find_member(const json::value& v, std::string_view key) {
  for (const auto& m : v.members)
    if (m.key == key) return &m.value;
  return nullptr;
}

double read_number(const json::value& v, const std::string& where, std::string_view key) {
  GRPO_CHECK(v.kind == json::kind::number, io_error, where, ": \"", key, "\" must be a number, got ",
             json::kind_name(v.kind));
  const double x = std::stod(v.text);
  GRPO_CHECK(std::isfinite(x), value_error, where, ": \"", key, "\" must be finite, got ", v.text);
  return x;
}

std::vector<token_id> read_ids(const json::value& object, const std::string& where, std::string_view key) {
  const json::value* v = find_member(object, key);
  GRPO_CHECK(v != nullptr, io_error, where, ": missing \"", key, "\"");
  GRPO_CHECK(v->kind == json::kind::array, io_error, where, ": \"", key, "\" must be an array of token ids, got ",
             json::kind_name(v->kind));
  std::vector<token_id> ids;
  for (std::size_t i = 0; i < v->items.size(); ++i) {
    std::uint64_t id = 0;
    GRPO_CHECK(json::to_uint64(v->items[i], id, std::numeric_limits<std::int32_t>::max()), io_error, where, ": \"",
               key, "\"[", i, "] must be a token id (an integer >= 0)");
    ids.push_back(static_cast<token_id>(id));
  }
  return ids;
}

std::vector<grad_row> read_grad_input(const std::string& path) {
  std::vector<grad_row> rows;
  for_each_jsonl_object(path, [&](const json::value& v, const std::string& where) {
    grad_row row;
    row.prompt = read_ids(v, where, "prompt_ids");
    row.completion = read_ids(v, where, "completion_ids");
    GRPO_CHECK(!row.prompt.empty(), value_error, where, ": \"prompt_ids\" is empty (the first completion token needs context)");
    const json::value* reward = find_member(v, "reward");
    GRPO_CHECK(reward != nullptr, io_error, where, ": missing \"reward\"");
    row.reward = read_number(*reward, where, "reward");
    if (const json::value* a = find_member(v, "advantage")) row.advantage = read_number(*a, where, "advantage");
    if (const json::value* s = find_member(v, "stopped")) {
      GRPO_CHECK(s->kind == json::kind::boolean, io_error, where, ": \"stopped\" must be true or false, got ",
                 json::kind_name(s->kind));
      row.stopped = s->boolean;
    }
    rows.push_back(std::move(row));
  });
  GRPO_CHECK(!rows.empty(), value_error, path, ": no rows");
  return rows;
}

}  // namespace

int prompts_command(const train::train_config& c, const std::string& split, std::int64_t count,
                    const std::string& output) {
  GRPO_CHECK(split == "train" || split == "heldout", config_error, "--split: expected train or heldout, got \"", split,
             "\"");
  GRPO_CHECK(count >= 0, config_error, "--count: must be >= 0, got ", count);
  const auto task = train::make_task(c);
  const auto codec = make_codec(c, *task);
  // The trainer's prompt stream (trainer.hpp: stream::data_order), so that step k of another
  // framework that reads this file in order sees step k's prompts of `grpo train` with this config.
  std::mt19937_64 rng(grpo::detail::mix_seed(c.seed, train::stream::data_order));
  const auto n = split == "train" ? count : std::min<std::int64_t>(count, static_cast<std::int64_t>(task->heldout_size()));
  std::string text;
  for (std::int64_t i = 0; i < n; ++i) {
    const tasks::problem p = split == "train" ? task->sample_train(rng) : task->heldout(static_cast<std::size_t>(i));
    text += "{\"prompt\": " + json::quote(p.prompt) + ", \"answer\": " + json::quote(p.answer) +
            ", \"prompt_ids\": " + ids_json(codec->encode_prompt(p.prompt)) + "}\n";
  }
  train::write_text_file(output, text);
  std::cout << "wrote " << n << " " << split << " prompts of task " << task->name() << " -> " << output << std::endl;
  return 0;
}

int grad_command(const train::train_config& c, const std::string& input, const std::string& output) {
  GRPO_CHECK(!c.init.empty(), config_error, "--model: a model directory is required");
  const auto rows = read_grad_input(input);
  const std::int64_t g = c.num_generations;
  GRPO_CHECK(static_cast<std::int64_t>(rows.size()) % g == 0, value_error, input, ": ", rows.size(),
             " rows do not make groups of num_generations = ", g, " consecutive rows");
  std::vector<std::vector<token_id>> prompts;
  for (std::size_t r = 0; r < rows.size(); ++r) {
    if (r % static_cast<std::size_t>(g) == 0) prompts.push_back(rows[r].prompt);
    GRPO_CHECK(rows[r].prompt == prompts.back(), value_error, input, ": row ", r + 1, ": \"prompt_ids\" differ from row ",
               r / static_cast<std::size_t>(g) * static_cast<std::size_t>(g) + 1,
               "'s; the rows of a group (num_generations = ", g, " consecutive rows) answer one prompt");
    GRPO_CHECK(rows[r].advantage.has_value() == rows[0].advantage.has_value(), value_error, input, ": row ", r + 1,
               ": \"advantage\" must be given on every row or on none");
  }
  const auto task = train::make_task(c);
  const auto codec = make_codec(c, *task);
  const auto loss = c.resolved_loss();
  return with_policy(c, codec->vocab_size(), [&](auto& policy) {
    using B = typename std::remove_reference_t<decltype(policy)>::backend_type;
    const B& b = policy.backend();
    std::vector<double> scores;
    std::vector<sampled_completion> completions;
    for (std::size_t r = 0; r < rows.size(); ++r) {
      for (const auto* ids : {&rows[r].prompt, &rows[r].completion})
        for (const token_id id : *ids)
          GRPO_CHECK(id < policy.vocab_size(), value_error, input, ": row ", r + 1, ": token id ", id,
                     " is outside the model's vocabulary of ", policy.vocab_size());
      scores.push_back(rows[r].reward);
      sampled_completion s;
      s.tokens = rows[r].completion;
      s.stopped = rows[r].stopped;
      completions.push_back(std::move(s));
    }
    const auto n = static_cast<std::int64_t>(rows.size());
    // The advantages as the trainer computes them (grpo_step), unless the input gives its own.
    std::vector<double> advantages;
    if (rows[0].advantage) {
      for (const auto& row : rows) advantages.push_back(*row.advantage);
    } else {
      advantages = grpo_advantages(make_tensor(b, scores, shape::vector(n)), group_layout::consecutive(g), loss.advantage)
                       .advantages.to_host();
    }
    train::single_process one;
    const auto kept = train::kept_rows(scores, g, c.dynamic_sampling);
    const auto rows_to_train = train::make_masked_micro_batches(b, prompts, completions, kept, g,
                                                                c.per_device_train_batch_size,
                                                                c.mask_truncated_completions);
    const auto& micro_batches = rows_to_train.micro_batches;
    const train::update_batch<B> batch{micro_batches, rows_to_train.masks, advantages, completions,
                                       train::global_denominators<B>(rows_to_train.masks, loss.constant, one),
                                       !kept.empty()};
    // Learning rate 0: the update runs whole (the optimizer included, as in a step) and leaves the weights.
    policy.reset_optimizer(c.adam());
    const auto update = train::grpo_update(policy, batch, loss, c.temperature, 1, 0.0, c.max_grad_norm, one);
    std::string adv_text = "[";
    for (std::size_t i = 0; i < advantages.size(); ++i) adv_text += (i ? ", " : "") + json::number(advantages[i]);
    std::string text = "{\"loss\": " + json::number(update.loss) + ", \"grad_norm\": " + json::number(update.grad_norm) +
                       ", \"rows\": " + std::to_string(rows.size()) + ", \"kept_rows\": " + std::to_string(kept.size()) +
                       ", \"loss_tokens\": " + json::number(batch.denominators.tokens) +
                       ", \"micro_batches\": " + std::to_string(micro_batches.size()) +
                       ", \"advantages\": " + adv_text + "], \"policy\": " + json::quote(policy.describe()) + "}\n";
    train::write_text_file(output, text);
    std::cout << "loss " << json::number(update.loss) << ", grad norm " << json::number(update.grad_norm) << " ("
              << rows.size() << " rows, " << micro_batches.size() << " micro-batches) with " << policy.describe()
              << " -> " << output << std::endl;
    return 0;
  });
}

}  // namespace grpo::cli
