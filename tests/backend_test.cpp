// SPDX-License-Identifier: Apache-2.0
// The reference backend's primitives on hand-worked numbers, its row-wise softmax operations
// against finite differences in double, and its error messages.
#include <cmath>

#include "grpo/reference_backend.hpp"
#include "grpo/tensor.hpp"
#include "test_support.hpp"

using namespace grpo;
using namespace grpo::testing;

TEST_CASE("reference backend: elementwise operations and scalars", "[backend]") {
  const auto a = vec({1.0, -2.0, 0.5});
  const auto b = vec({3.0, 4.0, -1.0});
  require_close((a + b).to_host(), {4.0, 2.0, -0.5});
  require_close((a - b).to_host(), {-2.0, -6.0, 1.5});
  require_close((a * b).to_host(), {3.0, -8.0, -0.5});
  require_close((a / b).to_host(), {1.0 / 3.0, -0.5, -0.5});
  require_close((2.0 - a).to_host(), {1.0, 4.0, 1.5});
  require_close((1.0 / b).to_host(), {1.0 / 3.0, 0.25, -1.0});
  require_close(minimum(a, b).to_host(), {1.0, -2.0, -1.0});
  require_close(maximum(a, 0.0).to_host(), {1.0, 0.0, 0.5});
  require_close(clamp(a, -1.0, 0.75).to_host(), {0.75, -1.0, 0.5});
  require_close(less(a, b).to_host(), {1.0, 1.0, 0.0});
  require_close(greater_equal(a, 0.5).to_host(), {1.0, 0.0, 1.0});
  require_close(where(less(a, 0.0), b, a).to_host(), {1.0, 4.0, 0.5});
  require_close(sign(a).to_host(), {1.0, -1.0, 1.0});
  require_close(expm1(vec({1e-10})).to_host(), {1e-10}, 0, 1e-9);
  require_close(is_nan(vec({NAN, 1.0})).to_host(), {1.0, 0.0});
  require_close(is_finite(vec({INFINITY, 1.0})).to_host(), {0.0, 1.0});
}

TEST_CASE("reference backend: reductions, segments, scans", "[backend]") {
  const auto m = mat(2, 3, {1, 2, 3, 4, 5, 6});
  require_close(sum(m).item(), 21.0);
  require_close(sum_rows(m).to_host(), {6.0, 15.0});
  require_close(shift_left(m).to_host(), {2, 3, 0, 5, 6, 0});
  require_close(expand_rows(vec({7, 8}), 2).to_host(), {7, 7, 8, 8});
  const auto seg = ids({1, 0, 1, 2});
  require_close(sum_segments(vec({1, 2, 3, 4}), seg, 3).to_host(), {2, 4, 4});
  require_close(gather(vec({10, 20, 30}), seg).to_host(), {20, 10, 20, 30});
  // y[c] = x[c] + decay[c] y[c+1]: x = 1, decay = 0.5 gives 1.75, 1.5, 1.
  require_close(reverse_scan_rows(mat(1, 3, {1, 1, 1}), mat(1, 3, {0.5, 0.5, 0.5})).to_host(), {1.75, 1.5, 1.0});
  // Double accumulation in a float backend: 1e8 + 1 (x10) - 1e8 keeps the ten ones.
  using fref = reference_backend<float>;
  const auto f = make_tensor(fref{}, std::vector<double>{1e8, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1e8},
                             shape::vector(12));
  require_close(sum(f).item(), 10.0);
}

TEST_CASE("reference backend: shape errors name the operation", "[backend][errors]") {
  require_error([] { (void)(vec({1, 2}) + vec({1, 2, 3})); }, {"binary", "[2]", "[3]"});
  require_error([] { (void)sum_rows(vec({1, 2})); }, {"sum_rows", "rank-2"});
  require_error([] { (void)gather(vec({1, 2}), ids({2})); }, {"gather", "index 2"});
  require_error([] { (void)make_tensor(ref{}, std::vector<double>{1, 2, 3}, shape::matrix(2, 2)); },
                {"upload", "[2,2]"});
}

namespace {

// logits [N, V] with ids: the scalar sum_n (a_n logprob_n + b_n entropy_n) and its gradient.
struct softmax_case {
  std::int64_t rows, vocab;
  std::vector<double> logits, a, b;
  std::vector<std::int64_t> targets;
  double inv_temperature;
};

double softmax_objective(const softmax_case& c, const std::vector<double>& z) {
  const auto stats = row_softmax_stats(ref{}, mat(c.rows, c.vocab, z).raw(), ids(c.targets).raw(), c.inv_temperature);
  const auto lp = download(ref{}, stats.logprob), h = download(ref{}, stats.entropy);
  double total = 0;
  for (std::size_t n = 0; n < lp.size(); ++n) total += c.a[n] * lp[n] + c.b[n] * h[n];
  return total;
}

}  // namespace

TEST_CASE("reference backend: softmax row statistics on hand-worked numbers", "[backend][logits]") {
  // z = (0, ln 3): p = (1/4, 3/4), lse = ln 4, H = -(1/4 ln 1/4 + 3/4 ln 3/4).
  const auto stats = row_softmax_stats(ref{}, mat(1, 2, {0.0, std::log(3.0)}).raw(), ids({1}).raw(), 1.0);
  require_close(download(ref{}, stats.lse), {std::log(4.0)}, 1e-15, 1e-14);
  require_close(download(ref{}, stats.logprob), {std::log(0.75)}, 1e-15, 1e-14);
  require_close(download(ref{}, stats.entropy), {-(0.25 * std::log(0.25) + 0.75 * std::log(0.75))}, 1e-15, 1e-14);
}

TEST_CASE("reference backend: softmax rows stay finite at logits of magnitude 1e4", "[backend][logits][edge]") {
  const auto stats = row_softmax_stats(ref{}, mat(2, 3, {1e4, -1e4, 0.0, 1e4, 1e4, -1e4}).raw(), ids({1, 0}).raw(), 1.0);
  require_close(download(ref{}, stats.lse), {1e4, 1e4 + std::log(2.0)}, 1e-9, 1e-15);
  require_close(download(ref{}, stats.logprob), {-2e4, -std::log(2.0)}, 1e-9, 1e-15);
  // 1e4 has an ulp of 1.8e-12 in double: the entropy cannot be more exact than that.
  require_close(download(ref{}, stats.entropy), {0.0, std::log(2.0)}, 1e-10, 0);
}

TEST_CASE("reference backend: softmax backward matches finite differences", "[backend][logits][gradient]") {
  for (const double inv_t : {1.0, 1.0 / 0.7}) {
    softmax_case c{3, 5, uniform(15, -3, 3, 7), {0.3, -1.2, 0.8}, {0.5, 0.25, -0.7}, {4, 0, 2}, inv_t};
    const auto z = mat(c.rows, c.vocab, c.logits);
    const auto stats = row_softmax_stats(ref{}, z.raw(), ids(c.targets).raw(), inv_t);
    reference_tensor<double> grad;
    row_softmax_backward(ref{}, z.raw(), ids(c.targets).raw(), inv_t, stats.lse, stats.entropy, vec(c.a).raw(),
                         vec(c.b).raw(), grad);
    require_gradient([&](const std::vector<double>& x) { return softmax_objective(c, x); }, c.logits,
                     download(ref{}, grad));
    // In place: the gradient overwrites the logits.
    auto inplace = z.raw();
    row_softmax_backward(ref{}, inplace, ids(c.targets).raw(), inv_t, stats.lse, stats.entropy, vec(c.a).raw(),
                         vec(c.b).raw(), inplace);
    require_close(download(ref{}, inplace), download(ref{}, grad), 0, 0);
  }
}

TEST_CASE("reference backend: divergences on hand-worked numbers and their limits", "[backend][distill]") {
  // P = (1/4, 3/4) teacher, Q = (1/2, 1/2) student.
  const auto student = mat(1, 2, {0.0, 0.0});
  const auto teacher = mat(1, 2, {0.0, std::log(3.0)});
  const double fkl = 0.25 * std::log(0.5) + 0.75 * std::log(1.5);
  const double rkl = 0.5 * std::log(2.0) + 0.5 * std::log(0.5 / 0.75);
  reference_tensor<double> grad;
  const auto w = vec({1.0});
  require_close(download(ref{}, row_divergence(ref{}, student.raw(), teacher.raw(), 1.0, 0.0, w.raw(), grad)), {fkl},
                1e-15, 1e-13);
  require_close(download(ref{}, row_divergence(ref{}, student.raw(), teacher.raw(), 1.0, 1.0, w.raw(), grad)), {rkl},
                1e-15, 1e-13);
  // beta = 1/2: M = (3/8, 5/8); JSD = 1/2 KL(P||M) + 1/2 KL(Q||M).
  const double jsd = 0.5 * (0.25 * std::log(0.25 / 0.375) + 0.75 * std::log(0.75 / 0.625)) +
                     0.5 * (0.5 * std::log(0.5 / 0.375) + 0.5 * std::log(0.5 / 0.625));
  require_close(download(ref{}, row_divergence(ref{}, student.raw(), teacher.raw(), 1.0, 0.5, w.raw(), grad)), {jsd},
                1e-15, 1e-13);
  // Near the ends the interior formula is a scaled KL: JSD_b ~ b KL(P||Q) as b -> 0 and
  // ~ (1-b) KL(Q||P) as b -> 1, which is why b = 0 and b = 1 are defined as the two KLs themselves.
  const double small = 1e-6;
  require_close(download(ref{}, row_divergence(ref{}, student.raw(), teacher.raw(), 1.0, small, w.raw(), grad))[0] / small,
                fkl, 0, 1e-4);
  require_close(
      download(ref{}, row_divergence(ref{}, student.raw(), teacher.raw(), 1.0, 1 - small, w.raw(), grad))[0] / small, rkl,
      0, 1e-4);
}

TEST_CASE("reference backend: divergence gradients match finite differences", "[backend][distill][gradient]") {
  const std::int64_t rows = 2, vocab = 4;
  const auto zs = uniform(8, -2, 2, 11), zt = uniform(8, -2, 2, 12);
  const auto w = vec({0.7, -0.4});
  for (const double beta : {0.0, 0.3, 1.0}) {
    for (const double inv_t : {1.0, 0.5}) {
      const auto objective = [&](const std::vector<double>& x) {
        reference_tensor<double> g;
        const auto loss = download(ref{}, row_divergence(ref{}, mat(rows, vocab, x).raw(), mat(rows, vocab, zt).raw(),
                                                         inv_t, beta, w.raw(), g));
        return 0.7 * loss[0] - 0.4 * loss[1];
      };
      reference_tensor<double> grad;
      (void)row_divergence(ref{}, mat(rows, vocab, zs).raw(), mat(rows, vocab, zt).raw(), inv_t, beta, w.raw(), grad);
      require_gradient(objective, zs, download(ref{}, grad));
    }
  }
}

TEST_CASE("reference backend: sparse forward KL equals the dense one on the full support",
          "[backend][distill][gradient]") {
  const std::int64_t rows = 2, vocab = 3;
  const auto zs = uniform(6, -2, 2, 21), zt = uniform(6, -2, 2, 22);
  // Teacher log-probs for all V ids: the sparse loss must equal the dense beta = 0 divergence.
  std::vector<double> teacher_logp(6);
  std::vector<std::int64_t> teacher_ids(6);
  for (int n = 0; n < rows; ++n) {
    const double lse = std::log(std::exp(zt[n * 3]) + std::exp(zt[n * 3 + 1]) + std::exp(zt[n * 3 + 2]));
    for (int v = 0; v < vocab; ++v) {
      teacher_ids[static_cast<std::size_t>(n * 3 + v)] = 2 - v;
      teacher_logp[static_cast<std::size_t>(n * 3 + v)] = zt[static_cast<std::size_t>(n * 3 + 2 - v)] - lse;
    }
  }
  const auto w = vec({1.0, 1.0});
  reference_tensor<double> dense_grad, sparse_grad;
  const auto dense = row_divergence(ref{}, mat(rows, vocab, zs).raw(), mat(rows, vocab, zt).raw(), 1.0, 0.0, w.raw(),
                                    dense_grad);
  const auto sparse =
      row_sparse_forward_kl(ref{}, mat(rows, vocab, zs).raw(),
                            make_index(ref{}, teacher_ids, shape::matrix(rows, vocab)).raw(),
                            mat(rows, vocab, teacher_logp).raw(), 1.0, w.raw(), sparse_grad);
  require_close(download(ref{}, sparse), download(ref{}, dense), 1e-14, 1e-12);
  require_close(download(ref{}, sparse_grad), download(ref{}, dense_grad), 1e-14, 1e-12);
}

TEST_CASE("reference backend: -inf logits are masked-out entries with probability 0", "[backend][logits][edge]") {
  // z = (-inf, 0, ln 3): p = (0, 1/4, 3/4).
  const auto z = mat(1, 3, {-INFINITY, 0.0, std::log(3.0)});
  const auto stats = row_softmax_stats(ref{}, z.raw(), ids({2}).raw(), 1.0);
  require_close(download(ref{}, stats.lse), {std::log(4.0)}, 1e-15, 1e-14);
  require_close(download(ref{}, stats.logprob), {std::log(0.75)}, 1e-15, 1e-14);
  require_close(download(ref{}, stats.entropy), {-(0.25 * std::log(0.25) + 0.75 * std::log(0.75))}, 1e-15, 1e-14);
  // A teacher log-prob of -inf (probability 0) adds nothing to the sparse forward KL.
  reference_tensor<double> grad;
  const auto loss = row_sparse_forward_kl(ref{}, mat(1, 2, {0.0, 0.0}).raw(),
                                          make_index(ref{}, std::vector<std::int64_t>{0, 1}, shape::matrix(1, 2)).raw(),
                                          mat(1, 2, {0.0, -INFINITY}).raw(), 1.0, vec({1.0}).raw(), grad);
  require_close(download(ref{}, loss), {std::log(2.0)}, 1e-15, 1e-14);
  require_close(download(ref{}, grad), {-0.5, 0.5}, 1e-15, 1e-14);
}

TEST_CASE("reference backend: sparse forward KL rounds the gradient at a repeated id once", "[backend][logits][edge]") {
  // One token and 1000 teacher entries on it with mass 1: the exact gradient is 0. In float, rounding after each
  // of the 1000 subtractions would leave about 1e-5; the reference accumulates in double and rounds once.
  using ref_float = grpo::reference_backend<float>;
  const ref_float b;
  const std::int64_t k = 1000;
  const auto student = make_tensor(b, std::vector<double>{0.75}, shape::matrix(1, 1));
  const auto teacher_ids = make_index(b, std::vector<std::int64_t>(k, 0), shape::matrix(1, k));
  const auto teacher_logprobs = make_tensor(b, std::vector<double>(k, std::log(1.0 / k)), shape::matrix(1, k));
  reference_tensor<float> grad;
  (void)row_sparse_forward_kl(b, student.raw(), teacher_ids.raw(), teacher_logprobs.raw(), 1.0,
                              make_tensor(b, std::vector<double>{1.0}, shape::vector(1)).raw(), grad);
  REQUIRE(std::fabs(grad.data[0]) <= 1e-7f);
}
