// SPDX-License-Identifier: Apache-2.0
// grpo/tasks/task.hpp: what a trainer needs from a verifiable task (problems from a train split,
// a fixed held-out split, a checker of extracted answers, the tokenizer) and the two checkers the
// tasks share: exact integers and Countdown expressions. Unscorable problems (a reference answer
// that does not parse) give std::nullopt, as open-r1's accuracy_reward returns None for a gold
// answer it cannot parse; a wrong or malformed model answer is simply incorrect.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "grpo/detail/random.hpp"
#include "grpo/error.hpp"
#include "grpo/tasks/expression.hpp"
#include "grpo/tasks/tokenizer.hpp"

namespace grpo::tasks {

/// One problem of a task.
struct problem {
  std::string prompt;         ///< what the policy is asked to continue (tokenize with encode_prompt)
  std::string answer;         ///< a correct answer, as it would be written inside <answer></answer>
  std::string demonstration;  ///< a worked completion "<think>...</think><answer>...</answer>" (no
                              ///< <eos>: tokenize with encode_completion); empty when the task has none
};

/// How an extracted answer is judged against a problem's reference answer.
enum class answer_kind {
  integer,    ///< exact integer equality (arithmetic)
  countdown,  ///< an expression using exactly the reference's numbers, with the reference's value
};

inline std::string_view to_string(answer_kind kind) { return kind == answer_kind::integer ? "integer" : "countdown"; }

/// "integer" or "countdown"; throws config_error otherwise.
inline answer_kind parse_answer_kind(std::string_view text) {
  if (text == "integer") return answer_kind::integer;
  if (text == "countdown") return answer_kind::countdown;
  grpo::detail::fail<config_error>("answer_kind: unknown checker \"", text, "\" (expected integer or countdown)");
}

namespace detail {

inline bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

inline std::string_view trim(std::string_view s) {
  while (!s.empty() && is_blank(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_blank(s.back())) s.remove_suffix(1);
  return s;
}

inline bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

/// A reference integer in canonical form ("0" or -?[1-9][0-9]*): blanks trimmed, an optional
/// sign, leading zeros dropped, "-0" read as "0"; nullopt when it is not an integer at all.
inline std::optional<std::string> canonical_integer(std::string_view text) {
  text = trim(text);
  bool negative = false;
  if (!text.empty() && (text.front() == '+' || text.front() == '-')) {
    negative = text.front() == '-';
    text.remove_prefix(1);
  }
  if (!all_digits(text)) return std::nullopt;
  while (text.size() > 1 && text.front() == '0') text.remove_prefix(1);
  if (text == "0") return std::string("0");
  std::string out = negative ? "-" : "";
  out += text;
  return out;
}

/// A canonical non-negative integer literal of at most 9 digits at the start of `s`, consumed.
inline std::optional<std::int64_t> take_integer(std::string_view& s) {
  std::size_t n = 0;
  while (n < s.size() && s[n] >= '0' && s[n] <= '9') ++n;
  if (n == 0 || n > 9 || (n > 1 && s[0] == '0')) return std::nullopt;
  std::int64_t value = 0;
  for (std::size_t i = 0; i < n; ++i) value = value * 10 + (s[i] - '0');
  s.remove_prefix(n);
  return value;
}

/// A hash of `key` fixed forever (64-bit FNV-1a, then splitmix64), so a problem's split never depends
/// on the platform, the standard library or the version of grpo.
inline std::uint64_t stable_hash(std::string_view key) {
  return grpo::detail::splitmix64(grpo::detail::fnv1a_64(key));
}

/// stable_hash(key) as a number in [0, 1) (its top 53 bits): a fixed pseudo-random draw per key.
inline double unit_hash(std::string_view key) { return static_cast<double>(stable_hash(key) >> 11) * 0x1.0p-53; }

/// Whether the problem with canonical `key` belongs to the held-out split: a fixed partition of
/// the problem space by hash, so the splits are disjoint whatever the seeds and sizes.
inline bool in_heldout_split(std::string_view key, double heldout_fraction) { return unit_hash(key) < heldout_fraction; }

}  // namespace detail

/// Integer checker. The candidate must be an integer in canonical form after trimming blanks:
/// "0" or -?[1-9][0-9]* (no '+', no leading zeros, no spaces inside, no thousands separators), of
/// any length (compared as text, so no overflow). The reference is read leniently (see
/// detail::canonical_integer). Returns nullopt when the reference is not an integer; false when
/// the candidate is absent, malformed or different.
inline std::optional<bool> check_integer_answer(std::string_view reference, std::optional<std::string_view> candidate) {
  const std::optional<std::string> gold = detail::canonical_integer(reference);
  if (!gold) return std::nullopt;
  if (!candidate) return false;
  const std::string_view answer = detail::trim(*candidate);
  const std::string_view magnitude = !answer.empty() && answer.front() == '-' ? answer.substr(1) : answer;
  if (!detail::all_digits(magnitude) || (magnitude.size() > 1 && magnitude.front() == '0') || answer == "-0")
    return false;
  return answer == *gold;
}

/// Countdown checker: true when `candidate` parses (parse_expression), its literals are exactly
/// the multiset `numbers` (each given number used exactly once, as TinyZero requires) and its
/// exact value equals `target`. Malformed text, a division by zero, an overflow, a missing or
/// reused number all give false. Never throws.
inline bool check_countdown_expression(std::span<const std::int64_t> numbers, const rational& target,
                                       std::string_view candidate) {
  const std::optional<expression_result> parsed = parse_expression(candidate);
  if (!parsed || !parsed->value || *parsed->value != target) return false;
  std::vector<std::int64_t> used = parsed->numbers;
  std::vector<std::int64_t> given(numbers.begin(), numbers.end());
  std::sort(used.begin(), used.end());
  std::sort(given.begin(), given.end());
  return used == given;
}

/// Countdown checker against a reference expression, which defines the problem: its literals are
/// the given numbers and its value the target (so a JSONL row only needs one solution as its
/// answer). Returns nullopt when the reference is malformed or has no value (division by zero).
inline std::optional<bool> check_countdown_answer(std::string_view reference,
                                                  std::optional<std::string_view> candidate) {
  const std::optional<expression_result> gold = parse_expression(reference);
  if (!gold || !gold->value) return std::nullopt;
  if (!candidate) return false;
  return check_countdown_expression(gold->numbers, *gold->value, *candidate);
}

/// The checker of `kind`. `candidate` is the extracted answer, nullopt when the completion has
/// none (then the verdict is false, or nullopt when the reference itself is unusable).
inline std::optional<bool> check_answer(answer_kind kind, std::string_view reference,
                                        std::optional<std::string_view> candidate) {
  return kind == answer_kind::integer ? check_integer_answer(reference, candidate)
                                      : check_countdown_answer(reference, candidate);
}

/// The interface a trainer uses for every task, built-in or loaded from JSONL.
///
/// - name(): a short identifier for logs and checkpoints ("arithmetic", "countdown", a file name).
/// - sample_train(rng): one problem from the training split, a pure function of the rng state
///   (the trainer checkpoints the std::mt19937_64 to resume the same stream).
/// - heldout_size() / heldout(i): the fixed held-out split, the same for a given configuration
///   and never overlapping the training split.
/// - reference_answer(prompt): a correct answer for a prompt of this task, nullopt when the prompt
///   is not one (unscorable); check(prompt, answer) judges an extracted answer against it.
/// - tokenizer(): the vocabulary every prompt and demonstration of the task encodes in.
///
/// Tasks are immutable after construction, so every const member may be called concurrently.
class task {
 public:
  virtual ~task() = default;

  virtual std::string_view name() const = 0;
  virtual answer_kind kind() const = 0;
  virtual problem sample_train(std::mt19937_64& rng) const = 0;
  virtual std::size_t heldout_size() const = 0;
  /// Throws value_error "index: ..." when index >= heldout_size().
  virtual problem heldout(std::size_t index) const = 0;
  virtual std::optional<std::string> reference_answer(std::string_view prompt) const = 0;
  virtual const char_tokenizer& tokenizer() const { return builtin_tokenizer(); }

  /// The verdict on `answer` (the text extracted from a completion's <answer> block, nullopt when
  /// there is none): nullopt when the prompt is unscorable, otherwise whether it is correct.
  std::optional<bool> check(std::string_view prompt, std::optional<std::string_view> answer) const {
    const std::optional<std::string> reference = reference_answer(prompt);
    if (!reference) return std::nullopt;
    return check_answer(kind(), *reference, answer);
  }

 protected:
  task() = default;
  task(const task&) = default;
  task& operator=(const task&) = default;
};

}  // namespace grpo::tasks
