// SPDX-License-Identifier: Apache-2.0
// The conformance suite (tests/conformance/suite.hpp) instantiated for the reference backend
// itself: reference_backend<double> must reproduce the oracle exactly, and reference_backend<float>
// within the rounding of float storage. The other backends instantiate the same suite in their own
// test executables (tests/cuda, tests/torch).
#include <tuple>

#include "grpo/reference_backend.hpp"

namespace {

/// The oracle against itself: the same code in the same order of operations, so every output and
/// every metric must be bit-identical (tolerance 0). Guards the suite's own determinism: inputs
/// that depend on anything but the seeds would show up here first.
struct reference_double_fixture {
  using backend_type = grpo::reference_backend<double>;
  static backend_type make() { return {}; }
  static constexpr double rtol = 0.0, atol = 0.0;
  static constexpr const char* name = "reference_backend<double>";
};

/// Float storage: every elementwise result is rounded to float once (relative error <= 2^-24,
/// about 6e-8) while every reduction still accumulates in double. A loss chains about 20 such
/// steps, and centring (r - mean, logp - old) cancels a few digits, so 1e-5 relative is the
/// budget; 1e-6 absolute covers outputs that cancel to about 0 from terms of order 10 (6e-8 x 10
/// per term). The inputs are rounded to float before both backends see them (quantize), so what
/// is measured is the arithmetic, not the input rounding. Logits of magnitude 1e4: the
/// log-sum-exp stored in float is off by up to ulp(1.4e4) / 2, about 5e-4, which the backward
/// passes on to every probability whole, hence high_precision = false (those cases are compared
/// with the suite's default large_logits_atol of 1e-2).
struct reference_float_fixture {
  using backend_type = grpo::reference_backend<float>;
  static backend_type make() { return {}; }
  static constexpr double rtol = 1e-5, atol = 1e-6;
  static constexpr bool high_precision = false;
  static double quantize(double x) { return static_cast<double>(static_cast<float>(x)); }
  static constexpr const char* name = "reference_backend<float>";
};

}  // namespace

using conformance_fixtures = std::tuple<reference_double_fixture, reference_float_fixture>;

#include "conformance/suite.hpp"
