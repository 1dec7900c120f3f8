// SPDX-License-Identifier: Apache-2.0
// Sampling and cached generation of the native transformer, and its grpo::policy adapter: the
// sampler on hand-worked distributions (temperature, top-k, top-p, greedy) and both of its
// log-probs; generation with a key/value cache against the uncached forward; stop tokens,
// determinism, options errors.
#include <array>
#include <cmath>
#include <map>
#include <vector>

#include "grpo/logits.hpp"
#include "grpo/model/model.hpp"
#include "test_support.hpp"

using namespace grpo;
using namespace grpo::model;
using namespace grpo::testing;

namespace {

transformer_config small_config() {
  transformer_config c;
  c.vocab_size = 23;
  c.hidden_size = 32;
  c.intermediate_size = 40;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 48;
  c.tie_word_embeddings = false;
  c.attention_bias = true;
  return c;
}

parameters<float> small_weights(std::uint64_t seed = 61) {
  parameters<float> w(small_config());
  initialize(w, seed, 0.4);  // large weights: peaked, varied next-token distributions
  return w;
}

// Every field, in order: GCC 12 warns (-Wmissing-field-initializers) on partially designated
// initializers.
sampling_options opts(double temperature, std::int64_t max_new_tokens, std::int64_t top_k = 0, double top_p = 1.0,
                      std::vector<token_id> stop = {}) {
  return {temperature, top_k, top_p, max_new_tokens, std::move(stop)};
}

const std::vector<std::vector<token_id>> prompts = {{1, 2, 3, 4, 5}, {7}, {8, 9, 10}};

// The log-sum-exp of {2, 1, 0, -1} at temperature 1 and 2.
constexpr double lse1 = 2.4401896985611953, lse2 = 1.7873386716983295;

// Draw counts of sample_token over `draws` seeds.
std::map<token_id, int> histogram(const sampling_options& options, double lse, int draws) {
  const std::array<float, 4> logits = {2.0f, 1.0f, 0.0f, -1.0f};
  std::vector<std::pair<double, token_id>> scratch;
  std::map<token_id, int> counts;
  std::mt19937_64 gen(5);
  for (int i = 0; i < draws; ++i) ++counts[sample_token(std::span<const float>(logits), lse, options, gen, scratch).id];
  return counts;
}

}  // namespace

TEST_CASE("model sampling: temperature, top-k, top-p and greedy on a hand-worked distribution", "[model][sampling]") {
  // z = [2, 1, 0, -1]: lse = 2.4401897, p = [0.6439143, 0.2368828, 0.0871443, 0.0320586].
  const std::array<float, 4> logits = {2.0f, 1.0f, 0.0f, -1.0f};
  std::vector<std::pair<double, token_id>> scratch;
  std::mt19937_64 gen(1);
  const auto draw = [&](sampling_options o, double lse) {
    return sample_token(std::span<const float>(logits), lse, o, gen, scratch);
  };

  // Greedy: the argmax, with probability 1 under the sampler; full log-prob at T = 1: 2 - lse.
  auto greedy = draw(opts(0.0, 1), lse1);
  CHECK(greedy.id == 0);
  CHECK(greedy.logprob == 0.0);
  require_close(greedy.full_logprob, -0.4401896985611953, 1e-15);

  // top_k = 2 keeps {0, 1}, mass 0.8807971: q0 = 0.7310586 (log -0.3132617), q1 log -1.3132617;
  // the full log-probs are 2 - lse and 1 - lse. logprob - full_logprob = -log(kept mass).
  for (int i = 0; i < 20; ++i) {
    const auto t = draw(opts(1.0, 1, 2), lse1);
    REQUIRE((t.id == 0 || t.id == 1));
    require_close(t.logprob, t.id == 0 ? -0.3132616875182228 : -1.3132616875182228, 1e-12);
    require_close(t.full_logprob, t.id == 0 ? -0.4401896985611953 : -1.4401896985611953, 1e-12);
    require_close(t.logprob - t.full_logprob, -std::log(0.8807970779778825), 1e-12);
  }
  // top_p = 0.6: 0.6439 alone reaches it, so the sampler is greedy with log-prob 0.
  for (int i = 0; i < 20; ++i) {
    const auto t = draw(opts(1.0, 1, 0, 0.6), lse1);
    REQUIRE(t.id == 0);
    REQUIRE(t.logprob == 0.0);
  }
  // top_p = 0.7 needs tokens 0 and 1 (0.6439 < 0.7 <= 0.8808); with top_k = 3 the threshold is
  // 0.9 of the top-3 mass 0.9679 (0.8711), again reached by {0, 1}.
  for (const sampling_options& o : {opts(1.0, 1, 0, 0.7), opts(1.0, 1, 3, 0.9)}) {
    const auto counts = histogram(o, lse1, 4000);
    CHECK(counts.size() == 2);
    CHECK(counts.at(0) / 4000.0 == Approx(0.7310585786300049).margin(0.03));
  }
  // No truncation: the sampler's log-prob is the full one, and frequencies follow p at T = 2:
  // p = softmax(z / 2) = [0.4550542, 0.2760043, 0.1674051, 0.1015363].
  const auto t = draw(opts(2.0, 1), lse2);
  CHECK(t.logprob == t.full_logprob);
  const auto counts = histogram(opts(2.0, 1), lse2, 20000);
  const std::array<double, 4> p2 = {0.4550542339234112, 0.27600434470659363, 0.16740509727844333, 0.1015363240915518};
  for (token_id v = 0; v < 4; ++v)
    CHECK(counts.at(v) / 20000.0 == Approx(p2[static_cast<std::size_t>(v)]).margin(0.015));
  // top_k >= V is no truncation.
  CHECK(histogram(opts(2.0, 1, 4), lse2, 20000) == counts);
}

TEST_CASE("model sampling: greedy ties go to the lowest id, seeds per row", "[model][sampling]") {
  const std::array<float, 3> logits = {1.0f, 3.0f, 3.0f};
  std::vector<std::pair<double, token_id>> scratch;
  std::mt19937_64 gen(1);
  CHECK(sample_token(std::span<const float>(logits), 0.0, opts(0.0, 1), gen, scratch).id == 1);
  CHECK(sample_token(std::span<const float>(logits), 0.0, opts(1.0, 1, 1), gen, scratch).id == 1);
  CHECK(row_seed(1, 0) != row_seed(1, 1));
  CHECK(row_seed(1, 0) != row_seed(2, 0));
  CHECK(row_seed(1, 0) == row_seed(1, 0));
}

TEST_CASE("model generate: cached decoding equals the uncached forward", "[model][generate]") {
  for (const sampling_options& options : {opts(1.0, 20), opts(0.7, 20, 6, 0.9)}) {
    transformer<float> model(small_weights(), {2});
    std::vector<float> step_logits;
    const auto sampled = model.generate(prompts, options, 7, 2, &step_logits);
    REQUIRE(sampled.size() == 6);
    // Score what was sampled with the plain forward.
    sequence_batch batch;
    for (std::size_t r = 0; r < sampled.size(); ++r) {
      batch.prompts.push_back(prompts[r / 2]);
      batch.completions.push_back(sampled[r].tokens);
    }
    const auto logits = model.forward(batch);
    const auto t = static_cast<std::size_t>(batch.max_completion_length());
    const auto host = logits.to_host();
    std::vector<std::int64_t> ids(sampled.size() * t, 0);
    for (std::size_t r = 0; r < sampled.size(); ++r)
      for (std::size_t i = 0; i < sampled[r].tokens.size(); ++i) ids[r * t + i] = sampled[r].tokens[i];
    const auto recomputed =
        token_logprobs(logits, make_index(model.backend(), ids, shape::vector(static_cast<std::int64_t>(ids.size()))),
                       options.temperature)
            .logprobs.to_host();
    for (std::size_t r = 0; r < sampled.size(); ++r) {
      const auto& s = sampled[r];
      REQUIRE(s.logprobs.size() == s.tokens.size());
      REQUIRE(s.full_logprobs.size() == s.tokens.size());
      for (std::size_t i = 0; i < s.tokens.size(); ++i) {
        // Each step's logits against the forward's row for that position (1e-5, and in fact the
        // same bits: both paths run the same kernels on the same operands).
        std::vector<double> step(step_logits.begin() + static_cast<std::ptrdiff_t>((r * 20 + i) * 23),
                                 step_logits.begin() + static_cast<std::ptrdiff_t>((r * 20 + i + 1) * 23));
        std::vector<double> full(host.begin() + static_cast<std::ptrdiff_t>((r * t + i) * 23),
                                 host.begin() + static_cast<std::ptrdiff_t>((r * t + i + 1) * 23));
        require_close(step, full, 1e-5, 1e-5);
#if defined(__x86_64__) || defined(__i386__)
        CHECK(step == full);
#endif
        // The full-distribution log-prob is what token_logprobs recomputes (in float here).
        CHECK(static_cast<float>(s.full_logprobs[i]) == static_cast<float>(recomputed[r * t + i]));
        // Truncation only raises the sampler's probability of what it drew.
        CHECK(s.logprobs[i] >= s.full_logprobs[i]);
        if (options.top_k == 0 && options.top_p == 1.0) CHECK(s.logprobs[i] == s.full_logprobs[i]);
      }
    }
  }
}

TEST_CASE("model generate: greedy is deterministic and equals top-k = 1", "[model][generate]") {
  transformer<float> model(small_weights(), {2});
  const sampling_options greedy = opts(0.0, 12);
  const auto a = model.generate(prompts, greedy, 1, 2);
  const auto b = model.generate(prompts, greedy, 999, 2);
  const auto k1 = model.generate(prompts, opts(1.3, 12, 1), 5, 2);
  for (std::size_t r = 0; r < a.size(); ++r) {
    CHECK(a[r].tokens == b[r].tokens);
    CHECK(a[r].tokens == k1[r].tokens);
    CHECK(a[r].tokens.size() == 12);
    CHECK_FALSE(a[r].stopped);
    for (const double lp : a[r].logprobs) CHECK(lp == 0.0);
    for (const double lp : a[r].full_logprobs) CHECK(lp <= 0.0);
  }
  CHECK(a[0].tokens == a[1].tokens);  // the two copies of a prompt agree when greedy
}

TEST_CASE("model generate: stop tokens end completions", "[model][generate]") {
  transformer<float> model(small_weights(), {2});
  const auto greedy = model.generate(prompts, opts(0.0, 10), 1);
  // Stopping on each prompt's first greedy token: one token, stopped.
  std::vector<token_id> firsts;
  for (const auto& g : greedy) firsts.push_back(g.tokens[0]);
  const auto stopped = model.generate(prompts, opts(0.0, 10, 0, 1.0, firsts), 1);
  for (const auto& s : stopped) {
    CHECK(s.tokens.size() == 1);
    CHECK(s.stopped);
  }
  // Sampling with common stop tokens: a completion ends exactly at its first stop token, or runs
  // to max_new_tokens without one.
  const sampling_options options = opts(1.0, 15, 0, 1.0, {0, 1, 2, 3, 4, 5});
  const auto sampled = model.generate(prompts, options, 3, 8);
  int ended = 0;
  for (const auto& s : sampled) {
    const auto is_stop = [&](token_id t) { return t <= 5; };
    REQUIRE_FALSE(s.tokens.empty());
    for (std::size_t i = 0; i + 1 < s.tokens.size(); ++i) REQUIRE_FALSE(is_stop(s.tokens[i]));
    if (s.stopped) {
      CHECK(is_stop(s.tokens.back()));
      ++ended;
    } else {
      CHECK(s.tokens.size() == 15);
      CHECK_FALSE(is_stop(s.tokens.back()));
    }
  }
  CHECK(ended > 0);
}

TEST_CASE("model generate: reproducible per seed and row, whatever the threads", "[model][generate]") {
  const auto w = small_weights();
  transformer<float> one(w, {1}), two(w, {2});
  const sampling_options options = opts(1.0, 16, 0, 0.95, {0});
  const auto a = one.generate(prompts, options, 42, 4);
  const auto b = two.generate(prompts, options, 42, 4);
  const auto c = two.generate(prompts, options, 43, 4);
  bool any_difference = false;
  for (std::size_t r = 0; r < a.size(); ++r) {
    CHECK(a[r].tokens == b[r].tokens);
    CHECK(a[r].logprobs == b[r].logprobs);
    CHECK(a[r].full_logprobs == b[r].full_logprobs);
    CHECK(a[r].stopped == b[r].stopped);
    any_difference = any_difference || a[r].tokens != c[r].tokens;
  }
  CHECK(any_difference);
  // Fewer rows than threads: one decoder whose products use the pool; the same tokens as one thread.
  transformer<float> three(w, {3});
  for (const std::int64_t group : {1, 2}) {
    const std::vector<std::vector<token_id>> first{prompts[0]};
    const auto serial = one.generate(first, options, 42, group), pooled = three.generate(first, options, 42, group);
    REQUIRE(pooled.size() == static_cast<std::size_t>(group));
    for (std::size_t r = 0; r < serial.size(); ++r) {
      CHECK(pooled[r].tokens == serial[r].tokens);
      CHECK(pooled[r].logprobs == serial[r].logprobs);
      CHECK(pooled[r].full_logprobs == serial[r].full_logprobs);
    }
  }
  // The copies of a prompt are sampled independently.
  CHECK((a[0].tokens != a[1].tokens || a[1].tokens != a[2].tokens));

  // The same rows through the policy concept's rollout engine (prompts repeated, group size 1).
  transformer_policy<float> policy(two);
  policy_rollout_engine<transformer_policy<float>> engine(policy);
  const auto rollouts = engine.generate(prompts, 4, options, 42);
  REQUIRE(rollouts.completions.size() == a.size());
  for (std::size_t r = 0; r < a.size(); ++r) {
    CHECK(rollouts.completions[r].tokens == a[r].tokens);
    CHECK(rollouts.completions[r].logprobs == a[r].logprobs);
    CHECK(rollouts.prompt_index[r] == static_cast<std::int64_t>(r / 4));
  }
}

TEST_CASE("model generate: edge cases and errors", "[model][generate]") {
  transformer<float> model(small_weights(), {2});
  const auto none = model.generate(prompts, opts(1.0, 0), 1, 2);
  REQUIRE(none.size() == 6);
  for (const auto& s : none) {
    CHECK(s.tokens.empty());
    CHECK_FALSE(s.stopped);
  }
  CHECK(model.generate(std::span<const std::vector<token_id>>(), opts(1.0, 4), 1).empty());
  // A prompt may fill the context up to max_position_embeddings with its completion.
  const std::vector<std::vector<token_id>> long_prompt = {std::vector<token_id>(40, 3)};
  CHECK(model.generate(long_prompt, opts(0.0, 8), 1)[0].tokens.size() == 8);
  require_error([&] { (void)model.generate(long_prompt, opts(1.0, 9), 1); },
                {"prompts", "row 0 has 40 tokens", "max_position_embeddings 48"});

  require_error([&] { (void)model.generate(prompts, opts(-1.0, 4), 1); }, {"options.temperature", "-1"});
  require_error([&] { (void)model.generate(prompts, opts(INFINITY, 4), 1); }, {"options.temperature"});
  require_error([&] { (void)model.generate(prompts, opts(1e-320, 4), 1); }, {"options.temperature", "finite inverse"});
  require_error([&] { (void)model.generate(prompts, opts(1.0, 4, -2), 1); }, {"options.top_k", "-2"});
  require_error([&] { (void)model.generate(prompts, opts(1.0, 4, 0, 0.0), 1); }, {"options.top_p", "(0, 1]"});
  require_error([&] { (void)model.generate(prompts, opts(1.0, 4, 0, 1.5), 1); }, {"options.top_p"});
  require_error([&] { (void)model.generate(prompts, opts(1.0, -1), 1); }, {"options.max_new_tokens"});
  require_error(
      [&] {
        (void)model.generate(prompts, opts(1.0, 4, 0, 1.0, {3, 23}), 1);
      },
      {"options.stop_tokens", "element 1 is 23"});
  require_error([&] { (void)model.generate(prompts, opts(1.0, 4), 1, 0); }, {"group_size", "got 0"});
  const std::vector<std::vector<token_id>> empty_prompt = {{1}, {}};
  require_error([&] { (void)model.generate(empty_prompt, opts(1.0, 4), 1); }, {"prompts", "row 1 is empty"});
  const std::vector<std::vector<token_id>> bad_token = {{1, 30}};
  require_error([&] { (void)model.generate(bad_token, opts(1.0, 4), 1); }, {"prompts", "row 0, element 1 is 30"});
  // Weights gone non-finite (a diverged run) fail loudly instead of sampling garbage.
  model.weights()["model.norm.weight"][0] = NAN;
  require_error([&] { (void)model.generate(prompts, opts(1.0, 4, 3), 1); }, {"generate", "not finite"});
}

TEST_CASE("model policy: the adapter models grpo::policy and grpo::logits_policy", "[model][policy]") {
  static_assert(policy<transformer_policy<float>>);
  static_assert(logits_policy<transformer_policy<double>>);
  static_assert(rollout_engine<policy_rollout_engine<transformer_policy<float>>>);
  transformer<float> model(small_weights(), {2});
  transformer_policy<float> policy(model, 0.8);
  const sequence_batch batch{{{1, 2}, {3}}, {{4, 5, 6}, {7}}};
  const auto logits = policy.completion_logits(batch);
  CHECK(logits.shape() == shape::matrix(6, 23));
  const auto logprobs = policy.completion_logprobs(batch);
  CHECK(logprobs.shape() == shape::matrix(2, 3));
  const auto want =
      token_logprobs(logits, make_index(model.backend(), std::vector<std::int64_t>{4, 5, 6, 7, 0, 0}, shape::vector(6)),
                     0.8)
          .logprobs.to_host();
  const auto got = logprobs.to_host();
  for (std::size_t i = 0; i < 4; ++i) CHECK(got[i] == want[i]);
  CHECK(got[4] == 0.0);
  CHECK(got[5] == 0.0);
  // The log-probs match what generation reports as full log-probs at the same temperature.
  const auto sampled = policy.sample(prompts, opts(0.8, 5), 9);
  REQUIRE(sampled.size() == 3);
  const auto full = model.generate(prompts, opts(0.8, 5), 9);
  for (std::size_t r = 0; r < 3; ++r) {
    CHECK(sampled[r].tokens == full[r].tokens);
    CHECK(sampled[r].logprobs == full[r].logprobs);
  }
  require_error([&] { transformer_policy<float> bad(model, 0.0); }, {"temperature"});
}
