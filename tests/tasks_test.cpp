// SPDX-License-Identifier: Apache-2.0
// The built-in tasks: hand-worked chains of thought, the Countdown solver, determinism per seed,
// disjoint train/held-out splits, option validation, and the property the cold start relies on:
// every demonstration encodes, has the R1 format and is judged correct by the reward functions.
#include "test_support.hpp"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "grpo/tasks/tasks.hpp"

using grpo::config_error;
using grpo::tasks::accuracy_reward;
using grpo::tasks::arithmetic_options;
using grpo::tasks::arithmetic_task;
using grpo::tasks::countdown_options;
using grpo::tasks::countdown_task;
using grpo::tasks::format_reward;
using grpo::tasks::make_arithmetic_problem;
using grpo::tasks::make_countdown_problem;
using grpo::tasks::problem;
using grpo::tasks::solve_countdown;
using grpo::testing::require_error;

namespace {

arithmetic_options with_teacher(arithmetic_options o, double teacher_errors) {
  o.teacher_errors = teacher_errors;
  return o;
}

// The split key of an arithmetic prompt, computed independently of the task: operands sorted for
// the commutative + and *.
std::string arithmetic_key(const std::string& prompt) {
  const std::size_t op_pos = prompt.find_first_of("+-*");
  std::string a = prompt.substr(0, op_pos), b = prompt.substr(op_pos + 1, prompt.size() - op_pos - 2);
  const char op = prompt[op_pos];
  if (op != '-' && std::stoll(a) > std::stoll(b)) std::swap(a, b);
  return a + op + b;
}

// The split key of a countdown prompt: sorted numbers and the target.
std::string countdown_key(const std::string& prompt) {
  const auto instance = grpo::tasks::parse_countdown_prompt(prompt);
  REQUIRE(instance.has_value());
  std::vector<std::int64_t> numbers = instance->numbers;
  std::sort(numbers.begin(), numbers.end());
  std::string key;
  for (const auto n : numbers) key += std::to_string(n) + ",";
  return key + "->" + std::to_string(instance->target);
}

// What the cold start relies on: the demonstration encodes, has the R1 format and is correct.
void require_demonstration_scores(const grpo::tasks::task& t, const problem& p) {
  INFO("prompt: " << p.prompt << "\ndemonstration: " << p.demonstration);
  const auto& tok = t.tokenizer();
  REQUIRE(tok.decode(tok.encode_prompt(p.prompt)) == p.prompt);
  REQUIRE(tok.decode(tok.encode_completion(p.demonstration)) == p.demonstration);
  REQUIRE(format_reward{}(p.prompt, p.demonstration) == 1.0);
  REQUIRE(accuracy_reward(t)(p.prompt, p.demonstration) == 1.0);
  REQUIRE(t.reference_answer(p.prompt).has_value());
  REQUIRE(t.check(p.prompt, p.answer) == true);
}

}  // namespace

TEST_CASE("arithmetic chains of thought, hand-worked", "[tasks][arithmetic]") {
  // 57+68: units 7+8=15 (write 5, carry 1), tens 5+6+1=12 (write 2, carry 1): 125.
  const problem add = make_arithmetic_problem(57, '+', 68);
  CHECK(add.prompt == "57+68=");
  CHECK(add.answer == "125");
  CHECK(add.demonstration == "<think>7+8=15\n5+6+1=12</think><answer>125</answer>");
  // 40+300: missing digits are zeros.
  CHECK(make_arithmetic_problem(40, '+', 300).demonstration == "<think>0+0=0\n4+0=4\n0+3=3</think><answer>340</answer>");
  // 523-68: 3<8 borrows (13-8=5), 2-6-1<0 borrows (12-6-1=5), 5-0-1=4: 455.
  CHECK(make_arithmetic_problem(523, '-', 68).demonstration ==
        "<think>13-8=5\n12-6-1=5\n5-0-1=4</think><answer>455</answer>");
  // 100-99: 10-9=1, 10-9-1=0, 1-0-1=0: 001 = 1.
  CHECK(make_arithmetic_problem(100, '-', 99).demonstration ==
        "<think>10-9=1\n10-9-1=0\n1-0-1=0</think><answer>1</answer>");
  // 47*36: 47*6=282, 47*30=1410, 282+1410=1692.
  CHECK(make_arithmetic_problem(47, '*', 36).demonstration ==
        "<think>47*6=282\n47*30=1410\n282+1410=1692</think><answer>1692</answer>");
  // 123*405: the 0 digit has no partial product: 123*5=615, 123*400=49200, 615+49200=49815.
  CHECK(make_arithmetic_problem(123, '*', 405).demonstration ==
        "<think>123*5=615\n123*400=49200\n615+49200=49815</think><answer>49815</answer>");
  CHECK(make_arithmetic_problem(47, '*', 6).demonstration == "<think>47*6=282</think><answer>282</answer>");
  CHECK(make_arithmetic_problem(0, '*', 40).demonstration == "<think>0*40=0</think><answer>0</answer>");
  CHECK(make_arithmetic_problem(999999999, '*', 9).answer == "8999999991");

  require_error([] { make_arithmetic_problem(3, '-', 5); }, {"b: must be <= a for subtraction, got a=3, b=5"});
  require_error([] { make_arithmetic_problem(-1, '+', 5); }, {"a: must be in [0, 999999999], got -1"});
  require_error([] { make_arithmetic_problem(1, '+', 1'000'000'000); }, {"b: must be in [0, 999999999]"});
  require_error([] { make_arithmetic_problem(6, '/', 3); }, {"op: must be one of + - *, got '/'"});
}

TEST_CASE("arithmetic weak teacher: systematic digit-sum slips, exact answers, hand-worked", "[tasks][arithmetic]") {
  // At teacher_errors = 0.3 the teacher errs on the pairs {5,5} {1,1} {7,9} {0,4} (among others; unit_hash of
  // "teacher:5+5" is 0.024, of "teacher:1+1" 0.074, of "teacher:7+9" 0.174, of "teacher:0+4" 0.288) and not on
  // {7,8} {4,5} {0,1} (0.655) or {5,7} (0.974).
  // 15+15: 5+5 written as 9, so no carry; 1+1 written as 1: the teacher answers 19, the problem's answer is 30.
  const problem slips = make_arithmetic_problem(15, '+', 15, 0.3);
  CHECK(slips.answer == "30");
  CHECK(slips.demonstration == "<think>5+5=9\n1+1=1</think><answer>19</answer>");
  // 19+7: 9+7=16 written as 15 keeps its carry into 1+0+1=2: 25.
  CHECK(make_arithmetic_problem(19, '+', 7, 0.3).demonstration == "<think>9+7=15\n1+0+1=2</think><answer>25</answer>");
  // The pair is unordered: 4+40 slips in both columns (0+4 and 4+0), 4 written as 3 twice.
  CHECK(make_arithmetic_problem(4, '+', 40, 0.3).demonstration == "<think>4+0=3\n0+4=3</think><answer>33</answer>");
  // Pairs the teacher knows give the exact worked solution.
  CHECK(make_arithmetic_problem(57, '+', 48, 0.3).demonstration == make_arithmetic_problem(57, '+', 48).demonstration);
  // A sum of 0 is written as 1 ({0,0} has unit_hash 0.440).
  CHECK(make_arithmetic_problem(100, '+', 0, 0.45).demonstration ==
        "<think>0+0=1\n0+0=1\n1+0=1</think><answer>111</answer>");
  CHECK(make_arithmetic_problem(100, '+', 0, 0.3).demonstration == make_arithmetic_problem(100, '+', 0).demonstration);
  require_error([] { make_arithmetic_problem(7, '-', 5, 0.3); }, {"teacher_errors: applies to '+' only, got op '-'"});

  // A task's weak demonstrations: the answers stay exact and the held-out split is the same; every
  // demonstration that ends wrong writes at least one digit pair the teacher errs on.
  arithmetic_options o;
  o.operations = "+";
  arithmetic_options weak = o;
  weak.teacher_errors = 0.3;
  const arithmetic_task exact_task(o), weak_task(weak);
  REQUIRE(weak_task.heldout_size() == exact_task.heldout_size());
  for (std::size_t i = 0; i < weak_task.heldout_size(); ++i) REQUIRE(weak_task.heldout(i).answer == exact_task.heldout(i).answer);
  std::mt19937_64 rng_exact(5), rng_weak(5);
  int wrong = 0;
  for (int i = 0; i < 500; ++i) {
    const problem e = exact_task.sample_train(rng_exact), w = weak_task.sample_train(rng_weak);
    REQUIRE(w.prompt == e.prompt);
    REQUIRE(w.answer == e.answer);
    const bool demo_right = accuracy_reward{weak_task}(w.prompt, w.demonstration) == 1.0;
    REQUIRE(demo_right == (w.demonstration == e.demonstration));
    wrong += demo_right ? 0 : 1;
  }
  CHECK(wrong > 100);  // the flagged pairs cover about 40% of the 1-2 digit sums
  CHECK(wrong < 300);
  require_error([&] { arithmetic_task(with_teacher(o, 1.0)); }, {"teacher_errors: must be in [0, 1), got 1"});
  require_error([&] { arithmetic_task(with_teacher(o, -0.5)); }, {"teacher_errors: must be in [0, 1), got -0.5"});
  arithmetic_options mixed;
  mixed.operations = "+-";
  require_error([&] { arithmetic_task(with_teacher(mixed, 0.2)); },
                {"teacher_errors: the weak teacher writes column additions only", "got \"+-\""});
}

TEST_CASE("arithmetic reference answers come from the prompt", "[tasks][arithmetic]") {
  const arithmetic_task t(arithmetic_options{1, 1, "+", 2, 0.1, 0});
  CHECK(t.reference_answer("57+68=") == "125");
  CHECK(t.reference_answer("3-5=") == "-2");  // any well-formed prompt, not only generated ones
  CHECK(t.reference_answer("12*0=") == "0");
  CHECK(t.reference_answer("999999999*999999999=") == "999999998000000001");
  for (const std::string bad : {"57+68", "057+1=", "1+2=3", "1/2=", "1234567890+1=", "", "+=", "1+ 2=", "a+b="})
    CHECK_FALSE(t.reference_answer(bad).has_value());
  CHECK(t.check("57+68=", "125") == true);
  CHECK(t.check("57+68=", "126") == false);
  CHECK(t.check("hello", "125") == std::nullopt);
}

TEST_CASE("arithmetic generator: deterministic, disjoint splits, every demonstration scores", "[tasks][arithmetic]") {
  const arithmetic_task t;  // defaults: 1-3 digits, + - *
  CHECK(t.name() == "arithmetic");
  CHECK(t.heldout_size() == 200);

  // Same options, same held-out list; same rng state, same training stream.
  const arithmetic_task again;
  std::mt19937_64 rng_a(42), rng_b(42);
  for (std::size_t i = 0; i < t.heldout_size(); ++i) CHECK(t.heldout(i).prompt == again.heldout(i).prompt);
  for (int i = 0; i < 50; ++i) CHECK(t.sample_train(rng_a).prompt == t.sample_train(rng_b).prompt);
  // Another seed lists other held-out problems.
  arithmetic_options other_seed;
  other_seed.seed = 1;
  const arithmetic_task t1(other_seed);
  int same = 0;
  for (std::size_t i = 0; i < t.heldout_size(); ++i) same += t.heldout(i).prompt == t1.heldout(i).prompt;
  CHECK(same < 10);

  std::set<std::string> heldout_keys;
  for (std::size_t i = 0; i < t.heldout_size(); ++i) {
    const problem p = t.heldout(i);
    CHECK(heldout_keys.insert(arithmetic_key(p.prompt)).second);  // distinct
    require_demonstration_scores(t, p);
  }
  // Held-out problems of seed 1 live in the same partition: never a training problem of either.
  for (std::size_t i = 0; i < t1.heldout_size(); ++i) heldout_keys.insert(arithmetic_key(t1.heldout(i).prompt));
  std::mt19937_64 rng(7);
  std::set<char> ops;
  for (int i = 0; i < 3000; ++i) {
    const problem p = t.sample_train(rng);
    CHECK(heldout_keys.count(arithmetic_key(p.prompt)) == 0);
    ops.insert(p.prompt[p.prompt.find_first_of("+-*")]);
    if (i < 400) require_demonstration_scores(t, p);
  }
  CHECK(ops == std::set<char>{'+', '-', '*'});
  require_error([&] { t.heldout(200); }, {"index: 200 is outside the held-out split of size 200"});
}

TEST_CASE("arithmetic options shape the problems", "[tasks][arithmetic]") {
  arithmetic_options o;
  o.min_digits = 2;
  o.max_digits = 2;
  o.operations = "-";
  o.heldout_size = 20;
  const arithmetic_task t(o);
  std::mt19937_64 rng(3);
  for (int i = 0; i < 300; ++i) {
    const problem p = t.sample_train(rng);
    const std::size_t minus = p.prompt.find('-');
    REQUIRE(minus == 2);                // two digits, then '-'
    REQUIRE(p.prompt.size() == 6);      // "ab-cd="
    REQUIRE(p.answer.front() != '-');   // a >= b: never negative
  }
}

TEST_CASE("arithmetic options are validated", "[tasks][arithmetic]") {
  const auto with = [](auto change) {
    arithmetic_options o;
    change(o);
    return o;
  };
  require_error([&] { arithmetic_task(with([](auto& o) { o.min_digits = 0; })); }, {"min_digits: must be in [1, 9], got 0"});
  require_error([&] { arithmetic_task(with([](auto& o) { o.max_digits = 10; })); }, {"max_digits: must be in [min_digits, 9]"});
  require_error([&] { arithmetic_task(with([](auto& o) { o.min_digits = 3, o.max_digits = 2; })); }, {"max_digits:", "got 2"});
  require_error([&] { arithmetic_task(with([](auto& o) { o.operations = ""; })); }, {"operations: must name at least one"});
  require_error([&] { arithmetic_task(with([](auto& o) { o.operations = "+/"; })); }, {"operations: '/' (0x2f) is not one of + - *"});
  require_error([&] { arithmetic_task(with([](auto& o) { o.operations = "++"; })); }, {"operations: '+' is listed twice"});
  require_error([&] { arithmetic_task(with([](auto& o) { o.heldout_fraction = 1.0; })); }, {"heldout_fraction: must be in (0, 1), got 1"});
  require_error([&] { arithmetic_task(with([](auto& o) { o.heldout_fraction = 0.0; })); }, {"heldout_fraction:"});
  // 1-digit sums: 55 distinct problems, about a tenth held out: far fewer than 200.
  require_error([&] { arithmetic_task(with([](auto& o) { o.max_digits = 1, o.operations = "+"; })); },
                {"heldout_size: found only", "200 requested"});
  CHECK_THROWS_AS(arithmetic_task(with([](auto& o) { o.min_digits = -1; })), config_error);
}

TEST_CASE("countdown solver, hand-worked", "[tasks][countdown]") {
  // Search order: pair (3,5) first; 3+5=8 leads nowhere (8 and 7 give 15, 56, 1, -1, 8/7, 7/8),
  // then 3*5=15 and 15+7=22.
  const std::vector<std::int64_t> n1 = {3, 5, 7};
  const auto s1 = solve_countdown(n1, 22);
  REQUIRE(s1.has_value());
  CHECK(s1->expression == "3*5+7");
  CHECK(s1->steps == std::vector<std::string>{"3*5=15", "15+7=22"});
  // (2,3): 2+3=5, then 5+4=9 fails and 5*4=20: the sum needs parentheses.
  const std::vector<std::int64_t> n2 = {2, 3, 4};
  const auto s2 = solve_countdown(n2, 20);
  REQUIRE(s2.has_value());
  CHECK(s2->expression == "(2+3)*4");
  CHECK(s2->steps == std::vector<std::string>{"2+3=5", "5*4=20"});
  // (10,2): 10+2=12 and 10*2=20 fail with 3; 10-2=8, 8+3=11 fails, 8*3=24 fails, 8-3=5.
  const std::vector<std::int64_t> n3 = {10, 2, 3};
  const auto s3 = solve_countdown(n3, 5);
  REQUIRE(s3.has_value());
  CHECK(s3->expression == "10-2-3");
  // 3 3 8 8 -> 24 needs a fraction (8/(3-8/3)); the integer-steps search finds nothing first.
  const std::vector<std::int64_t> n4 = {3, 3, 8, 8};
  const auto s4 = solve_countdown(n4, 24);
  REQUIRE(s4.has_value());
  CHECK(grpo::tasks::check_countdown_expression(n4, grpo::tasks::rational::integer(24), s4->expression));
  CHECK(std::any_of(s4->steps.begin(), s4->steps.end(), [](const std::string& s) { return s.find("/3") != std::string::npos; }));
  // No solution: 1 and 1 give 2, 1, 0, 1 only.
  const std::vector<std::int64_t> ones = {1, 1};
  CHECK_FALSE(solve_countdown(ones, 5).has_value());
  // One number: itself or nothing.
  const std::vector<std::int64_t> seven = {7};
  CHECK(solve_countdown(seven, 7)->expression == "7");
  CHECK(solve_countdown(seven, 7)->steps.empty());
  CHECK_FALSE(solve_countdown(seven, 8).has_value());
  // Five numbers with no solution: the exhaustive search ends.
  const std::vector<std::int64_t> five = {1, 1, 1, 1, 1};
  CHECK_FALSE(solve_countdown(five, 1000).has_value());

  require_error([] { solve_countdown(std::vector<std::int64_t>{}, 1); }, {"numbers: must have 1 to 5 entries, got 0"});
  require_error([] { solve_countdown(std::vector<std::int64_t>(6, 1), 1); }, {"numbers: must have 1 to 5 entries, got 6"});
  require_error([] { solve_countdown(std::vector<std::int64_t>{1, -2}, 1); }, {"numbers: element 1 must be in [0, 999999999], got -2"});
}

TEST_CASE("countdown prompts and problems", "[tasks][countdown]") {
  const std::vector<std::int64_t> numbers = {3, 5, 7};
  CHECK(grpo::tasks::countdown_prompt(numbers, 22) == "use 3 5 7 to make 22.");
  const auto parsed = grpo::tasks::parse_countdown_prompt("use 3 5 7 to make 22.");
  REQUIRE(parsed.has_value());
  CHECK(parsed->numbers == numbers);
  CHECK(parsed->target == 22);
  for (const std::string bad : {"use 3 5 7 to make 22", "use 3  5 to make 2.", "use to make 2.", "use 03 5 to make 2.",
                                "Use 3 5 to make 2.", "use 3 5 to make 2. ", "use 3,5 to make 2.", "use 3 5 to make -2."})
    CHECK_FALSE(grpo::tasks::parse_countdown_prompt(bad).has_value());

  const auto p = make_countdown_problem(numbers, 22);
  REQUIRE(p.has_value());
  CHECK(p->prompt == "use 3 5 7 to make 22.");
  CHECK(p->answer == "3*5+7");
  CHECK(p->demonstration == "<think>3*5=15\n15+7=22</think><answer>3*5+7</answer>");
  CHECK_FALSE(make_countdown_problem(std::vector<std::int64_t>{1, 1}, 5).has_value());

  const countdown_task t(countdown_options{3, 3, 10, 1, 30, 5, 0.1, 0});
  CHECK(t.reference_answer("use 3 5 7 to make 22.") == "3*5+7");
  CHECK(t.reference_answer("use 1 1 to make 5.") == std::nullopt);             // unsolvable: unscorable
  CHECK(t.reference_answer("use 1 1 1 1 1 1 to make 6.") == std::nullopt);     // more than 5 numbers
  CHECK(t.reference_answer("make 22 from 3 5 7") == std::nullopt);
  CHECK(t.check("use 3 5 7 to make 22.", "7+5*3") == true);
  CHECK(t.check("use 3 5 7 to make 22.", "(3+5)*7") == false);
  CHECK(t.check("use 3 5 7 to make 22.", std::nullopt) == false);
}

TEST_CASE("countdown generator: solvable, deterministic, disjoint splits, demonstrations score", "[tasks][countdown]") {
  countdown_options o;
  o.heldout_size = 100;
  const countdown_task t(o);
  CHECK(t.name() == "countdown");
  CHECK(t.heldout_size() == 100);
  const countdown_task again(o);
  std::mt19937_64 rng_a(5), rng_b(5);
  for (std::size_t i = 0; i < t.heldout_size(); ++i) CHECK(t.heldout(i).prompt == again.heldout(i).prompt);
  for (int i = 0; i < 20; ++i) CHECK(t.sample_train(rng_a).demonstration == t.sample_train(rng_b).demonstration);

  std::set<std::string> heldout_keys;
  for (std::size_t i = 0; i < t.heldout_size(); ++i) {
    const problem p = t.heldout(i);
    CHECK(heldout_keys.insert(countdown_key(p.prompt)).second);
    require_demonstration_scores(t, p);
  }
  std::mt19937_64 rng(11);
  std::set<std::size_t> counts;
  for (int i = 0; i < 300; ++i) {
    const problem p = t.sample_train(rng);
    CHECK(heldout_keys.count(countdown_key(p.prompt)) == 0);
    const auto x = grpo::tasks::parse_countdown_prompt(p.prompt);
    REQUIRE(x.has_value());
    counts.insert(x->numbers.size());
    for (const auto n : x->numbers) REQUIRE((n >= 1 && n <= o.max_number));
    REQUIRE((x->target >= o.min_target && x->target <= o.max_target));
    require_demonstration_scores(t, p);
  }
  CHECK(counts == std::set<std::size_t>{3, 4});
}

TEST_CASE("countdown options are validated", "[tasks][countdown]") {
  const auto with = [](auto change) {
    countdown_options o;
    o.heldout_size = 5;
    change(o);
    return o;
  };
  require_error([&] { countdown_task(with([](auto& o) { o.min_count = 1; })); }, {"min_count: must be in [2, 5], got 1"});
  require_error([&] { countdown_task(with([](auto& o) { o.max_count = 6; })); }, {"max_count: must be in [min_count, 5]"});
  require_error([&] { countdown_task(with([](auto& o) { o.max_number = 0; })); }, {"max_number: must be in [1, 1000], got 0"});
  require_error([&] { countdown_task(with([](auto& o) { o.min_target = -1; })); }, {"min_target: must be in [0, 1000000]"});
  require_error([&] { countdown_task(with([](auto& o) { o.max_target = 0; })); }, {"max_target: must be in [min_target, 1000000]"});
  require_error([&] { countdown_task(with([](auto& o) { o.heldout_fraction = -0.5; })); }, {"heldout_fraction: must be in (0, 1)"});
  // Two numbers from {1, 2} reach at most 4: no target in [50, 60] is solvable.
  require_error(
      [&] {
        countdown_task(with([](auto& o) { o.min_count = 2, o.max_count = 2, o.max_number = 2, o.min_target = 50, o.max_target = 60; }));
      },
      {"heldout_size: found only 0 distinct solvable held-out problems"});
}

TEST_CASE("make_task builds the built-in tasks by name", "[tasks]") {
  const auto a = grpo::tasks::make_task("arithmetic");
  CHECK(a->name() == "arithmetic");
  CHECK(a->kind() == grpo::tasks::answer_kind::integer);
  const auto a7 = grpo::tasks::make_task("arithmetic", 7);
  arithmetic_options seven;
  seven.seed = 7;
  CHECK(a7->heldout(0).prompt == arithmetic_task(seven).heldout(0).prompt);
  const auto c = grpo::tasks::make_task("countdown");
  CHECK(c->name() == "countdown");
  CHECK(c->kind() == grpo::tasks::answer_kind::countdown);
  CHECK(&c->tokenizer() == &grpo::tasks::builtin_tokenizer());
  require_error([] { grpo::tasks::make_task("gsm8k"); }, {"task: unknown task \"gsm8k\""});
}
