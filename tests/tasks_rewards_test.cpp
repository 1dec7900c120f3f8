// SPDX-License-Identifier: Apache-2.0
// Rule-based rewards: the exact R1 format grammar, answer extraction, accuracy (with unscorable
// prompts), partial credit for integer answers, DAPO's soft overlong punishment hand-worked, and the
// weighted sum.
#include "test_support.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "grpo/concepts.hpp"
#include "grpo/tasks/arithmetic.hpp"
#include "grpo/tasks/countdown.hpp"
#include "grpo/tasks/jsonl.hpp"
#include "grpo/tasks/rewards.hpp"

using grpo::tasks::accuracy_reward;
using grpo::tasks::extract_answer;
using grpo::tasks::format_reward;
using grpo::tasks::has_r1_format;
using grpo::tasks::named_reward;
using grpo::tasks::soft_overlong_penalty;
using grpo::tasks::soft_overlong_punishment;
using grpo::tasks::weighted_sum;
using grpo::testing::require_close;
using grpo::testing::require_error;

namespace {

const grpo::tasks::arithmetic_task& small_arithmetic() {
  static const grpo::tasks::arithmetic_task t(grpo::tasks::arithmetic_options{1, 2, "+", 5, 0.1, 0});
  return t;
}

const grpo::tasks::countdown_task& small_countdown() {
  static const grpo::tasks::countdown_task t(grpo::tasks::countdown_options{3, 3, 10, 1, 30, 5, 0.1, 0});
  return t;
}

}  // namespace

TEST_CASE("format grammar: accepted completions", "[tasks][rewards]") {
  for (const std::string text : {
           "<think>7+8=15</think><answer>15</answer>",
           "<think></think><answer>1</answer>",                 // thinking may be empty
           " \n<think>a\nb</think>\n \t<answer> 1 </answer>\r\n",  // blanks outside the blocks
           "<think>x < y > z</think><answer>a b</answer>",      // any text without tags inside
       }) {
    INFO(text);
    CHECK(has_r1_format(text));
    CHECK(format_reward{}("prompt", text) == 1.0);
  }
}

TEST_CASE("format grammar: rejected completions", "[tasks][rewards]") {
  for (const std::string text : {
           "",
           "<answer>1</answer>",                                             // no think block
           "<think>a</think>",                                               // no answer block
           "<think>a</think><answer>1",                                      // truncated
           "<answer>1</answer><think>a</think>",                             // wrong order
           "ok <think>a</think><answer>1</answer>",                          // text before
           "<think>a</think><answer>1</answer> done",                        // text after
           "<think>a</think>so<answer>1</answer>",                           // text between
           "<think>a</think><answer> \n</answer>",                           // blank answer
           "<think>a</think><answer>1</answer><answer>2</answer>",           // two answers
           "<think>a</think><think>b</think><answer>1</answer>",             // two thinks
           "<think>a<answer>1</answer></think>",                             // nested
           "<think>a<think></think><answer>1</answer>",                      // stray open tag
           "</think><think>a<answer>1</answer>",                             // close before open
       }) {
    INFO(text);
    CHECK_FALSE(has_r1_format(text));
    CHECK(format_reward{}("prompt", text) == 0.0);
  }
}

TEST_CASE("extract_answer reads exactly one answer block", "[tasks][rewards]") {
  CHECK(extract_answer("<think>a</think><answer> 42 \n</answer>") == "42");
  CHECK(extract_answer("junk <answer>7</answer> junk") == "7");  // independent of the format
  CHECK(extract_answer("<answer></answer>") == "");
  CHECK_FALSE(extract_answer("42").has_value());
  CHECK_FALSE(extract_answer("<answer>1</answer><answer>2</answer>").has_value());
  CHECK_FALSE(extract_answer("</answer>1<answer>").has_value());
  CHECK_FALSE(extract_answer("<answer>1").has_value());
}

TEST_CASE("accuracy reward: correct, wrong, malformed, unscorable", "[tasks][rewards]") {
  const accuracy_reward arithmetic(small_arithmetic());
  CHECK(arithmetic("57+68=", "<think>7+8=15\n5+6+1=12</think><answer>125</answer>") == 1.0);
  CHECK(arithmetic("57+68=", "<answer>125</answer>") == 1.0);  // accuracy does not require the think block
  CHECK(arithmetic("57+68=", "<think></think><answer>124</answer>") == 0.0);
  CHECK(arithmetic("57+68=", "<think>125</think>") == 0.0);  // no answer
  CHECK(arithmetic("57+68=", "<answer>125</answer><answer>124</answer>") == 0.0);
  CHECK(arithmetic("hello", "<answer>125</answer>") == std::nullopt);
  CHECK(arithmetic("hello", "no answer") == std::nullopt);  // unscorable even without an answer

  const accuracy_reward countdown(small_countdown());
  const std::string prompt = "use 3 5 7 to make 22.";
  CHECK(countdown(prompt, "<think>3*5=15\n15+7=22</think><answer>7+3*5</answer>") == 1.0);
  CHECK(countdown(prompt, "<answer>3*5+7=22</answer>") == 0.0);  // '=' is not part of an expression
  CHECK(countdown(prompt, "<answer>(3+5)*7</answer>") == 0.0);   // 56
  CHECK(countdown(prompt, "<answer>3/0+5+7</answer>") == 0.0);   // division by zero: wrong, no crash
  CHECK(countdown(prompt, "<answer>3*5+7+(</answer>") == 0.0);
  CHECK(countdown(prompt, std::string("<answer>").append(100'000, '(').append("</answer>")) == 0.0);
  CHECK(countdown("use 1 1 to make 5.", "<answer>1+1</answer>") == std::nullopt);  // no solution exists

  // User data: the answer column is the reference; an unusable one makes the row unscorable.
  const grpo::tasks::dataset_task data("rows", grpo::tasks::answer_kind::integer,
                                       {{"what is six times seven?", "42", {}}, {"how many?", "twelve", {}}});
  const accuracy_reward on_data(data);
  CHECK(on_data("what is six times seven?", "<answer>42</answer>") == 1.0);
  CHECK(on_data("what is six times seven?", "<answer>41</answer>") == 0.0);
  CHECK(on_data("how many?", "<answer>12</answer>") == std::nullopt);
  CHECK(on_data("a prompt that is not in the data", "<answer>42</answer>") == std::nullopt);
}

TEST_CASE("partial accuracy reward: credit for digits aligned at the units, hand-worked", "[tasks][rewards]") {
  using grpo::tasks::partial_accuracy_reward;
  const partial_accuracy_reward half(small_arithmetic());  // partial = 0.5; 57+68 = 125
  const auto score = [&](const std::string& answer) { return half("57+68=", "<answer>" + answer + "</answer>"); };
  CHECK(score("125") == 1.0);
  require_close(*score("115"), 0.5 * 2.0 / 3.0, 1e-15);   // 5=5, 1!=2, 1=1: 2 of 3
  require_close(*score("124"), 0.5 * 2.0 / 3.0, 1e-15);   // 4!=5, 2=2, 1=1
  require_close(*score(" 25 "), 0.5 * 2.0 / 3.0, 1e-15);  // 5=5, 2=2, of max(2, 3) = 3 positions
  require_close(*score("1125"), 0.5 * 3.0 / 4.0, 1e-15);  // 125 matches, of max(4, 3) = 4 positions
  require_close(*score("521"), 0.5 * 1.0 / 3.0, 1e-15);   // 1!=5, 2=2, 5!=1: reversed digits earn little
  CHECK(score("0125") == 0.0);   // not canonical: no credit for a padded answer
  CHECK(score("12 5") == 0.0);
  CHECK(score("abc") == 0.0);
  CHECK(half("57+68=", "<think>7+8=15</think>") == 0.0);  // no answer
  CHECK(half("hello", "<answer>125</answer>") == std::nullopt);

  // A wrong answer never reaches a correct one's reward.
  double best_wrong = 0;
  for (int x = 0; x < 2000; ++x)
    if (x != 125) best_wrong = std::max(best_wrong, *score(std::to_string(x)));
  require_close(best_wrong, 0.5 * 3.0 / 4.0, 1e-15);  // 1125

  // Signs count as characters: reference -12.
  const grpo::tasks::dataset_task data("rows", grpo::tasks::answer_kind::integer, {{"twelve below zero?", "-12", {}}});
  const partial_accuracy_reward on_data(data, 0.9);
  CHECK(on_data("twelve below zero?", "<answer>-12</answer>") == 1.0);
  require_close(*on_data("twelve below zero?", "<answer>12</answer>"), 0.9 * 2.0 / 3.0, 1e-15);
  require_close(*on_data("twelve below zero?", "<answer>-13</answer>"), 0.9 * 2.0 / 3.0, 1e-15);

  // Countdown answers are expressions: right or wrong, no partial credit.
  const partial_accuracy_reward countdown(small_countdown());
  CHECK(countdown("use 3 5 7 to make 22.", "<answer>7+3*5</answer>") == 1.0);
  CHECK(countdown("use 3 5 7 to make 22.", "<answer>7+3*4</answer>") == 0.0);

  CHECK(partial_accuracy_reward(small_arithmetic(), 0.0)("57+68=", "<answer>124</answer>") == 0.0);
  for (const double bad : {-0.1, 1.0, std::numeric_limits<double>::quiet_NaN()})
    require_error([&] { partial_accuracy_reward(small_arithmetic(), bad); }, {"partial: must be in [0, 1)"});
}

TEST_CASE("soft overlong penalty, DAPO Eq. 13, hand-worked", "[tasks][rewards]") {
  // L_max = 20, L_cache = 5: no penalty up to 15 tokens, linear to -1 at 20, -1 beyond.
  CHECK(soft_overlong_penalty(0, 20, 5) == 0.0);
  CHECK(soft_overlong_penalty(15, 20, 5) == 0.0);
  require_close(soft_overlong_penalty(16, 20, 5), -0.2);  // (15 - 16) / 5
  require_close(soft_overlong_penalty(18, 20, 5), -0.6);  // (15 - 18) / 5
  CHECK(soft_overlong_penalty(20, 20, 5) == -1.0);        // (15 - 20) / 5
  CHECK(soft_overlong_penalty(21, 20, 5) == -1.0);
  CHECK(soft_overlong_penalty(1000, 20, 5) == -1.0);
  // L_cache = L_max = 4: the penalty starts at the first token.
  CHECK(soft_overlong_penalty(0, 4, 4) == 0.0);
  CHECK(soft_overlong_penalty(1, 4, 4) == -0.25);  // (0 - 1) / 4
  CHECK(soft_overlong_penalty(4, 4, 4) == -1.0);
  // L_cache = 0: a hard cut.
  CHECK(soft_overlong_penalty(20, 20, 0) == 0.0);
  CHECK(soft_overlong_penalty(21, 20, 0) == -1.0);
  require_error([] { soft_overlong_penalty(1, 0, 0); }, {"max_length: must be > 0, got 0"});
  require_error([] { soft_overlong_penalty(1, 20, -1); }, {"cache_length: must be in [0, max_length] = [0, 20], got -1"});
  require_error([] { soft_overlong_penalty(1, 20, 21); }, {"cache_length:", "got 21"});
  require_error([] { soft_overlong_penalty(-1, 20, 5); }, {"length: must be >= 0, got -1"});
  require_error([] { soft_overlong_punishment(10, 11); }, {"cache_length:"});

  // Counted in tokens: <think> 1 2 </think> <answer> 3 </answer> is 7 tokens (35 characters).
  // L_max = 10, L_cache = 4: (6 - 7) / 4 = -0.25.
  const soft_overlong_punishment overlong(10, 4);
  CHECK(overlong("p", "<think>12</think><answer>3</answer>") == -0.25);
  CHECK(overlong("p", "<answer>3</answer>") == 0.0);  // 3 tokens
  require_error([&] { overlong("p", "<answer>Q</answer>"); }, {"text: character 'Q'"});
}

TEST_CASE("weighted sum of rewards", "[tasks][rewards]") {
  const grpo::tasks::reward_fn constant = [](std::string_view, std::string_view) { return std::optional<double>(-0.25); };
  const weighted_sum total({{"accuracy", 1.0, accuracy_reward(small_arithmetic())},
                            {"format", 0.5, format_reward{}},
                            {"constant", 2.0, constant}});
  // Correct and formatted: 1 * 1 + 0.5 * 1 + 2 * (-0.25) = 1.
  CHECK(total("1+2=", "<think>1+2=3</think><answer>3</answer>") == 1.0);
  // Wrong and formatted: 1 * 0 + 0.5 * 1 + 2 * (-0.25) = 0.
  CHECK(total("1+2=", "<think></think><answer>4</answer>") == 0.0);
  // Correct, unformatted: 1 * 1 + 0.5 * 0 - 0.5 = 0.5.
  CHECK(total("1+2=", "<answer>3</answer>") == 0.5);
  // An unscorable part makes the total unscorable.
  CHECK(total("not a problem", "<answer>3</answer>") == std::nullopt);
  CHECK(total.parts().size() == 3);

  const weighted_sum with_nan({{"nan", 1.0, [](std::string_view, std::string_view) {
                                  return std::optional<double>(std::numeric_limits<double>::quiet_NaN());
                                }}});
  require_error([&] { with_nan("p", "c"); }, {"parts: \"nan\" returned nan"});

  using grpo::tasks::reward_fn;
  require_error([] { weighted_sum(std::vector<named_reward>{}); }, {"parts: at least one reward function is required"});
  require_error([] { weighted_sum({{"", 1.0, format_reward{}}}); }, {"parts: element 0 has an empty name"});
  require_error([] { weighted_sum({{"f", 1.0, format_reward{}}, {"f", 2.0, format_reward{}}}); },
                {"parts: the name \"f\" is used twice"});
  require_error([] { weighted_sum({{"f", std::numeric_limits<double>::infinity(), format_reward{}}}); },
                {"parts: \"f\" has weight inf"});
  require_error([] { weighted_sum({{"f", 1.0, reward_fn{}}}); }, {"parts: \"f\" has no function"});

  const auto r1 = grpo::tasks::r1_rewards(small_arithmetic());
  REQUIRE(r1.size() == 2);
  CHECK(r1[0].name == "accuracy");
  CHECK(r1[1].name == "format");
  CHECK(weighted_sum(r1)("1+2=", "<think></think><answer>3</answer>") == 2.0);
  // Through the core's score(): unscorable becomes NaN.
  CHECK(std::isnan(grpo::score(weighted_sum(r1), "not a problem", "<answer>3</answer>")));
  CHECK(grpo::score(format_reward{}, "p", "<think></think><answer>3</answer>") == 1.0);
}
