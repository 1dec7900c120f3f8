// SPDX-License-Identifier: Apache-2.0
// tests/fuzz/expression.cpp: libFuzzer target for the expression parser (grpo/tasks/expression.hpp)
// and the completion parsers in front of it (grpo/tasks/rewards.hpp): the input is model output.
// An input starting with '#' gives the parser other limits from its next four bytes (the rest is the
// text), so limits other than the defaults are exercised too. A parsed expression must respect the
// limits, have a value in lowest terms with a positive denominator, and satisfy the countdown checker
// with its own numbers and value; an answer extracted from a completion is a substring of it.
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <optional>
#include <string_view>

#include "fuzz_support.hpp"
#include "grpo/tasks/expression.hpp"
#include "grpo/tasks/rewards.hpp"
#include "grpo/tasks/task.hpp"

namespace tasks = grpo::tasks;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text = grpo::fuzz::as_text(data, size);
  tasks::expression_limits limits;
  const bool default_limits = !(size >= 5 && data[0] == '#');
  if (!default_limits) {
    limits.max_length = data[1] * 16u;
    limits.max_depth = data[2] % 64;
    limits.max_numbers = data[3] % 64;
    limits.max_digits = data[4] % 32;
    text.remove_prefix(5);
  }

  if (const auto parsed = tasks::parse_expression(text, limits)) {
    FUZZ_REQUIRE(text.size() <= limits.max_length);
    FUZZ_REQUIRE(!parsed->numbers.empty() && parsed->numbers.size() <= limits.max_numbers);
    for (const std::int64_t n : parsed->numbers) FUZZ_REQUIRE(n >= 0);
    if (const auto& value = parsed->value) {
      FUZZ_REQUIRE(value->den > 0 && std::gcd(value->num, value->den) == 1);
      if (default_limits) FUZZ_REQUIRE(tasks::check_countdown_expression(parsed->numbers, *value, text));
    }
  }

  const bool formatted = tasks::has_r1_format(text);
  const std::optional<std::string_view> answer = tasks::extract_answer(text);
  FUZZ_REQUIRE(!formatted || answer.has_value());
  if (answer) {
    FUZZ_REQUIRE(answer->data() >= text.data() && answer->data() + answer->size() <= text.data() + text.size());
    (void)tasks::check_integer_answer("-12", *answer);
    (void)tasks::check_countdown_answer("(25 - 5) * 4 / 2", *answer);
  }
  return 0;
}
