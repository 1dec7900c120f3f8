// SPDX-License-Identifier: Apache-2.0
// The per-entry arithmetic of the fused CUDA kernels, compiled by nvcc and run on the host (no GPU needed, so CI runs
// it): divergence.cuh's divergence_entry_log2, which the dense divergence kernel calls three times per vocabulary
// entry, against rows.hpp's divergence_entry in double (the Thrust functors' and the reference's formula), in fp32
// and fp64, for the forward KL, the reverse KL and the generalized JSD, over log-probabilities from 0 down through
// the subnormal range to -inf, and for NaN.
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <utility>

#include "grpo/cccl/kernels/divergence.cuh"
#include "grpo/cccl/rows.hpp"

namespace {

namespace kd = grpo::cccl::kernels::detail;

struct entry {
  double term, d;
};

/// The kernel's entry as divergence_kernel calls it: natural log-probs rounded to A, times log2 e in A.
template <class A>
entry kernel_entry(double beta, double log_p, double log_q) {
  const A b = static_cast<A>(beta);
  const A log2_beta = kd::log2_of(b), log2_one_minus_beta = static_cast<A>(std::log1p(-static_cast<double>(b))) *
                                                            kd::log2_e<A>();
  A term = 0, d = 0;
  kd::divergence_entry_log2<A>(b, log2_beta, log2_one_minus_beta, static_cast<A>(log_p) * kd::log2_e<A>(),
                               static_cast<A>(log_q) * kd::log2_e<A>(), term, d);
  return {static_cast<double>(term), static_cast<double>(d)};
}

entry reference_entry(double beta, double log_p, double log_q) {
  entry e{};
  grpo::cccl::detail::divergence_entry(beta, log_p, log_q, e.term, e.d);
  return e;
}

/// |got - want| within rtol of the entry's scale (|want| + p + q, times the largest |log| that multiplies them: the
/// kernel's log-probs carry an absolute error of their magnitude's ulp), or within atol (values below A's normal
/// range); an infinite want (p > 0 where q = 0) exactly.
void require_entry_close(double got, double want, double scale, double rtol, double atol) {
  INFO("got " << got << " want " << want);
  if (!std::isfinite(want)) {
    REQUIRE(got == want);
    return;
  }
  REQUIRE(std::fabs(got - want) <= rtol * scale + atol);
}

template <class A>
void sweep(double rtol, double atol) {
  const double inf = std::numeric_limits<double>::infinity();
  // Natural log-probabilities: 0 down past fp32's normal (-87.3) and subnormal (-103.3) range and fp64's (-708, -745).
  const double logs[] = {0.0, -1e-3, -0.25, -1.0, -3.0, -10.0, -30.0, -80.0, -87.4, -90.0, -100.0, -104.0,
                         -120.0, -700.0, -720.0, -760.0, -inf};
  for (const double beta : {0.0, 1e-3, 0.1, 0.5, 0.9, 1.0 - 1e-3, 1.0}) {
    for (const double log_p : logs) {
      for (const double log_q : logs) {
        INFO("beta " << beta << " log p " << log_p << " log q " << log_q);
        const auto got = kernel_entry<A>(beta, log_p, log_q);
        const auto want = reference_entry(static_cast<double>(static_cast<A>(beta)), log_p, log_q);
        const double p = std::exp(log_p), q = std::exp(log_q);
        const double logs_scale = 1.0 + std::fmax(std::isfinite(log_p) ? std::fabs(log_p) : 0.0,
                                                  std::isfinite(log_q) ? std::fabs(log_q) : 0.0);
        const double scale = std::fabs(want.term) + (p + q) * logs_scale;
        // An infinite KL term (the weighted side > 0 where the other is 0) whose weighted side underflows in A: no
        // term, as in the fp32 kernel before.
        const double weighted = beta == 0.0 ? p : q;
        if (std::isinf(want.term) && static_cast<A>(weighted) == A(0)) {
          REQUIRE(got.term == 0.0);
          continue;
        }
        require_entry_close(got.term, want.term, scale, rtol, atol);
        require_entry_close(got.d, want.d, std::fabs(want.d) + (p + q) * logs_scale, rtol, atol);
      }
    }
  }
}

TEST_CASE("kernel math: divergence_entry_log2 matches the double entry in fp32 and fp64", "[cccl][kernel_math]") {
  // fp32: exp2f / log2f within 2 ulp, the log2 e product and the ln 2 product one rounding each; the subnormal
  // mixtures take the log-sum-exp form, and values below FLT_MIN are judged absolutely.
  sweep<float>(2e-6, 1e-37);
  sweep<double>(1e-14, 1e-300);
}

TEST_CASE("kernel math: divergence_entry_log2 end points, equal rows and NaN", "[cccl][kernel_math]") {
  // Equal log-probs: the KL terms are exactly 0, the JSD's within rounding of 0.
  for (const double lp : {0.0, -2.0, -50.0}) {
    CHECK(kernel_entry<float>(0.0, lp, lp).term == 0.0);
    CHECK(kernel_entry<float>(1.0, lp, lp).term == 0.0);
    CHECK(std::fabs(kernel_entry<float>(0.5, lp, lp).term) <= 1e-6 * std::exp(lp));
  }
  // Both probabilities 0: no term and no gradient, for every beta.
  const double inf = std::numeric_limits<double>::infinity();
  for (const double beta : {0.0, 0.5, 1.0}) {
    const auto e = kernel_entry<float>(beta, -inf, -inf);
    CHECK(e.term == 0.0);
    CHECK(e.d == 0.0);
  }
  // A teacher probability 0 under the JSD: the student's part alone, (1 - beta) q log(q / ((1 - beta) q)).
  const auto e = kernel_entry<double>(0.25, -inf, -1.0);
  CHECK(std::fabs(e.term - 0.75 * std::exp(-1.0) * -std::log(0.75)) <= 1e-15);
  CHECK(std::fabs(e.d - e.term) <= 1e-15);
  // NaN: where the double entry gives NaN, so does the kernel's (the logits' finiteness is checked before the
  // kernels run; this keeps the two from diverging where it is not).
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (const double beta : {0.0, 0.5, 1.0}) {
    for (const auto& [lp, lq] : {std::pair{nan, -1.0}, std::pair{-1.0, nan}, std::pair{nan, nan}}) {
      INFO("beta " << beta << " log p " << lp << " log q " << lq);
      const auto got = kernel_entry<float>(beta, lp, lq), want = reference_entry(beta, lp, lq);
      CHECK(std::isnan(got.term) == std::isnan(want.term));
      CHECK(std::isnan(got.d) == std::isnan(want.d));
    }
  }
  CHECK(std::isnan(kernel_entry<float>(0.5, nan, -1.0).term));
}

}  // namespace
