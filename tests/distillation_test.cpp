// SPDX-License-Identifier: Apache-2.0
// distillation_loss, topk_distillation_loss and sft_loss: hand-worked divergences, temperature,
// finite-difference gradients for every beta and temperature, masks, micro-batch additivity, large
// logits, the float backend and error messages.
#include "grpo/distillation.hpp"

#include <cmath>
#include <limits>
#include <optional>

#include "test_support.hpp"

using namespace grpo;
using namespace grpo::testing;

namespace {

const double ln2 = std::log(2.0), ln3 = std::log(3.0);
const double inf = std::numeric_limits<double>::infinity();
const double nan_value = std::numeric_limits<double>::quiet_NaN();

// Student rows: Q0 = (1/6, 1/3, 1/2) from z = (0, ln 2, ln 3), Q1 = (1/3, 1/3, 1/3) from z = 0.
std::vector<double> student_rows(double scale) { return {0.0, scale * ln2, scale * ln3, 0.0, 0.0, 0.0}; }
// Teacher rows: P0 = (1/4, 1/4, 1/2) from z = (0, 0, ln 2), P1 = (1/2, 1/6, 1/3) from z = (ln 3, 0, ln 2).
std::vector<double> teacher_rows(double scale) { return {0.0, 0.0, scale * ln2, scale * ln3, 0.0, scale * ln2}; }

loss_denominators tokens(double n) {
  loss_denominators d;
  d.tokens = n;
  return d;
}

distillation_options options(double beta, double temperature = 1.0) {
  distillation_options o;
  o.beta = beta;
  o.temperature = temperature;
  return o;
}

// Per-row divergences of the two rows above, worked by hand:
//   beta = 0, KL(P||Q): row 0: 1/4 ln(6/4) + 1/4 ln(3/4) + 0 = 1/4 ln(9/8) = 0.02944575...
//                       row 1: 1/2 ln(3/2) + 1/6 ln(1/2) + 0 = 0.08720802...
//   beta = 1, KL(Q||P): row 0: 1/6 ln(2/3) + 1/3 ln(4/3) + 0 = 0.02831650...
//                       row 1: 1/3 ln(2/3) + 1/3 ln 2 + 0 = 1/3 ln(4/3) = 0.09589402...
//   beta = 1/2, M0 = (5/24, 7/24, 1/2): 1/2 [1/4 ln(6/5) + 1/4 ln(6/7)] + 1/2 [1/6 ln(4/5) + 1/3 ln(8/7)] =
//   0.00718129...
//               M1 = (5/12, 1/4, 1/3):  1/2 [1/2 ln(6/5) + 1/6 ln(2/3)] + 1/2 [1/3 ln(4/5) + 1/3 ln(4/3)] =
//               0.02254805...
struct hand_case {
  double beta;
  double row0, row1;
};
const hand_case hand_cases[] = {{0.0, 0.029445758914095864, 0.08720802396075798},
                                {1.0, 0.028316506132566213, 0.09589402415059362},
                                {0.5, 0.0071812957820733166, 0.022548050379070136}};

// The loss as a function of the student logits, for finite differences.
double dense_loss(const std::vector<double>& zs, const std::vector<double>& zt, const std::vector<double>& m,
                  std::int64_t rows, std::int64_t vocab, const distillation_options& o, double n_tokens) {
  return distillation_loss(mat(rows, vocab, zs), mat(rows, vocab, zt), vec(m), o, tokens(n_tokens)).loss.item();
}

std::vector<double> slice(const std::vector<double>& v, std::size_t begin, std::size_t end) {
  return {v.begin() + static_cast<std::ptrdiff_t>(begin), v.begin() + static_cast<std::ptrdiff_t>(end)};
}

std::vector<double> concat(std::vector<double> a, const std::vector<double>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

}  // namespace

TEST_CASE("distillation_loss: hand-worked forward KL, reverse KL and JSD", "[distill]") {
  for (const auto& c : hand_cases) {
    INFO("beta = " << c.beta);
    const auto r = distillation_loss(mat(2, 3, student_rows(1.0)), mat(2, 3, teacher_rows(1.0)), vec({1.0, 1.0}),
                                     options(c.beta), tokens(2.0));
    require_close(r.per_token_loss.to_host(), {c.row0, c.row1}, 1e-15, 1e-13);
    require_close(r.loss.item(), (c.row0 + c.row1) / 2.0, 1e-15, 1e-13);
    CHECK(r.token_count == 2.0);
    CHECK(r.loss.shape() == shape::scalar());
  }
}

TEST_CASE("distillation_loss: both logits are divided by the temperature, with no T^2 factor", "[distill]") {
  for (const double t : {0.7, 2.0}) {
    for (const auto& c : hand_cases) {
      INFO("T = " << t << ", beta = " << c.beta);
      const auto r = distillation_loss(mat(2, 3, student_rows(t)), mat(2, 3, teacher_rows(t)), vec({1.0, 1.0}),
                                       options(c.beta, t), tokens(2.0));
      require_close(r.per_token_loss.to_host(), {c.row0, c.row1}, 1e-15, 1e-12);
    }
  }
}

TEST_CASE("distillation_loss: the denominator is the global token count and masked rows contribute 0", "[distill]") {
  // Row 1 masked; the batch this micro-batch belongs to has 4 valid tokens: loss = 0.02944575... / 4.
  const auto r = distillation_loss(mat(2, 3, student_rows(1.0)), mat(2, 3, teacher_rows(1.0)), vec({1.0, 0.0}),
                                   options(0.0), tokens(4.0));
  require_close(r.per_token_loss.to_host(), {0.029445758914095864, 0.0}, 1e-15, 1e-13);
  require_close(r.loss.item(), 0.029445758914095864 / 4.0, 1e-15, 1e-13);
  CHECK(r.token_count == 1.0);
  const auto g = download(ref{}, r.grad_logits);
  require_close(slice(g, 3, 6), {0.0, 0.0, 0.0}, 0, 0);
  // Forward-KL gradient of row 0: (q - p) / N_tokens = ((1/6 - 1/4), (1/3 - 1/4), (1/2 - 1/2)) / 4.
  require_close(slice(g, 0, 3), {(1.0 / 6 - 0.25) / 4, (1.0 / 3 - 0.25) / 4, 0.0}, 1e-16, 1e-13);
  // A fully masked batch: loss 0, gradient 0, no tokens.
  const auto empty = distillation_loss(mat(2, 3, student_rows(1.0)), mat(2, 3, teacher_rows(1.0)), vec({0.0, 0.0}),
                                       options(0.5), tokens(1.0));
  CHECK(empty.loss.item() == 0.0);
  CHECK(empty.token_count == 0.0);
  require_close(download(ref{}, empty.grad_logits), std::vector<double>(6, 0.0), 0, 0);
  // An empty micro-batch (N = 0) is valid too and contributes nothing.
  const auto none = distillation_loss(mat(0, 3, {}), mat(0, 3, {}), vec({}), options(1.0), tokens(1.0));
  CHECK(none.loss.item() == 0.0);
  CHECK(none.per_token_loss.shape() == shape::vector(0));
}

TEST_CASE("distillation_loss: gradients match finite differences for every beta and temperature",
          "[distill][gradient]") {
  const std::int64_t rows = 3, vocab = 4;
  const auto zs = uniform(12, -2, 2, 201), zt = uniform(12, -2, 2, 202);
  const std::vector<double> m{1.0, 0.0, 1.0};
  for (const double beta : {0.0, 0.5, 1.0}) {
    for (const double t : {1.0, 0.7}) {
      INFO("beta = " << beta << ", T = " << t);
      const auto r =
          distillation_loss(mat(rows, vocab, zs), mat(rows, vocab, zt), vec(m), options(beta, t), tokens(5.0));
      require_gradient(
          [&](const std::vector<double>& x) { return dense_loss(x, zt, m, rows, vocab, options(beta, t), 5.0); }, zs,
          download(ref{}, r.grad_logits));
    }
  }
}

TEST_CASE("distillation_loss: micro-batches divided by the global count add up to the full batch", "[distill]") {
  const auto zs = uniform(16, -3, 3, 203), zt = uniform(16, -3, 3, 204);
  const std::vector<double> m{1.0, 1.0, 0.0, 1.0};
  const auto d = tokens(3.0);  // sum of the full batch's mask
  for (const double beta : {0.0, 0.5, 1.0}) {
    const auto full_batch = distillation_loss(mat(4, 4, zs), mat(4, 4, zt), vec(m), options(beta, 0.7), d);
    const auto first = distillation_loss(mat(2, 4, slice(zs, 0, 8)), mat(2, 4, slice(zt, 0, 8)), vec({1.0, 1.0}),
                                         options(beta, 0.7), d);
    const auto second = distillation_loss(mat(2, 4, slice(zs, 8, 16)), mat(2, 4, slice(zt, 8, 16)), vec({0.0, 1.0}),
                                          options(beta, 0.7), d);
    require_close(first.loss.item() + second.loss.item(), full_batch.loss.item(), 1e-15, 1e-13);
    require_close(concat(download(ref{}, first.grad_logits), download(ref{}, second.grad_logits)),
                  download(ref{}, full_batch.grad_logits), 1e-16, 1e-13);
    CHECK(first.token_count + second.token_count == full_batch.token_count);
  }
}

TEST_CASE("distillation_loss: logits of magnitude 1e4 give finite, exact divergences", "[distill][edge]") {
  // Student all on token 0, teacher all on token 1, 1e4 apart:
  //   KL(P||Q) = log p1 - log q1 = 0 - (0 - 1e4) = 1e4, and KL(Q||P) = 1e4 the same way;
  //   JSD_1/2 with M = (1/2, 1/2, 0): 1/2 ln 2 + 1/2 ln 2 = ln 2.
  const auto zs = mat(1, 3, {1e4, 0.0, 0.0}), zt = mat(1, 3, {0.0, 1e4, 0.0});
  const std::pair<double, double> cases[] = {{0.0, 1e4}, {1.0, 1e4}, {0.5, 0.6931471805599453}};
  for (const auto& [beta, want] : cases) {
    INFO("beta = " << beta);
    const auto r = distillation_loss(zs, zt, vec({1.0}), options(beta), tokens(1.0));
    require_close(r.loss.item(), want, 1e-9, 1e-12);
    for (const double g : download(ref{}, r.grad_logits)) CHECK(std::isfinite(g));
  }
  // Forward KL gradient q - p = (1, -1, 0).
  const auto r = distillation_loss(zs, zt, vec({1.0}), options(0.0), tokens(1.0));
  require_close(download(ref{}, r.grad_logits), {1.0, -1.0, 0.0}, 1e-12, 0);
}

TEST_CASE("distillation_loss: the float backend agrees with double", "[distill][float]") {
  using fref = reference_backend<float>;
  const auto zs = uniform(20, -5, 5, 205), zt = uniform(20, -5, 5, 206);
  const std::vector<double> m{1.0, 0.0, 1.0, 1.0};
  for (const double beta : {0.0, 0.5, 1.0}) {
    const auto d = distillation_loss(mat(4, 5, zs), mat(4, 5, zt), vec(m), options(beta, 0.7), tokens(3.0));
    const auto f =
        distillation_loss(make_tensor(fref{}, zs, shape::matrix(4, 5)), make_tensor(fref{}, zt, shape::matrix(4, 5)),
                          make_tensor(fref{}, m, shape::vector(4)), options(beta, 0.7), tokens(3.0));
    // Inputs rounded to float (relative 6e-8) on logits up to 5 / 0.7 ~ 7 move the divergences by ~1e-6.
    require_close(f.loss.item(), d.loss.item(), 1e-5, 1e-5);
    require_close(f.per_token_loss.to_host(), d.per_token_loss.to_host(), 1e-5, 1e-5);
    require_close(download(fref{}, f.grad_logits), download(ref{}, d.grad_logits), 1e-6, 1e-5);
  }
}

TEST_CASE("topk_distillation_loss: hand-worked sparse forward KL with and without renormalization", "[distill][topk]") {
  // Student Q0 = (1/6, 1/3, 1/2); teacher top-2: id 2 with p = 1/2, id 1 with p = 1/4.
  const auto zs = mat(1, 3, {0.0, ln2, ln3});
  const auto tid = make_index(ref{}, std::vector<std::int64_t>{2, 1}, shape::matrix(1, 2));
  const auto tlp = mat(1, 2, {std::log(0.5), std::log(0.25)});
  // Raw: 1/2 ln((1/2) / (1/2)) + 1/4 ln((1/4) / (1/3)) = 1/4 ln(3/4) = -0.07192051... (below 0: p has mass 3/4 only).
  const auto raw = topk_distillation_loss(zs, tid, tlp, vec({1.0}), options(0.0), tokens(1.0));
  require_close(raw.loss.item(), -0.07192051811294523, 1e-15, 1e-13);
  // Gradient (sum_j p_j) q - p on the support = 3/4 (1/6, 1/3, 1/2) - (0, 1/4, 1/2) = (1/8, 0, -1/8).
  require_close(download(ref{}, raw.grad_logits), {0.125, 0.0, -0.125}, 1e-16, 1e-13);
  // Renormalized p = (2/3, 1/3): 2/3 ln((2/3) / (1/2)) + 1/3 ln((1/3) / (1/3)) = 2/3 ln(4/3) = 0.19178804...
  const auto renorm = topk_distillation_loss(zs, tid, tlp, vec({1.0}), options(0.0), tokens(1.0), true);
  require_close(renorm.loss.item(), 0.19178804830118723, 1e-15, 1e-13);
  // Gradient q - p = (1/6, 1/3 - 1/3, 1/2 - 2/3) = (1/6, 0, -1/6).
  require_close(download(ref{}, renorm.grad_logits), {1.0 / 6, 0.0, -1.0 / 6}, 1e-16, 1e-13);
  // Student logits scaled by T at temperature T (the teacher's log-probs are already at T): same loss.
  const auto tempered = topk_distillation_loss(mat(1, 3, {0.0, 0.7 * ln2, 0.7 * ln3}), tid, tlp, vec({1.0}),
                                               options(0.0, 0.7), tokens(1.0), true);
  require_close(tempered.loss.item(), 0.19178804830118723, 1e-15, 1e-12);
}

TEST_CASE("topk_distillation_loss: at K = V it equals the dense forward KL", "[distill][topk]") {
  const std::int64_t rows = 3, vocab = 4;
  const auto zs = uniform(12, -2, 2, 207), zt = uniform(12, -2, 2, 208);
  const std::vector<double> m{1.0, 0.0, 1.0};
  for (const double t : {1.0, 0.7}) {
    // Teacher log-probs at T of every id, listed in reverse order to exercise the ids.
    const auto teacher = token_logprobs(mat(rows, vocab, zt), ids({0, 0, 0}), t);
    const auto lse = teacher.lse.to_host();
    std::vector<double> logp(12);
    std::vector<std::int64_t> tid(12);
    for (std::size_t n = 0; n < 3; ++n)
      for (std::size_t j = 0; j < 4; ++j) {
        tid[n * 4 + j] = static_cast<std::int64_t>(3 - j);
        logp[n * 4 + j] = zt[n * 4 + 3 - j] / t - lse[n];
      }
    const auto dense =
        distillation_loss(mat(rows, vocab, zs), mat(rows, vocab, zt), vec(m), options(0.0, t), tokens(2.0));
    for (const bool renormalize : {false, true}) {
      INFO("T = " << t << ", renormalize = " << renormalize);
      const auto sparse =
          topk_distillation_loss(mat(rows, vocab, zs), make_index(ref{}, tid, shape::matrix(rows, vocab)),
                                 mat(rows, vocab, logp), vec(m), options(0.0, t), tokens(2.0), renormalize);
      require_close(sparse.loss.item(), dense.loss.item(), 1e-15, 1e-12);
      require_close(sparse.per_token_loss.to_host(), dense.per_token_loss.to_host(), 1e-15, 1e-12);
      require_close(download(ref{}, sparse.grad_logits), download(ref{}, dense.grad_logits), 1e-15, 1e-12);
    }
  }
}

TEST_CASE("topk_distillation_loss: gradients match finite differences", "[distill][topk][gradient]") {
  const std::int64_t rows = 3, vocab = 5, k = 2;
  const auto zs = uniform(15, -2, 2, 209);
  const auto tid = make_index(ref{}, std::vector<std::int64_t>{4, 1, 0, 2, 3, 0}, shape::matrix(rows, k));
  const auto tlp = mat(rows, k, {-0.3, -1.9, -0.7, -1.1, -0.05, -4.0});
  const std::vector<double> m{1.0, 1.0, 0.0};
  for (const double t : {1.0, 0.7}) {
    for (const bool renormalize : {false, true}) {
      INFO("T = " << t << ", renormalize = " << renormalize);
      const auto loss = [&](const std::vector<double>& x) {
        return topk_distillation_loss(mat(rows, vocab, x), tid, tlp, vec(m), options(0.0, t), tokens(3.0), renormalize)
            .loss.item();
      };
      const auto r =
          topk_distillation_loss(mat(rows, vocab, zs), tid, tlp, vec(m), options(0.0, t), tokens(3.0), renormalize);
      require_gradient(loss, zs, download(ref{}, r.grad_logits));
    }
  }
}

TEST_CASE("topk_distillation_loss: -inf teacher log-probs are probability 0", "[distill][topk][edge]") {
  // A third id with log-prob -inf changes nothing, renormalized or not.
  const auto zs = mat(1, 3, {0.0, ln2, ln3});
  const auto two = make_index(ref{}, std::vector<std::int64_t>{2, 1}, shape::matrix(1, 2));
  const auto three = make_index(ref{}, std::vector<std::int64_t>{2, 1, 0}, shape::matrix(1, 3));
  for (const bool renormalize : {false, true}) {
    const auto a = topk_distillation_loss(zs, two, mat(1, 2, {std::log(0.5), std::log(0.25)}), vec({1.0}), options(0.0),
                                          tokens(1.0), renormalize);
    const auto b = topk_distillation_loss(zs, three, mat(1, 3, {std::log(0.5), std::log(0.25), -inf}), vec({1.0}),
                                          options(0.0), tokens(1.0), renormalize);
    require_close(b.loss.item(), a.loss.item(), 1e-15, 1e-13);
    require_close(download(ref{}, b.grad_logits), download(ref{}, a.grad_logits), 1e-16, 1e-13);
  }
  // Without renormalization a row that is -inf everywhere has no mass: loss 0 and gradient 0.
  const auto none = topk_distillation_loss(zs, two, mat(1, 2, {-inf, -inf}), vec({1.0}), options(0.0), tokens(1.0));
  CHECK(none.loss.item() == 0.0);
  require_close(download(ref{}, none.grad_logits), {0.0, 0.0, 0.0}, 0, 0);
}

TEST_CASE("topk_distillation_loss: micro-batches add up and the float backend agrees", "[distill][topk]") {
  const auto zs = uniform(20, -3, 3, 210);
  const std::vector<std::int64_t> tid{0, 3, 1, 2, 4, 0, 3, 4};
  const std::vector<double> tlp{-0.2, -2.0, -0.9, -0.8, -0.1, -3.0, -1.5, -0.4};
  const std::vector<double> m{1.0, 1.0, 1.0, 0.0};
  const auto d = tokens(3.0);
  const auto full_batch = topk_distillation_loss(mat(4, 5, zs), make_index(ref{}, tid, shape::matrix(4, 2)),
                                                 mat(4, 2, tlp), vec(m), options(0.0, 0.7), d, true);
  const auto first = topk_distillation_loss(mat(1, 5, slice(zs, 0, 5)),
                                            make_index(ref{}, std::vector<std::int64_t>{0, 3}, shape::matrix(1, 2)),
                                            mat(1, 2, slice(tlp, 0, 2)), vec({1.0}), options(0.0, 0.7), d, true);
  const auto rest = topk_distillation_loss(
      mat(3, 5, slice(zs, 5, 20)), make_index(ref{}, std::vector<std::int64_t>{1, 2, 4, 0, 3, 4}, shape::matrix(3, 2)),
      mat(3, 2, slice(tlp, 2, 8)), vec({1.0, 1.0, 0.0}), options(0.0, 0.7), d, true);
  require_close(first.loss.item() + rest.loss.item(), full_batch.loss.item(), 1e-15, 1e-13);
  require_close(concat(download(ref{}, first.grad_logits), download(ref{}, rest.grad_logits)),
                download(ref{}, full_batch.grad_logits), 1e-16, 1e-13);

  using fref = reference_backend<float>;
  const auto f =
      topk_distillation_loss(make_tensor(fref{}, zs, shape::matrix(4, 5)), make_index(fref{}, tid, shape::matrix(4, 2)),
                             make_tensor(fref{}, tlp, shape::matrix(4, 2)), make_tensor(fref{}, m, shape::vector(4)),
                             options(0.0, 0.7), d, true);
  require_close(f.loss.item(), full_batch.loss.item(), 1e-5, 1e-5);
  require_close(download(fref{}, f.grad_logits), download(ref{}, full_batch.grad_logits), 1e-6, 1e-5);
}

TEST_CASE("sft_loss: hand-worked cross-entropy, temperature and masked targets", "[distill][sft]") {
  // Row 0: Q0 = (1/6, 1/3, 1/2), target 2: -ln(1/2) = 0.69314718...; row 1: Q1 uniform, target 1: ln 3 = 1.09861228...
  const auto r = sft_loss(mat(2, 3, student_rows(1.0)), ids({2, 1}), vec({1.0, 1.0}), tokens(2.0));
  require_close(r.per_token_loss.to_host(), {0.6931471805599453, 1.0986122886681098}, 1e-15, 1e-14);
  require_close(r.loss.item(), (0.6931471805599453 + 1.0986122886681098) / 2, 1e-15, 1e-14);
  // Gradient (q - onehot) / N_tokens: row 0 (1/6, 1/3, -1/2) / 2, row 1 (1/3, -2/3, 1/3) / 2.
  require_close(download(ref{}, r.grad_logits), {1.0 / 12, 1.0 / 6, -0.25, 1.0 / 6, -1.0 / 3, 1.0 / 6}, 1e-16, 1e-13);
  CHECK(r.token_count == 2.0);
  // Logits scaled by T at temperature T: the same loss.
  const auto t = sft_loss(mat(2, 3, student_rows(0.7)), ids({2, 1}), vec({1.0, 1.0}), tokens(2.0), 0.7);
  require_close(t.per_token_loss.to_host(), {0.6931471805599453, 1.0986122886681098}, 1e-15, 1e-13);
  // A masked row may hold the ignore index -100: it is neither read nor counted.
  const auto masked = sft_loss(mat(2, 3, student_rows(1.0)), ids({2, -100}), vec({1.0, 0.0}), tokens(4.0));
  require_close(masked.per_token_loss.to_host(), {0.6931471805599453, 0.0}, 1e-15, 1e-14);
  require_close(masked.loss.item(), 0.6931471805599453 / 4, 1e-15, 1e-14);
  require_close(slice(download(ref{}, masked.grad_logits), 3, 6), {0.0, 0.0, 0.0}, 0, 0);
  CHECK(masked.token_count == 1.0);
}

TEST_CASE("sft_loss: gradients match finite differences and equal minus the log-prob gradient",
          "[distill][sft][gradient]") {
  const std::int64_t rows = 3, vocab = 4;
  const auto z = uniform(12, -3, 3, 211);
  const std::vector<double> m{1.0, 0.0, 1.0};
  for (const double t : {1.0, 0.7}) {
    INFO("T = " << t);
    const auto r = sft_loss(mat(rows, vocab, z), ids({3, 1, 0}), vec(m), tokens(4.0), t);
    require_gradient(
        [&](const std::vector<double>& x) {
          return sft_loss(mat(rows, vocab, x), ids({3, 1, 0}), vec(m), tokens(4.0), t).loss.item();
        },
        z, download(ref{}, r.grad_logits));
    const auto lp = token_logprobs(mat(rows, vocab, z), ids({3, 1, 0}), t);
    require_close(r.per_token_loss.to_host(), (-lp.logprobs * vec(m)).to_host(), 1e-15, 1e-14);
  }
}

TEST_CASE("sft_loss: logits of magnitude 1e4 and micro-batches", "[distill][sft][edge]") {
  // Target the argmax: loss ~ 0; target a logit 1e4 below the max: loss 1e4.
  const auto r = sft_loss(mat(2, 2, {1e4, -1e4, 0.0, 1e4}), ids({0, 0}), vec({1.0, 1.0}), tokens(1.0));
  require_close(r.per_token_loss.to_host(), {0.0, 1e4}, 1e-9, 1e-12);
  const auto z = uniform(12, -3, 3, 212);
  const auto d = tokens(3.0);
  const auto full_batch = sft_loss(mat(4, 3, z), ids({0, 1, 2, 1}), vec({1, 1, 0, 1}), d);
  const auto first = sft_loss(mat(2, 3, slice(z, 0, 6)), ids({0, 1}), vec({1, 1}), d);
  const auto second = sft_loss(mat(2, 3, slice(z, 6, 12)), ids({2, 1}), vec({0, 1}), d);
  require_close(first.loss.item() + second.loss.item(), full_batch.loss.item(), 1e-15, 1e-13);
  require_close(concat(download(ref{}, first.grad_logits), download(ref{}, second.grad_logits)),
                download(ref{}, full_batch.grad_logits), 1e-16, 1e-13);
}

TEST_CASE("distillation losses: the gradient goes to the caller's buffer when one is given", "[distill]") {
  const auto zs = mat(2, 3, student_rows(1.0)), zt = mat(2, 3, teacher_rows(1.0));
  const auto m = vec({1.0, 0.0});
  const auto d = tokens(2.0);
  const auto tid = make_index(ref{}, std::vector<std::int64_t>{2, 1, 0, 1}, shape::matrix(2, 2));
  const auto tlp = mat(2, 2, {-0.5, -1.0, -0.2, -2.0});
  using buffer = std::optional<ref::tensor_type>;
  // A buffer of NaN: every element must be written, the masked row's zeros included.
  const auto nan_buffer = [] { return buffer(fill(ref{}, shape::matrix(2, 3), nan_value)); };
  const auto same = [](const distillation_result<ref>& got, const distillation_result<ref>& want) {
    require_close(got.loss.item(), want.loss.item(), 0.0, 0.0);
    require_close(download(ref{}, got.grad_logits), download(ref{}, want.grad_logits), 0.0, 0.0);
  };
  for (const double beta : {0.0, 0.5, 1.0})
    same(distillation_loss(zs, zt, m, options(beta), d, nan_buffer()), distillation_loss(zs, zt, m, options(beta), d));
  same(topk_distillation_loss(zs, tid, tlp, m, options(0.0), d, true, nan_buffer()),
       topk_distillation_loss(zs, tid, tlp, m, options(0.0), d, true));
  same(sft_loss(zs, ids({2, 0}), m, d, 0.8, nan_buffer()), sft_loss(zs, ids({2, 0}), m, d, 0.8));
  const auto wrong = buffer(fill(ref{}, shape::matrix(3, 2), 0.0));
  require_error([&] { (void)distillation_loss(zs, zt, m, options(0.0), d, wrong); },
                {"grad_logits: expected shape [2,3] (that of the logits), got [3,2]"});
  require_error([&] { (void)topk_distillation_loss(zs, tid, tlp, m, options(0.0), d, false, wrong); },
                {"grad_logits: expected shape [2,3]"});
  require_error([&] { (void)sft_loss(zs, ids({2, 0}), m, d, 1.0, wrong); }, {"grad_logits: expected shape [2,3]"});
}

TEST_CASE("distillation losses: errors name the argument", "[distill][errors]") {
  const auto zs = mat(2, 3, student_rows(1.0)), zt = mat(2, 3, teacher_rows(1.0));
  const auto m = vec({1.0, 1.0});
  const auto d = tokens(2.0);
  require_error([&] { (void)distillation_loss(vec({1.0}), zt, m, options(0.0), d); },
                {"student_logits: expected a rank-2 tensor"});
  require_error(
      [&] {
        (void)distillation_loss(zs, mat(2, 2, {0, 0, 0, 0}), m, options(0.0), d);
      },
      {"teacher_logits: expected shape [2,3]", "got [2,2]"});
  require_error([&] { (void)distillation_loss(zs, zt, vec({1.0}), options(0.0), d); },
                {"mask: expected shape [2], got [1]"});
  require_error(
      [&] {
        (void)distillation_loss(zs, zt, vec({1.0, 0.5}), options(0.0), d);
      },
      {"mask: element 1 is 0.5", "0 or 1"});
  for (const double beta : {-0.1, 1.5, nan_value})
    require_error([&] { (void)distillation_loss(zs, zt, m, options(beta), d); }, {"options.beta: must be in [0, 1]"});
  for (const double t : {0.0, -2.0, inf, nan_value})
    require_error([&] { (void)distillation_loss(zs, zt, m, options(0.0, t), d); }, {"options.temperature: must be"});
  require_error([&] { (void)distillation_loss(zs, zt, m, options(0.0), tokens(0.0)); },
                {"denominators.tokens: must be a finite value > 0"});
  auto bad = student_rows(1.0);
  bad[1] = nan_value;
  require_error([&] { (void)distillation_loss(mat(2, 3, bad), zt, m, options(0.5), d); },
                {"student_logits: element [0, 1] is nan", "NaN or Inf is not allowed"});
  auto bad_teacher = teacher_rows(1.0);
  bad_teacher[3] = -inf;
  require_error([&] { (void)distillation_loss(zs, mat(2, 3, bad_teacher), m, options(0.0), d); },
                {"teacher_logits: element [1, 0] is -inf"});

  const auto tid = make_index(ref{}, std::vector<std::int64_t>{2, 1, 0, 1}, shape::matrix(2, 2));
  const auto tlp = mat(2, 2, {-0.5, -1.0, -0.2, -2.0});
  require_error(
      [&] {
        (void)topk_distillation_loss(zs, ids({0, 1}), tlp, m, options(0.0), d);
      },
      {"teacher_ids: expected shape [2, K] with K >= 1, got [2]"});
  require_error(
      [&] {
        (void)topk_distillation_loss(zs, make_index(ref{}, std::vector<std::int64_t>{}, shape::matrix(2, 0)),
                                     mat(2, 0, {}), m, options(0.0), d);
      },
      {"teacher_ids: expected shape [2, K] with K >= 1"});
  require_error(
      [&] {
        (void)topk_distillation_loss(zs, tid, mat(2, 1, {-0.5, -1.0}), m, options(0.0), d);
      },
      {"teacher_logprobs: expected shape [2,2]", "got [2,1]"});
  require_error(
      [&] {
        (void)topk_distillation_loss(zs, make_index(ref{}, std::vector<std::int64_t>{2, 1, 0, 3}, shape::matrix(2, 2)),
                                     tlp, m, options(0.0), d);
      },
      {"teacher_ids: element [1, 1] is 3, out of range [0, 3)"});
  require_error(
      [&] {
        (void)topk_distillation_loss(zs, make_index(ref{}, std::vector<std::int64_t>{2, 1, 1, 1}, shape::matrix(2, 2)),
                                     tlp, m, options(0.0), d);
      },
      {"teacher_ids: row 1 holds id 1 more than once"});
  require_error(
      [&] {
        (void)topk_distillation_loss(zs, tid, mat(2, 2, {-0.5, 0.1, -0.2, -2.0}), m, options(0.0), d);
      },
      {"teacher_logprobs: element [0, 1] is 0.1", "<= 0 and not NaN"});
  require_error(
      [&] {
        (void)topk_distillation_loss(zs, tid, mat(2, 2, {-0.5, -1.0, nan_value, -2.0}), m, options(0.0), d);
      },
      {"teacher_logprobs: element [1, 0] is nan"});
  require_error(
      [&] {
        (void)topk_distillation_loss(zs, tid, mat(2, 2, {-0.5, -1.0, -inf, -inf}), m, options(0.0), d, true);
      },
      {"teacher_logprobs: row 1 is -inf everywhere"});
  require_error([&] { (void)topk_distillation_loss(zs, tid, tlp, m, options(0.5), d); },
                {"options.beta: the top-k loss is the forward KL only"});
  require_error([&] { (void)topk_distillation_loss(mat(2, 3, bad), tid, tlp, m, options(0.0), d); },
                {"student_logits: element [0, 1] is nan"});

  require_error([&] { (void)sft_loss(zs, ids({0, 3}), m, d); }, {"targets: element 1 is 3, out of range [0, 3)"});
  require_error([&] { (void)sft_loss(zs, ids({0}), m, d); }, {"targets: expected shape [2], got [1]"});
  require_error([&] { (void)sft_loss(zs, ids({0, 1}), m, d, 0.0); }, {"temperature: must be a finite value > 0"});
  require_error([&] { (void)sft_loss(mat(2, 3, bad), ids({0, 1}), m, d); }, {"logits: element [0, 1] is nan"});
  require_error([&] { (void)sft_loss(zs, ids({0, 1}), vec({1.0, 2.0}), d); }, {"mask: element 1 is 2"});
}
