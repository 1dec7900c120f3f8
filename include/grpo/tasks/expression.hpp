// SPDX-License-Identifier: Apache-2.0
// grpo/tasks/expression.hpp: exact rational numbers and the safe parser of Countdown answers.
// Grammar: expr = term (('+'|'-') term)*; term = factor (('*'|'/') factor)*; factor = number |
// '(' expr ')'; number = '0' | [1-9][0-9]*; blanks between tokens. Evaluated exactly over int64
// rationals with checked arithmetic. It is a parser of this grammar only, never an evaluator of
// arbitrary text: TinyZero's Countdown reward instead passes model output to Python's eval() after
// a character filter. Unary minus, leading zeros and '=' are rejected (see parse_expression).
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace grpo::tasks {

/// An exact rational num/den in lowest terms with den > 0. Operations return std::nullopt on
/// division by zero and on int64 overflow, so a hostile expression can never wrap around.
struct rational {
  std::int64_t num = 0;
  std::int64_t den = 1;

  /// p/q in lowest terms; nullopt when q == 0 or when p or q is INT64_MIN (kept out so that
  /// magnitudes are always representable).
  static std::optional<rational> make(std::int64_t p, std::int64_t q) {
    constexpr std::int64_t min = std::numeric_limits<std::int64_t>::min();
    if (q == 0 || p == min || q == min) return std::nullopt;
    if (q < 0) {
      p = -p;
      q = -q;
    }
    const std::int64_t g = std::gcd(p, q);
    return rational{p / g, q / g};
  }

  static rational integer(std::int64_t n) { return rational{n, 1}; }

  bool is_integer() const { return den == 1; }

  /// "7", "-2" or "1/3".
  std::string to_string() const {
    return den == 1 ? std::to_string(num) : std::to_string(num) + "/" + std::to_string(den);
  }

  friend bool operator==(const rational&, const rational&) = default;
};

namespace detail {

inline bool checked_add(std::int64_t a, std::int64_t b, std::int64_t& out) {
  constexpr std::int64_t max = std::numeric_limits<std::int64_t>::max();
  constexpr std::int64_t min = std::numeric_limits<std::int64_t>::min();
  if ((b > 0 && a > max - b) || (b < 0 && a < min - b)) return false;
  out = a + b;
  return out != min;
}

inline bool checked_mul(std::int64_t a, std::int64_t b, std::int64_t& out) {
  constexpr std::int64_t max = std::numeric_limits<std::int64_t>::max();
  constexpr std::int64_t min = std::numeric_limits<std::int64_t>::min();
  if (a == min || b == min) return false;
  if (a == 0 || b == 0) {
    out = 0;
    return true;
  }
  const std::int64_t abs_a = a < 0 ? -a : a;
  const std::int64_t abs_b = b < 0 ? -b : b;
  if (abs_a > max / abs_b) return false;
  out = a * b;
  return true;
}

}  // namespace detail

inline std::optional<rational> operator+(const rational& x, const rational& y) {
  // Over the lcm of the denominators, which keeps intermediate products as small as possible.
  const std::int64_t g = std::gcd(x.den, y.den);
  std::int64_t left = 0, right = 0, num = 0, den = 0;
  if (!detail::checked_mul(x.num, y.den / g, left) || !detail::checked_mul(y.num, x.den / g, right) ||
      !detail::checked_add(left, right, num) || !detail::checked_mul(x.den, y.den / g, den))
    return std::nullopt;
  return rational::make(num, den);
}

inline std::optional<rational> operator-(const rational& x, const rational& y) { return x + rational{-y.num, y.den}; }

inline std::optional<rational> operator*(const rational& x, const rational& y) {
  // Cancel across before multiplying: both factors stay in lowest terms and overflow is rarer.
  // The gcds are never 0 because denominators are never 0.
  const std::int64_t g1 = std::gcd(x.num, y.den);
  const std::int64_t g2 = std::gcd(y.num, x.den);
  const std::int64_t a = x.num / g1;
  const std::int64_t d = y.den / g1;
  const std::int64_t c = y.num / g2;
  const std::int64_t b = x.den / g2;
  std::int64_t num = 0, den = 0;
  if (!detail::checked_mul(a, c, num) || !detail::checked_mul(b, d, den)) return std::nullopt;
  return rational::make(num, den);
}

inline std::optional<rational> operator/(const rational& x, const rational& y) {
  if (y.num == 0) return std::nullopt;
  // The reciprocal may have a negative denominator for a moment; make() inside operator* fixes it.
  return x * rational{y.den, y.num};
}

/// Size limits of parse_expression; anything beyond them is malformed, so the parser's time and
/// stack are bounded whatever the input.
struct expression_limits {
  std::size_t max_length = 1024;  ///< bytes of input, blanks included
  int max_depth = 32;             ///< nesting of parentheses
  std::size_t max_numbers = 32;   ///< number literals
  int max_digits = 9;             ///< digits of one literal (so every literal fits comfortably in int64)
};

/// What parse_expression found in a well-formed expression.
struct expression_result {
  std::vector<std::int64_t> numbers;  ///< the literals in source order
  std::optional<rational> value;      ///< nullopt when a division by zero or an overflow occurs anywhere
};

namespace detail {

class expression_parser {
 public:
  expression_parser(std::string_view text, const expression_limits& limits) : text_(text), limits_(limits) {}

  std::optional<expression_result> run() {
    if (text_.size() > limits_.max_length) return std::nullopt;
    skip_blanks();
    if (at_end()) return std::nullopt;
    std::optional<rational> value;
    if (!expr(0, value)) return std::nullopt;
    skip_blanks();
    if (!at_end()) return std::nullopt;
    return expression_result{std::move(numbers_), value};
  }

 private:
  std::string_view text_;
  expression_limits limits_;
  std::size_t pos_ = 0;
  std::vector<std::int64_t> numbers_;

  bool at_end() const { return pos_ >= text_.size(); }

  void skip_blanks() {
    while (!at_end() && (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r'))
      ++pos_;
  }

  // Each rule returns false when the text is malformed; `value` becomes nullopt (undefined) on
  // division by zero or overflow, and stays so: parsing continues so that syntax is still checked.
  bool expr(int depth, std::optional<rational>& value) {
    if (!term(depth, value)) return false;
    while (true) {
      skip_blanks();
      if (at_end() || (text_[pos_] != '+' && text_[pos_] != '-')) return true;
      const char op = text_[pos_++];
      std::optional<rational> rhs;
      if (!term(depth, rhs)) return false;
      value = (value && rhs) ? (op == '+' ? *value + *rhs : *value - *rhs) : std::nullopt;
    }
  }

  bool term(int depth, std::optional<rational>& value) {
    if (!factor(depth, value)) return false;
    while (true) {
      skip_blanks();
      if (at_end() || (text_[pos_] != '*' && text_[pos_] != '/')) return true;
      const char op = text_[pos_++];
      std::optional<rational> rhs;
      if (!factor(depth, rhs)) return false;
      value = (value && rhs) ? (op == '*' ? *value * *rhs : *value / *rhs) : std::nullopt;
    }
  }

  bool factor(int depth, std::optional<rational>& value) {
    skip_blanks();
    if (at_end()) return false;
    if (text_[pos_] == '(') {
      if (depth + 1 > limits_.max_depth) return false;
      ++pos_;
      if (!expr(depth + 1, value)) return false;
      skip_blanks();
      if (at_end() || text_[pos_] != ')') return false;
      ++pos_;
      return true;
    }
    return number(value);
  }

  bool number(std::optional<rational>& value) {
    const std::size_t start = pos_;
    std::int64_t n = 0;
    while (!at_end() && text_[pos_] >= '0' && text_[pos_] <= '9') {
      if (static_cast<int>(pos_ - start) >= limits_.max_digits) return false;
      // Checked too, so that a max_digits above 18 cannot overflow: a literal beyond int64 is malformed.
      if (!checked_mul(n, 10, n) || !checked_add(n, text_[pos_] - '0', n)) return false;
      ++pos_;
    }
    const std::size_t digits = pos_ - start;
    if (digits == 0) return false;
    if (digits > 1 && text_[start] == '0') return false;  // leading zero
    if (numbers_.size() >= limits_.max_numbers) return false;
    numbers_.push_back(n);
    value = rational::integer(n);
    return true;
  }
};

}  // namespace detail

/// Parses and exactly evaluates an arithmetic expression over non-negative integer literals with
/// + - * / and parentheses (grammar in the file header); blanks (space, tab, CR, LF) may separate
/// tokens. Returns std::nullopt when the text is malformed: empty, unbalanced parentheses, a
/// dangling operator, any other character (so "=", "x", "^", a decimal point), a unary minus or
/// plus ("-3+5"), a literal with a leading zero ("07"), or input beyond `limits`. Division by zero
/// or int64 overflow is not malformed: the result then has value == nullopt. Never throws.
inline std::optional<expression_result> parse_expression(std::string_view text, const expression_limits& limits = {}) {
  return detail::expression_parser(text, limits).run();
}

}  // namespace grpo::tasks
