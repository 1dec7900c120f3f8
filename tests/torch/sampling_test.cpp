// SPDX-License-Identifier: Apache-2.0
// grpo/libtorch/device_sampling.hpp against grpo::model::sample_token, the specification. The tensor path
// (detail::sample_on_device, what runs on an accelerator) on CPU tensors, for random logits of several vocabulary
// sizes and shapes (normal, peaked, flat, integer ties, -inf masked, spread enough that probabilities underflow)
// under every option combination, each row's u drawn from a copy of sample_token's generator: ids equal except
// where the host's own cumulative sums put a boundary within the documented rounding band of the comparison
// (counted), log-probs within 1e-10. Hand-worked draws at exactly representable probabilities (ties, boundaries,
// the fallback past the total). sample_tokens itself (sample_token on the CPU, bit for bit), how it advances
// the generators, its errors. generate(): every token replayed through sample_token on the policy's forward
// logits with the row's generator. The comparison again on CUDA tensors where a device exists ([cuda]).
#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <torch/cuda.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "causal_lm_support.hpp"
#include "grpo/libtorch/device_sampling.hpp"
#include "grpo/model/sampling.hpp"
#include "grpo/reference_backend.hpp"
#include "test_support.hpp"
#include "torch_support.hpp"

using namespace grpo;
using namespace grpo::testing;

namespace {

// sample_token's draw for one row, the uniform it drew, and how close its decisions came to a boundary.
struct reference_draw {
  model::sampled_token token;
  double lse = 0.0, u = 0.0;
  // The smallest distance, relative to the mass compared against, between u * (kept mass) and a cumulative
  // sum, or (with top-p) between top_p * (top-k mass) and a cumulative sum: the comparisons whose outcome
  // rounding can decide. Infinite when greedy.
  double margin = std::numeric_limits<double>::infinity();
};

template <class T>
reference_draw reference(const T* z, std::int64_t vocab, const sampling_options& o, std::mt19937_64 gen) {
  reference_draw out;
  const double inverse = o.temperature == 0.0 ? 1.0 : 1.0 / o.temperature;
  out.lse = grpo::detail::row_logsumexp(grpo::detail::scaled_row<T>{z, vocab, inverse});
  auto peek = gen;
  if (o.temperature != 0.0) out.u = grpo::detail::uniform01(peek);
  std::vector<std::pair<double, token_id>> scratch;
  out.token = model::sample_token(std::span<const T>(z, static_cast<std::size_t>(vocab)), out.lse, o, gen, scratch);
  CHECK(gen == peek);  // sample_token draws exactly one uniform01, none when greedy
  if (o.temperature == 0.0) return out;
  std::vector<std::pair<double, token_id>> p;
  for (std::int64_t v = 0; v < vocab; ++v)
    p.emplace_back(std::exp(inverse * static_cast<double>(z[v]) - out.lse), static_cast<token_id>(v));
  const auto nearest = [](const std::vector<double>& sums, std::size_t count, double value, double scale) {
    double m = std::numeric_limits<double>::infinity();
    for (std::size_t j = 0; j < count; ++j) m = std::min(m, std::fabs(sums[j] - value) / scale);
    return m;
  };
  std::vector<double> sums;
  double total = 0.0;
  if ((o.top_k == 0 || o.top_k >= vocab) && o.top_p == 1.0) {
    for (const auto& [q, v] : p) sums.push_back(total += q);
    out.margin = nearest(sums, sums.size(), out.u, total);
    return out;
  }
  std::sort(p.begin(), p.end(), [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  for (const auto& [q, v] : p) sums.push_back(total += q);
  std::size_t kept = o.top_k > 0 && o.top_k < vocab ? static_cast<std::size_t>(o.top_k) : p.size();
  if (o.top_p < 1.0) {
    const double threshold = o.top_p * sums[kept - 1];
    out.margin = nearest(sums, kept, threshold, sums[kept - 1]);
    std::size_t n = 1;
    while (n < kept && sums[n - 1] < threshold) ++n;
    kept = n;
  }
  out.margin = std::min(out.margin, nearest(sums, kept - 1, out.u * sums[kept - 1], sums[kept - 1]));
  return out;
}

// The documented rounding band of sample_tokens: (4 V + 4 |lse| + 8) 2^-53 of the mass.
double band(std::int64_t vocab, double lse) {
  return (4.0 * static_cast<double>(vocab) + 4.0 * std::fabs(lse) + 8.0) * 0x1.0p-53;
}

struct tally {
  std::int64_t draws = 0, near_boundary = 0, mismatched = 0;  // mismatched: another id or logprob
};

using device_draw = std::function<std::vector<double>(const at::Tensor& logits, std::vector<std::mt19937_64>& gens,
                                                      const sampling_options& o)>;

// The tensor path on the logits' device, with the uniforms drawn from the generators: [A * 4] id, logprob,
// full_logprob, lse.
std::vector<double> tensor_path(const at::Tensor& logits, std::vector<std::mt19937_64>& gens,
                                const sampling_options& o) {
  std::vector<double> u;
  for (auto& gen : gens) u.push_back(o.temperature == 0.0 ? 0.0 : grpo::detail::uniform01(gen));
  const auto uniforms = torch_tensor(u, {static_cast<std::int64_t>(u.size())}).to(logits.device());
  return host(libtorch::detail::sample_on_device(logits, uniforms, o));
}

// sample_tokens (the dispatch) in the same layout.
std::vector<double> dispatched(const at::Tensor& logits, std::vector<std::mt19937_64>& gens,
                               const sampling_options& o) {
  std::vector<std::mt19937_64*> pointers;
  for (auto& gen : gens) pointers.push_back(&gen);
  const auto draws = libtorch::sample_tokens(logits, pointers, o);
  std::vector<double> out;
  for (std::size_t i = 0; i < draws.tokens.size(); ++i)
    out.insert(out.end(), {static_cast<double>(draws.tokens[i].id), draws.tokens[i].logprob,
                           draws.tokens[i].full_logprob, draws.lse[i]});
  return out;
}

// Rows of `logits` (any device and floating dtype) drawn by `draw` against sample_token on the host copy.
// exact: ids and log-probs must be sample_token's to the bit (the CPU path of sample_tokens).
template <class T>
void compare(const at::Tensor& logits, const sampling_options& o, std::uint64_t seed, const device_draw& draw,
             bool exact, tally& t) {
  const auto rows = logits.size(0), vocab = logits.size(1);
  const at::Tensor values = logits.to(at::kCPU, std::is_same_v<T, double> ? at::kDouble : at::kFloat).contiguous();
  std::vector<std::mt19937_64> gens;
  for (std::int64_t r = 0; r < rows; ++r) gens.emplace_back(model::row_seed(seed, static_cast<std::uint64_t>(r)));
  std::vector<reference_draw> want;
  for (std::int64_t r = 0; r < rows; ++r)
    want.push_back(reference(values.data_ptr<T>() + r * vocab, vocab, o, gens[static_cast<std::size_t>(r)]));
  auto advanced = gens;
  const auto got = draw(logits, advanced, o);
  REQUIRE(got.size() == static_cast<std::size_t>(rows * 4));
  for (std::int64_t r = 0; r < rows; ++r) {
    const auto& w = want[static_cast<std::size_t>(r)];
    const double* g = got.data() + r * 4;
    auto gen = gens[static_cast<std::size_t>(r)];
    if (o.temperature != 0.0) grpo::detail::uniform01(gen);
    const bool advanced_as_sample_token = advanced[static_cast<std::size_t>(r)] == gen;
    const bool near = w.margin <= band(vocab, w.lse);
    ++t.draws;
    t.near_boundary += near ? 1 : 0;
    const auto close = [](double a, double b, double tolerance) {
      return std::fabs(a - b) <= tolerance * (1.0 + std::fabs(b));
    };
    // Near a boundary rounding may pick another token, or (top-p) keep another prefix: another logprob.
    const bool same = exact ? g[0] == w.token.id && g[1] == w.token.logprob && g[2] == w.token.full_logprob
                            : g[0] == w.token.id && close(g[1], w.token.logprob, 1e-10) &&
                                  close(g[2], w.token.full_logprob, 1e-10);
    const bool same_lse = exact ? g[3] == w.lse : close(g[3], w.lse, 1e-12);
    const bool greedy_logprob = o.temperature != 0.0 || g[1] == 0.0;
    const bool untruncated_logprob = o.temperature == 0.0 || (o.top_k > 0 && o.top_k < vocab) || o.top_p < 1.0 ||
                                     g[1] == g[2];
    t.mismatched += same ? 0 : 1;
    if (advanced_as_sample_token && (same || (near && !exact)) && same_lse && greedy_logprob && untruncated_logprob)
      continue;  // (the message is built only for a failure: this loop runs ~10^5 times)
    INFO("V " << vocab << ", T " << o.temperature << ", top_k " << o.top_k << ", top_p " << o.top_p << ", row " << r
              << ", u " << w.u << ", margin " << w.margin << ", want id " << w.token.id << " (" << w.token.logprob
              << ", " << w.token.full_logprob << ", lse " << w.lse << "), got " << g[0] << " (" << g[1] << ", "
              << g[2] << ", lse " << g[3] << ")");
    CHECK(advanced_as_sample_token);
    CHECK((same || (near && !exact)));
    CHECK(same_lse);
    CHECK(greedy_logprob);       // logprob 0 when greedy
    CHECK(untruncated_logprob);  // logprob == full_logprob when nothing is truncated
  }
}

// Random logits [rows, V] of one shape: normal, peaked (one token far above), flat (all equal), ties (small
// integers), masked (about half -inf, never all), spread (N(0, 1000): most probabilities underflow to 0).
std::vector<double> random_logits(const std::string& kind, std::int64_t rows, std::int64_t vocab,
                                  std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> z(static_cast<std::size_t>(rows * vocab));
  for (std::int64_t r = 0; r < rows; ++r) {
    double* row = z.data() + r * vocab;
    for (std::int64_t v = 0; v < vocab; ++v) {
      const double n = normal(gen);
      if (kind == "normal") row[v] = 2.0 * n;
      if (kind == "peaked") row[v] = n;
      if (kind == "flat") row[v] = 0.5;
      if (kind == "ties") row[v] = std::round(1.5 * n);
      if (kind == "masked") row[v] = n > 0.0 ? -INFINITY : 3.0 * n;
      if (kind == "spread") row[v] = 1000.0 * n;
    }
    if (kind == "peaked") row[gen() % static_cast<std::uint64_t>(vocab)] += 15.0;
    if (kind == "masked") row[gen() % static_cast<std::uint64_t>(vocab)] = normal(gen);
  }
  return z;
}

std::vector<sampling_options> every_option(std::int64_t vocab) {
  std::vector<sampling_options> out;
  for (const double temperature : {0.0, 0.7, 1.0, 1.3})
    for (const std::int64_t top_k : {std::int64_t{0}, std::int64_t{1}, std::int64_t{5}, vocab})
      for (const double top_p : {1.0, 0.9, 0.5, 1e-9}) {
        sampling_options o;
        o.temperature = temperature;
        o.top_k = top_k;
        o.top_p = top_p;
        out.push_back(o);
      }
  return out;
}

// Every option combination on every shape of logits at the given vocabulary sizes, in `dtype` on `device`.
tally compare_everywhere(const std::vector<std::int64_t>& vocabs, at::ScalarType dtype, at::Device device,
                         const device_draw& draw) {
  tally t;
  std::uint64_t seed = 0;
  for (const auto vocab : vocabs) {
    // Fewer rows (and shapes) at larger vocabularies: the host side sorts the row twice per truncated draw.
    const bool large = vocab > 1000;
    const std::int64_t rows = large ? 1 : vocab > 10 ? 6 : 24;
    const auto kinds = large ? std::vector<std::string>{"normal", "peaked", "ties"}
                             : std::vector<std::string>{"normal", "peaked", "flat", "ties", "masked", "spread"};
    for (const auto& kind : kinds) {
      const auto logits = torch_tensor(random_logits(kind, rows, vocab, ++seed), {rows, vocab}, dtype).to(device);
      for (const auto& o : every_option(vocab)) {
        if (dtype == at::kDouble)
          compare<double>(logits, o, ++seed, draw, false, t);
        else
          compare<float>(logits, o, ++seed, draw, false, t);
      }
    }
  }
  return t;
}

at::Tensor one_row(const std::vector<double>& z) { return torch_tensor(z, {1, static_cast<std::int64_t>(z.size())}); }

// The tensor path's draw for one row at a given u: id, logprob, full_logprob, lse.
std::vector<double> draw_at(const at::Tensor& logits, double u, const sampling_options& o) {
  return host(libtorch::detail::sample_on_device(logits, torch_tensor({u}, {1}), o));
}

}  // namespace

TEST_CASE("device sampling: the tensor path draws sample_token's tokens for every shape and option") {
  for (const auto dtype : {at::kFloat, at::kBFloat16, at::kDouble}) {
    INFO("dtype " << at::toString(dtype));
    const auto t = compare_everywhere(dtype == at::kFloat ? std::vector<std::int64_t>{1, 2, 3, 10, 1000, 49152}
                                                          : std::vector<std::int64_t>{2, 10, 1000},
                                      dtype, at::kCPU, tensor_path);
    INFO(t.draws << " draws, " << t.near_boundary << " within the rounding band, " << t.mismatched << " differ");
    CHECK(t.draws > 10000);
    // Every difference was near a boundary (checked per draw); on this platform none differ at all.
    CHECK(t.mismatched == 0);
  }
}

TEST_CASE("device sampling: hand-worked draws at exact probabilities") {
  const auto flat = one_row({0.0, 0.0, 0.0, 0.0});  // p = 1/4 each, cumulative 1/4, 1/2, 3/4, 1
  const double quarter = std::log(0.25);
  sampling_options o;
  o.temperature = 1.0;
  // Untruncated, id order: the first token whose cumulative sum exceeds u (u = 1/2 is not below 1/2).
  for (const auto& [u, id] : std::vector<std::pair<double, double>>{{0.0, 0}, {0.2499, 0}, {0.25, 1}, {0.5, 2},
                                                                     {0.74, 2}, {0.999, 3}}) {
    INFO("u " << u);
    const auto d = draw_at(flat, u, o);
    CHECK(d[0] == id);
    CHECK(d[1] == Approx(quarter).epsilon(1e-14));
    CHECK(d[2] == d[1]);
    CHECK(d[3] == Approx(std::log(4.0)).epsilon(1e-14));
  }
  // top_k = 2 keeps ids 0, 1 (ties by lower id); u = 1/2 targets 1/2 * 1/2, not below the first sum 1/4.
  o.top_k = 2;
  auto d = draw_at(flat, 0.5, o);
  CHECK(d[0] == 1);
  CHECK(d[1] == Approx(-std::log(2.0)).epsilon(1e-14));  // log(1/4) - log(1/2)
  CHECK(d[2] == Approx(quarter).epsilon(1e-14));
  CHECK(draw_at(flat, 0.4999, o)[0] == 0);
  // top_p = 1/2 keeps the same two: the prefix sum 1/2 reaches 1/2 of the mass. top_p = 0.6 needs three.
  o.top_k = 0;
  o.top_p = 0.5;
  CHECK(draw_at(flat, 0.5, o)[0] == 1);
  CHECK(draw_at(flat, 0.999, o)[0] == 1);
  o.top_p = 0.6;
  d = draw_at(flat, 0.5, o);  // target 3/8 < 1/2
  CHECK(d[0] == 1);
  CHECK(d[1] == Approx(-std::log(3.0)).epsilon(1e-14));
  CHECK(draw_at(flat, 0.999, o)[0] == 2);
  // top_p far below the largest probability keeps exactly one token, the first of the tied maxima.
  o.top_p = 1e-9;
  d = draw_at(one_row({1.0, 3.0, 3.0, 0.0}), 0.999, o);
  CHECK(d[0] == 1);
  CHECK(d[1] == Approx(0.0).margin(1e-15));
  CHECK(d[2] == Approx(3.0 - std::log(std::exp(1.0) + 2 * std::exp(3.0) + 1.0)).epsilon(1e-14));
  // Greedy: the first of the tied maxima, logprob 0, full log-prob at T = 1; the uniform is ignored.
  o = {};
  o.temperature = 0.0;
  o.top_p = 0.5;
  d = draw_at(one_row({1.0, 3.0, 3.0, 0.0}), 0.7, o);
  CHECK(d[0] == 1);
  CHECK(d[1] == 0.0);
  CHECK(d[2] == Approx(3.0 - std::log(std::exp(1.0) + 2 * std::exp(3.0) + 1.0)).epsilon(1e-14));
  // Temperature: z / T = (0, log 3) gives p = (1/4, 3/4).
  o = {};
  o.temperature = 0.5;
  const auto scaled = one_row({0.0, 0.5 * std::log(3.0)});
  CHECK(draw_at(scaled, 0.2, o)[0] == 0);
  d = draw_at(scaled, 0.3, o);
  CHECK(d[0] == 1);
  CHECK(d[2] == Approx(std::log(0.75)).epsilon(1e-14));
  // u at or past the total (rounding can leave it there): the last token of positive probability, not
  // the masked one after it.
  d = draw_at(one_row({0.0, 0.0, -INFINITY}), 1.0, o);
  CHECK(d[0] == 1);
  CHECK(d[1] == Approx(-std::log(2.0)).epsilon(1e-14));
  // One token: always it, with log-prob 0.
  for (const double top_p : {1.0, 0.5}) {
    o.top_p = top_p;
    d = draw_at(one_row({4.0}), 0.9, o);
    CHECK(d[0] == 0);
    CHECK(d[1] == 0.0);
  }
  // Non-finite logits come back as a non-finite lse, the row's neighbours unaffected.
  o = {};
  const auto bad = torch_tensor({0.0, 0.0, NAN, 1.0, -INFINITY, -INFINITY, 0.0, INFINITY}, {4, 2});
  const auto rows = host(libtorch::detail::sample_on_device(bad, torch_tensor({0.1, 0.1, 0.1, 0.1}, {4}), o));
  CHECK(rows[0] == 0);
  CHECK(std::isfinite(rows[3]));
  for (const int r : {1, 2, 3}) CHECK_FALSE(std::isfinite(rows[static_cast<std::size_t>(r * 4 + 3)]));
}

TEST_CASE("device sampling: sample_tokens on the CPU is sample_token, and checks its arguments") {
  tally t;
  std::uint64_t seed = 100;
  for (const auto vocab : {std::int64_t{1}, std::int64_t{7}, std::int64_t{300}})
    for (const auto& kind : {"normal", "ties", "masked"}) {
      const auto logits = torch_tensor(random_logits(kind, 5, vocab, ++seed), {5, vocab}, at::kFloat);
      for (const auto& o : every_option(vocab)) compare<float>(logits, o, ++seed, dispatched, true, t);
      compare<double>(logits.to(at::kDouble), every_option(vocab)[21], ++seed, dispatched, true, t);
    }
  CHECK(t.draws > 1000);

  // A row with NaN logits reports a NaN lse and still advances its generator.
  sampling_options o;
  std::vector<std::mt19937_64> gens(2);
  auto expected = gens;
  for (auto& gen : expected) grpo::detail::uniform01(gen);
  const auto got = dispatched(torch_tensor({0.0, NAN, 0.0, 1.0}, {2, 2}), gens, o);
  CHECK(std::isnan(got[3]));
  CHECK(std::isfinite(got[7]));
  CHECK(gens == expected);

  std::mt19937_64 gen;
  std::vector<std::mt19937_64*> one = {&gen};
  require_error([&] { libtorch::sample_tokens(at::zeros({3}), one, o); }, {"logits", "[rows, V]"});
  require_error([&] { libtorch::sample_tokens(at::zeros({1, 0}), one, o); }, {"logits", "V > 0"});
  require_error([&] { libtorch::sample_tokens(at::zeros({1, 3}, at::kLong), one, o); },
                {"logits", "floating point"});
  require_error([&] { libtorch::sample_tokens(at::zeros({2, 3}), one, o); }, {"generators", "(2)", "got 1"});
  o.top_p = 0.0;
  require_error([&] { libtorch::sample_tokens(at::zeros({1, 3}), one, o); }, {"options.top_p"});
}

TEST_CASE("generate: every token is sample_token's draw from the policy's logits with the row's generator") {
  auto policy = load("tiny-qwen2");
  const std::vector<std::vector<token_id>> prompts = {{5, 9, 33}, {7}, {100, 200, 31, 44, 51}};
  const auto vocab = policy.vocab_size();
  for (const auto& [temperature, top_k, top_p] : std::vector<std::tuple<double, std::int64_t, double>>{
           {0.0, 0, 1.0}, {1.0, 0, 1.0}, {0.8, 5, 1.0}, {0.8, 0, 0.7}, {1.3, 20, 0.9}}) {
    INFO("T " << temperature << ", top_k " << top_k << ", top_p " << top_p);
    sampling_options o;
    o.temperature = temperature;
    o.top_k = top_k;
    o.top_p = top_p;
    o.max_new_tokens = 6;
    const std::uint64_t seed = 11;
    const auto sampled = policy.generate(prompts, o, seed, 2);
    sequence_batch batch;
    for (std::size_t r = 0; r < sampled.size(); ++r) {
      batch.prompts.push_back(prompts[r / 2]);
      batch.completions.push_back(sampled[r].tokens);
    }
    const auto logits = policy.forward(batch).raw().to(at::kCPU, at::kFloat).contiguous();
    const auto width = batch.max_completion_length();
    std::vector<std::pair<double, token_id>> scratch;
    for (std::size_t r = 0; r < sampled.size(); ++r) {
      std::mt19937_64 gen(model::row_seed(seed, r));
      for (std::size_t i = 0; i < sampled[r].tokens.size(); ++i) {
        INFO("row " << r << ", token " << i);
        const auto slot = static_cast<std::int64_t>(r) * width + static_cast<std::int64_t>(i);
        const float* z = logits.data_ptr<float>() + slot * vocab;
        const double inverse = temperature == 0.0 ? 1.0 : 1.0 / temperature;
        const double lse = grpo::detail::row_logsumexp(grpo::detail::scaled_row<float>{z, vocab, inverse});
        const auto want = model::sample_token(std::span<const float>(z, static_cast<std::size_t>(vocab)), lse, o, gen,
                                              scratch);
        CHECK(sampled[r].tokens[i] == want.id);
        CHECK(std::fabs(sampled[r].logprobs[i] - want.logprob) < 1e-5);
        CHECK(std::fabs(sampled[r].full_logprobs[i] - want.full_logprob) < 1e-5);
      }
    }
  }
}

TEST_CASE("device sampling: on CUDA tensors, sample_tokens draws sample_token's tokens", "[cuda]") {
  if (!torch::cuda::is_available()) {
    WARN("skipped: no CUDA device");
    return;
  }
  for (const auto dtype : {at::kFloat, at::kBFloat16}) {
    INFO("dtype " << at::toString(dtype));
    const auto t = compare_everywhere({1, 2, 10, 1000, 49152}, dtype, at::Device(at::kCUDA, 0), dispatched);
    INFO(t.draws << " draws, " << t.near_boundary << " within the rounding band, " << t.mismatched << " differ");
    CHECK(t.draws > 10000);
    CHECK(t.mismatched <= t.near_boundary);  // each difference was near a boundary (checked per draw)
  }
}
