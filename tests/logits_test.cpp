// SPDX-License-Identifier: Apache-2.0
// token_logprobs and token_logprobs_backward: hand-worked log-probs and entropies, temperature,
// finite-difference gradients, in-place backward, large logits, the float backend, error messages.
#include "grpo/logits.hpp"

#include <cmath>
#include <limits>

#include "test_support.hpp"

using namespace grpo;
using namespace grpo::testing;

namespace {

const double ln2 = std::log(2.0), ln3 = std::log(3.0);

// Row 0: z = (0, ln 2, ln 3), p = (1/6, 1/3, 1/2); row 1: z = (0, 0, ln 2), p = (1/4, 1/4, 1/2).
std::vector<double> two_rows(double scale) { return {0.0, scale * ln2, scale * ln3, 0.0, 0.0, scale * ln2}; }

// sum_n (a_n logprob_n + b_n entropy_n) of token_logprobs, the objective the backward differentiates.
double objective(const std::vector<double>& z, std::int64_t rows, std::int64_t vocab,
                 const std::vector<std::int64_t>& t, const std::vector<double>& a, const std::vector<double>& b,
                 double temperature) {
  const auto r = token_logprobs(mat(rows, vocab, z), ids(t), temperature);
  return sum(r.logprobs * vec(a) + r.entropy * vec(b)).item();
}

}  // namespace

TEST_CASE("token_logprobs: hand-worked log-probs, entropies and log-sum-exps", "[logits]") {
  const auto r = token_logprobs(mat(2, 3, two_rows(1.0)), ids({2, 0}));
  // log p: ln(1/2) = -0.69314718..., ln(1/4) = -1.38629436...
  require_close(r.logprobs.to_host(), {-0.6931471805599453, -1.3862943611198906}, 1e-15, 1e-14);
  // H0 = ln 6 - (1/3 ln 2 + 1/2 ln 3) = 1.01140426...; H1 = 2 (1/4 ln 4) + 1/2 ln 2 = 1.5 ln 2 = 1.03972077...
  require_close(r.entropy.to_host(), {1.0114042647073518, 1.0397207708399179}, 1e-15, 1e-14);
  // lse: ln(1 + 2 + 3) = ln 6 and ln(1 + 1 + 2) = ln 4.
  require_close(r.lse.to_host(), {1.791759469228055, 1.3862943611198906}, 1e-15, 1e-14);
}

TEST_CASE("token_logprobs: the logits are divided by the temperature", "[logits]") {
  // Logits scaled by T at temperature T give the distributions of the T = 1 case.
  for (const double t : {0.7, 2.0}) {
    const auto r = token_logprobs(mat(2, 3, two_rows(t)), ids({2, 0}), t);
    require_close(r.logprobs.to_host(), {-0.6931471805599453, -1.3862943611198906}, 1e-15, 1e-14);
    require_close(r.entropy.to_host(), {1.0114042647073518, 1.0397207708399179}, 1e-15, 1e-14);
    require_close(r.lse.to_host(), {1.791759469228055, 1.3862943611198906}, 1e-15, 1e-14);
  }
  // The same logits at T = 2 are flatter: z = (0, ln 3) / 2 gives p = (1, sqrt 3) / (1 + sqrt 3),
  // log p[1] = ln(sqrt 3 / (1 + sqrt 3)) = -0.45574639...
  const auto r = token_logprobs(mat(1, 2, {0.0, ln3}), ids({1}), 2.0);
  require_close(r.logprobs.to_host(), {-0.45574639440832626}, 1e-15, 1e-14);
}

TEST_CASE("token_logprobs_backward: hand-worked gradient", "[logits][gradient]") {
  // z = (0, ln 3), p = (1/4, 3/4), id 1. d log p[1] / dz = (0 - 1/4, 1 - 3/4) = (-1/4, 1/4).
  // d H / dz_v = -p_v (log p_v + H), H = 0.56233514...: v=0: -1/4 (ln 1/4 + H) = 0.20598980...,
  // v=1: -3/4 (ln 3/4 + H) = -0.20598980... (the entropy gradient sums to 0 over the row).
  const auto z = mat(1, 2, {0.0, ln3});
  const auto fwd = token_logprobs(z, ids({1}));
  reference_tensor<double> g;
  token_logprobs_backward(z, ids({1}), 1.0, fwd, vec({1.0}), vec({0.0}), g);
  require_close(download(ref{}, g), {-0.25, 0.25}, 1e-15, 1e-14);
  token_logprobs_backward(z, ids({1}), 1.0, fwd, vec({0.0}), vec({1.0}), g);
  require_close(download(ref{}, g), {0.20598980412527057, -0.20598980412527057}, 1e-15, 1e-13);
  // At T = 2 the chain rule adds 1/T: the log-prob gradient of the same softmax halves.
  const auto z2 = mat(1, 2, {0.0, 2 * ln3});
  token_logprobs_backward(z2, ids({1}), 2.0, token_logprobs(z2, ids({1}), 2.0), vec({1.0}), vec({0.0}), g);
  require_close(download(ref{}, g), {-0.125, 0.125}, 1e-15, 1e-13);
}

TEST_CASE("token_logprobs_backward: matches finite differences with both upstream gradients nonzero",
          "[logits][gradient]") {
  const std::int64_t rows = 3, vocab = 5;
  const auto z = uniform(15, -3, 3, 101);
  const std::vector<std::int64_t> t{4, 0, 2};
  const std::vector<double> a{0.3, -1.2, 0.8}, b{0.5, 0.25, -0.7};
  for (const double temperature : {1.0, 0.7}) {
    const auto logits = mat(rows, vocab, z);
    const auto fwd = token_logprobs(logits, ids(t), temperature);
    reference_tensor<double> g;
    token_logprobs_backward(logits, ids(t), temperature, fwd, vec(a), vec(b), g);
    require_gradient([&](const std::vector<double>& x) { return objective(x, rows, vocab, t, a, b, temperature); }, z,
                     download(ref{}, g));
  }
}

TEST_CASE("token_logprobs_backward: in place equals out of place", "[logits][gradient]") {
  const auto z = uniform(12, -4, 4, 102);
  const std::vector<std::int64_t> t{1, 3, 0};
  for (const double temperature : {1.0, 0.7}) {
    auto logits = mat(3, 4, z);
    const auto fwd = token_logprobs(logits, ids(t), temperature);
    reference_tensor<double> separate;
    token_logprobs_backward(logits, ids(t), temperature, fwd, vec({1.0, -0.5, 2.0}), vec({0.1, 0.2, -0.3}), separate);
    // The gradient overwrites the logits: out is the very tensor the logits live in.
    token_logprobs_backward(logits, ids(t), temperature, fwd, vec({1.0, -0.5, 2.0}), vec({0.1, 0.2, -0.3}),
                            logits.raw());
    require_close(logits.to_host(), download(ref{}, separate), 0, 0);
  }
}

TEST_CASE("token_logprobs: logits of magnitude 1e4 stay finite and exact", "[logits][edge]") {
  // Row 0: the argmax 1e4 dominates by 1e4: log p = -(e^-1e4 + e^-2e4) ~ 0, H ~ 0.
  // Row 1: two tied maxima: log p = -ln 2, H = ln 2; the third logit is 2e4 below.
  const auto z = mat(2, 3, {1e4, -1e4, 0.0, 1e4, 1e4, -1e4});
  const auto r = token_logprobs(z, ids({0, 1}));
  require_close(r.logprobs.to_host(), {0.0, -0.6931471805599453}, 1e-10, 0);
  // 1e4 has an ulp of 1.8e-12 in double, so the entropy is exact only to about that.
  require_close(r.entropy.to_host(), {0.0, 0.6931471805599453}, 1e-10, 0);
  reference_tensor<double> g;
  token_logprobs_backward(z, ids({0, 1}), 1.0, r, vec({1.0, 1.0}), vec({1.0, 1.0}), g);
  // Row 0: p = e_0, so both gradients vanish. Row 1: d log p[1] = (-1/2, 1/2, 0) and
  // d H = -p (log p + H) = 0 for the tied entries and the (zero-probability) third one.
  require_close(download(ref{}, g), {0.0, 0.0, 0.0, -0.5, 0.5, 0.0}, 1e-10, 0);
}

TEST_CASE("token_logprobs: an empty batch gives empty results", "[logits][edge]") {
  const auto r = token_logprobs(mat(0, 4, {}), ids({}));
  CHECK(r.logprobs.shape() == shape::vector(0));
  CHECK(r.entropy.to_host().empty());
}

TEST_CASE("token_logprobs: the float backend agrees with double", "[logits][float]") {
  using fref = reference_backend<float>;
  const auto z = uniform(24, -8, 8, 103);
  const std::vector<std::int64_t> t{0, 5, 2, 3};
  const std::vector<double> a{1.0, -2.0, 0.5, 0.0}, b{0.3, 0.0, -1.0, 2.0};
  const auto zd = mat(4, 6, z);
  const auto zf = make_tensor(fref{}, z, shape::matrix(4, 6));
  const auto td = ids(t);
  const auto tf = make_index(fref{}, t, shape::vector(4));
  const auto rd = token_logprobs(zd, td, 0.7);
  const auto rf = token_logprobs(zf, tf, 0.7);
  // Float storage rounds every input and output once (relative 6e-8); logits up to 8 / 0.7 ~ 11
  // make that ~1e-6 absolute in the log-probs.
  require_close(rf.logprobs.to_host(), rd.logprobs.to_host(), 1e-5, 1e-5);
  require_close(rf.entropy.to_host(), rd.entropy.to_host(), 1e-5, 1e-5);
  reference_tensor<double> gd;
  reference_tensor<float> gf;
  token_logprobs_backward(zd, td, 0.7, rd, vec(a), vec(b), gd);
  token_logprobs_backward(zf, tf, 0.7, rf, make_tensor(fref{}, a, shape::vector(4)),
                          make_tensor(fref{}, b, shape::vector(4)), gf);
  require_close(download(fref{}, gf), download(ref{}, gd), 1e-5, 1e-5);
}

TEST_CASE("token_logprobs: errors name the argument", "[logits][errors]") {
  const auto z = mat(2, 3, two_rows(1.0));
  require_error([] { (void)token_logprobs(vec({1.0, 2.0}), ids({0})); }, {"logits: expected a rank-2 tensor", "[2]"});
  require_error([] { (void)token_logprobs(mat(2, 0, {}), ids({0, 0})); }, {"logits:", "V >= 1", "[2,0]"});
  require_error([&] { (void)token_logprobs(z, ids({0})); }, {"ids: expected shape [2], got [1]"});
  require_error([&] { (void)token_logprobs(z, ids({0, 3})); }, {"ids: element 1 is 3, out of range [0, 3)"});
  require_error([&] { (void)token_logprobs(z, ids({-1, 0})); }, {"ids: element 0 is -1"});
  for (const double t : {0.0, -1.0, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()})
    require_error([&] { (void)token_logprobs(z, ids({0, 0}), t); }, {"temperature: must be a finite value > 0"});
  require_error([&] { (void)token_logprobs(z, ids({0, 0}), 1e-320); }, {"temperature:", "finite inverse"});
  for (const double bad : {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(),
                           -std::numeric_limits<double>::infinity()}) {
    auto values = two_rows(1.0);
    values[5] = bad;
    require_error(
        [&] {
          (void)token_logprobs(mat(2, 3, values), ids({0, 0}));
        },
        {"logits: element [1, 2] is", "(NaN or Inf is not allowed)"});
  }
  auto first = two_rows(1.0);
  first[0] = -INFINITY;
  require_error([&] { (void)token_logprobs(mat(2, 3, first), ids({0, 0})); }, {"logits: element [0, 0] is -inf"});
}

TEST_CASE("token_logprobs_backward: errors name the argument", "[logits][errors]") {
  const auto z = mat(2, 3, two_rows(1.0));
  const auto fwd = token_logprobs(z, ids({0, 1}));
  reference_tensor<double> g;
  const auto ones = vec({1.0, 1.0});
  require_error(
      [&] {
        token_logprobs_backward(z, ids({0, 1}), 1.0, fwd, vec({1.0}), ones, g);
      },
      {"d_logprobs: expected shape [2], got [1]"});
  require_error(
      [&] {
        token_logprobs_backward(z, ids({0, 1}), 1.0, fwd, ones, vec({1.0, NAN}), g);
      },
      {"d_entropy: element 1 is nan"});
  require_error([&] { token_logprobs_backward(z, ids({0, 5}), 1.0, fwd, ones, ones, g); }, {"ids: element 1 is 5"});
  require_error([&] { token_logprobs_backward(z, ids({0, 1}), -0.5, fwd, ones, ones, g); }, {"temperature:"});
  const token_logprob_result<ref> short_forward{fwd.logprobs, vec({0.0}), fwd.lse};
  require_error(
      [&] {
        token_logprobs_backward(z, ids({0, 1}), 1.0, short_forward, ones, ones, g);
      },
      {"forward.entropy: expected shape [2], got [1]"});
}
