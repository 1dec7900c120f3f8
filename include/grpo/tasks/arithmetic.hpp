// SPDX-License-Identifier: Apache-2.0
// grpo/tasks/arithmetic.hpp: multi-digit arithmetic (a+b, a-b, a*b) with a worked chain of thought:
// column addition with carries, column subtraction with borrows, and for a*b one partial product
// per non-zero digit of b followed by their running sum. Prompt "57+68=", completion
// "<think>7+8=15\n5+6+1=12</think><answer>125</answer>". The answer is checked as an exact integer
// (check_integer_answer). Train and held-out problems are split by a fixed hash of the problem, with
// a+b and b+a (a*b and b*a) counted as the same problem, so they never overlap. Optionally the
// demonstrations come from a weak teacher (teacher_errors) that has some one-digit sums wrong: the
// cold start then has imperfect traces to imitate, while answers and rewards stay exact.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "grpo/error.hpp"
#include "grpo/tasks/task.hpp"

namespace grpo::tasks {

/// Configuration of arithmetic_task.
struct arithmetic_options {
  int min_digits = 1;               ///< each operand has between min_digits and max_digits digits,
  int max_digits = 3;               ///< drawn uniformly; 1 <= min_digits <= max_digits <= 9
  std::string operations = "+-*";   ///< a non-empty subset of "+-*", each at most once
  std::size_t heldout_size = 200;   ///< distinct problems in the held-out split
  double heldout_fraction = 0.1;    ///< share of the problem space reserved for held-out, in (0, 1)
  std::uint64_t seed = 0;           ///< chooses which held-out problems are listed
  /// Share of the digit pairs {x, y} (a fixed hashed subset, the same for x+y and y+x, with and
  /// without a carry in) whose column sum the demonstrations' weak teacher writes one too low (0
  /// as 1), carrying on from its own wrong digit: a systematic error that imitation learns and a
  /// verifier does not reward. Answers are exact whatever it is. In [0, 1); > 0 for "+" alone.
  double teacher_errors = 0;
};

/// Throws config_error naming the first invalid field.
inline void validate(const arithmetic_options& o) {
  GRPO_CHECK(o.min_digits >= 1 && o.min_digits <= 9, config_error, "min_digits: must be in [1, 9], got ", o.min_digits);
  GRPO_CHECK(o.max_digits >= o.min_digits && o.max_digits <= 9, config_error, "max_digits: must be in [min_digits, 9] = [",
             o.min_digits, ", 9], got ", o.max_digits);
  GRPO_CHECK(!o.operations.empty(), config_error, "operations: must name at least one of + - *");
  for (std::size_t i = 0; i < o.operations.size(); ++i) {
    const char op = o.operations[i];
    GRPO_CHECK(op == '+' || op == '-' || op == '*', config_error, "operations: ", detail::describe_char(op),
               " is not one of + - * (division is not supported: its results are not integers)");
    GRPO_CHECK(o.operations.find(op) == i, config_error, "operations: '", op, "' is listed twice");
  }
  GRPO_CHECK(std::isfinite(o.heldout_fraction) && o.heldout_fraction > 0 && o.heldout_fraction < 1, config_error,
             "heldout_fraction: must be in (0, 1), got ", o.heldout_fraction);
  GRPO_CHECK(std::isfinite(o.teacher_errors) && o.teacher_errors >= 0 && o.teacher_errors < 1, config_error,
             "teacher_errors: must be in [0, 1), got ", o.teacher_errors);
  GRPO_CHECK(o.teacher_errors == 0 || o.operations == "+", config_error,
             "teacher_errors: the weak teacher writes column additions only, so operations must be \"+\", got \"",
             o.operations, "\"");
}

namespace detail {

inline constexpr std::int64_t max_operand = 999'999'999;

/// Decimal digits of n >= 0, least significant first.
inline std::vector<int> digits_lsb_first(std::int64_t n) {
  std::vector<int> d;
  do {
    d.push_back(static_cast<int>(n % 10));
    n /= 10;
  } while (n > 0);
  return d;
}

inline std::string join_lines(const std::vector<std::string>& lines) {
  std::string out;
  for (std::size_t i = 0; i < lines.size(); ++i) out += (i == 0 ? "" : "\n") + lines[i];
  return out;
}

/// The lines of a worked solution and the result they arrive at.
struct worked_solution {
  std::vector<std::string> lines;
  std::int64_t result = 0;
};

/// Whether the weak teacher of arithmetic_options::teacher_errors gets the digit pair {x, y} wrong.
inline bool teacher_errs(int x, int y, double teacher_errors) {
  return teacher_errors > 0 &&
         unit_hash("teacher:" + std::to_string(std::min(x, y)) + "+" + std::to_string(std::max(x, y))) < teacher_errors;
}

// Column addition; a column whose digit pair the teacher errs on has its sum one too low (0 as 1),
// and the following columns carry on from the written sum, as a person's slip would.
inline worked_solution addition_steps(std::int64_t a, std::int64_t b, double teacher_errors) {
  const std::vector<int> da = digits_lsb_first(a), db = digits_lsb_first(b);
  worked_solution out;
  int carry = 0;
  std::int64_t place = 1;
  for (std::size_t i = 0; i < std::max(da.size(), db.size()); ++i, place *= 10) {
    const int x = i < da.size() ? da[i] : 0, y = i < db.size() ? db[i] : 0;
    int sum = x + y + carry;
    if (teacher_errs(x, y, teacher_errors)) sum = sum == 0 ? 1 : sum - 1;
    out.lines.push_back(std::to_string(x) + "+" + std::to_string(y) + (carry ? "+1" : "") + "=" + std::to_string(sum));
    out.result += (sum % 10) * place;
    carry = sum / 10;
  }
  out.result += carry * place;
  return out;
}

// a >= b. A column that borrows is written with its digit plus 10: "13-8=5".
inline std::vector<std::string> subtraction_steps(std::int64_t a, std::int64_t b) {
  const std::vector<int> da = digits_lsb_first(a), db = digits_lsb_first(b);
  std::vector<std::string> lines;
  int borrow = 0;
  for (std::size_t i = 0; i < da.size(); ++i) {
    const int y = i < db.size() ? db[i] : 0;
    int x = da[i];
    const int borrow_in = borrow;
    borrow = x - y - borrow_in < 0 ? 1 : 0;
    x += 10 * borrow;
    lines.push_back(std::to_string(x) + "-" + std::to_string(y) + (borrow_in ? "-1" : "") + "=" +
                    std::to_string(x - y - borrow_in));
  }
  return lines;
}

inline std::vector<std::string> multiplication_steps(std::int64_t a, std::int64_t b) {
  if (b < 10) return {std::to_string(a) + "*" + std::to_string(b) + "=" + std::to_string(a * b)};
  const std::vector<int> db = digits_lsb_first(b);
  std::vector<std::string> lines;
  std::vector<std::int64_t> partials;
  std::int64_t scale = 1;
  for (const int d : db) {
    if (d != 0) {
      const std::int64_t factor = d * scale;
      partials.push_back(a * factor);
      lines.push_back(std::to_string(a) + "*" + std::to_string(factor) + "=" + std::to_string(partials.back()));
    }
    scale *= 10;
  }
  std::int64_t total = partials.front();
  for (std::size_t i = 1; i < partials.size(); ++i) {
    lines.push_back(std::to_string(total) + "+" + std::to_string(partials[i]) + "=" + std::to_string(total + partials[i]));
    total += partials[i];
  }
  return lines;
}

}  // namespace detail

/// The prompt of a op b: "57+68=".
inline std::string arithmetic_prompt(std::int64_t a, char op, std::int64_t b) {
  return std::to_string(a) + op + std::to_string(b) + "=";
}

/// a op b, checked: throws value_error when an operand is outside [0, 999999999], op is not one
/// of + - *, or a < b for '-' (the task never asks for negative results).
inline std::int64_t arithmetic_result(std::int64_t a, char op, std::int64_t b) {
  GRPO_CHECK(a >= 0 && a <= detail::max_operand, value_error, "a: must be in [0, 999999999], got ", a);
  GRPO_CHECK(b >= 0 && b <= detail::max_operand, value_error, "b: must be in [0, 999999999], got ", b);
  GRPO_CHECK(op == '+' || op == '-' || op == '*', value_error, "op: must be one of + - *, got ",
             detail::describe_char(op));
  GRPO_CHECK(op != '-' || a >= b, value_error, "b: must be <= a for subtraction, got a=", a, ", b=", b);
  return op == '+' ? a + b : op == '-' ? a - b : a * b;
}

/// The worked chain of thought for a op b, one step per line (see the file header); same
/// preconditions as arithmetic_result.
inline std::string arithmetic_reasoning(std::int64_t a, char op, std::int64_t b) {
  arithmetic_result(a, op, b);
  if (op == '+') return detail::join_lines(detail::addition_steps(a, b, 0).lines);
  if (op == '-') return detail::join_lines(detail::subtraction_steps(a, b));
  return detail::join_lines(detail::multiplication_steps(a, b));
}

/// The problem a op b with its prompt, answer and demonstration; same preconditions as
/// arithmetic_result. With teacher_errors > 0 (for '+' only, else value_error) the demonstration
/// is the weak teacher's (arithmetic_options::teacher_errors) and may end in a wrong answer; the
/// problem's answer is exact.
inline problem make_arithmetic_problem(std::int64_t a, char op, std::int64_t b, double teacher_errors = 0) {
  const std::string answer = std::to_string(arithmetic_result(a, op, b));
  GRPO_CHECK(teacher_errors == 0 || op == '+', value_error, "teacher_errors: applies to '+' only, got op '", op, "'");
  std::string reasoning, written;
  if (teacher_errors > 0) {
    const detail::worked_solution teacher = detail::addition_steps(a, b, teacher_errors);
    reasoning = detail::join_lines(teacher.lines);
    written = std::to_string(teacher.result);
  } else {
    reasoning = arithmetic_reasoning(a, op, b);
    written = answer;
  }
  std::string demonstration = std::string(think_open) + reasoning + std::string(think_close) +
                              std::string(answer_open) + written + std::string(answer_close);
  return {arithmetic_prompt(a, op, b), answer, std::move(demonstration)};
}

/// Multi-digit arithmetic as a task (see the file header). Construction validates the options
/// and lists the held-out split, throwing config_error "heldout_size: ..." when the problem space
/// of the options has too few held-out problems.
class arithmetic_task final : public task {
 public:
  explicit arithmetic_task(arithmetic_options options = {}) : options_(std::move(options)) {
    validate(options_);
    std::mt19937_64 rng(grpo::detail::splitmix64(options_.seed));
    std::set<std::string> seen;
    const auto budget = static_cast<std::uint64_t>(
        1000.0 + 50.0 * static_cast<double>(options_.heldout_size) / options_.heldout_fraction);
    for (std::uint64_t draws = 0; heldout_.size() < options_.heldout_size; ++draws) {
      GRPO_CHECK(draws < budget, config_error, "heldout_size: found only ", heldout_.size(),
                 " distinct held-out problems for ", options_.heldout_size,
                 " requested; widen the digits or operations, raise heldout_fraction or lower heldout_size");
      const operands x = draw(rng);
      const std::string k = key(x);
      if (!detail::in_heldout_split(k, options_.heldout_fraction) || !seen.insert(k).second) continue;
      heldout_.push_back(make_arithmetic_problem(x.a, x.op, x.b, options_.teacher_errors));
    }
  }

  std::string_view name() const override { return "arithmetic"; }
  answer_kind kind() const override { return answer_kind::integer; }
  const arithmetic_options& options() const { return options_; }

  /// A training-split problem drawn with `rng`. Throws config_error in the degenerate case that
  /// 100000 draws all land in the held-out split.
  problem sample_train(std::mt19937_64& rng) const override {
    for (int draws = 0; draws < 100'000; ++draws) {
      const operands x = draw(rng);
      if (!detail::in_heldout_split(key(x), options_.heldout_fraction))
        return make_arithmetic_problem(x.a, x.op, x.b, options_.teacher_errors);
    }
    grpo::detail::fail<config_error>("heldout_fraction: no training problem in 100000 draws; the training split of ",
                                     "these options is (nearly) empty");
  }

  std::size_t heldout_size() const override { return heldout_.size(); }

  problem heldout(std::size_t index) const override {
    GRPO_CHECK(index < heldout_.size(), value_error, "index: ", index, " is outside the held-out split of size ",
               heldout_.size());
    return heldout_[index];
  }

  /// The result of a prompt "A+B=", "A-B=" or "A*B=" with canonical operands of at most 9
  /// digits (any such prompt, not only those of this configuration; A-B may be negative);
  /// nullopt for anything else.
  std::optional<std::string> reference_answer(std::string_view prompt) const override {
    std::string_view rest = prompt;
    const std::optional<std::int64_t> a = detail::take_integer(rest);
    if (!a || rest.empty()) return std::nullopt;
    const char op = rest.front();
    rest.remove_prefix(1);
    const std::optional<std::int64_t> b = detail::take_integer(rest);
    if (!b || rest != "=" || (op != '+' && op != '-' && op != '*')) return std::nullopt;
    return std::to_string(op == '+' ? *a + *b : op == '-' ? *a - *b : *a * *b);
  }

 private:
  struct operands {
    std::int64_t a;
    char op;
    std::int64_t b;
  };

  arithmetic_options options_;
  std::vector<problem> heldout_;

  std::int64_t draw_operand(std::mt19937_64& rng) const {
    const auto digits = grpo::detail::uniform_between(rng, options_.min_digits, options_.max_digits);
    std::int64_t hi = 1;
    for (std::int64_t i = 0; i < digits; ++i) hi *= 10;
    return grpo::detail::uniform_between(rng, digits == 1 ? 0 : hi / 10, hi - 1);
  }

  operands draw(std::mt19937_64& rng) const {
    const char op = options_.operations[grpo::detail::uniform_below(rng, options_.operations.size())];
    std::int64_t a = draw_operand(rng);
    std::int64_t b = draw_operand(rng);
    if (op == '-' && a < b) std::swap(a, b);
    return {a, op, b};
  }

  // Commutative operations are keyed with sorted operands, so a+b and b+a share a split.
  static std::string key(const operands& x) {
    const bool commutative = x.op != '-';
    const std::int64_t lo = commutative ? std::min(x.a, x.b) : x.a;
    const std::int64_t hi = commutative ? std::max(x.a, x.b) : x.b;
    std::string k = "arithmetic:";
    k += std::to_string(lo);
    k += x.op;
    k += std::to_string(hi);
    return k;
  }
};

}  // namespace grpo::tasks
