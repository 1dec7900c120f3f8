// SPDX-License-Identifier: Apache-2.0
// grpo/tasks/rewards.hpp: the rule-based rewards of the R1 recipe (DeepSeek-R1, arXiv:2501.12948,
// Sec. 2.2.2: accuracy and format rewards), an accuracy with partial credit for integer answers
// (not in R1: a denser signal for small models), DAPO's soft overlong punishment (Yu et al. 2025,
// arXiv:2503.14476, Eq. 13: 0 up to L_max - L_cache tokens, then ((L_max - L_cache) - |y|) / L_cache,
// -1 beyond L_max; in tokens, as TRL), and their weighted sum. Each models grpo::reward_function.
// The format grammar is exact where open-r1's regex, with re.MULTILINE, accepts trailing text after
// </answer>; accuracy reads exactly one <answer> block where TinyZero takes the last of several.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "grpo/concepts.hpp"
#include "grpo/error.hpp"
#include "grpo/tasks/task.hpp"
#include "grpo/tasks/tokenizer.hpp"

namespace grpo::tasks {

namespace detail {

inline std::size_t count_occurrences(std::string_view text, std::string_view tag) {
  std::size_t n = 0;
  for (std::size_t pos = text.find(tag); pos != std::string_view::npos; pos = text.find(tag, pos + tag.size())) ++n;
  return n;
}

inline bool blank_between(std::string_view text, std::size_t begin, std::size_t end) {
  for (std::size_t i = begin; i < end; ++i)
    if (!is_blank(text[i])) return false;
  return true;
}

}  // namespace detail

/// Whether `completion` has the R1 format, exactly:
///   completion = B "<think>" T "</think>" B "<answer>" A "</answer>" B
/// where B is blanks (space, tab, CR, LF; possibly none), T any text containing none of the four
/// tags (possibly empty: thinking is not forced), and A any text containing none of the tags and
/// at least one non-blank character. So each tag occurs exactly once, in this order, with nothing
/// but blanks outside the two blocks. Control tokens are not text (decode skips them), so a
/// completion ending in <eos> is judged on what precedes it.
inline bool has_r1_format(std::string_view completion) {
  for (const std::string_view tag : {think_open, think_close, answer_open, answer_close})
    if (detail::count_occurrences(completion, tag) != 1) return false;
  const std::size_t t0 = completion.find(think_open), t1 = completion.find(think_close);
  const std::size_t a0 = completion.find(answer_open), a1 = completion.find(answer_close);
  if (!(t0 < t1 && t1 < a0 && a0 < a1)) return false;
  const std::size_t answer_begin = a0 + answer_open.size();
  return detail::blank_between(completion, 0, t0) && detail::blank_between(completion, t1 + think_close.size(), a0) &&
         detail::blank_between(completion, a1 + answer_close.size(), completion.size()) &&
         !detail::blank_between(completion, answer_begin, a1);
}

/// The text inside the completion's <answer>...</answer>, blanks trimmed (a view into
/// `completion`); nullopt unless "<answer>" and "</answer>" each occur exactly once, in that
/// order (several answers are not a hedge to pick from). Independent of the <think> block, so
/// accuracy and format are measured separately.
inline std::optional<std::string_view> extract_answer(std::string_view completion) {
  if (detail::count_occurrences(completion, answer_open) != 1 || detail::count_occurrences(completion, answer_close) != 1)
    return std::nullopt;
  const std::size_t begin = completion.find(answer_open) + answer_open.size();
  const std::size_t end = completion.find(answer_close);
  if (end < begin) return std::nullopt;
  return detail::trim(completion.substr(begin, end - begin));
}

/// 1 when has_r1_format(completion), else 0; never unscorable. The prompt is not used.
struct format_reward {
  std::optional<double> operator()(std::string_view /*prompt*/, std::string_view completion) const {
    return has_r1_format(completion) ? 1.0 : 0.0;
  }
};

/// 1 when the extracted answer is correct for the prompt (task::check), 0 when it is wrong,
/// malformed or absent; std::nullopt when the prompt is unscorable (its reference answer is
/// unusable), so the completion is left out of its group's statistics. Holds a pointer to the
/// task, which must outlive it.
class accuracy_reward {
 public:
  explicit accuracy_reward(const task& t) : task_(&t) {}

  std::optional<double> operator()(std::string_view prompt, std::string_view completion) const {
    const std::optional<bool> verdict = task_->check(prompt, extract_answer(completion));
    if (!verdict) return std::nullopt;
    return *verdict ? 1.0 : 0.0;
  }

 private:
  const task* task_;
};

/// Accuracy with partial credit for integer answers: a denser signal than accuracy_reward's 0/1,
/// so that more groups of completions differ in reward and the advantage points at the wrong
/// digits. 1 when the extracted answer is correct (task::check); otherwise, when the task's answers
/// are integers and the answer is a canonical integer ("0" or -?[1-9][0-9]*), `partial` times the
/// share of positions, aligned at the units digit, where the answer and the reference agree:
/// partial * matches / max(|answer|, |reference|), counting characters (a sign included), so 115
/// for 125 scores partial * 2/3. 0 for a malformed or absent answer and for any wrong answer of a
/// non-integer task (Countdown); std::nullopt when the prompt is unscorable. Since partial < 1, a
/// correct answer always outscores a wrong one. Not part of the R1 recipe (outcome reward only):
/// an option for small models whose exact-match reward is too sparse. Holds a pointer to the
/// task, which must outlive it. \throws config_error "partial: ..." unless 0 <= partial < 1.
class partial_accuracy_reward {
 public:
  explicit partial_accuracy_reward(const task& t, double partial = 0.5) : task_(&t), partial_(partial) {
    GRPO_CHECK(std::isfinite(partial) && partial >= 0 && partial < 1, config_error, "partial: must be in [0, 1), got ",
               partial);
  }

  std::optional<double> operator()(std::string_view prompt, std::string_view completion) const {
    const std::optional<std::string> reference = task_->reference_answer(prompt);
    if (!reference) return std::nullopt;
    const std::optional<std::string_view> answer = extract_answer(completion);
    const std::optional<bool> verdict = check_answer(task_->kind(), *reference, answer);
    if (!verdict) return std::nullopt;
    if (*verdict) return 1.0;
    if (task_->kind() != answer_kind::integer || !answer) return 0.0;
    const std::optional<std::string> gold = detail::canonical_integer(*reference);
    // Only canonical answers earn credit: "0125" must not share digits with 125 for free.
    if (!gold || !check_integer_answer(*answer, *answer).value_or(false)) return 0.0;
    const std::string_view a = *answer;
    const std::size_t common = std::min(a.size(), gold->size());
    std::size_t matches = 0;
    for (std::size_t i = 1; i <= common; ++i) matches += a[a.size() - i] == (*gold)[gold->size() - i] ? 1 : 0;
    return partial_ * static_cast<double>(matches) / static_cast<double>(std::max(a.size(), gold->size()));
  }

 private:
  const task* task_;
  double partial_;
};

/// DAPO Eq. 13 for a completion of `length` tokens: 0 when length <= max_length - cache_length,
/// ((max_length - cache_length) - length) / cache_length up to max_length (so -1 exactly at
/// max_length), -1 beyond. cache_length == 0 makes it a hard cut: 0 up to max_length, -1 beyond.
/// Throws config_error unless 0 <= cache_length <= max_length and max_length > 0, value_error for
/// a negative length.
inline double soft_overlong_penalty(std::int64_t length, std::int64_t max_length, std::int64_t cache_length) {
  GRPO_CHECK(max_length > 0, config_error, "max_length: must be > 0, got ", max_length);
  GRPO_CHECK(cache_length >= 0 && cache_length <= max_length, config_error,
             "cache_length: must be in [0, max_length] = [0, ", max_length, "], got ", cache_length);
  GRPO_CHECK(length >= 0, value_error, "length: must be >= 0, got ", length);
  const std::int64_t expected = max_length - cache_length;
  if (length <= expected) return 0.0;
  if (length > max_length) return -1.0;
  return static_cast<double>(expected - length) / static_cast<double>(cache_length);
}

/// soft_overlong_penalty as a reward function, with the completion's length counted in tokens of
/// `tokenizer` (the text's tokens; the <eos> that ended it is not text, so it is not counted: a
/// trainer that knows its token counts can call soft_overlong_penalty directly). Never
/// unscorable; throws value_error for text the tokenizer cannot encode. The constructor checks
/// max_length and cache_length as soft_overlong_penalty does. Holds a pointer to the tokenizer,
/// which must outlive it.
class soft_overlong_punishment {
 public:
  soft_overlong_punishment(std::int64_t max_length, std::int64_t cache_length,
                           const char_tokenizer& tokenizer = builtin_tokenizer())
      : max_length_(max_length), cache_length_(cache_length), tokenizer_(&tokenizer) {
    soft_overlong_penalty(0, max_length, cache_length);
  }

  std::optional<double> operator()(std::string_view /*prompt*/, std::string_view completion) const {
    const auto length = static_cast<std::int64_t>(tokenizer_->encode(completion).size());
    return soft_overlong_penalty(length, max_length_, cache_length_);
  }

 private:
  std::int64_t max_length_;
  std::int64_t cache_length_;
  const char_tokenizer* tokenizer_;
};

/// Any reward function, type-erased.
using reward_fn = std::function<std::optional<double>(std::string_view prompt, std::string_view completion)>;

/// A reward function with the name it is logged under and its weight in a weighted_sum.
struct named_reward {
  std::string name;
  double weight = 1.0;
  reward_fn function;
};

/// sum_i weight_i * reward_i. std::nullopt when any part is unscorable (the completion then has
/// no meaningful total); every part is evaluated, a weight of 0 included, so a part used only for
/// logging still vetoes. A part returning NaN or Inf throws value_error naming it.
class weighted_sum {
 public:
  /// Throws config_error for no parts, an empty or repeated name, a non-finite weight or an
  /// empty function.
  explicit weighted_sum(std::vector<named_reward> parts) : parts_(std::move(parts)) {
    GRPO_CHECK(!parts_.empty(), config_error, "parts: at least one reward function is required");
    for (std::size_t i = 0; i < parts_.size(); ++i) {
      const named_reward& p = parts_[i];
      GRPO_CHECK(!p.name.empty(), config_error, "parts: element ", i, " has an empty name");
      for (std::size_t j = 0; j < i; ++j)
        GRPO_CHECK(parts_[j].name != p.name, config_error, "parts: the name \"", p.name, "\" is used twice");
      GRPO_CHECK(std::isfinite(p.weight), config_error, "parts: \"", p.name, "\" has weight ", p.weight,
                 " (weights must be finite)");
      GRPO_CHECK(static_cast<bool>(p.function), config_error, "parts: \"", p.name, "\" has no function");
    }
  }

  std::optional<double> operator()(std::string_view prompt, std::string_view completion) const {
    double total = 0.0;
    bool scorable = true;
    for (const named_reward& p : parts_) {
      const std::optional<double> r = p.function(prompt, completion);
      if (!r) {
        scorable = false;
        continue;
      }
      GRPO_CHECK(std::isfinite(*r), value_error, "parts: \"", p.name, "\" returned ", *r,
                 " (return std::nullopt for unscorable completions)");
      total += p.weight * *r;
    }
    if (!scorable) return std::nullopt;
    return total;
  }

  const std::vector<named_reward>& parts() const { return parts_; }

 private:
  std::vector<named_reward> parts_;
};

/// The R1 recipe's rewards for `t`: "accuracy" and "format", weight 1 each (TRL's default
/// reward_weights). The accuracy part holds a pointer to `t`, which must outlive it.
inline std::vector<named_reward> r1_rewards(const task& t) {
  return {{"accuracy", 1.0, accuracy_reward(t)}, {"format", 1.0, format_reward{}}};
}

/// The rewards a config can name (reward_funcs), in the order the message lists them.
inline constexpr std::string_view reward_names[] = {"accuracy", "partial_accuracy", "format"};

/// \throws config_error naming "reward_funcs" for a name not in reward_names.
inline void check_reward_name(std::string_view name) {
  std::string known;
  for (const auto n : reward_names) {
    if (n == name) return;
    known += (known.empty() ? "" : ", ") + std::string(n);
  }
  grpo::detail::fail<config_error>("reward_funcs: unknown reward \"", name, "\" (expected one of: ", known, ")");
}

/// The reward function called `name` for task `t` (which must outlive it).
/// \throws config_error as check_reward_name.
inline reward_fn make_reward(std::string_view name, const task& t) {
  check_reward_name(name);
  if (name == "accuracy") return accuracy_reward(t);
  if (name == "partial_accuracy") return partial_accuracy_reward(t);
  return format_reward{};
}

static_assert(reward_function<format_reward>);
static_assert(reward_function<accuracy_reward>);
static_assert(reward_function<partial_accuracy_reward>);
static_assert(reward_function<soft_overlong_punishment>);
static_assert(reward_function<weighted_sum>);
static_assert(reward_function<reward_fn>);

}  // namespace grpo::tasks
