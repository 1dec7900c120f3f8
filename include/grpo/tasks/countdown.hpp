// SPDX-License-Identifier: Apache-2.0
// grpo/tasks/countdown.hpp: Countdown, the task of TinyZero (Pan et al. 2025): combine the given
// numbers with + - * / and parentheses to reach the target, each number used exactly once (as
// TinyZero requires), in exact rational arithmetic. Prompt "use 3 5 7 to make 22.", completion
// "<think>5*3=15\n15+7=22</think><answer>5*3+7</answer>". A complete solver (pairwise combination,
// first restricted to non-negative integer steps so demonstrations stay readable, then over all
// rationals) keeps the generator to solvable instances and writes the demonstrations.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "grpo/error.hpp"
#include "grpo/tasks/expression.hpp"
#include "grpo/tasks/task.hpp"

namespace grpo::tasks {

/// Configuration of countdown_task.
struct countdown_options {
  int min_count = 3;               ///< numbers per problem, drawn uniformly in [min_count, max_count];
  int max_count = 4;               ///< 2 <= min_count <= max_count <= 5
  int max_number = 20;             ///< each number is drawn from [1, max_number], max_number <= 1000
  int min_target = 1;              ///< the target is drawn from [min_target, max_target],
  int max_target = 100;            ///< 0 <= min_target <= max_target <= 1000000
  std::size_t heldout_size = 200;  ///< distinct problems in the held-out split
  double heldout_fraction = 0.1;   ///< share of the problem space reserved for held-out, in (0, 1)
  std::uint64_t seed = 0;          ///< chooses which held-out problems are listed
};

/// Throws config_error naming the first invalid field.
inline void validate(const countdown_options& o) {
  GRPO_CHECK(o.min_count >= 2 && o.min_count <= 5, config_error, "min_count: must be in [2, 5], got ", o.min_count);
  GRPO_CHECK(o.max_count >= o.min_count && o.max_count <= 5, config_error, "max_count: must be in [min_count, 5] = [",
             o.min_count, ", 5], got ", o.max_count);
  GRPO_CHECK(o.max_number >= 1 && o.max_number <= 1000, config_error, "max_number: must be in [1, 1000], got ",
             o.max_number);
  GRPO_CHECK(o.min_target >= 0 && o.min_target <= 1'000'000, config_error, "min_target: must be in [0, 1000000], got ",
             o.min_target);
  GRPO_CHECK(o.max_target >= o.min_target && o.max_target <= 1'000'000, config_error,
             "max_target: must be in [min_target, 1000000] = [", o.min_target, ", 1000000], got ", o.max_target);
  GRPO_CHECK(std::isfinite(o.heldout_fraction) && o.heldout_fraction > 0 && o.heldout_fraction < 1, config_error,
             "heldout_fraction: must be in (0, 1), got ", o.heldout_fraction);
}

/// One way to reach a target.
struct countdown_solution {
  std::string expression;          ///< e.g. "5*3+7", minimally parenthesized
  std::vector<std::string> steps;  ///< the combinations in order, e.g. {"5*3=15", "15+7=22"}
};

namespace detail {

// Depth-first search over pairwise combinations: any expression using every number exactly once
// is a sequence of "replace two values by their combination" moves, so the search is complete.
// Expressions are kept as a tree in an arena and printed only once a solution is found.
class countdown_search {
 public:
  countdown_search(std::span<const std::int64_t> numbers, rational target, bool integer_steps)
      : target_(target), integer_steps_(integer_steps) {
    for (const std::int64_t n : numbers) {
      nodes_.push_back({'\0', -1, -1, rational::integer(n)});
      live_.push_back(static_cast<int>(nodes_.size()) - 1);
    }
  }

  std::optional<countdown_solution> run() {
    if (!search()) return std::nullopt;
    countdown_solution s;
    s.expression = print(live_.front()).first;
    for (const int step : steps_) {
      const node& n = nodes_[static_cast<std::size_t>(step)];
      s.steps.push_back(operand(n.left) + n.op + operand(n.right) + "=" + n.value.to_string());
    }
    return s;
  }

 private:
  struct node {
    char op;  // '\0' for a given number
    int left;
    int right;
    rational value;
  };

  rational target_;
  bool integer_steps_;
  std::vector<node> nodes_;
  std::vector<int> live_;   // the values still to be combined
  std::vector<int> steps_;  // the combinations made so far

  const rational& value(int i) const { return nodes_[static_cast<std::size_t>(i)].value; }

  // A value as the operand of a step: fractions and negatives in parentheses, "8/(1/3)=24".
  std::string operand(int i) const {
    const rational& v = value(i);
    return v.is_integer() && v.num >= 0 ? v.to_string() : parenthesized(v.to_string());
  }

  bool search() {
    if (live_.size() == 1) return value(live_.front()) == target_;
    for (std::size_t i = 0; i < live_.size(); ++i)
      for (std::size_t j = i + 1; j < live_.size(); ++j) {
        const int a = live_[i], b = live_[j];
        const std::pair<int, int> orders[] = {{a, b}, {b, a}};
        for (const char op : {'+', '*', '-', '/'})
          for (const auto& [l, r] : orders) {
            if ((op == '+' || op == '*') && l == b) continue;  // commutative: one order suffices
            if (try_combination(i, j, op, l, r)) return true;
          }
      }
    return false;
  }

  bool try_combination(std::size_t i, std::size_t j, char op, int l, int r) {
    const std::optional<rational> result = op == '+'   ? value(l) + value(r)
                                           : op == '-' ? value(l) - value(r)
                                           : op == '*' ? value(l) * value(r)
                                                       : value(l) / value(r);
    if (!result || (integer_steps_ && (!result->is_integer() || result->num < 0))) return false;
    nodes_.push_back({op, l, r, *result});
    const int combined = static_cast<int>(nodes_.size()) - 1;
    // Replace live_[i] by the combination and move the last value into slot j; undone below.
    const int at_i = live_[i], at_j = live_[j];
    live_[i] = combined;
    live_[j] = live_.back();
    live_.pop_back();
    steps_.push_back(combined);
    if (search()) return true;
    steps_.pop_back();
    live_.push_back(at_j);
    std::swap(live_[j], live_.back());
    live_[i] = at_i;
    nodes_.pop_back();
    return false;
  }

  // Appends rather than writing "(" + s, which GCC 12 at -O3 misreports under -Wrestrict.
  static std::string parenthesized(const std::string& s) {
    std::string out = "(";
    out += s;
    out += ')';
    return out;
  }

  static int precedence(char op) { return op == '\0' ? 3 : (op == '*' || op == '/') ? 2 : 1; }

  // (text, precedence of its top operator). The right operand of - and / keeps its parentheses at
  // equal precedence because those operators do not associate: a-(b-c) != a-b-c.
  std::pair<std::string, int> print(int i) const {
    const node& n = nodes_[static_cast<std::size_t>(i)];
    if (n.op == '\0') return {n.value.to_string(), 3};
    const int p = precedence(n.op);
    auto [left, lp] = print(n.left);
    auto [right, rp] = print(n.right);
    if (lp < p) left = parenthesized(left);
    if (rp < p || (rp == p && (n.op == '-' || n.op == '/'))) right = parenthesized(right);
    return {left + n.op + right, p};
  }
};

}  // namespace detail

/// A solution of the Countdown instance (numbers, target), or nullopt when there is none. Every
/// number must be used exactly once. Steps with non-negative integer results are preferred (a
/// first search allows only those), then any rational steps are tried, so nullopt means no
/// solution exists at all. The search is exhaustive: up to 5 numbers it takes at most tens of
/// milliseconds (when there is no solution). Throws value_error when numbers has fewer than 1 or
/// more than 5 entries or an entry outside [0, 999999999].
inline std::optional<countdown_solution> solve_countdown(std::span<const std::int64_t> numbers, std::int64_t target) {
  GRPO_CHECK(!numbers.empty() && numbers.size() <= 5, value_error, "numbers: must have 1 to 5 entries, got ",
             numbers.size());
  for (std::size_t i = 0; i < numbers.size(); ++i)
    GRPO_CHECK(numbers[i] >= 0 && numbers[i] <= 999'999'999, value_error, "numbers: element ", i,
               " must be in [0, 999999999], got ", numbers[i]);
  GRPO_CHECK(target > std::numeric_limits<std::int64_t>::min(), value_error, "target: must be > INT64_MIN");
  for (const bool integer_steps : {true, false}) {
    std::optional<countdown_solution> s = detail::countdown_search(numbers, rational::integer(target), integer_steps).run();
    if (s) return s;
  }
  return std::nullopt;
}

/// "use 3 5 7 to make 22.": the numbers in the given order.
inline std::string countdown_prompt(std::span<const std::int64_t> numbers, std::int64_t target) {
  std::string prompt = "use";
  for (const std::int64_t n : numbers) {
    prompt += ' ';
    prompt += std::to_string(n);
  }
  return prompt + " to make " + std::to_string(target) + ".";
}

/// A Countdown instance read back from a prompt.
struct countdown_instance {
  std::vector<std::int64_t> numbers;
  std::int64_t target = 0;
};

/// The inverse of countdown_prompt: exactly "use N1 ... Nk to make T." with single spaces and
/// canonical integers of at most 9 digits; nullopt otherwise.
inline std::optional<countdown_instance> parse_countdown_prompt(std::string_view prompt) {
  constexpr std::string_view head = "use ", middle = " to make ";
  if (prompt.substr(0, head.size()) != head) return std::nullopt;
  prompt.remove_prefix(head.size());
  countdown_instance instance;
  while (true) {
    const std::optional<std::int64_t> n = detail::take_integer(prompt);
    if (!n) return std::nullopt;
    instance.numbers.push_back(*n);
    if (prompt.substr(0, middle.size()) == middle) break;
    if (prompt.empty() || prompt.front() != ' ') return std::nullopt;
    prompt.remove_prefix(1);
  }
  prompt.remove_prefix(middle.size());
  const std::optional<std::int64_t> target = detail::take_integer(prompt);
  if (!target || prompt != ".") return std::nullopt;
  instance.target = *target;
  return instance;
}

/// The problem (numbers, target) with a solver-written demonstration, or nullopt when it has no
/// solution. Same preconditions as solve_countdown.
inline std::optional<problem> make_countdown_problem(std::span<const std::int64_t> numbers, std::int64_t target) {
  const std::optional<countdown_solution> s = solve_countdown(numbers, target);
  if (!s) return std::nullopt;
  std::string reasoning;
  for (std::size_t i = 0; i < s->steps.size(); ++i) reasoning += (i == 0 ? "" : "\n") + s->steps[i];
  std::string demonstration = std::string(think_open) + reasoning + std::string(think_close) + std::string(answer_open) +
                              s->expression + std::string(answer_close);
  return problem{countdown_prompt(numbers, target), s->expression, std::move(demonstration)};
}

/// Countdown as a task (see the file header): only solvable instances, numbers drawn with
/// repetition, shown in the drawn order. Problems are split by a hash of (sorted numbers,
/// target), so a reordering of a held-out instance is never a training problem. Construction
/// validates the options and lists the held-out split, throwing config_error "heldout_size: ..."
/// when the options have too few solvable held-out problems.
class countdown_task final : public task {
 public:
  explicit countdown_task(countdown_options options = {}) : options_(std::move(options)) {
    validate(options_);
    std::mt19937_64 rng(grpo::detail::splitmix64(options_.seed));
    std::set<std::string> seen;
    const auto budget = static_cast<std::uint64_t>(
        1000.0 + 200.0 * static_cast<double>(options_.heldout_size) / options_.heldout_fraction);
    for (std::uint64_t draws = 0; heldout_.size() < options_.heldout_size; ++draws) {
      GRPO_CHECK(draws < budget, config_error, "heldout_size: found only ", heldout_.size(),
                 " distinct solvable held-out problems for ", options_.heldout_size,
                 " requested; widen the number or target ranges, raise heldout_fraction or lower heldout_size");
      const countdown_instance x = draw(rng);
      const std::string k = key(x);
      if (!detail::in_heldout_split(k, options_.heldout_fraction) || seen.count(k)) continue;
      std::optional<problem> p = make_countdown_problem(x.numbers, x.target);
      if (!p) continue;
      seen.insert(k);
      heldout_.push_back(std::move(*p));
    }
  }

  std::string_view name() const override { return "countdown"; }
  answer_kind kind() const override { return answer_kind::countdown; }
  const countdown_options& options() const { return options_; }

  /// A solvable training-split problem drawn with `rng`. Throws config_error when 100000 draws
  /// find none (ranges where almost nothing is solvable).
  problem sample_train(std::mt19937_64& rng) const override {
    for (int draws = 0; draws < 100'000; ++draws) {
      const countdown_instance x = draw(rng);
      if (detail::in_heldout_split(key(x), options_.heldout_fraction)) continue;
      if (std::optional<problem> p = make_countdown_problem(x.numbers, x.target)) return std::move(*p);
    }
    grpo::detail::fail<config_error>("max_target: no solvable training problem in 100000 draws; widen the number ",
                                     "range or narrow the target range");
  }

  std::size_t heldout_size() const override { return heldout_.size(); }

  problem heldout(std::size_t index) const override {
    GRPO_CHECK(index < heldout_.size(), value_error, "index: ", index, " is outside the held-out split of size ",
               heldout_.size());
    return heldout_[index];
  }

  /// A solution of a prompt in countdown_prompt's form with 2 to 5 numbers (any such prompt, not
  /// only those of this configuration); nullopt when the prompt is not in that form or the
  /// instance has no solution.
  std::optional<std::string> reference_answer(std::string_view prompt) const override {
    const std::optional<countdown_instance> x = parse_countdown_prompt(prompt);
    if (!x || x->numbers.size() < 2 || x->numbers.size() > 5) return std::nullopt;
    const std::optional<countdown_solution> s = solve_countdown(x->numbers, x->target);
    if (!s) return std::nullopt;
    return s->expression;
  }

 private:
  countdown_options options_;
  std::vector<problem> heldout_;

  countdown_instance draw(std::mt19937_64& rng) const {
    countdown_instance x;
    const std::int64_t count = grpo::detail::uniform_between(rng, options_.min_count, options_.max_count);
    for (std::int64_t i = 0; i < count; ++i) x.numbers.push_back(grpo::detail::uniform_between(rng, 1, options_.max_number));
    x.target = grpo::detail::uniform_between(rng, options_.min_target, options_.max_target);
    return x;
  }

  static std::string key(const countdown_instance& x) {
    std::vector<std::int64_t> sorted = x.numbers;
    std::sort(sorted.begin(), sorted.end());
    std::string k = "countdown:";
    for (const std::int64_t n : sorted) k += std::to_string(n) + ",";
    return k + ":" + std::to_string(x.target);
  }
};

}  // namespace grpo::tasks
