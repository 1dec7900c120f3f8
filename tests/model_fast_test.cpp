// SPDX-License-Identifier: Apache-2.0
// The fast transformer against the reference (the oracle): the blocked matrix product and the
// thread pool on their own, then whole forwards and backwards in double (to rounding) and in float
// (1e-5), for both instruction sets and thread counts, and their reproducibility.
#include <atomic>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "grpo/model/model.hpp"
#include "test_support.hpp"

using namespace grpo;
using namespace grpo::model;
using namespace grpo::testing;

namespace {

std::vector<isa> instruction_sets() {
  std::vector<isa> out;
  for (const isa kernels : {isa::generic, isa::avx2, isa::avx512})
    if (supported(kernels)) out.push_back(kernels);
  return out;
}

// Shapes that are no multiple of any tile (mr 4/6, nr 8/16, mc 72, kc 256) and rows long enough to
// cross the k-blocking of the weight-gradient products (330 fed tokens > kc).
transformer_config odd_config(bool tied, bool bias) {
  transformer_config c;
  c.vocab_size = 37;
  c.hidden_size = 36;
  c.intermediate_size = 50;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 6;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 160;
  c.tie_word_embeddings = tied;
  c.attention_bias = bias;
  return c;
}

sequence_batch random_batch(std::int64_t vocab, std::uint32_t seed) {
  std::mt19937 gen(seed);
  sequence_batch batch;
  const std::vector<std::pair<int, int>> lengths = {{5, 70}, {1, 1}, {30, 0}, {12, 140}, {3, 60}, {20, 9}};
  for (const auto& [p, c] : lengths) {
    std::vector<token_id> prompt(static_cast<std::size_t>(p)), completion(static_cast<std::size_t>(c));
    for (auto& t : prompt) t = static_cast<token_id>(gen() % static_cast<std::uint32_t>(vocab));
    for (auto& t : completion) t = static_cast<token_id>(gen() % static_cast<std::uint32_t>(vocab));
    batch.prompts.push_back(prompt);
    batch.completions.push_back(completion);
  }
  return batch;
}

std::vector<double> as_doubles(std::span<const float> v) { return {v.begin(), v.end()}; }
std::vector<double> as_doubles(std::span<const double> v) { return {v.begin(), v.end()}; }

// The reference (in double) on the weights and batch: logits, and gradients for d_logits.
struct oracle {
  std::vector<double> logits, d_logits, grads;
};

oracle run_reference(const parameters<double>& w, const sequence_batch& batch, std::uint32_t seed) {
  oracle out;
  reference::activations<double> saved;
  out.logits = reference::forward(w, batch, &saved);
  out.d_logits = uniform(out.logits.size(), -1.0, 1.0, seed);
  parameters<double> grads(w.config());
  reference::backward(w, saved, std::span<const double>(out.d_logits), grads);
  out.grads = as_doubles(grads.values());
  return out;
}

}  // namespace

TEST_CASE("model kernels: blocked matrix product against plain loops", "[model][kernels]") {
  thread_pool pool(2);
  for (const isa kernels : instruction_sets()) {
    // m, n, k crossing mc = 64, nr and kc = 256; A plain and transposed; B plain and transposed.
    for (const auto& [m, n, k] :
         std::vector<std::array<std::ptrdiff_t, 3>>{{1, 1, 1}, {7, 19, 5}, {70, 33, 300}, {130, 17, 9}}) {
      const auto a_values = uniform(static_cast<std::size_t>(m * k), -1.0, 1.0, 1);
      const auto b_values = uniform(static_cast<std::size_t>(k * n), -1.0, 1.0, 2);
      const auto c_values = uniform(static_cast<std::size_t>(m * n), -1.0, 1.0, 3);
      for (const bool a_transposed : {false, true})
        for (const bool b_transposed : {false, true})
          for (const bool accumulate : {false, true})
            for (thread_pool* p : {static_cast<thread_pool*>(nullptr), &pool}) {
              const matrix_view<double> a = a_transposed ? matrix_view<double>{a_values.data(), 1, m}
                                                         : matrix_view<double>{a_values.data(), k, 1};
              const matrix_view<double> b = b_transposed ? matrix_view<double>{b_values.data(), 1, k}
                                                         : matrix_view<double>{b_values.data(), n, 1};
              std::vector<double> c = c_values, want = c_values;
              for (std::ptrdiff_t i = 0; i < m; ++i)
                for (std::ptrdiff_t j = 0; j < n; ++j) {
                  double total = 0.0;
                  for (std::ptrdiff_t q = 0; q < k; ++q) total += a(i, q) * b(q, j);
                  want[static_cast<std::size_t>(i * n + j)] =
                      (accumulate ? want[static_cast<std::size_t>(i * n + j)] : 0.0) + total;
                }
              gemm_scratch<double> scratch;
              gemm(p, kernels, scratch, m, n, k, a, b, c.data(), n, accumulate);
              require_close(c, want, 1e-12, 1e-12);
            }
    }
  }
}

TEST_CASE("model kernels: float products on odd shapes against plain loops", "[model][kernels]") {
  // Every edge of the float register tiles (mr 4, 6 or 12, nr 8, 16 or 32): 1 x 1, rows and
  // columns past one tile, k of 1, 3 and past kc = 256. Bound: an fma chain of k terms errs by at
  // most (k + 1) u sum |a b| (u = 2^-24), one more u for the accumulate add. On AVX2 and AVX-512
  // the bits are also exactly those of scalar fma chains from 0, one per k-block of gemm_kc, added
  // to c in order.
  thread_pool pool(2);
  for (const isa kernels : instruction_sets())
    for (const auto& [m, n] : std::vector<std::array<std::ptrdiff_t, 2>>{{1, 1}, {5, 17}, {7, 33}, {13, 47}, {25, 65}})
      for (const std::ptrdiff_t k : {1, 3, 257})
        for (const bool a_transposed : {false, true})
          for (const bool accumulate : {false, true})
            for (thread_pool* p : {static_cast<thread_pool*>(nullptr), &pool}) {
              const auto a_values = uniform(static_cast<std::size_t>(m * k), -1.0, 1.0, 11);
              const auto b_values = uniform(static_cast<std::size_t>(k * n), -1.0, 1.0, 12);
              const auto c_values = uniform(static_cast<std::size_t>(m * n), -1.0, 1.0, 13);
              const std::vector<float> a_data(a_values.begin(), a_values.end()),
                  b_data(b_values.begin(), b_values.end()), c_start(c_values.begin(), c_values.end());
              const matrix_view<float> a = a_transposed ? matrix_view<float>{a_data.data(), 1, m}
                                                        : matrix_view<float>{a_data.data(), k, 1};
              const matrix_view<float> b{b_data.data(), n, 1};
              std::vector<float> c = c_start;
              gemm_scratch<float> scratch;
              gemm(p, kernels, scratch, m, n, k, a, b, c.data(), n, accumulate);
              for (std::ptrdiff_t i = 0; i < m; ++i)
                for (std::ptrdiff_t j = 0; j < n; ++j) {
                  const auto at = static_cast<std::size_t>(i * n + j);
                  double exact = accumulate ? static_cast<double>(c_start[at]) : 0.0, magnitude = std::abs(exact);
                  float chained = c_start[at];
                  for (std::ptrdiff_t k0 = 0; k0 < k; k0 += model::detail::gemm_kc) {
                    float chain = 0.0f;
                    for (std::ptrdiff_t q = k0; q < std::min(k, k0 + model::detail::gemm_kc); ++q) {
                      exact += static_cast<double>(a(i, q)) * static_cast<double>(b(q, j));
                      magnitude += std::abs(static_cast<double>(a(i, q)) * static_cast<double>(b(q, j)));
                      chain = std::fma(a(i, q), b(q, j), chain);
                    }
                    chained = k0 == 0 && !accumulate ? chain : chained + chain;
                  }
                  const double bound = static_cast<double>(k + 2) * std::ldexp(1.0, -24) * magnitude;
                  INFO("m " << m << " n " << n << " k " << k << " (" << i << ", " << j << ")");
                  REQUIRE(std::abs(static_cast<double>(c[at]) - exact) <= bound);
                  if (kernels != isa::generic) REQUIRE(c[at] == chained);
                }
            }
}

TEST_CASE("model kernels: a row of a product depends only on that row", "[model][kernels]") {
  // What makes sampled log-probs equal training log-probs: the same row computed in a batch of 1
  // or of 100, with any thread count, has the same bits.
  thread_pool pool(2), wide_pool(3);
  for (const isa kernels : instruction_sets()) {
    const std::ptrdiff_t m = 100, n = 45, k = 300;
    const auto a_values = uniform(static_cast<std::size_t>(m * k), -1.0, 1.0, 4);
    const auto b_values = uniform(static_cast<std::size_t>(k * n), -1.0, 1.0, 5);
    std::vector<float> a(a_values.begin(), a_values.end()), b(b_values.begin(), b_values.end());
    packed_matrix<float> packed;
    pack(&pool, kernels, matrix_view<float>{b.data(), n, 1}, k, n, packed);
    gemm_scratch<float> scratch;
    std::vector<float> all(static_cast<std::size_t>(m * n)), one(static_cast<std::size_t>(n));
    gemm(&pool, scratch, m, matrix_view<float>{a.data(), k, 1}, packed, all.data(), n, false);
    for (const std::ptrdiff_t row : {0, 37, 99}) {
      gemm(nullptr, scratch, 1, matrix_view<float>{a.data() + row * k, k, 1}, packed, one.data(), n, false);
      for (std::ptrdiff_t j = 0; j < n; ++j)
        REQUIRE(one[static_cast<std::size_t>(j)] == all[static_cast<std::size_t>(row * n + j)]);
      // One row on three threads: C's columns split into panel-wide blocks, the same sums.
      std::fill(one.begin(), one.end(), 0.0f);
      gemm(&wide_pool, scratch, 1, matrix_view<float>{a.data() + row * k, k, 1}, packed, one.data(), n, false);
      for (std::ptrdiff_t j = 0; j < n; ++j)
        REQUIRE(one[static_cast<std::size_t>(j)] == all[static_cast<std::size_t>(row * n + j)]);
    }
  }
  // Column blocks narrow only when the row blocks cannot occupy the threads: about four per thread,
  // whole panels, never wider than gemm_nc.
  using grpo::model::detail::column_block_width;
  using grpo::model::detail::gemm_nc;
  CHECK(column_block_width(1, 4096, 16, 2) == 512);
  CHECK(column_block_width(1, 45, 16, 3) == 16);
  CHECK(column_block_width(1, 100000, 16, 2) == gemm_nc);
  CHECK(column_block_width(100, 4096, 16, 2) == gemm_nc);
  CHECK(column_block_width(100, 4096, 8, 3) == 688);
  CHECK(column_block_width(64, 4096, 16, 1) == gemm_nc);
}

TEST_CASE("model thread pool: every task once, exceptions, nesting", "[model][thread_pool]") {
  // Catch2's assertions are not thread-safe: tasks only record, the checks run afterwards.
  for (const std::size_t threads : {1u, 2u, 3u}) {
    thread_pool pool(threads);
    CHECK(pool.size() == threads);
    std::vector<std::atomic<int>> seen(1000);
    std::atomic<bool> thread_in_range{true};
    pool.parallel_for(seen.size(), [&](std::size_t i, std::size_t thread) {
      if (thread >= threads) thread_in_range = false;
      seen[i].fetch_add(1);
    });
    CHECK(thread_in_range.load());
    for (const auto& s : seen) REQUIRE(s.load() == 1);
    CHECK_THROWS_AS(pool.parallel_for(10,
                                      [](std::size_t i, std::size_t) {
                                        if (i == 7) throw std::runtime_error("task 7");
                                      }),
                    std::runtime_error);
    // A nested call runs inline on the calling task's thread.
    std::atomic<int> inner{0}, mismatched{0};
    pool.parallel_for(4, [&](std::size_t, std::size_t outer_thread) {
      pool.parallel_for(3, [&](std::size_t, std::size_t inner_thread) {
        if (inner_thread != outer_thread) mismatched.fetch_add(1);
        inner.fetch_add(1);
      });
    });
    CHECK(inner.load() == 12);
    CHECK(mismatched.load() == 0);
    std::atomic<int> ran{0};
    pool.parallel_for(0, [&](std::size_t, std::size_t) { ran.fetch_add(1); });
    CHECK(ran.load() == 0);
    // Many short regions back to back (the pattern of a transformer step).
    std::atomic<long> total{0};
    for (int region = 0; region < 2000; ++region)
      pool.parallel_for(3, [&](std::size_t i, std::size_t) { total.fetch_add(static_cast<long>(i)); });
    CHECK(total.load() == 2000 * 3);
  }
}

TEST_CASE("model fast: double forward and backward equal the reference to rounding", "[model][fast]") {
  for (const bool tied : {false, true}) {
    parameters<double> w(odd_config(tied, !tied));
    initialize(w, 21, 0.2);
    const auto batch = random_batch(w.config().vocab_size, 22);
    const auto want = run_reference(w, batch, 23);
    for (const isa kernels : instruction_sets())
      for (const std::size_t threads : {1u, 2u}) {
        INFO("tied " << tied << ", isa " << static_cast<int>(kernels) << ", threads " << threads);
        transformer<double> model(w, {threads, kernels});
        const auto logits = model.forward(batch);
        CHECK(logits.shape() == shape::matrix(6 * 140, 37));
        require_close(logits.to_host(), want.logits, 1e-12, 1e-10);
        parameters<double> grads(w.config());
        model.backward(std::span<const double>(want.d_logits), grads);
        require_close(as_doubles(grads.values()), want.grads, 1e-10, 1e-9);
      }
  }
}

TEST_CASE("model fast: float forward and backward within 1e-5 of the reference", "[model][fast]") {
  parameters<double> w(odd_config(false, true));
  initialize(w, 31, 0.2);
  const auto batch = random_batch(w.config().vocab_size, 32);
  const auto want = run_reference(w, batch, 33);
  double grad_scale = 0.0;
  for (const double g : want.grads) grad_scale = std::max(grad_scale, std::fabs(g));
  const std::vector<float> d_logits(want.d_logits.begin(), want.d_logits.end());
  for (const isa kernels : instruction_sets()) {
    INFO("isa " << static_cast<int>(kernels));
    transformer<float> model(convert<float>(w), {2, kernels});
    // |got - want| <= 1e-5 (1 + |want|): relative for logits of size, absolute near 0.
    require_close(model.forward(batch).to_host(), want.logits, 1e-5, 1e-5);
    parameters<float> grads(w.config());
    model.backward(std::span<const float>(d_logits), grads);
    require_close(as_doubles(grads.values()), want.grads, 1e-5 * grad_scale, 1e-5);
  }
}

TEST_CASE("model fast: results do not depend on the thread count", "[model][fast]") {
  parameters<float> w(odd_config(true, true));
  initialize(w, 41, 0.2);
  const auto batch = random_batch(w.config().vocab_size, 42);
  const auto d = uniform(6 * 140 * 37, -1.0, 1.0, 43);
  const std::vector<float> d_logits(d.begin(), d.end());
  std::vector<std::vector<float>> logits, grads;
  for (const std::size_t threads : {1u, 2u, 3u}) {
    transformer<float> model(w, {threads});
    logits.push_back(model.forward(batch).raw().data);
    parameters<float> g(w.config());
    model.backward(std::span<const float>(d_logits), g);
    grads.emplace_back(g.values().begin(), g.values().end());
  }
  CHECK(logits[0] == logits[1]);
  CHECK(logits[0] == logits[2]);
  CHECK(grads[0] == grads[1]);
  CHECK(grads[0] == grads[2]);
}

TEST_CASE("model fast: every instruction set with fma gives the same bits", "[model][fast]") {
  // AVX2 and AVX-512 run the same fma chains (the AVX-512 tile is wider, attention is shared), so
  // logits, gradients and sampled tokens with their log-probs are bit for bit equal.
  if (!supported(isa::avx512)) {
    WARN("AVX-512 is not available on this CPU: only AVX2 runs");
    return;
  }
  parameters<float> w(odd_config(true, true));
  initialize(w, 51, 0.2);
  const auto batch = random_batch(w.config().vocab_size, 52);
  const auto d = uniform(6 * 140 * 37, -1.0, 1.0, 53);
  const std::vector<float> d_logits(d.begin(), d.end());
  std::vector<std::vector<float>> logits, grads;
  std::vector<std::vector<sampled_completion>> samples;
  for (const isa kernels : {isa::avx2, isa::avx512}) {
    transformer<float> model(w, {2, kernels});
    logits.push_back(model.forward(batch).raw().data);
    parameters<float> g(w.config());
    model.backward(std::span<const float>(d_logits), g);
    grads.emplace_back(g.values().begin(), g.values().end());
    sampling_options options;
    options.max_new_tokens = 30;
    samples.push_back(model.generate(batch.prompts, options, 54, 3));
  }
  CHECK(logits[0] == logits[1]);
  CHECK(grads[0] == grads[1]);
  REQUIRE(samples[0].size() == samples[1].size());
  for (std::size_t r = 0; r < samples[0].size(); ++r) {
    CHECK(samples[0][r].tokens == samples[1][r].tokens);
    CHECK(samples[0][r].full_logprobs == samples[1][r].full_logprobs);
  }
}

TEST_CASE("model fast: forward without activations, accumulation, errors", "[model][fast]") {
  parameters<float> w(odd_config(false, false));
  initialize(w, 51, 0.2);
  const auto batch = random_batch(w.config().vocab_size, 52);
  transformer<float> model(w, {2});
  parameters<float> grads(w.config());
  const std::vector<float> ones(6 * 140 * 37, 1.0f);
  require_error([&] { model.backward(std::span<const float>(ones), grads); }, {"backward", "forward"});
  const auto kept = model.forward(batch, true).raw().data;
  const auto light = model.forward(batch, false).raw().data;
  CHECK(kept == light);
  require_error([&] { model.backward(std::span<const float>(ones), grads); }, {"backward", "keep_activations"});

  const auto logits = model.forward(batch);
  model.backward(logits, grads);  // d loss / d logits = the logits: any fixed direction will do
  parameters<float> twice = grads;
  model.backward(logits, twice);
  // Not bit-exact: the second sum rounds differently, relative 1e-4 where terms cancel.
  for (std::size_t i = 0; i < grads.size(); ++i)
    REQUIRE(twice.data()[i] == Approx(2.0f * grads.data()[i]).epsilon(1e-4).margin(1e-5));

  require_error([&] { model.backward(std::span<const float>(ones.data(), 10), grads); },
                {"d_logits", "expected", "got 10"});
  require_error(
      [&] {
        model.backward(make_tensor(reference_backend<float>{}, std::vector<double>(37, 0.0), shape::matrix(1, 37)),
                       grads);
      },
      {"d_logits", "expected shape [840,37]", "got [1,37]"});
  parameters<float> other(odd_config(true, false));
  require_error([&] { model.backward(logits, other); }, {"grads", "config"});
  require_error([&] { (void)model.forward(sequence_batch{{{1}}, {{99}}}); }, {"batch.completions", "99"});
  for (const isa kernels : {isa::avx2, isa::avx512})
    if (!supported(kernels))
      require_error([&] { transformer<float> bad(w, {1, kernels}); }, {"options.kernels", isa_name(kernels)});
  for (const isa kernels : {isa::generic, isa::avx2, isa::avx512}) CHECK(isa_from_name(isa_name(kernels)) == kernels);
  CHECK(!isa_from_name("unknown").has_value());
  CHECK(!isa_from_name("AVX2").has_value());
  require_error([&] { transformer<float> bad(w, {1, static_cast<isa>(7)}); },
                {"options.kernels", "unknown", "not available"});
  // Weights can change between calls: the next forward uses them.
  model.weights()["model.norm.weight"][0] = 3.0f;
  transformer<float> fresh(model.weights(), {1});
  CHECK(model.forward(batch).raw().data == fresh.forward(batch).raw().data);
}

TEST_CASE("model fast: empty batches, shared pools, moves", "[model][fast]") {
  parameters<float> w(odd_config(true, false));
  initialize(w, 61, 0.2);
  auto pool = std::make_shared<thread_pool>(2);
  transformer<float> a(w, {0, best_isa(), pool}), b(w, {0, best_isa(), pool});
  CHECK(a.pool() == b.pool());
  CHECK(a.pool()->size() == 2);

  const auto none = a.forward(sequence_batch{});
  CHECK(none.shape() == shape::matrix(0, 37));
  parameters<float> grads(w.config());
  a.backward(none, grads);
  for (const float g : grads.values()) REQUIRE(g == 0.0f);
  const auto empty_completions = a.forward(sequence_batch{{{1, 2}, {3}}, {{}, {}}});
  CHECK(empty_completions.shape() == shape::matrix(0, 37));

  const auto batch = random_batch(37, 62);
  const auto want = a.forward(batch).raw().data;
  CHECK(b.forward(batch).raw().data == want);
  transformer<float> moved(std::move(a));
  CHECK(moved.forward(batch).raw().data == want);
}

TEST_CASE("model fast: a policy-gradient step through token_logprobs and its backward", "[model][fast][gradient]") {
  // loss = sum over completion tokens of c_i log p_i + 0.1 H_i at temperature 0.7, the recipe in
  // transformer.hpp's header; its gradient against central differences, in double.
  transformer_config c;
  c.vocab_size = 11;
  c.hidden_size = 8;
  c.intermediate_size = 12;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.max_position_embeddings = 16;
  c.attention_bias = true;
  parameters<double> w(c);
  initialize(w, 71, 0.3);
  const sequence_batch batch{{{1, 2}, {3, 4, 5}}, {{6, 7, 8}, {9}}};
  const auto mask = batch.completion_mask();  // R * T = 6
  const auto weights = uniform(6, -1.0, 1.0, 72);
  const double temperature = 0.7;
  const reference_backend<double> be;
  const auto ids = completion_ids(be, batch);
  const auto loss = [&](const std::vector<double>& values) {
    parameters<double> p(c);
    std::copy(values.begin(), values.end(), p.data());
    transformer<double> model(std::move(p), {1});
    const auto lp = token_logprobs(model.forward(batch), ids, temperature);
    const auto logprobs = lp.logprobs.to_host(), entropy = lp.entropy.to_host();
    double total = 0.0;
    for (std::size_t i = 0; i < 6; ++i) total += mask[i] * (weights[i] * logprobs[i] + 0.1 * entropy[i]);
    return total;
  };
  transformer<double> model(w, {2});
  auto logits = model.forward(batch);
  const auto lp = token_logprobs(logits, ids, temperature);
  std::vector<double> d_logprobs(6), d_entropy(6);
  for (std::size_t i = 0; i < 6; ++i) {
    d_logprobs[i] = mask[i] * weights[i];
    d_entropy[i] = mask[i] * 0.1;
  }
  token_logprobs_backward(logits, ids, temperature, lp, make_tensor(be, d_logprobs, shape::vector(6)),
                          make_tensor(be, d_entropy, shape::vector(6)), logits.raw());
  parameters<double> grads(c);
  model.backward(logits, grads);
  const std::vector<double> x(w.values().begin(), w.values().end());
  require_gradient(loss, x, std::vector<double>(grads.values().begin(), grads.values().end()), 1e-7, 1e-6);
}
