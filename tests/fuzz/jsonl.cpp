// SPDX-License-Identifier: Apache-2.0
// tests/fuzz/jsonl.cpp: libFuzzer target for JSONL task data (grpo/tasks/jsonl.hpp): the input is a
// --data file. Accepted problems must encode and decode back to their prompt with the built-in
// tokenizer, split into a dataset task of either answer kind without error, and judge a completion
// that states the problem's own answer as the checker's reading of that answer says: an integer
// answer is correct as its canonical integer, a countdown answer as itself.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "fuzz_support.hpp"
#include "grpo/error.hpp"
#include "grpo/tasks/jsonl.hpp"
#include "grpo/tasks/rewards.hpp"

namespace tasks = grpo::tasks;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<tasks::problem> problems;
  try {
    problems = tasks::parse_jsonl(grpo::fuzz::as_text(data, size), "fuzz.jsonl");
  } catch (const grpo::error&) {
    return 0;
  }
  FUZZ_REQUIRE(!problems.empty());
  const tasks::char_tokenizer& tokenizer = tasks::builtin_tokenizer();
  for (const tasks::problem& p : problems) FUZZ_REQUIRE(tokenizer.decode(tokenizer.encode(p.prompt)) == p.prompt);

  auto [train, heldout] = tasks::split_problems(problems, 0.5);
  if (train.empty()) return 0;
  for (const tasks::answer_kind kind : {tasks::answer_kind::integer, tasks::answer_kind::countdown}) {
    const tasks::dataset_task task("fuzz.jsonl", kind, train, heldout);
    const tasks::accuracy_reward accuracy(task);
    for (const tasks::problem& p : problems) {
      FUZZ_REQUIRE(task.reference_answer(p.prompt) == p.answer);
      std::optional<std::string> stated;
      if (kind == tasks::answer_kind::integer) {
        stated = tasks::detail::canonical_integer(p.answer);
      } else if (const auto parsed = tasks::parse_expression(p.answer); parsed && parsed->value) {
        stated = p.answer;
      }
      const std::optional<double> reward = accuracy(p.prompt, "<think></think><answer>" + stated.value_or("") + "</answer>");
      FUZZ_REQUIRE(reward.has_value() == stated.has_value());
      FUZZ_REQUIRE(!stated || *reward == 1.0);
    }
  }
  return 0;
}
