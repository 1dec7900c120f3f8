// SPDX-License-Identifier: Apache-2.0
// Exact rationals, the safe Countdown expression parser (grammar, limits, division by zero,
// overflow) and the integer and Countdown answer checkers.
#include "test_support.hpp"

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "grpo/tasks/expression.hpp"
#include "grpo/tasks/task.hpp"

using grpo::tasks::answer_kind;
using grpo::tasks::check_answer;
using grpo::tasks::check_countdown_answer;
using grpo::tasks::check_countdown_expression;
using grpo::tasks::check_integer_answer;
using grpo::tasks::expression_limits;
using grpo::tasks::parse_expression;
using grpo::tasks::rational;

namespace {

rational r(std::int64_t p, std::int64_t q = 1) { return *rational::make(p, q); }

// The value of a well-formed expression that has one (test helper: fails the test otherwise).
rational value_of(const std::string& text) {
  const auto parsed = parse_expression(text);
  INFO(text);
  REQUIRE(parsed.has_value());
  REQUIRE(parsed->value.has_value());
  return *parsed->value;
}

}  // namespace

TEST_CASE("rational normalizes and computes exactly", "[tasks][expression]") {
  CHECK(r(6, -4) == rational{-3, 2});  // sign moves to the numerator, gcd 2 divides out
  CHECK(r(0, 5) == rational{0, 1});
  CHECK_FALSE(rational::make(1, 0).has_value());
  CHECK_FALSE(rational::make(std::numeric_limits<std::int64_t>::min(), 1).has_value());
  CHECK(r(-3, 2).to_string() == "-3/2");
  CHECK(r(7).to_string() == "7");
  CHECK(*(r(1, 2) + r(1, 3)) == r(5, 6));  // 3/6 + 2/6
  CHECK(*(r(1, 2) - r(1, 3)) == r(1, 6));  // 3/6 - 2/6
  CHECK(*(r(2, 3) * r(9, 4)) == r(3, 2));  // 18/12
  CHECK(*(r(1, 2) / r(1, 4)) == r(2));     // 1/2 * 4
  CHECK(*(r(1, 2) / r(-1, 4)) == r(-2));
  CHECK_FALSE((r(5) / r(0)).has_value());
  const std::int64_t big = std::int64_t{1} << 62;
  CHECK_FALSE((r(big) + r(big)).has_value());  // 2^63 does not fit
  CHECK(*(r(big) - r(big)) == r(0));
  CHECK_FALSE((r(3037000500) * r(3037000500)).has_value());  // 9223372037000250000 > 2^63 - 1
  CHECK(*(r(3037000499) * r(3037000499)) == r(9223372030926249001));
}

TEST_CASE("parse_expression evaluates the grammar exactly", "[tasks][expression]") {
  const auto parsed = parse_expression("3*5+7");
  REQUIRE(parsed.has_value());
  CHECK(parsed->numbers == std::vector<std::int64_t>{3, 5, 7});
  CHECK(parsed->value == r(22));  // 15 + 7
  CHECK(value_of("7+3*5") == r(22));          // * binds tighter than +
  CHECK(value_of("1-2-3") == r(-4));          // left associative: (1-2)-3
  CHECK(value_of("8/4/2") == r(1));           // (8/4)/2
  CHECK(value_of("8/(4/2)") == r(4));
  CHECK(value_of("2*(3+4)") == r(14));
  CHECK(value_of(" ( 1 + 2 ) *\n3\t") == r(9));  // blanks between tokens
  CHECK(value_of("8/(3-8/3)") == r(24));       // 3 - 8/3 = 1/3; 8 / (1/3) = 24
  CHECK(value_of("1/3+1/6") == r(1, 2));       // 2/6 + 1/6
  CHECK(value_of("0") == r(0));
  CHECK(value_of("((((5))))") == r(5));
  CHECK(value_of("123456789") == r(123456789));
}

TEST_CASE("parse_expression rejects malformed text", "[tasks][expression]") {
  const std::vector<std::string> malformed = {
      "",       "   ",     "(1+2",   "1+2)",  "1+2)*(3", "1+",   "*2",    "+1",      "-3+5",    "3*-5",
      "07+1",   "00",      "3*5+7=22", "3 5", "x",       "1.5",  "1 ++ 2", "()",      "1e3",     "2^3",
      "1,000",  "(3)(4)",  "3(4)",   "1234567890", "sqrt(4)", "4!", "1//2",  "[1+2]",   "1+2 ;",   "eval"};
  for (const auto& text : malformed) {
    INFO("text: \"" << text << "\"");
    CHECK_FALSE(parse_expression(text).has_value());
  }
}

TEST_CASE("division by zero and overflow leave the value undefined, not a crash", "[tasks][expression]") {
  for (const std::string text : {"1/0", "5/(3-3)", "0*(1/0)", "(1/0)-(1/0)", "999999999*999999999*999999999"}) {
    INFO(text);
    const auto parsed = parse_expression(text);
    REQUIRE(parsed.has_value());
    CHECK_FALSE(parsed->value.has_value());
  }
  // Syntax is still checked after a division by zero.
  CHECK_FALSE(parse_expression("1/0+").has_value());
  CHECK(parse_expression("1/0")->numbers == std::vector<std::int64_t>{1, 0});
}

TEST_CASE("parse_expression limits bound time and stack", "[tasks][expression]") {
  const expression_limits limits;
  // Nesting: 32 levels parse, 33 do not.
  const auto nested = [](int depth) { return std::string(depth, '(') + "1" + std::string(depth, ')'); };
  CHECK(parse_expression(nested(limits.max_depth)).has_value());
  CHECK_FALSE(parse_expression(nested(limits.max_depth + 1)).has_value());
  // 100000 levels: rejected by length before any recursion.
  CHECK_FALSE(parse_expression(nested(100'000)).has_value());
  // Literals: 32 parse, 33 do not.
  const auto sum_of_ones = [](std::size_t n) {
    std::string s = "1";
    for (std::size_t i = 1; i < n; ++i) s += "+1";
    return s;
  };
  CHECK(parse_expression(sum_of_ones(limits.max_numbers))->value == r(32));
  CHECK_FALSE(parse_expression(sum_of_ones(limits.max_numbers + 1)).has_value());
  // Length: "1+1" (3 bytes) plus blanks up to 1024 bytes parses; one more byte does not.
  CHECK(parse_expression(std::string("1+1").append(1021, ' ')).has_value());
  CHECK_FALSE(parse_expression(std::string("1+1").append(1022, ' ')).has_value());
  CHECK_FALSE(parse_expression(std::string(1'000'000, '1')).has_value());
  // A caller's max_digits above 18 still cannot overflow a literal (found by tests/fuzz/expression.cpp):
  // INT64_MAX itself parses, one more is malformed.
  expression_limits wide;
  wide.max_digits = 30;
  CHECK(parse_expression("9223372036854775807", wide)->numbers == std::vector<std::int64_t>{INT64_MAX});
  CHECK_FALSE(parse_expression("9223372036854775808", wide).has_value());
  CHECK_FALSE(parse_expression("77777777777777777777", wide).has_value());
}

TEST_CASE("integer checker: canonical candidates, lenient references", "[tasks][checker]") {
  CHECK(check_integer_answer("125", "125") == true);
  CHECK(check_integer_answer("125", " 125\n") == true);
  CHECK(check_integer_answer("125", "124") == false);
  CHECK(check_integer_answer("125", "0125") == false);  // no leading zeros
  CHECK(check_integer_answer("125", "+125") == false);
  CHECK(check_integer_answer("125", "125.0") == false);
  CHECK(check_integer_answer("125", "1 25") == false);
  CHECK(check_integer_answer("125", "") == false);
  CHECK(check_integer_answer("125", std::nullopt) == false);
  CHECK(check_integer_answer("0", "-0") == false);
  CHECK(check_integer_answer("0", "0") == true);
  CHECK(check_integer_answer("-7", "-7") == true);
  CHECK(check_integer_answer("-7", "7") == false);
  CHECK(check_integer_answer(" 007 ", "7") == true);  // the reference is normalized
  CHECK(check_integer_answer("+7", "7") == true);
  CHECK(check_integer_answer("-0", "0") == true);
  CHECK(check_integer_answer("123456789012345678901234567890", "123456789012345678901234567890") == true);
  // An unusable reference makes the problem unscorable, answer or not.
  CHECK(check_integer_answer("abc", "1") == std::nullopt);
  CHECK(check_integer_answer("", std::nullopt) == std::nullopt);
  CHECK(check_integer_answer("3.5", "3.5") == std::nullopt);
  CHECK(check_integer_answer("-", "-") == std::nullopt);
}

TEST_CASE("countdown checker: exact multiset and exact value", "[tasks][checker]") {
  const std::vector<std::int64_t> numbers = {3, 5, 7};
  const rational target = r(22);
  CHECK(check_countdown_expression(numbers, target, "3*5+7"));
  CHECK(check_countdown_expression(numbers, target, "7 + 5*3"));
  CHECK(check_countdown_expression(numbers, target, "((3*5)+7)"));
  CHECK_FALSE(check_countdown_expression(numbers, target, "3*7+5"));      // 26
  CHECK_FALSE(check_countdown_expression(numbers, target, "15+7"));       // 15 is not given, 3 and 5 unused
  CHECK_FALSE(check_countdown_expression(numbers, target, "3*5+7+0"));    // 0 is not given
  CHECK_FALSE(check_countdown_expression(numbers, target, "3*5+7-3+3"));  // 3 used three times
  CHECK_FALSE(check_countdown_expression(numbers, target, "3*5"));        // 7 missing
  CHECK_FALSE(check_countdown_expression(numbers, target, "(3*5+7"));     // unbalanced
  CHECK_FALSE(check_countdown_expression(numbers, target, "3*5+7=22"));   // '=' is not in the grammar
  CHECK_FALSE(check_countdown_expression(numbers, target, "-3+5*5"));     // no unary minus
  CHECK_FALSE(check_countdown_expression(numbers, target, "3*5+7/(5-5)"));
  CHECK_FALSE(check_countdown_expression(numbers, target, ""));
  // Repeated given numbers must each be used: 4*4+7 = 23 uses both fours.
  const std::vector<std::int64_t> fours = {4, 4, 7};
  CHECK(check_countdown_expression(fours, r(23), "4*4+7"));
  CHECK_FALSE(check_countdown_expression(fours, r(23), "4*4+4+7-4"));
  CHECK_FALSE(check_countdown_expression(fours, r(11), "4+7"));
  // Intermediate fractions are fine; the value is exact: 8 / (3 - 8/3) = 24.
  const std::vector<std::int64_t> classic = {3, 3, 8, 8};
  CHECK(check_countdown_expression(classic, r(24), "8/(3-8/3)"));
  CHECK_FALSE(check_countdown_expression(classic, r(24), "8/3-8/3"));  // 0
}

TEST_CASE("countdown checker against a reference expression", "[tasks][checker]") {
  // The reference 3*5+7 defines numbers {3, 5, 7} and target 22.
  CHECK(check_countdown_answer("3*5+7", "7+3*5") == true);
  CHECK(check_countdown_answer("3*5+7", "3+5+7") == false);
  CHECK(check_countdown_answer("3*5+7", std::nullopt) == false);
  CHECK(check_countdown_answer("1/0", "1") == std::nullopt);    // no value
  CHECK(check_countdown_answer("3 5 7", "3*5+7") == std::nullopt);  // malformed reference
  CHECK(check_answer(answer_kind::countdown, "8/(3-8/3)", "8/(3-8/3)") == true);
  CHECK(check_answer(answer_kind::integer, "12", "12") == true);
  CHECK(check_answer(answer_kind::integer, "12", std::nullopt) == false);
}

TEST_CASE("answer kinds parse by name", "[tasks][checker]") {
  CHECK(grpo::tasks::parse_answer_kind("integer") == answer_kind::integer);
  CHECK(grpo::tasks::parse_answer_kind("countdown") == answer_kind::countdown);
  CHECK(grpo::tasks::to_string(answer_kind::countdown) == "countdown");
  grpo::testing::require_error([] { grpo::tasks::parse_answer_kind("math"); },
                               {"answer_kind: unknown checker \"math\""});
}
