// SPDX-License-Identifier: Apache-2.0
// Shared helpers of the test suite: building tensors from literals, comparing with a stated
// tolerance (|got - want| <= atol + rtol |want|, llm.c's rule), and central finite differences in
// double for gradient checks.
#pragma once

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "grpo/reference_backend.hpp"
#include "grpo/tensor.hpp"
#include "scratch_path.hpp"

namespace grpo::testing {

using ref = reference_backend<double>;
using ref_tensor = tensor<ref>;

inline ref_tensor vec(const std::vector<double>& v) { return make_tensor(ref{}, v, shape::vector(static_cast<std::int64_t>(v.size()))); }

inline ref_tensor mat(std::int64_t rows, std::int64_t cols, const std::vector<double>& v) {
  return make_tensor(ref{}, v, shape::matrix(rows, cols));
}

inline index_tensor<ref> ids(const std::vector<std::int64_t>& v) {
  return make_index(ref{}, v, shape::vector(static_cast<std::int64_t>(v.size())));
}

/// Seeded uniform values in [lo, hi).
inline std::vector<double> uniform(std::size_t n, double lo, double hi, std::uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<double> out(n);
  for (auto& x : out) x = dist(gen);
  return out;
}

/// Checks every element: |got - want| <= atol + rtol |want|; reports the first mismatches.
inline void require_close(const std::vector<double>& got, const std::vector<double>& want, double atol = 1e-12,
                          double rtol = 1e-12) {
  REQUIRE(got.size() == want.size());
  int reported = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    // Equal values pass outright, so an expected infinity matches itself (inf - inf would be NaN).
    const bool ok = got[i] == want[i] || std::fabs(got[i] - want[i]) <= atol + rtol * std::fabs(want[i]);
    if (!ok && reported++ < 5) {
      INFO("element " << i << ": got " << got[i] << ", want " << want[i]);
      CHECK(ok);
    }
  }
  REQUIRE(reported == 0);
}

inline void require_close(double got, double want, double atol = 1e-12, double rtol = 1e-12) {
  require_close(std::vector<double>{got}, std::vector<double>{want}, atol, rtol);
}

/// Central differences of f at x: (f(x + h e_i) - f(x - h e_i)) / 2h for every i.
inline std::vector<double> finite_difference(const std::function<double(const std::vector<double>&)>& f,
                                             std::vector<double> x, double h = 1e-6) {
  std::vector<double> grad(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + h;
    const double plus = f(x);
    x[i] = saved - h;
    const double minus = f(x);
    x[i] = saved;
    grad[i] = (plus - minus) / (2 * h);
  }
  return grad;
}

/// Analytic gradient against central differences in double. The default tolerance allows the
/// O(h^2) truncation and O(eps/h) rounding error of the difference quotient.
inline void require_gradient(const std::function<double(const std::vector<double>&)>& f, const std::vector<double>& x,
                             const std::vector<double>& analytic, double atol = 1e-7, double rtol = 1e-6) {
  require_close(analytic, finite_difference(f, x), atol, rtol);
}

/// Runs fn and requires it to throw grpo::error whose message contains every fragment.
template <class Fn>
void require_error(Fn&& fn, const std::vector<std::string>& fragments) {
  try {
    fn();
  } catch (const grpo::error& e) {
    const std::string message = e.what();
    for (const auto& fragment : fragments) {
      INFO("message: " << message);
      CHECK(message.find(fragment) != std::string::npos);
    }
    return;
  }
  FAIL("expected grpo::error containing '" << (fragments.empty() ? std::string() : fragments.front()) << "'");
}

}  // namespace grpo::testing
