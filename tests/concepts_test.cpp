// SPDX-License-Identifier: Apache-2.0
// Minimal conforming models of the trainer's concepts (policy, rollout engine, reward function),
// checked by static_assert, and the behaviour of policy_rollout_engine and score().
#include <cmath>
#include <random>

#include "grpo/concepts.hpp"
#include "grpo/reference_backend.hpp"
#include "test_support.hpp"

using namespace grpo;
using namespace grpo::testing;

namespace {

// The smallest policy: every token of a vocabulary of size V equally likely, whatever the context.
// Its log-probs are -log V at every valid position; sampling draws uniform ids and stops on token 0.
class uniform_policy {
 public:
  using backend_type = reference_backend<double>;
  explicit uniform_policy(std::int64_t vocab) : vocab_(vocab) {}

  const backend_type& backend() const { return backend_; }

  tensor<backend_type> completion_logprobs(const sequence_batch& batch) {
    const auto t = batch.max_completion_length();
    auto mask = batch.completion_mask();
    for (auto& m : mask) m *= -std::log(static_cast<double>(vocab_));
    return make_tensor(backend_, mask, shape::matrix(static_cast<std::int64_t>(batch.rows()), t));
  }

  tensor<backend_type> completion_logits(const sequence_batch& batch) {
    const auto n = static_cast<std::int64_t>(batch.rows()) * batch.max_completion_length();
    return full(backend_, shape::matrix(n, vocab_), 0.0);
  }

  std::vector<completion> sample(std::span<const std::vector<token_id>> prompts, const sampling_options& options,
                                 std::uint64_t seed) {
    std::vector<completion> out;
    for (std::size_t row = 0; row < prompts.size(); ++row) {
      std::mt19937_64 gen(seed * 1000003u + row);
      std::uniform_int_distribution<token_id> pick(0, static_cast<token_id>(vocab_ - 1));
      completion c;
      while (static_cast<std::int64_t>(c.tokens.size()) < options.max_new_tokens && !c.stopped) {
        c.tokens.push_back(pick(gen));
        c.logprobs.push_back(-std::log(static_cast<double>(vocab_)));
        for (token_id stop : options.stop_tokens) c.stopped = c.stopped || c.tokens.back() == stop;
      }
      out.push_back(std::move(c));
    }
    return out;
  }

 private:
  backend_type backend_;
  std::int64_t vocab_;
};

// The smallest reward function: 1 when the completion is "42", 0 otherwise, unscorable when empty.
struct answer_is_42 {
  std::optional<double> operator()(std::string_view, std::string_view completion_text) const {
    if (completion_text.empty()) return std::nullopt;
    return completion_text == "42" ? 1.0 : 0.0;
  }
};

}  // namespace

static_assert(policy<uniform_policy>);
static_assert(logits_policy<uniform_policy>);
static_assert(rollout_engine<policy_rollout_engine<uniform_policy>>);
static_assert(reward_function<answer_is_42>);
static_assert(!reward_function<int>);

TEST_CASE("concepts: the uniform policy scores every valid token -log V", "[concepts]") {
  uniform_policy model(4);
  sequence_batch batch{{{1, 2}, {3}}, {{1, 2, 3}, {2}}};
  REQUIRE(batch.max_completion_length() == 3);
  require_close(model.completion_logprobs(batch).to_host(),
                {-std::log(4.0), -std::log(4.0), -std::log(4.0), -std::log(4.0), 0.0, 0.0});
}

TEST_CASE("concepts: policy_rollout_engine groups G completions per prompt, reproducibly", "[concepts]") {
  uniform_policy model(5);
  policy_rollout_engine engine(model);
  const std::vector<std::vector<token_id>> prompts{{1}, {2}, {3}};
  sampling_options options;
  options.max_new_tokens = 6;
  options.stop_tokens = {0};
  const auto a = engine.generate(prompts, 4, options, 7);
  const auto b = engine.generate(prompts, 4, options, 7);
  REQUIRE(a.completions.size() == 12);
  REQUIRE(a.prompt_index == std::vector<std::int64_t>{0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2});
  for (std::size_t i = 0; i < a.completions.size(); ++i) {
    const auto& c = a.completions[i];
    REQUIRE(c.tokens == b.completions[i].tokens);
    REQUIRE(c.tokens.size() == c.logprobs.size());
    REQUIRE(c.tokens.size() <= 6);
    // Stopped exactly when the last token is the stop token; otherwise truncated at the limit.
    REQUIRE(c.stopped == (c.tokens.back() == 0));
    if (!c.stopped) REQUIRE(c.tokens.size() == 6);
  }
  require_error([&] { (void)engine.generate(prompts, 0, options, 7); }, {"group_size"});
}

TEST_CASE("concepts: score maps unscorable to NaN and rejects non-finite rewards", "[concepts]") {
  REQUIRE(score(answer_is_42{}, "q", "42") == 1.0);
  REQUIRE(score(answer_is_42{}, "q", "41") == 0.0);
  REQUIRE(std::isnan(score(answer_is_42{}, "q", "")));
  const auto broken = [](std::string_view, std::string_view) -> std::optional<double> { return INFINITY; };
  require_error([&] { (void)score(broken, "q", "a"); }, {"reward", "inf"});
}
