// SPDX-License-Identifier: Apache-2.0
// The conformance suite: every primitive of the tensor_backend and logits_backend concepts and every
// algorithm of include/grpo, run on a backend under test and on the oracle reference_backend<double>
// with the same seeded inputs (generated in double on the host, uploaded to both), downloaded and
// compared element-wise with |got - want| <= atol + rtol |want| (NaN matches NaN, an infinity only
// itself). Shapes sweep the core's edge cases: [0], [0, T], [R, 0], one element, length-1 rows, odd
// sizes; validation errors must be thrown alike, message for message.
//
// How to instantiate it (in exactly one translation unit of a test executable; the header is not
// self-contained by design, it needs conformance_fixtures declared first):
//
//   struct my_fixture {
//     using backend_type = ...;          // models grpo::tensor_backend; the row-primitive, logits and
//                                        // distillation cases run only when it models logits_backend
//     static backend_type make();        // a fresh backend object for each case
//     static constexpr double rtol = ..., atol = ...;  // tolerance of every downloaded tensor
//     static constexpr const char* name = "...";       // shown in every failure
//     // Optional traits (default in brackets):
//     static constexpr double metric_rtol = ..., metric_atol = ...;  // [rtol, atol] host-side doubles:
//         // policy_loss_metrics, advantage statistics, denominators, token counts, clip fractions
//     static constexpr bool high_precision = ...;  // [true] false: cases on logits of magnitude ~1e4
//         // are compared with atol = max(atol, large_logits_atol). Set it for backends that store the
//         // log-sum-exp (or anything else ~1e4) in fp32 or coarser: its rounding, ulp(1.4e4) / 2 ~ 5e-4,
//         // reaches log-probs and probabilities whole. The values must still be finite and close.
//     static constexpr double large_logits_atol = ...;  // [1e-2] see high_precision
//     static double quantize(double x);  // [identity] applied to every generated floating input and
//         // scalar operand before both backends see it: round to the storage type (float, bf16) so
//         // that input rounding is not counted as disagreement; must keep 0, 1, NaN and +-Inf as is
//   };
//   using conformance_fixtures = std::tuple<my_fixture, ...>;   // at global scope, then:
//   #include "conformance/suite.hpp"
//
// The test cases are TEMPLATE_LIST_TEST_CASEs tagged [conformance] (plus [primitives], [logits],
// [aggregation], [advantages], [policy_loss], [value_loss], [distillation], [errors]); Catch2 names
// each instantiation "conformance: <case> - conformance_fixtures - <index of the fixture>", and
// every failure names the fixture, the case, the output and the first elements that differ.
// Inputs depend only on fixed seeds and F::quantize. Inputs avoid what the concept leaves
// unspecified: NaN only for is_nan / is_finite (and where an algorithm documents NaN), rows that are
// -inf everywhere, and ties at the kinks of the policy and value losses (kept 1e-3 away, so rounding
// cannot flip a clip branch and change a gradient or a clip fraction).
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <initializer_list>
#include <iomanip>
#include <limits>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "../test_support.hpp"
#include "grpo/advantages.hpp"
#include "grpo/aggregation.hpp"
#include "grpo/backend.hpp"
#include "grpo/config.hpp"
#include "grpo/distillation.hpp"
#include "grpo/error.hpp"
#include "grpo/logits.hpp"
#include "grpo/policy_loss.hpp"
#include "grpo/reference_backend.hpp"
#include "grpo/tensor.hpp"
#include "grpo/value_loss.hpp"

namespace grpo::conformance {

using oracle_backend = reference_backend<double>;

inline constexpr double inf = std::numeric_limits<double>::infinity();
inline constexpr double nan = std::numeric_limits<double>::quiet_NaN();

// ---------------------------------------------------------------------------------------------
// Fixture traits with their defaults.

template <class F>
constexpr double metric_rtol() {
  if constexpr (requires { F::metric_rtol; }) return F::metric_rtol;
  else return F::rtol;
}

template <class F>
constexpr double metric_atol() {
  if constexpr (requires { F::metric_atol; }) return F::metric_atol;
  else return F::atol;
}

template <class F>
constexpr bool high_precision() {
  if constexpr (requires { F::high_precision; }) return F::high_precision;
  else return true;
}

template <class F>
constexpr double large_logits_atol() {
  if constexpr (requires { F::large_logits_atol; }) return F::large_logits_atol;
  else return 1e-2;
}

template <class F>
double quantize(double x) {
  if constexpr (requires { { F::quantize(std::declval<double>()) } -> std::convertible_to<double>; })
    return F::quantize(x);
  else return x;
}

template <class F>
std::vector<double> quantized(std::vector<double> values) {
  for (auto& x : values) x = quantize<F>(x);
  return values;
}

template <class F>
constexpr bool has_logits = logits_backend<typename F::backend_type>;

// ---------------------------------------------------------------------------------------------
// What a case produces on one backend: named downloads, compared pairwise afterwards.

enum class record_kind { tensor, index, metric };

struct record {
  std::string name;
  record_kind kind = record_kind::tensor;
  shape dims{};
  std::vector<double> values;
};

class results {
 public:
  template <tensor_backend B>
  void add(std::string name, const tensor<B>& t) {
    records_.push_back({std::move(name), record_kind::tensor, t.shape(), t.to_host()});
  }
  template <tensor_backend B>
  void add_raw(std::string name, const B& backend, const typename B::tensor_type& t) {
    records_.push_back({std::move(name), record_kind::tensor, shape_of(backend, t), download(backend, t)});
  }
  template <tensor_backend B>
  void add(std::string name, const index_tensor<B>& t) {
    const auto host = t.to_host();
    std::vector<double> values;
    for (const auto id : host) values.push_back(static_cast<double>(id));
    records_.push_back({std::move(name), record_kind::index, t.shape(), std::move(values)});
  }
  void add_metric(std::string name, double value) {
    records_.push_back({std::move(name), record_kind::metric, shape::scalar(), {value}});
  }
  const std::vector<record>& records() const { return records_; }

 private:
  std::vector<record> records_;
};

// ---------------------------------------------------------------------------------------------
// Comparison.

struct tolerance {
  double rtol = 0.0, atol = 0.0;
};

/// normal: the fixture's tolerance; large_logits: relaxed for !high_precision fixtures.
enum class precision { normal, large_logits };

inline bool within_tolerance(double got, double want, const tolerance& tol) {
  if (std::isnan(want)) return std::isnan(got);
  if (std::isinf(want)) return got == want;
  return std::isfinite(got) && std::fabs(got - want) <= tol.atol + tol.rtol * std::fabs(want);
}

inline std::string element_label(const shape& s, std::size_t i) {
  if (s.rank < 2) return "[" + std::to_string(i) + "]";
  const auto cols = static_cast<std::size_t>(s.dims[1]);
  return "[" + std::to_string(i / cols) + "," + std::to_string(i % cols) + "]";
}

template <class F>
tolerance tolerance_of(record_kind kind, precision p) {
  if (kind == record_kind::index) return {};
  if (kind == record_kind::metric) return {metric_rtol<F>(), metric_atol<F>()};
  if (p == precision::large_logits && !high_precision<F>()) return {F::rtol, std::max(F::atol, large_logits_atol<F>())};
  return {F::rtol, F::atol};
}

template <class F>
void compare(const std::string& label, const results& got, const results& want, precision p) {
  const auto& g = got.records();
  const auto& w = want.records();
  INFO(F::name << " vs reference_backend<double>: " << label);
  CHECK(g.size() == w.size());
  for (std::size_t r = 0; r < std::min(g.size(), w.size()); ++r) {
    INFO("output '" << w[r].name << "'");
    CHECK(g[r].name == w[r].name);
    if (g[r].name != w[r].name) return;
    if (w[r].kind != record_kind::metric) {
      CHECK(to_string(g[r].dims) == to_string(w[r].dims));
      if (g[r].dims != w[r].dims) continue;
    }
    CHECK(g[r].values.size() == w[r].values.size());
    if (g[r].values.size() != w[r].values.size()) continue;
    const auto tol = tolerance_of<F>(w[r].kind, p);
    std::size_t mismatches = 0;
    std::ostringstream report;
    report << std::setprecision(17);
    for (std::size_t i = 0; i < w[r].values.size(); ++i) {
      if (within_tolerance(g[r].values[i], w[r].values[i], tol)) continue;
      if (mismatches++ < 5)
        report << "\n  " << (w[r].kind == record_kind::metric ? std::string() : element_label(w[r].dims, i))
               << ": got " << g[r].values[i] << ", want " << w[r].values[i] << " (|diff| "
               << std::fabs(g[r].values[i] - w[r].values[i]) << ", allowed "
               << tol.atol + tol.rtol * std::fabs(w[r].values[i]) << ")";
    }
    INFO(mismatches << " of " << w[r].values.size() << " elements differ (rtol " << tol.rtol << ", atol "
                    << tol.atol << "):" << report.str());
    CHECK(mismatches == 0);
  }
}

template <class Backend, class Fn>
bool run_on(const std::string& label, const char* who, const Backend& backend, Fn& fn, results& out) {
  try {
    fn(backend, out);
    return true;
  } catch (const std::exception& e) {
    FAIL_CHECK(label << ": " << who << " threw: " << e.what());
    return false;
  }
}

/// Runs fn(backend, results&) on F::make() and on the oracle and compares what each recorded.
template <class F, class Fn>
void check_same(const std::string& label, Fn&& fn, precision p = precision::normal) {
  results got, want;
  const bool ran_got = run_on(label, F::name, F::make(), fn, got);
  const bool ran_want = run_on(label, "reference_backend<double>", oracle_backend{}, fn, want);
  if (ran_got && ran_want) compare<F>(label, got, want, p);
}

inline std::string error_kind(const grpo::error& e) {
  if (dynamic_cast<const shape_error*>(&e)) return "shape_error";
  if (dynamic_cast<const config_error*>(&e)) return "config_error";
  if (dynamic_cast<const value_error*>(&e)) return "value_error";
  if (dynamic_cast<const io_error*>(&e)) return "io_error";
  if (dynamic_cast<const backend_error*>(&e)) return "backend_error";
  return "error";
}

template <class Backend, class Fn>
std::string outcome(const Backend& backend, Fn& fn) {
  results ignored;
  try {
    fn(backend, ignored);
  } catch (const grpo::error& e) {
    return error_kind(e) + ": " + e.what();
  } catch (const std::exception& e) {
    return std::string("std::exception that is not a grpo::error: ") + e.what();
  }
  return "no exception";
}

/// Runs fn on both backends; both must throw the same grpo::error subclass with the same message,
/// which must contain `fragment` (the argument's name).
template <class F, class Fn>
void check_same_error(const std::string& label, const std::string& fragment, Fn&& fn) {
  const auto want = outcome(oracle_backend{}, fn);
  const auto got = outcome(F::make(), fn);
  INFO(label << "\n  " << F::name << ": " << got << "\n  reference_backend<double>: " << want);
  CHECK(want.find(fragment) != std::string::npos);
  CHECK(got == want);
}

// ---------------------------------------------------------------------------------------------
// Seeded inputs.

inline std::vector<double> seeded_uniform(std::size_t n, double lo, double hi, std::uint32_t seed) {
  return testing::uniform(n, lo, hi, seed);
}

inline std::vector<std::int64_t> random_ids(std::size_t n, std::int64_t bound, std::uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<std::int64_t> dist(0, bound - 1);
  std::vector<std::int64_t> out(n);
  for (auto& id : out) id = dist(gen);
  return out;
}

inline std::size_t numel_of(const shape& s) { return static_cast<std::size_t>(s.numel()); }

/// Every rank and the core's edge cases: empty, [0, T], [R, 0], one element, length-1 rows, odd sizes.
inline std::vector<shape> swept_shapes() {
  return {shape::scalar(),       shape::vector(0),      shape::vector(1),      shape::vector(7),
          shape::vector(16),     shape::matrix(0, 5),   shape::matrix(3, 0),   shape::matrix(1, 1),
          shape::matrix(4, 1),   shape::matrix(1, 9),   shape::matrix(5, 7),   shape::matrix(8, 16)};
}

inline std::vector<shape> swept_matrices() {
  return {shape::matrix(0, 5), shape::matrix(3, 0), shape::matrix(1, 1), shape::matrix(4, 1),
          shape::matrix(1, 9), shape::matrix(5, 7), shape::matrix(8, 16)};
}

/// x moved at least `margin` away from every kink.
inline double away_from(double x, std::initializer_list<double> kinks, double margin = 1e-3) {
  for (const double k : kinks)
    if (std::fabs(x - k) < margin) x = x < k ? k - margin : k + margin;
  return x;
}

// ---------------------------------------------------------------------------------------------
// Primitives of tensor_backend.

template <class F>
void round_trips() {
  for (const auto& s : swept_shapes()) {
    const auto x = quantized<F>(seeded_uniform(numel_of(s), -3.0, 3.0, 11));
    const double value = quantize<F>(0.625);
    // Ids beyond 2^32 catch a 32-bit index type.
    std::vector<std::int64_t> host_ids(numel_of(s));
    for (std::size_t i = 0; i < host_ids.size(); ++i)
      host_ids[i] = i % 3 == 0 ? (std::int64_t{1} << 40) + static_cast<std::int64_t>(i) : static_cast<std::int64_t>(i);
    check_same<F>("upload/download/fill " + to_string(s), [&](const auto& be, results& out) {
      const auto t = make_tensor(be, x, s);
      out.add("upload", t);
      out.add_raw("fill", be, fill(be, s, value));
      if (s.rank > 0) out.add("upload_index", make_index(be, host_ids, s));  // index tensors have rank 1 or 2
    });
  }
  // reshape keeps the row-major order.
  const std::vector<std::pair<shape, shape>> views{
      {shape::matrix(5, 7), shape::vector(35)}, {shape::matrix(5, 7), shape::matrix(7, 5)},
      {shape::vector(16), shape::matrix(4, 4)}, {shape::scalar(), shape::vector(1)},
      {shape::vector(1), shape::matrix(1, 1)},  {shape::matrix(1, 1), shape::scalar()},
      {shape::matrix(0, 5), shape::vector(0)},  {shape::vector(0), shape::matrix(3, 0)}};
  for (const auto& view : views) {
    const auto from = view.first, to = view.second;
    const auto x = quantized<F>(seeded_uniform(numel_of(from), -3.0, 3.0, 12));
    check_same<F>("reshape " + to_string(from) + " -> " + to_string(to), [&](const auto& be, results& out) {
      out.add("reshape", reshape(make_tensor(be, x, from), to));
    });
  }
}

struct unary_case {
  unary_op op;
  const char* name;
  double lo, hi;
};

template <class F>
void unary_ops() {
  const std::vector<unary_case> cases{
      {unary_op::neg, "neg", -4, 4},          {unary_op::abs, "abs", -4, 4},
      {unary_op::square, "square", -4, 4},    {unary_op::sign, "sign", -4, 4},
      {unary_op::exp, "exp", -10, 10},        {unary_op::expm1, "expm1", -3, 3},
      {unary_op::log, "log", 0.05, 8},        {unary_op::log1p, "log1p", -0.95, 5},
      {unary_op::sqrt, "sqrt", 0, 9},         {unary_op::reciprocal, "reciprocal", 0.2, 5},
      {unary_op::is_nan, "is_nan", -4, 4},    {unary_op::is_finite, "is_finite", -4, 4},
      {unary_op::sigmoid, "sigmoid", -12, 12}};
  std::uint32_t seed = 100;
  for (const auto& c : cases) {
    for (const auto& s : swept_shapes()) {
      auto x = seeded_uniform(numel_of(s), c.lo, c.hi, ++seed);
      for (std::size_t i = 0; i < x.size(); ++i) {
        switch (c.op) {
          case unary_op::neg:
          case unary_op::abs:
          case unary_op::square:
          case unary_op::sign:
          case unary_op::sqrt:
            if (i % 5 == 2) x[i] = 0.0;
            break;
          case unary_op::expm1:
          case unary_op::log1p:
            // Where expm1 and log1p differ from exp(x) - 1 and log(1 + x).
            if (i % 5 == 2) x[i] = i % 2 ? 1e-9 : -1e-9;
            break;
          case unary_op::reciprocal:
            if (i % 2) x[i] = -x[i];
            break;
          case unary_op::is_nan:
          case unary_op::is_finite:
            if (i % 4 == 1) x[i] = std::vector<double>{nan, inf, -inf}[(i / 4) % 3];
            break;
          case unary_op::sigmoid:
            if (i % 3 == 1) x[i] = std::vector<double>{-inf, -100.0, -30.0, 30.0, 100.0, inf}[(i / 3) % 6];
            break;
          default: break;
        }
      }
      x = quantized<F>(std::move(x));
      check_same<F>(std::string("unary ") + c.name + " " + to_string(s), [&](const auto& be, results& out) {
        out.add_raw(c.name, be, unary(be, c.op, make_tensor(be, x, s).raw()));
      });
    }
  }
}

template <class F>
void binary_ops() {
  const std::vector<std::pair<binary_op, const char*>> ops{
      {binary_op::add, "add"},         {binary_op::sub, "sub"},
      {binary_op::mul, "mul"},         {binary_op::div, "div"},
      {binary_op::minimum, "minimum"}, {binary_op::maximum, "maximum"},
      {binary_op::less, "less"},       {binary_op::less_equal, "less_equal"},
      {binary_op::greater, "greater"}, {binary_op::greater_equal, "greater_equal"},
      {binary_op::equal, "equal"}};
  const double scalar = quantize<F>(0.75);
  std::uint32_t seed = 200;
  for (const auto& s : swept_shapes()) {
    // Magnitudes in [0.25, 3] of either sign, so that every quotient is finite.
    const auto nonzero = [&](std::uint32_t sd) {
      auto v = seeded_uniform(numel_of(s), -2.75, 2.75, sd);
      for (auto& x : v) x += x < 0 ? -0.25 : 0.25;
      return v;
    };
    auto a = nonzero(++seed), b = nonzero(++seed);
    // Ties exercise minimum/maximum's choice and the non-strict comparisons.
    for (std::size_t i = 1; i < a.size(); i += 4) b[i] = a[i];
    auto a_tied = a;
    for (std::size_t i = 0; i < a_tied.size(); i += 3) a_tied[i] = scalar;
    a = quantized<F>(std::move(a));
    b = quantized<F>(std::move(b));
    a_tied = quantized<F>(std::move(a_tied));
    for (const auto& entry : ops) {
      const auto op = entry.first;
      const auto* const name = entry.second;
      check_same<F>(std::string("binary ") + name + " " + to_string(s), [&](const auto& be, results& out) {
        const auto ta = make_tensor(be, a, s), tb = make_tensor(be, b, s), tt = make_tensor(be, a_tied, s);
        out.add_raw("tensor op tensor", be, binary(be, op, ta.raw(), tb.raw()));
        out.add_raw("tensor op scalar", be, binary(be, op, tt.raw(), scalar));
        out.add_raw("scalar op tensor", be, binary(be, op, scalar, tt.raw()));
      });
    }
  }
}

template <class F>
void select_op() {
  std::uint32_t seed = 300;
  for (const auto& s : swept_shapes()) {
    // Any non-zero condition selects the first operand, not only 1.
    const std::vector<double> levels{0.0, 1.0, -2.0, 0.5};
    const auto pick = random_ids(numel_of(s), 4, ++seed);
    std::vector<double> cond(numel_of(s));
    for (std::size_t i = 0; i < cond.size(); ++i) cond[i] = levels[static_cast<std::size_t>(pick[i])];
    const auto a = quantized<F>(seeded_uniform(numel_of(s), -3, 3, ++seed));
    const auto b = quantized<F>(seeded_uniform(numel_of(s), -3, 3, ++seed));
    check_same<F>("select " + to_string(s), [&](const auto& be, results& out) {
      out.add_raw("select", be,
                  select(be, make_tensor(be, cond, s).raw(), make_tensor(be, a, s).raw(), make_tensor(be, b, s).raw()));
    });
  }
}

template <class F>
void reductions() {
  std::uint32_t seed = 400;
  for (const auto& s : swept_shapes()) {
    const auto x = quantized<F>(seeded_uniform(numel_of(s), -2, 2, ++seed));
    check_same<F>("sum " + to_string(s), [&](const auto& be, results& out) {
      out.add_raw("sum", be, sum(be, make_tensor(be, x, s).raw()));
    });
  }
  for (const auto& s : swept_matrices()) {
    const auto x = quantized<F>(seeded_uniform(numel_of(s), -2, 2, ++seed));
    check_same<F>("sum_rows " + to_string(s), [&](const auto& be, results& out) {
      out.add_raw("sum_rows", be, sum_rows(be, make_tensor(be, x, s).raw()));
    });
  }
  // Reductions accumulate in double whatever the storage: 1e8 + ten ones - 1e8 keeps the ones
  // (1e8 is exact in float; a float accumulator would lose every one of them).
  std::vector<double> cancel{1e8, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1e8};
  std::vector<double> cancel_rows = cancel;
  cancel_rows.insert(cancel_rows.end(), cancel.begin(), cancel.end());
  check_same<F>("double accumulation", [&](const auto& be, results& out) {
    out.add_raw("sum", be, sum(be, make_tensor(be, cancel, shape::vector(12)).raw()));
    out.add_raw("sum_rows", be, sum_rows(be, make_tensor(be, cancel_rows, shape::matrix(2, 12)).raw()));
    const auto segs = make_index(be, std::vector<std::int64_t>(12, 1), shape::vector(12));
    out.add_raw("sum_segments", be, sum_segments(be, make_tensor(be, cancel, shape::vector(12)).raw(), segs.raw(), 2));
  });

  struct segment_case {
    std::size_t n;
    std::int64_t segments;
    std::vector<std::int64_t> ids;  // empty: random in [0, segments)
  };
  const std::vector<segment_case> segment_cases{
      {0, 0, {}}, {0, 3, {}}, {1, 1, {}}, {7, 3, {}}, {16, 5, {4, 0, 1, 4, 3, 0, 0, 1, 4, 3, 3, 0, 1, 1, 4, 0}},
      {5, 1, {}}};
  for (const auto& c : segment_cases) {
    const auto x = quantized<F>(seeded_uniform(c.n, -2, 2, ++seed));
    const auto segs = c.ids.empty() ? random_ids(c.n, c.segments, ++seed) : c.ids;
    const auto s = shape::vector(static_cast<std::int64_t>(c.n));
    check_same<F>("sum_segments [" + std::to_string(c.n) + "] into " + std::to_string(c.segments),
                  [&](const auto& be, results& out) {
                    const auto values = make_tensor(be, x, s);
                    const auto segment_ids = make_index(be, segs, s);
                    out.add_raw("sum_segments", be, sum_segments(be, values.raw(), segment_ids.raw(), c.segments));
                  });
  }
}

template <class F>
void gather_expand_shift_scan() {
  std::uint32_t seed = 500;
  const std::vector<std::pair<std::int64_t, std::int64_t>> gathers{{0, 0}, {1, 0}, {1, 5}, {7, 16}, {7, 1}, {16, 9}};
  for (const auto& gather_case : gathers) {
    const auto size = gather_case.first, n = gather_case.second;
    const auto x = quantized<F>(seeded_uniform(static_cast<std::size_t>(size), -2, 2, ++seed));
    const auto at = size == 0 ? std::vector<std::int64_t>{} : random_ids(static_cast<std::size_t>(n), size, ++seed);
    check_same<F>("gather [" + std::to_string(size) + "] at [" + std::to_string(n) + "]",
                  [&](const auto& be, results& out) {
                    out.add_raw("gather", be,
                                gather(be, make_tensor(be, x, shape::vector(size)).raw(),
                                       make_index(be, at, shape::vector(static_cast<std::int64_t>(at.size()))).raw()));
                  });
  }
  for (const std::int64_t rows : {0, 1, 4, 7}) {
    for (const std::int64_t cols : {0, 1, 5}) {
      const auto x = quantized<F>(seeded_uniform(static_cast<std::size_t>(rows), -2, 2, ++seed));
      check_same<F>("expand_rows [" + std::to_string(rows) + "] x " + std::to_string(cols),
                    [&](const auto& be, results& out) {
                      const auto t = make_tensor(be, x, shape::vector(rows));
                      out.add_raw("expand_rows", be, expand_rows(be, t.raw(), cols));
                    });
    }
  }
  for (const auto& s : swept_matrices()) {
    const auto x = quantized<F>(seeded_uniform(numel_of(s), -2, 2, ++seed));
    auto decay = seeded_uniform(numel_of(s), 0.0, 1.1, ++seed);
    for (std::size_t i = 0; i < decay.size(); ++i) {
      if (i % 5 == 1) decay[i] = 0.0;
      if (i % 5 == 3) decay[i] = 1.0;
    }
    decay = quantized<F>(std::move(decay));
    check_same<F>("shift_left and reverse_scan_rows " + to_string(s), [&](const auto& be, results& out) {
      const auto t = make_tensor(be, x, s);
      out.add_raw("shift_left", be, shift_left(be, t.raw()));
      out.add_raw("reverse_scan_rows", be, reverse_scan_rows(be, t.raw(), make_tensor(be, decay, s).raw()));
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Row primitives of logits_backend.

/// normal: |z| <= 4; large: +-1e4 offsets (alternating by row); masked: -inf entries (never a whole row).
enum class logits_kind { normal, large, masked };

inline const char* kind_name(logits_kind kind) {
  switch (kind) {
    case logits_kind::normal: return "normal";
    case logits_kind::large: return "|z| ~ 1e4";
    case logits_kind::masked: return "-inf entries";
  }
  return "?";
}

inline std::vector<double> make_logits(std::int64_t rows, std::int64_t vocab, logits_kind kind, std::uint32_t seed) {
  auto z = seeded_uniform(static_cast<std::size_t>(rows * vocab), -4, 4, seed);
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t v = 0; v < vocab; ++v) {
      auto& x = z[static_cast<std::size_t>(r * vocab + v)];
      if (kind == logits_kind::large) x += r % 2 ? -1e4 : 1e4;
      // Two consecutive columns are never both masked, so every row of V >= 2 keeps a finite entry.
      if (kind == logits_kind::masked && vocab >= 2 && (r + v) % 3 == 1) x = -inf;
    }
  }
  return z;
}

struct row_shape {
  std::int64_t rows, vocab;
};

/// K = 1, 3 and V, each once.
inline std::vector<std::int64_t> topk_sizes(std::int64_t vocab) {
  std::vector<std::int64_t> sizes{1};
  for (const auto k : {std::min<std::int64_t>(3, vocab), vocab})
    if (k != sizes.back()) sizes.push_back(k);
  return sizes;
}

inline std::vector<row_shape> swept_rows() { return {{0, 5}, {1, 1}, {4, 1}, {3, 2}, {5, 7}, {8, 64}}; }

inline std::string describe(const row_shape& rs, logits_kind kind, double inv_t) {
  std::ostringstream out;
  out << "[" << rs.rows << "," << rs.vocab << "] " << kind_name(kind) << ", 1/T = " << inv_t;
  return out.str();
}

template <class F>
void row_stats_and_backward() {
  std::uint32_t seed = 600;
  for (const auto kind : {logits_kind::normal, logits_kind::large, logits_kind::masked}) {
    for (const auto& rs : swept_rows()) {
      for (const double inv_t : {1.0, 1.0 / 0.7, 0.0}) {
        if (inv_t == 0.0 && kind == logits_kind::masked) continue;  // 0 * -inf is NaN by definition
        const auto s = shape::matrix(rs.rows, rs.vocab);
        const auto z = quantized<F>(make_logits(rs.rows, rs.vocab, kind, ++seed));
        const auto targets = random_ids(static_cast<std::size_t>(rs.rows), rs.vocab, ++seed);
        auto g_logprob = seeded_uniform(static_cast<std::size_t>(rs.rows), -1.5, 1.5, ++seed);
        auto g_entropy = seeded_uniform(static_cast<std::size_t>(rs.rows), -1.5, 1.5, ++seed);
        if (!g_entropy.empty()) g_entropy[0] = 0.0;
        g_logprob = quantized<F>(std::move(g_logprob));
        g_entropy = quantized<F>(std::move(g_entropy));
        const auto p = kind == logits_kind::large ? precision::large_logits : precision::normal;
        check_same<F>(
            "row_softmax_stats and row_softmax_backward " + describe(rs, kind, inv_t),
            [&](const auto& be, results& out) {
              const auto rows = shape::vector(rs.rows);
              const auto logits = make_tensor(be, z, s);
              const auto ids = make_index(be, targets, rows);
              const auto stats = row_softmax_stats(be, logits.raw(), ids.raw(), inv_t);
              out.add_raw("lse", be, stats.lse);
              out.add_raw("entropy", be, stats.entropy);
              out.add_raw("logprob", be, stats.logprob);
              const auto gl = make_tensor(be, g_logprob, rows), ge = make_tensor(be, g_entropy, rows);
              // The concept's three ways of passing out: a tensor of another shape (the backend
              // allocates), one of the logits' shape holding garbage, and the logits themselves.
              auto fresh = fill(be, shape::vector(rs.rows * rs.vocab), 7.0);
              row_softmax_backward(be, logits.raw(), ids.raw(), inv_t, stats.lse, stats.entropy, gl.raw(), ge.raw(),
                                   fresh);
              out.add_raw("gradient into a tensor of another shape", be, fresh);
              auto preallocated = fill(be, s, 7.0);
              row_softmax_backward(be, logits.raw(), ids.raw(), inv_t, stats.lse, stats.entropy, gl.raw(), ge.raw(),
                                   preallocated);
              out.add_raw("gradient into a preallocated tensor", be, preallocated);
              auto in_place = make_tensor(be, z, s);
              row_softmax_backward(be, in_place.raw(), ids.raw(), inv_t, stats.lse, stats.entropy, gl.raw(), ge.raw(),
                                   in_place.raw());
              out.add("gradient in place of the logits", in_place);
            },
            p);
      }
    }
  }
  // The finiteness check of the logits (logits.hpp) relies on this: at inverse temperature 0 a
  // finite row has lse = log V, a row holding NaN or +-Inf a non-finite lse.
  const std::vector<double> bad{0.5, nan, 1.0, -2.0, inf, 0.0, -inf, 3.0, 1.0, 2.0, 1.0, 0.5, 0.25, 1.0, -1e4, 1e4};
  check_same<F>("row_softmax_stats at 1/T = 0 flags non-finite rows", [&](const auto& be, results& out) {
    const auto stats = row_softmax_stats(be, make_tensor(be, quantized<F>(bad), shape::matrix(4, 4)).raw(),
                                         make_index(be, std::vector<std::int64_t>(4, 0), shape::vector(4)).raw(), 0.0);
    const auto lse = download(be, stats.lse);
    for (std::size_t n = 0; n < lse.size(); ++n)
      out.add_metric("row " + std::to_string(n) + " lse is finite", std::isfinite(lse[n]) ? 1.0 : 0.0);
  });
}

template <class F>
void row_divergences() {
  std::uint32_t seed = 700;
  for (const auto kind : {logits_kind::normal, logits_kind::large, logits_kind::masked}) {
    for (const auto& rs : swept_rows()) {
      for (const double inv_t : {1.0, 1.0 / 0.7}) {
        for (const double beta : {0.0, 0.5, 1.0}) {
          const auto s = shape::matrix(rs.rows, rs.vocab);
          // -inf entries sit at the same places in both (a shared vocabulary mask), where every
          // divergence is finite.
          const auto zs = quantized<F>(make_logits(rs.rows, rs.vocab, kind, ++seed));
          auto zt_host = make_logits(rs.rows, rs.vocab, kind, ++seed);
          if (kind == logits_kind::large)  // a teacher offset unlike the student's: softmax ignores it
            for (auto& x : zt_host) x = -x;
          const auto zt = quantized<F>(std::move(zt_host));
          auto w = seeded_uniform(static_cast<std::size_t>(rs.rows), 0.0, 2.0, ++seed);
          if (w.size() > 1) w[1] = 0.0;
          w = quantized<F>(std::move(w));
          const auto p = kind == logits_kind::large ? precision::large_logits : precision::normal;
          check_same<F>(
              "row_divergence beta " + std::to_string(beta) + " " + describe(rs, kind, inv_t),
              [&](const auto& be, results& out) {
                const auto student = make_tensor(be, zs, s), teacher = make_tensor(be, zt, s);
                const auto weight = make_tensor(be, w, shape::vector(rs.rows));
                auto fresh = fill(be, shape::vector(0), 0.0);
                out.add_raw("loss", be,
                            row_divergence(be, student.raw(), teacher.raw(), inv_t, beta, weight.raw(), fresh));
                out.add_raw("gradient into a tensor of another shape", be, fresh);
                auto in_place = make_tensor(be, zs, s);
                auto& z = in_place.raw();
                out.add_raw("loss (in place)", be, row_divergence(be, z, teacher.raw(), inv_t, beta, weight.raw(), z));
                out.add("gradient in place of the student logits", in_place);
              },
              p);
        }
      }
    }
  }
}

template <class F>
void row_sparse_kl() {
  std::uint32_t seed = 800;
  for (const auto kind : {logits_kind::normal, logits_kind::large}) {
    for (const auto& rs : swept_rows()) {
      for (const auto k : topk_sizes(rs.vocab)) {
        for (const double inv_t : {1.0, 1.0 / 0.7}) {
          if (k > 1 && rs.vocab % 5 == 0) continue;  // the stride-5 walk below would repeat an id
          const auto s = shape::matrix(rs.rows, rs.vocab);
          const auto zs = quantized<F>(make_logits(rs.rows, rs.vocab, kind, ++seed));
          // Distinct teacher ids per row (a stride-5 walk over 0..V-1) and log-probs of a softmax over the
          // whole vocabulary, so that the K kept ones carry mass <= 1 as a teacher server sends them.
          std::vector<std::int64_t> ids;
          std::vector<double> logprobs;
          const auto teacher = seeded_uniform(static_cast<std::size_t>(rs.rows * rs.vocab), -3, 3, ++seed);
          for (std::int64_t n = 0; n < rs.rows; ++n) {
            double total = 0.0;
            for (std::int64_t v = 0; v < rs.vocab; ++v)
              total += std::exp(teacher[static_cast<std::size_t>(n * rs.vocab + v)]);
            for (std::int64_t j = 0; j < k; ++j) {
              const auto id = (n * 3 + j * 5) % rs.vocab;
              ids.push_back(id);
              logprobs.push_back(teacher[static_cast<std::size_t>(n * rs.vocab + id)] - std::log(total));
            }
          }
          const auto lp = quantized<F>(logprobs);
          auto w = quantized<F>(seeded_uniform(static_cast<std::size_t>(rs.rows), 0.0, 2.0, ++seed));
          const auto p = kind == logits_kind::large ? precision::large_logits : precision::normal;
          check_same<F>(
              "row_sparse_forward_kl K = " + std::to_string(k) + " " + describe(rs, kind, inv_t),
              [&](const auto& be, results& out) {
                const auto student = make_tensor(be, zs, s);
                const auto teacher_ids = make_index(be, ids, shape::matrix(rs.rows, k));
                const auto teacher_lp = make_tensor(be, lp, shape::matrix(rs.rows, k));
                const auto weight = make_tensor(be, w, shape::vector(rs.rows));
                auto fresh = fill(be, shape::vector(0), 0.0);
                out.add_raw("loss", be,
                            row_sparse_forward_kl(be, student.raw(), teacher_ids.raw(), teacher_lp.raw(), inv_t,
                                                  weight.raw(), fresh));
                out.add_raw("gradient into a tensor of another shape", be, fresh);
                auto in_place = make_tensor(be, zs, s);
                out.add_raw("loss (in place)", be,
                            row_sparse_forward_kl(be, in_place.raw(), teacher_ids.raw(), teacher_lp.raw(), inv_t,
                                                  weight.raw(), in_place.raw()));
                out.add("gradient in place of the student logits", in_place);
              },
              p);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Aggregation and advantages.

/// 0/1 mask [rows, cols] whose row r has a length from a cycle that includes 0, 1 and cols, plus a
/// hole inside row 3 (a multi-turn observation token).
inline std::vector<double> make_mask(std::int64_t rows, std::int64_t cols) {
  const std::vector<std::int64_t> lengths{cols, 0, 1, cols - 2, cols / 2, 3, cols};
  std::vector<double> mask(static_cast<std::size_t>(rows * cols), 0.0);
  for (std::int64_t r = 0; r < rows; ++r) {
    const auto length = std::clamp<std::int64_t>(lengths[static_cast<std::size_t>(r) % lengths.size()], 0, cols);
    for (std::int64_t t = 0; t < length; ++t) mask[static_cast<std::size_t>(r * cols + t)] = 1.0;
    if (r == 3 && length > 2) mask[static_cast<std::size_t>(r * cols + 1)] = 0.0;
  }
  return mask;
}

template <class F>
void aggregation() {
  std::uint32_t seed = 900;
  const std::vector<loss_aggregation> modes{loss_aggregation::token_mean, loss_aggregation::seq_mean_token_mean,
                                            loss_aggregation::seq_mean_token_sum,
                                            loss_aggregation::seq_mean_token_sum_norm};
  for (const auto& s : std::vector<shape>{shape::matrix(0, 4), shape::matrix(1, 1), shape::matrix(4, 1),
                                          shape::matrix(7, 11), shape::matrix(8, 16), shape::matrix(3, 5)}) {
    auto mask = make_mask(s.dims[0], s.dims[1]);
    if (s == shape::matrix(3, 5)) std::fill(mask.begin(), mask.end(), 0.0);  // an all-masked batch
    const auto per_token = quantized<F>(seeded_uniform(numel_of(s), -2, 2, ++seed));
    for (const bool count_empty : {true, false}) {
      check_same<F>("denominators and aggregation " + to_string(s) + (count_empty ? "" : ", empty rows not counted"),
                    [&](const auto& be, results& out) {
                      const auto m = make_tensor(be, mask, s);
                      const auto d = denominators_from_mask(m, static_cast<double>(s.dims[1]), count_empty);
                      out.add_metric("denominators.tokens", d.tokens);
                      out.add_metric("denominators.sequences", d.sequences);
                      out.add_metric("denominators.constant", d.constant);
                      const auto l = make_tensor(be, per_token, s);
                      for (const auto mode : modes) {
                        const auto w = aggregation_weights(m, mode, d);
                        out.add("weights " + std::string(name_of(mode)), w);
                        out.add("aggregate " + std::string(name_of(mode)), aggregate(l, w));
                      }
                    });
    }
  }
}

struct score_case {
  std::string name;
  std::vector<double> scores;
  group_layout groups;
};

inline std::vector<score_case> score_cases() {
  auto mixed = seeded_uniform(16, -1, 2, 1000);
  for (std::size_t i = 4; i < 8; ++i) mixed[i] = 0.5;  // a constant group
  mixed[8] = nan;                                      // a group with one scorable member
  mixed[10] = nan;
  mixed[11] = nan;
  mixed[13] = nan;  // and one with a hole
  std::vector<double> binary{1, 0, 0, 1, 1, 0, 1, 1, 1, 1, 1, 1};
  auto explicit_scores = seeded_uniform(9, -2, 2, 1001);
  explicit_scores[4] = nan;
  return {{"16 scores, G = 4, constant and NaN groups", mixed, group_layout::consecutive(4)},
          {"binary rewards, G = 6, one all-correct group", binary, group_layout::consecutive(6)},
          {"singleton groups, G = 1", seeded_uniform(5, -1, 1, 1002), group_layout::consecutive(1)},
          {"explicit unsorted ids with a singleton", explicit_scores,
           group_layout::from_ids({7, 3, 7, 3, 9, 3, 7, 9, 11})},
          {"every score NaN", {nan, nan, nan, nan}, group_layout::consecutive(2)},
          {"empty batch", {}, group_layout::consecutive(3)}};
}

template <tensor_backend B>
void add_advantage_result(results& out, const advantage_result<B>& r) {
  out.add("advantages", r.advantages);
  out.add_metric("zero_std_fraction", r.zero_std_fraction);
  out.add_metric("reward_mean", r.reward_mean);
  out.add_metric("reward_std", r.reward_std);
}

template <class F>
void outcome_advantages() {
  for (const auto& c : score_cases()) {
    const auto scores = quantized<F>(c.scores);
    const auto s = shape::vector(static_cast<std::int64_t>(scores.size()));
    for (const auto scale : {reward_scale::group, reward_scale::batch, reward_scale::none}) {
      for (const double epsilon : {1e-4, 0.0}) {
        grpo_advantage_options options;
        options.scale = scale;
        options.epsilon = epsilon;
        check_same<F>("grpo_advantages " + c.name + ", scale " + std::string(name_of(scale)) + ", epsilon " +
                          std::to_string(epsilon),
                      [&](const auto& be, results& out) {
                        add_advantage_result(out, grpo_advantages(make_tensor(be, scores, s), c.groups, options));
                      });
      }
    }
    for (const double floor : {1e-6, 0.0}) {
      check_same<F>("rloo_advantages " + c.name + ", std_floor " + std::to_string(floor),
                    [&](const auto& be, results& out) {
                      const auto t = make_tensor(be, scores, s);
                      add_advantage_result(out, rloo_advantages(t, c.groups, rloo_options{floor}));
                    });
    }
  }
}

template <class F>
void whitening() {
  std::uint32_t seed = 1100;
  struct whiten_case {
    std::string name;
    shape s;
    std::vector<double> mask;
  };
  auto random_mask = [&](std::size_t n) {
    auto m = seeded_uniform(n, 0, 1, ++seed);
    for (auto& x : m) x = x < 0.7 ? 1.0 : 0.0;
    return m;
  };
  std::vector<double> single(12, 0.0);
  single[5] = 1.0;
  const std::vector<whiten_case> cases{
      {"[7,11] with empty rows and a hole", shape::matrix(7, 11), make_mask(7, 11)},
      {"[9] random mask", shape::vector(9), random_mask(9)},
      {"[3,4] one masked-in value", shape::matrix(3, 4), single},
      {"[3,4] nothing masked in", shape::matrix(3, 4), std::vector<double>(12, 0.0)},
      {"[1,1]", shape::matrix(1, 1), {1.0}},
      {"[0]", shape::vector(0), {}}};
  for (const auto& c : cases) {
    const auto x = quantized<F>(seeded_uniform(numel_of(c.s), -2, 4, ++seed));
    for (const bool unbiased : {true, false}) {
      for (const bool shift_mean : {true, false}) {
        whiten_options options;
        options.unbiased = unbiased;
        options.shift_mean = shift_mean;
        check_same<F>("masked_whiten " + c.name + (unbiased ? ", unbiased" : ", population") +
                          (shift_mean ? "" : ", mean kept"),
                      [&](const auto& be, results& out) {
                        const auto t = make_tensor(be, x, c.s), m = make_tensor(be, c.mask, c.s);
                        out.add("whitened", masked_whiten(t, m, options));
                      });
      }
    }
  }
}

template <class F>
void token_level_advantages() {
  const std::int64_t rows = 7, cols = 11;
  const auto s = shape::matrix(rows, cols);
  const auto mask = make_mask(rows, cols);
  const auto rewards = quantized<F>(seeded_uniform(numel_of(s), -1, 1, 1200));
  const auto values = quantized<F>(seeded_uniform(numel_of(s), -1, 1, 1201));
  for (const double gamma : {1.0, 0.9, 0.0}) {
    for (const bool unbiased : {true, false}) {
      whiten_options options;
      options.unbiased = unbiased;
      check_same<F>("reinforce_pp_advantages gamma " + std::to_string(gamma) + (unbiased ? "" : ", population"),
                    [&](const auto& be, results& out) {
                      out.add("advantages", reinforce_pp_advantages(make_tensor(be, rewards, s),
                                                                    make_tensor(be, mask, s), gamma, options));
                    });
    }
  }
  auto scores = seeded_uniform(static_cast<std::size_t>(rows), -1, 2, 1202);
  scores[2] = nan;
  for (const auto& groups : {group_layout::from_ids({0, 0, 1, 1, 2, 2, 3}), group_layout::consecutive(7),
                             group_layout::consecutive(1)}) {
    const auto q = quantized<F>(scores);
    check_same<F>("reinforce_pp_baseline_advantages, " + std::to_string(groups.group_ids.size()) + " ids, G = " +
                      std::to_string(groups.group_size),
                  [&](const auto& be, results& out) {
                    const auto t = make_tensor(be, q, shape::vector(rows)), m = make_tensor(be, mask, s);
                    out.add("advantages", reinforce_pp_baseline_advantages(t, groups, m));
                  });
  }
  for (const auto& rates : std::vector<std::pair<double, double>>{{1.0, 1.0}, {0.99, 0.95}, {0.5, 0.0}}) {
    const double gamma = rates.first, lambda = rates.second;
    for (const bool whiten : {true, false}) {
      check_same<F>("gae_advantages gamma " + std::to_string(gamma) + ", lambda " + std::to_string(lambda) +
                        (whiten ? ", whitened" : ""),
                    [&](const auto& be, results& out) {
                      const auto r = gae_advantages(make_tensor(be, rewards, s), make_tensor(be, values, s),
                                                    make_tensor(be, mask, s), gamma, lambda, whiten);
                      out.add("advantages", r.advantages);
                      out.add("returns", r.returns);
                    });
    }
  }
}

template <class F>
void multi_reward() {
  auto three = seeded_uniform(8 * 3, -1, 2, 1300);
  three[4] = nan;                               // one function cannot score row 1
  three[9] = three[10] = three[11] = nan;       // no function can score row 3
  for (std::size_t i = 12; i < 15; ++i) three[i] = 1.0;  // column values that make group 1 partly constant
  const struct {
    std::string name;
    std::int64_t functions;
    std::vector<double> rewards, weights;
    group_layout groups;
  } cases[] = {{"K = 3, G = 4", 3, three, {1.0, -0.5, 2.0}, group_layout::consecutive(4)},
               {"K = 3, explicit ids", 3, three, {0.5, 1.0, 1.0}, group_layout::from_ids({5, 1, 5, 1, 5, 1, 9, 9})},
               {"K = 1, G = 2", 1, seeded_uniform(6, -1, 1, 1301), {1.5}, group_layout::consecutive(2)}};
  for (const auto& c : cases) {
    const auto rewards = quantized<F>(c.rewards);
    const auto s = shape::matrix(static_cast<std::int64_t>(rewards.size()) / c.functions, c.functions);
    for (const auto combination : {reward_combination::sum_then_normalize, reward_combination::normalize_then_sum}) {
      for (const auto scale : {reward_scale::group, reward_scale::batch, reward_scale::none}) {
        grpo_advantage_options options;
        options.scale = scale;
        check_same<F>("multi_reward_advantages " + c.name + ", " + std::string(name_of(combination)) + ", scale " +
                          std::string(name_of(scale)),
                      [&](const auto& be, results& out) {
                        add_advantage_result(out, multi_reward_advantages(make_tensor(be, rewards, s), c.weights,
                                                                          c.groups, combination, options));
                      });
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Policy and value losses.

struct policy_batch {
  std::int64_t rows = 0, cols = 0;
  std::vector<double> logp, old, ref, rollout, entropy, adv_rows, adv_tokens, mask;
  shape dims() const { return shape::matrix(rows, cols); }
};

/// log-ratios logp - old spread over [-1.5, 1.5] (clipped on both sides, past delta 1.5 and the
/// dual clip 3), kept 1e-3 away from every kink the cases use, per token and per row mean (the
/// sequence ratio); extreme: a share of the log-ratios (policy, KL and IS) at +-100.
inline policy_batch make_policy_batch(std::int64_t rows, std::int64_t cols, std::uint32_t seed, bool extreme) {
  policy_batch b;
  b.rows = rows;
  b.cols = cols;
  const auto n = static_cast<std::size_t>(rows * cols);
  const std::initializer_list<double> ratio_kinks{std::log(0.8), std::log(1.2), std::log(1.28), std::log(1.5),
                                                  std::log(3.0)};
  b.mask = make_mask(rows, cols);
  b.logp = seeded_uniform(n, -4.0, -0.05, seed);
  auto log_ratio = seeded_uniform(n, -1.5, 1.5, seed + 1);
  for (auto& l : log_ratio) l = away_from(l, ratio_kinks);
  for (std::int64_t r = 0; r < rows; ++r) {
    double total = 0.0, length = 0.0;
    for (std::int64_t t = 0; t < cols; ++t) {
      const auto i = static_cast<std::size_t>(r * cols + t);
      total += b.mask[i] * log_ratio[i];
      length += b.mask[i];
    }
    if (length == 0.0) continue;
    const double mean = total / length, shift = away_from(mean, ratio_kinks, 2e-3) - mean;
    for (std::int64_t t = 0; t < cols; ++t) log_ratio[static_cast<std::size_t>(r * cols + t)] += shift;
  }
  auto is_log_ratio = seeded_uniform(n, -1.6, 1.6, seed + 2);
  for (auto& l : is_log_ratio) l = away_from(l, {std::log(3.0)});
  const auto kl_offset = seeded_uniform(n, -1.0, 1.0, seed + 3);
  if (extreme) {
    for (std::size_t i = 0; i < n; ++i) {
      if (i % 4 == 0) log_ratio[i] = i % 8 ? 100.0 : -100.0;
      if (i % 5 == 1) is_log_ratio[i] = i % 2 ? 100.0 : -100.0;
    }
  }
  b.old.resize(n);
  b.ref.resize(n);
  b.rollout.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    b.old[i] = b.logp[i] - log_ratio[i];
    b.ref[i] = b.logp[i] + (extreme && i % 3 == 2 ? (i % 2 ? 100.0 : -100.0) : kl_offset[i]);
    b.rollout[i] = b.old[i] - is_log_ratio[i];
  }
  b.entropy = seeded_uniform(n, 0.0, 3.0, seed + 4);
  b.adv_rows = seeded_uniform(static_cast<std::size_t>(rows), -2.0, 2.0, seed + 5);
  if (rows > 4) b.adv_rows[4] = 0.0;
  b.adv_tokens = seeded_uniform(n, -2.0, 2.0, seed + 6);
  return b;
}

template <class F>
policy_batch quantized_batch(policy_batch b) {
  for (auto* v : {&b.logp, &b.old, &b.ref, &b.rollout, &b.entropy, &b.adv_rows, &b.adv_tokens})
    *v = quantized<F>(std::move(*v));
  return b;
}

inline void add_metrics(results& out, const policy_loss_metrics& m) {
  out.add_metric("metrics.pg_loss", m.pg_loss);
  out.add_metric("metrics.kl_mean", m.kl_mean);
  out.add_metric("metrics.entropy_mean", m.entropy_mean);
  out.add_metric("metrics.clip_fraction_low", m.clip_fraction_low);
  out.add_metric("metrics.clip_fraction_high", m.clip_fraction_high);
  out.add_metric("metrics.clip_fraction_dual", m.clip_fraction_dual);
  out.add_metric("metrics.ratio_mean", m.ratio_mean);
  out.add_metric("metrics.is_weight_mean", m.is_weight_mean);
  out.add_metric("metrics.is_masked_fraction", m.is_masked_fraction);
  out.add_metric("metrics.is_truncated_fraction", m.is_truncated_fraction);
}

/// Which optional inputs a policy-loss case passes.
struct policy_inputs_used {
  bool old = true, ref = true, rollout = false, entropy = false, token_advantages = false;
};

template <class F>
void check_policy_loss(const std::string& label, const policy_batch& batch, const policy_loss_options& options,
                       const policy_inputs_used& used) {
  check_same<F>(label, [&](const auto& be, results& out) {
    using B = std::remove_cvref_t<decltype(be)>;
    const auto s = batch.dims();
    const auto mask = make_tensor(be, batch.mask, s);
    const auto advantages = used.token_advantages ? make_tensor(be, batch.adv_tokens, s)
                                                  : make_tensor(be, batch.adv_rows, shape::vector(batch.rows));
    policy_loss_inputs<B> in{.logprobs = make_tensor(be, batch.logp, s), .advantages = advantages, .mask = mask};
    if (used.old) in.old_logprobs = make_tensor(be, batch.old, s);
    if (used.ref) in.ref_logprobs = make_tensor(be, batch.ref, s);
    if (used.rollout) in.rollout_logprobs = make_tensor(be, batch.rollout, s);
    if (used.entropy) in.entropy = make_tensor(be, batch.entropy, s);
    const auto d = denominators_from_mask(mask, static_cast<double>(batch.cols));
    const auto r = policy_loss(in, options, d);
    out.add("loss", r.loss);
    out.add("per_token_loss", r.per_token_loss);
    out.add("grad_logprobs", r.grad_logprobs);
    out.add_metric("grad_entropy present", r.grad_entropy ? 1.0 : 0.0);
    if (r.grad_entropy) out.add("grad_entropy", *r.grad_entropy);
    add_metrics(out, r.metrics);
  });
}

inline const std::vector<loss_aggregation>& aggregation_modes() {
  static const std::vector<loss_aggregation> modes{loss_aggregation::token_mean, loss_aggregation::seq_mean_token_mean,
                                                   loss_aggregation::seq_mean_token_sum,
                                                   loss_aggregation::seq_mean_token_sum_norm};
  return modes;
}

template <class F>
void policy_loss_grid() {
  const auto batch = quantized_batch<F>(make_policy_batch(7, 11, 1400, false));
  for (const auto mode : aggregation_modes()) {
    for (const auto level : {ratio_level::token, ratio_level::sequence}) {
      for (const auto kl : {kl_estimator::k1, kl_estimator::k2, kl_estimator::k3}) {
        policy_loss_options options;
        options.aggregation = mode;
        options.level = level;
        options.kl = kl;
        options.beta = 0.04;
        check_policy_loss<F>("policy_loss " + std::string(name_of(mode)) + ", " + std::string(name_of(level)) +
                                 " ratio, " + std::string(name_of(kl)) + ", beta 0.04",
                             batch, options, {});
      }
    }
  }
}

template <class F>
void policy_loss_variants() {
  const auto batch = quantized_batch<F>(make_policy_batch(7, 11, 1500, false));
  struct variant {
    std::string name;
    policy_loss_options options;
    policy_inputs_used used;
  };
  std::vector<variant> variants;
  const auto add = [&](std::string name, auto&& set, policy_inputs_used used) {
    policy_loss_options o;
    set(o);
    variants.push_back({std::move(name), o, used});
  };
  add("clip-higher and dual clip 3", [](auto& o) { o.epsilon_high = 0.28; o.dual_clip = 3.0; }, {.ref = false});
  add("delta 1.5", [](auto& o) { o.epsilon_high = 0.28; o.delta = 1.5; }, {.ref = false});
  add("entropy bonus 0.01", [](auto& o) { o.entropy_coef = 0.01; }, {.ref = false, .entropy = true});
  add("entropy reported only", [](auto&) {}, {.ref = false, .entropy = true});
  add("no old_logprobs (ratio 1)", [](auto& o) { o.beta = 0.1; }, {.old = false});
  add("advantages [B,T]", [](auto& o) { o.beta = 0.1; o.kl = kl_estimator::k2; }, {.token_advantages = true});
  for (const auto is_level : {ratio_level::token, ratio_level::sequence}) {
    for (const auto mode : {is_correction_mode::truncate, is_correction_mode::mask}) {
      add("IS correction " + std::string(name_of(mode)) + " at " + std::string(name_of(is_level)) + " level",
          [&](auto& o) {
            o.is_level = is_level;
            o.is_mode = mode;
          },
          {.ref = false, .rollout = true});
    }
  }
  add("everything at once",
      [](auto& o) {
        o.epsilon_low = 0.2;
        o.epsilon_high = 0.28;
        o.delta = 1.5;
        o.dual_clip = 3.0;
        o.beta = 0.05;
        o.entropy_coef = -0.02;
        o.is_mode = is_correction_mode::mask;
        o.aggregation = loss_aggregation::seq_mean_token_sum_norm;
      },
      {.rollout = true, .entropy = true, .token_advantages = true});
  for (const auto& v : variants) {
    for (const auto level : {ratio_level::token, ratio_level::sequence}) {
      for (const auto mode : {loss_aggregation::token_mean, loss_aggregation::seq_mean_token_mean}) {
        auto options = v.options;
        options.level = level;
        if (v.name != "everything at once") options.aggregation = mode;
        check_policy_loss<F>("policy_loss " + v.name + ", " + std::string(name_of(level)) + " ratio, " +
                                 std::string(name_of(options.aggregation)),
                             batch, options, v.used);
      }
    }
  }
}

template <class F>
void policy_loss_edges() {
  const auto extreme = quantized_batch<F>(make_policy_batch(7, 11, 1600, true));
  for (const auto level : {ratio_level::token, ratio_level::sequence}) {
    for (const auto kl : {kl_estimator::k1, kl_estimator::k2, kl_estimator::k3}) {
      for (const auto is_level : {ratio_level::token, ratio_level::sequence}) {
        policy_loss_options options;
        options.level = level;
        options.kl = kl;
        options.beta = 0.04;
        options.is_level = is_level;
        options.dual_clip = 3.0;
        check_policy_loss<F>("policy_loss log-ratios of +-100, " + std::string(name_of(level)) + " ratio, " +
                                 std::string(name_of(kl)) + ", IS at " + std::string(name_of(is_level)) + " level",
                             extreme, options, {.rollout = true});
      }
    }
  }
  auto all_masked = quantized_batch<F>(make_policy_batch(4, 6, 1601, false));
  std::fill(all_masked.mask.begin(), all_masked.mask.end(), 0.0);
  const auto empty = quantized_batch<F>(make_policy_batch(0, 5, 1602, false));
  const auto single = quantized_batch<F>(make_policy_batch(1, 1, 1603, false));
  for (const auto mode : aggregation_modes()) {
    for (const auto level : {ratio_level::token, ratio_level::sequence}) {
      policy_loss_options options;
      options.aggregation = mode;
      options.level = level;
      options.beta = 0.04;
      options.entropy_coef = 0.01;
      const std::string suffix = ", " + std::string(name_of(mode)) + ", " + std::string(name_of(level)) + " ratio";
      const policy_inputs_used used{.rollout = true, .entropy = true};
      check_policy_loss<F>("policy_loss all-masked batch" + suffix, all_masked, options, used);
      check_policy_loss<F>("policy_loss empty batch [0,5]" + suffix, empty, options, used);
      check_policy_loss<F>("policy_loss single token [1,1]" + suffix, single, options, used);
    }
  }
}

template <class F>
void value_losses() {
  const std::int64_t rows = 7, cols = 11;
  const auto s = shape::matrix(rows, cols);
  const auto n = numel_of(s);
  const auto values = seeded_uniform(n, -2, 2, 1700);
  auto offset = seeded_uniform(n, -1, 1, 1701);
  for (auto& x : offset) x = away_from(x, {-0.5, 0.5});  // v - v_old at the clip range's edges
  std::vector<double> old(n);
  for (std::size_t i = 0; i < n; ++i) old[i] = values[i] - offset[i];
  const auto v = quantized<F>(values), o = quantized<F>(old), ret = quantized<F>(seeded_uniform(n, -2, 2, 1702));
  const auto mask = make_mask(rows, cols);
  for (const auto mode : aggregation_modes()) {
    for (const auto clip : std::vector<std::optional<double>>{0.5, std::nullopt, 0.0}) {
      value_loss_options options;
      options.clip_range = clip;
      options.aggregation = mode;
      check_same<F>("value_loss " + std::string(name_of(mode)) + ", clip " + (clip ? std::to_string(*clip) : "none"),
                    [&](const auto& be, results& out) {
                      const auto m = make_tensor(be, mask, s);
                      const auto d = denominators_from_mask(m, static_cast<double>(cols));
                      const auto tv = make_tensor(be, v, s), to = make_tensor(be, o, s), tr = make_tensor(be, ret, s);
                      const auto r = value_loss(tv, to, tr, m, options, d);
                      out.add("loss", r.loss);
                      out.add("grad_values", r.grad_values);
                      out.add_metric("clip_fraction", r.clip_fraction);
                    });
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Logits-level algorithms.

template <class F>
void logprobs_from_logits() {
  std::uint32_t seed = 1800;
  for (const auto kind : {logits_kind::normal, logits_kind::large}) {
    for (const auto& rs : swept_rows()) {
      for (const double temperature : {1.0, 0.7}) {
        const auto s = shape::matrix(rs.rows, rs.vocab);
        const auto z = quantized<F>(make_logits(rs.rows, rs.vocab, kind, ++seed));
        const auto targets = random_ids(static_cast<std::size_t>(rs.rows), rs.vocab, ++seed);
        const auto d_logprobs = quantized<F>(seeded_uniform(static_cast<std::size_t>(rs.rows), -1, 1, ++seed));
        const auto d_entropy = quantized<F>(seeded_uniform(static_cast<std::size_t>(rs.rows), -1, 1, ++seed));
        check_same<F>(
            "token_logprobs and token_logprobs_backward " + describe(rs, kind, 1.0 / temperature),
            [&](const auto& be, results& out) {
              const auto rows = shape::vector(rs.rows);
              auto logits = make_tensor(be, z, s);
              const auto ids = make_index(be, targets, rows);
              const auto forward = token_logprobs(logits, ids, temperature);
              out.add("logprobs", forward.logprobs);
              out.add("entropy", forward.entropy);
              out.add("lse", forward.lse);
              const auto gl = make_tensor(be, d_logprobs, rows), ge = make_tensor(be, d_entropy, rows);
              auto grad = fill(be, shape::vector(0), 0.0);
              token_logprobs_backward(logits, ids, temperature, forward, gl, ge, grad);
              out.add_raw("gradient", be, grad);
              token_logprobs_backward(logits, ids, temperature, forward, gl, ge, logits.raw());
              out.add("gradient in place of the logits", logits);
            },
            kind == logits_kind::large ? precision::large_logits : precision::normal);
      }
    }
  }
}

template <tensor_backend B>
void add_distillation_result(results& out, const B& be, const distillation_result<B>& r) {
  out.add("loss", r.loss);
  out.add("per_token_loss", r.per_token_loss);
  out.add_raw("grad_logits", be, r.grad_logits);
  out.add_metric("token_count", r.token_count);
}

/// A row mask [rows] with a few zeros (all zeros when `none`).
inline std::vector<double> row_mask(std::int64_t rows, bool none) {
  std::vector<double> m(static_cast<std::size_t>(rows), none ? 0.0 : 1.0);
  for (std::size_t i = 1; i < m.size(); i += 3) m[i] = 0.0;
  return m;
}

inline loss_denominators token_denominators(const std::vector<double>& mask) {
  loss_denominators d;
  d.tokens = std::max(1.0, static_cast<double>(std::count(mask.begin(), mask.end(), 1.0)));
  return d;
}

template <class F>
void distillation_losses() {
  std::uint32_t seed = 1900;
  struct distill_case {
    row_shape rs;
    logits_kind kind;
    bool all_masked;
  };
  const std::vector<distill_case> cases{{{0, 4}, logits_kind::normal, false}, {{1, 1}, logits_kind::normal, false},
                                        {{6, 7}, logits_kind::normal, false}, {{8, 64}, logits_kind::normal, false},
                                        {{5, 7}, logits_kind::large, false},  {{4, 7}, logits_kind::normal, true}};
  for (const auto& c : cases) {
    const auto s = shape::matrix(c.rs.rows, c.rs.vocab);
    const auto rows = shape::vector(c.rs.rows);
    const auto student = quantized<F>(make_logits(c.rs.rows, c.rs.vocab, c.kind, ++seed));
    auto teacher_host = make_logits(c.rs.rows, c.rs.vocab, c.kind, ++seed);
    if (c.kind == logits_kind::large)
      for (auto& x : teacher_host) x = -x;
    const auto teacher = quantized<F>(std::move(teacher_host));
    const auto mask = row_mask(c.rs.rows, c.all_masked);
    const auto d = token_denominators(mask);
    const auto p = c.kind == logits_kind::large ? precision::large_logits : precision::normal;
    const std::string shape_label = describe(c.rs, c.kind, 1.0) + (c.all_masked ? ", all masked" : "");
    for (const double temperature : {1.0, 0.7}) {
      for (const double beta : {0.0, 0.5, 1.0}) {
        distillation_options options;
        options.temperature = temperature;
        options.beta = beta;
        check_same<F>(
            "distillation_loss beta " + std::to_string(beta) + ", T " + std::to_string(temperature) + ", " +
                shape_label,
            [&](const auto& be, results& out) {
              add_distillation_result(out, be,
                                      distillation_loss(make_tensor(be, student, s), make_tensor(be, teacher, s),
                                                        make_tensor(be, mask, rows), options, d));
            },
            p);
      }
      for (const bool renormalize : {false, true}) {
        for (const auto k : topk_sizes(c.rs.vocab)) {
          // The teacher's top-k of its own log-softmax, with -inf (probability 0) at one entry of
          // every other row when k > 1.
          std::vector<std::int64_t> ids;
          std::vector<double> logprobs;
          for (std::int64_t n = 0; n < c.rs.rows; ++n) {
            const auto row = teacher.begin() + n * c.rs.vocab;
            std::vector<std::int64_t> order(static_cast<std::size_t>(c.rs.vocab));
            for (std::int64_t v = 0; v < c.rs.vocab; ++v) order[static_cast<std::size_t>(v)] = v;
            std::stable_sort(order.begin(), order.end(), [&](auto x, auto y) { return row[x] > row[y]; });
            const double hi = row[order[0]];
            double total = 0.0;
            for (std::int64_t v = 0; v < c.rs.vocab; ++v) total += std::exp((row[v] - hi) / temperature);
            for (std::int64_t j = 0; j < k; ++j) {
              const auto id = order[static_cast<std::size_t>(j)];
              ids.push_back(id);
              logprobs.push_back(k > 1 && j == k - 1 && n % 2 ? -inf : (row[id] - hi) / temperature - std::log(total));
            }
          }
          const auto lp = quantized<F>(logprobs);
          distillation_options options;
          options.temperature = temperature;
          check_same<F>(
              "topk_distillation_loss K = " + std::to_string(k) + (renormalize ? ", renormalized" : "") + ", T " +
                  std::to_string(temperature) + ", " + shape_label,
              [&](const auto& be, results& out) {
                const auto teacher_ids = make_index(be, ids, shape::matrix(c.rs.rows, k));
                const auto teacher_lp = make_tensor(be, lp, shape::matrix(c.rs.rows, k));
                add_distillation_result(out, be,
                                        topk_distillation_loss(make_tensor(be, student, s), teacher_ids, teacher_lp,
                                                               make_tensor(be, mask, rows), options, d, renormalize));
              },
              p);
        }
      }
      // Masked rows carry Hugging Face's ignore index, which must not be read.
      auto targets = random_ids(static_cast<std::size_t>(c.rs.rows), c.rs.vocab, ++seed);
      for (std::size_t n = 0; n < targets.size(); ++n)
        if (mask[n] == 0.0) targets[n] = -100;
      check_same<F>(
          "sft_loss T " + std::to_string(temperature) + ", " + shape_label,
          [&](const auto& be, results& out) {
            add_distillation_result(out, be,
                                    sft_loss(make_tensor(be, student, s), make_index(be, targets, rows),
                                             make_tensor(be, mask, rows), d, temperature));
          },
          p);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Validation runs on the backend (downloads, and for logits the row statistics at 1/T = 0), so a
// backend must make it throw exactly as the reference does.

template <class F>
void validation_errors() {
  const auto s = shape::matrix(2, 3);
  const std::vector<double> ok{-1.0, -0.5, -2.0, -0.25, -1.5, -3.0};
  const std::vector<double> mask{1, 1, 0, 1, 1, 1};
  const auto with = [](std::vector<double> v, std::size_t i, double x) {
    v[i] = x;
    return v;
  };
  const auto run_policy = [&](const std::vector<double>& logp, const std::vector<double>& m,
                              const std::vector<double>& adv) {
    return [=](const auto& be, results&) {
      using B = std::remove_cvref_t<decltype(be)>;
      const auto lt = make_tensor(be, logp, s), at = make_tensor(be, adv, shape::vector(2)), mt = make_tensor(be, m, s);
      policy_loss_inputs<B> in{.logprobs = lt, .advantages = at, .mask = mt};
      (void)policy_loss(in, policy_loss_options{}, loss_denominators{});
    };
  };
  const std::vector<double> adv{1.0, -1.0};
  check_same_error<F>("policy_loss with NaN in logprobs", "logprobs", run_policy(with(ok, 3, nan), mask, adv));
  check_same_error<F>("policy_loss with -Inf in logprobs", "logprobs", run_policy(with(ok, 5, -inf), mask, adv));
  check_same_error<F>("policy_loss with a mask of 0.5", "mask", run_policy(ok, with(mask, 4, 0.5), adv));
  check_same_error<F>("policy_loss with Inf advantages", "advantages", run_policy(ok, mask, {inf, -1.0}));
  check_same_error<F>("grpo_advantages with Inf scores", "scores", [](const auto& be, results&) {
    (void)grpo_advantages(make_tensor(be, std::vector<double>{1.0, inf, 0.0, 0.5}, shape::vector(4)),
                          group_layout::consecutive(2));
  });
  check_same_error<F>("masked_whiten with NaN in x", "x", [&](const auto& be, results&) {
    (void)masked_whiten(make_tensor(be, with(ok, 2, nan), s), make_tensor(be, mask, s));
  });
  check_same_error<F>("value_loss with a mask of 2", "mask", [&](const auto& be, results&) {
    const auto v = make_tensor(be, ok, s);
    (void)value_loss(v, v, v, make_tensor(be, with(mask, 0, 2.0), s), value_loss_options{}, loss_denominators{});
  });
  if constexpr (has_logits<F>) {
    const auto logits = quantized<F>(seeded_uniform(12, -2, 2, 2000));
    const auto ids = std::vector<std::int64_t>{0, 1, 2};
    for (const double bad : {nan, inf, -inf}) {
      const auto z = with(logits, 6, bad);
      check_same_error<F>("token_logprobs with " + std::to_string(bad) + " in the logits", "logits",
                          [&](const auto& be, results&) {
                            (void)token_logprobs(make_tensor(be, z, shape::matrix(3, 4)),
                                                 make_index(be, ids, shape::vector(3)));
                          });
      check_same_error<F>("distillation_loss with " + std::to_string(bad) + " in the teacher logits", "teacher_logits",
                          [&](const auto& be, results&) {
                            (void)distillation_loss(make_tensor(be, logits, shape::matrix(3, 4)),
                                                    make_tensor(be, z, shape::matrix(3, 4)),
                                                    make_tensor(be, std::vector<double>{1, 1, 1}, shape::vector(3)),
                                                    distillation_options{}, loss_denominators{});
                          });
      check_same_error<F>("sft_loss with " + std::to_string(bad) + " in the logits", "logits",
                          [&](const auto& be, results&) {
                            const auto targets = make_index(be, ids, shape::vector(3));
                            (void)sft_loss(make_tensor(be, z, shape::matrix(3, 4)), targets,
                                           make_tensor(be, std::vector<double>{1, 0, 1}, shape::vector(3)),
                                           loss_denominators{});
                          });
    }
    check_same_error<F>("topk_distillation_loss with a positive teacher log-prob", "teacher_logprobs",
                        [&](const auto& be, results&) {
                          (void)topk_distillation_loss(
                              make_tensor(be, logits, shape::matrix(3, 4)),
                              make_index(be, std::vector<std::int64_t>{0, 1, 2}, shape::matrix(3, 1)),
                              make_tensor(be, std::vector<double>{-0.5, 0.25, -1.0}, shape::matrix(3, 1)),
                              make_tensor(be, std::vector<double>{1, 1, 1}, shape::vector(3)), distillation_options{},
                              loss_denominators{});
                        });
  }
}

template <class F>
void skip_without_logits() {
  SUCCEED(F::name << " does not model grpo::logits_backend: its row primitives are not tested");
}

}  // namespace grpo::conformance

// ---------------------------------------------------------------------------------------------
// The test cases, one per area, each instantiated for every fixture of conformance_fixtures.

#define GRPO_CONFORMANCE_CASE(title, tags, function)                              \
  TEMPLATE_LIST_TEST_CASE("conformance: " title, "[conformance]" tags, conformance_fixtures) { \
    INFO("backend under test: " << TestType::name);                              \
    grpo::conformance::function<TestType>();                                      \
  }

#define GRPO_CONFORMANCE_LOGITS_CASE(title, tags, function)                       \
  TEMPLATE_LIST_TEST_CASE("conformance: " title, "[conformance][logits]" tags, conformance_fixtures) { \
    INFO("backend under test: " << TestType::name);                              \
    if constexpr (grpo::conformance::has_logits<TestType>)                        \
      grpo::conformance::function<TestType>();                                    \
    else                                                                          \
      grpo::conformance::skip_without_logits<TestType>();                         \
  }

GRPO_CONFORMANCE_CASE("upload, download, fill, upload_index and reshape", "[primitives]", round_trips)
GRPO_CONFORMANCE_CASE("unary operations", "[primitives]", unary_ops)
GRPO_CONFORMANCE_CASE("binary operations and their scalar forms", "[primitives]", binary_ops)
GRPO_CONFORMANCE_CASE("select", "[primitives]", select_op)
GRPO_CONFORMANCE_CASE("sum, sum_rows and sum_segments", "[primitives]", reductions)
GRPO_CONFORMANCE_CASE("gather, expand_rows, shift_left and reverse_scan_rows", "[primitives]",
                      gather_expand_shift_scan)
GRPO_CONFORMANCE_LOGITS_CASE("row_softmax_stats and row_softmax_backward", "[primitives]", row_stats_and_backward)
GRPO_CONFORMANCE_LOGITS_CASE("row_divergence", "[primitives]", row_divergences)
GRPO_CONFORMANCE_LOGITS_CASE("row_sparse_forward_kl", "[primitives]", row_sparse_kl)
GRPO_CONFORMANCE_CASE("loss denominators and aggregation", "[aggregation]", aggregation)
GRPO_CONFORMANCE_CASE("grpo_advantages and rloo_advantages", "[advantages]", outcome_advantages)
GRPO_CONFORMANCE_CASE("masked_whiten", "[advantages]", whitening)
GRPO_CONFORMANCE_CASE("reinforce_pp, reinforce_pp_baseline and gae advantages", "[advantages]",
                      token_level_advantages)
GRPO_CONFORMANCE_CASE("multi_reward_advantages", "[advantages]", multi_reward)
GRPO_CONFORMANCE_CASE("policy_loss over aggregation x ratio level x KL estimator", "[policy_loss]", policy_loss_grid)
GRPO_CONFORMANCE_CASE("policy_loss variants: dual clip, delta, entropy, IS correction", "[policy_loss]",
                      policy_loss_variants)
GRPO_CONFORMANCE_CASE("policy_loss edge cases: log-ratios of +-100, all-masked, empty, one token", "[policy_loss]",
                      policy_loss_edges)
GRPO_CONFORMANCE_CASE("value_loss", "[value_loss]", value_losses)
GRPO_CONFORMANCE_LOGITS_CASE("token_logprobs and token_logprobs_backward", "", logprobs_from_logits)
GRPO_CONFORMANCE_LOGITS_CASE("distillation_loss, topk_distillation_loss and sft_loss", "[distillation]",
                             distillation_losses)
GRPO_CONFORMANCE_CASE("validation errors are thrown alike", "[errors]", validation_errors)

#undef GRPO_CONFORMANCE_CASE
#undef GRPO_CONFORMANCE_LOGITS_CASE
