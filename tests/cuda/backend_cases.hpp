// SPDX-License-Identifier: Apache-2.0
// grpo::cccl::backend's unit tests, included by one translation unit per Thrust device system (CPP and OMP with
// the host compiler, CUDA with nvcc): every operation against reference_backend<T> on the same seeded inputs,
// shapes including empty and one-element ones, in-place row primitives, the pool's reuse, and error messages
// (shape errors at once, indices out of range at the next download). Not for the fused kernels' bf16 paths,
// which gpu_test.cu covers.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "grpo/cccl/backend.hpp"
#include "grpo/logits.hpp"
#include "grpo/reference_backend.hpp"
#include "grpo/tensor.hpp"
#include "grpo/validate.hpp"
#include "test_support.hpp"

namespace cccl_test {

using grpo::index_tensor;
using grpo::shape;
using grpo::tensor;
template <class T>
using dev = grpo::cccl::backend<T>;
template <class T>
using host = grpo::reference_backend<T>;

/// |got - want| <= atol + rtol |want|, element by element.
struct tolerance {
  double atol;
  double rtol;
};

/// Elementwise operations, gathers and sums. CPP and OMP evaluate the reference's double expressions with
/// the same libm and sum in the same order (rows up to 16384 elements), so the bits agree: tolerance 0.
/// CUDA's device libm is within 2 ulp of the host's in double; after rounding to float that can move a
/// result by one float ulp (1.2e-7 relative), and device sums of rows run in another order.
template <class T>
tolerance ops_tolerance() {
#if GRPO_CCCL_CUDA
  return std::is_same_v<T, float> ? tolerance{1e-30, 3e-7} : tolerance{1e-300, 1e-14};
#else
  return {0.0, 0.0};
#endif
}

/// reverse_scan_rows: CPP scans in order (bits agree); a parallel scan (OMP may, CUDA does) regroups the
/// compositions in double, which can flip a float rounding or move a double result near 0 by about 1e-16
/// times the size of its terms.
template <class T>
tolerance scan_tolerance() {
#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_CPP
  return {0.0, 0.0};
#else
  return std::is_same_v<T, float> ? tolerance{1e-6, 3e-7} : tolerance{1e-13, 1e-14};
#endif
}

/// Row-wise softmax primitives. For double, CPP and OMP run the reference's loops (bits agree); for float the
/// softmax statistics and backward run host_rows.hpp's vectorized fp32 kernels (fp32 exp within 1e-7, sums over
/// fp32 lanes merged in double: about 3e-7 relative on lse, log-probs and gradients, 1e-6 absolute on entropies
/// near 0), the divergences still the reference's loops. The fused CUDA kernels accumulate in fp32 for float (a
/// vocabulary of a few hundred entries and logits up to 1e4 in magnitude: about 1e-6 relative on lse, log-probs
/// and gradients, 1e-5 on entropies near 0) and in fp64, in another order and with the one-pass entropy, for double.
template <class T>
tolerance rows_tolerance() {
#if GRPO_CCCL_CUDA
  return std::is_same_v<T, float> ? tolerance{2e-5, 2e-5} : tolerance{1e-12, 1e-11};
#else
  return std::is_same_v<T, float> ? tolerance{2e-6, 2e-6} : tolerance{0.0, 0.0};
#endif
}

/// Element by element: NaN matches only NaN, an infinity only itself, anything else within the tolerance.
/// Reports the first five mismatches.
inline void require_matches(const std::vector<double>& got, const std::vector<double>& want, tolerance t) {
  REQUIRE(got.size() == want.size());
  int mismatches = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const bool ok = std::isnan(want[i])   ? std::isnan(got[i])
                    : std::isinf(want[i]) ? got[i] == want[i]
                                          : std::fabs(got[i] - want[i]) <= t.atol + t.rtol * std::fabs(want[i]);
    if (!ok && mismatches++ < 5) {
      INFO("element " << i << ": got " << got[i] << ", want " << want[i]);
      CHECK(ok);
    }
  }
  REQUIRE(mismatches == 0);
}

/// The same values on both backends.
template <class T>
struct paired {
  tensor<dev<T>> d;
  tensor<host<T>> h;
};

template <class T>
paired<T> both(const dev<T>& b, const std::vector<double>& values, shape s) {
  return {grpo::make_tensor(b, values, s), grpo::make_tensor(host<T>{}, values, s)};
}

template <class T>
std::pair<index_tensor<dev<T>>, index_tensor<host<T>>> both_ids(const dev<T>& b, const std::vector<std::int64_t>& v,
                                                                shape s) {
  return {grpo::make_index(b, v, s), grpo::make_index(host<T>{}, v, s)};
}

inline std::vector<std::int64_t> random_ids(std::size_t n, std::int64_t bound, std::uint32_t seed) {
  const auto u = grpo::testing::uniform(n, 0.0, static_cast<double>(bound), seed);
  std::vector<std::int64_t> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::int64_t>(u[i]);
  return out;
}

/// Shapes every elementwise test sweeps: scalar, empty, one element, odd sizes, a long row.
inline std::vector<shape> swept_shapes() {
  return {shape::scalar(),     shape::vector(0),  shape::matrix(0, 3), shape::matrix(3, 0),   shape::vector(1),
          shape::matrix(1, 1), shape::vector(17), shape::matrix(4, 7), shape::matrix(37, 129)};
}

}  // namespace cccl_test

TEMPLATE_TEST_CASE("cccl backend: every unary operation matches the reference backend", "[cccl][ops]", float, double) {
  using namespace cccl_test;
  using grpo::unary_op;
  const dev<TestType> b;
  for (const auto s : swept_shapes()) {
    const auto n = static_cast<std::size_t>(s.numel());
    // Positive inputs for log, sqrt and friends; signed ones (with exact zeros) for the rest.
    const auto positive = both<TestType>(b, grpo::testing::uniform(n, 0.01, 4.0, 1), s);
    auto signed_values = grpo::testing::uniform(n, -3.0, 3.0, 2);
    for (std::size_t i = 0; i < n; i += 5) signed_values[i] = 0.0;
    const auto mixed = both<TestType>(b, signed_values, s);
    for (const auto op : {unary_op::neg, unary_op::exp, unary_op::expm1, unary_op::abs, unary_op::square,
                          unary_op::sign, unary_op::is_nan, unary_op::is_finite, unary_op::sigmoid}) {
      INFO("op " << static_cast<int>(op) << " shape " << grpo::to_string(s));
      CHECK(grpo::tensor<dev<TestType>>(b, unary(b, op, mixed.d.raw())).shape() == s);
      require_matches(download(b, unary(b, op, mixed.d.raw())),
                      download(host<TestType>{}, unary(host<TestType>{}, op, mixed.h.raw())),
                      ops_tolerance<TestType>());
    }
    for (const auto op : {unary_op::log, unary_op::log1p, unary_op::sqrt, unary_op::reciprocal}) {
      INFO("op " << static_cast<int>(op) << " shape " << grpo::to_string(s));
      require_matches(download(b, unary(b, op, positive.d.raw())),
                      download(host<TestType>{}, unary(host<TestType>{}, op, positive.h.raw())),
                      ops_tolerance<TestType>());
    }
  }
}

TEMPLATE_TEST_CASE("cccl backend: non-finite values through the elementwise operations", "[cccl][ops][edge]", float,
                   double) {
  using namespace cccl_test;
  const dev<TestType> b;
  const auto x = grpo::make_tensor(b, std::vector<double>{NAN, INFINITY, -INFINITY, 0.0, -2.0}, shape::vector(5));
  grpo::testing::require_close(is_nan(x).to_host(), {1, 0, 0, 0, 0});
  grpo::testing::require_close(is_finite(x).to_host(), {0, 0, 0, 1, 1});
  grpo::testing::require_close(sign(x).to_host()[4], -1.0);
  // exp(-inf) = 0 and log(0) = -inf, as in the reference backend.
  const auto e = exp(x).to_host();
  CHECK(e[2] == 0.0);
  CHECK(std::isinf(e[1]));
  CHECK(log(grpo::full(b, shape::vector(1), 0.0)).to_host()[0] == -INFINITY);
}

TEMPLATE_TEST_CASE("cccl backend: every binary operation, with tensors and scalars on either side", "[cccl][ops]",
                   float, double) {
  using namespace cccl_test;
  using grpo::binary_op;
  const dev<TestType> b;
  const host<TestType> r;
  for (const auto s : swept_shapes()) {
    const auto n = static_cast<std::size_t>(s.numel());
    auto xs = grpo::testing::uniform(n, -2.0, 2.0, 3), ys = grpo::testing::uniform(n, 0.5, 3.0, 4);
    // Ties exercise the comparisons and minimum/maximum's choice of operand.
    for (std::size_t i = 0; i < n; i += 3) ys[i] = xs[i];
    const auto x = both<TestType>(b, xs, s), y = both<TestType>(b, ys, s);
    for (const auto op :
         {binary_op::add, binary_op::sub, binary_op::mul, binary_op::div, binary_op::minimum, binary_op::maximum,
          binary_op::less, binary_op::less_equal, binary_op::greater, binary_op::greater_equal, binary_op::equal}) {
      INFO("op " << static_cast<int>(op) << " shape " << grpo::to_string(s));
      require_matches(download(b, binary(b, op, x.d.raw(), y.d.raw())),
                      download(r, binary(r, op, x.h.raw(), y.h.raw())), ops_tolerance<TestType>());
      require_matches(download(b, binary(b, op, x.d.raw(), 0.75)), download(r, binary(r, op, x.h.raw(), 0.75)),
                      ops_tolerance<TestType>());
      require_matches(download(b, binary(b, op, -1.25, y.d.raw())), download(r, binary(r, op, -1.25, y.h.raw())),
                      ops_tolerance<TestType>());
    }
  }
}

TEMPLATE_TEST_CASE("cccl backend: select, fill, upload and download", "[cccl][ops]", float, double) {
  using namespace cccl_test;
  const dev<TestType> b;
  const host<TestType> r;
  for (const auto s : swept_shapes()) {
    const auto n = static_cast<std::size_t>(s.numel());
    auto conds = grpo::testing::uniform(n, -1.0, 1.0, 5);
    for (auto& c : conds) c = c < 0 ? 0.0 : c;  // zeros choose the second operand, anything else the first
    const auto c = both<TestType>(b, conds, s), x = both<TestType>(b, grpo::testing::uniform(n, -1, 1, 6), s),
               y = both<TestType>(b, grpo::testing::uniform(n, -1, 1, 7), s);
    require_matches(download(b, select(b, c.d.raw(), x.d.raw(), y.d.raw())),
                    download(r, select(r, c.h.raw(), x.h.raw(), y.h.raw())), {0.0, 0.0});
    require_matches(grpo::full(b, s, -0.3).to_host(), grpo::full(r, s, -0.3).to_host(), {0.0, 0.0});
    // Upload rounds each double to T once, as the reference does.
    require_matches(x.d.to_host(), x.h.to_host(), {0.0, 0.0});
    CHECK(x.d.shape() == s);
  }
  const std::vector<std::int64_t> id_values{4, -1, 0, 1LL << 40};
  const auto idx = grpo::make_index(b, id_values, shape::matrix(2, 2));
  CHECK(idx.shape() == shape::matrix(2, 2));
  CHECK(idx.to_host() == id_values);
  CHECK(grpo::make_index(b, std::vector<std::int64_t>{}, shape::vector(0)).to_host().empty());
}

TEMPLATE_TEST_CASE("cccl backend: the counting hooks count on the device, the checks still name the element",
                   "[cccl][validate]", float, double) {
  using namespace cccl_test;
  const dev<TestType> b;
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  const auto values = grpo::make_tensor(b, std::vector<double>{0.0, 1.0, nan, inf, -inf, 0.5, 1.0, -0.0},
                                        shape::matrix(2, 4));
  CHECK(count_not_finite(b, values.raw()) == 3);
  CHECK(count_not_binary(b, values.raw()) == 4);  // nan, inf, -inf, 0.5; -0.0 == 0 is binary
  CHECK(count_not_finite(b, grpo::full(b, shape::vector(0), 0.0).raw()) == 0);
  static_assert(grpo::detail::counts_not_finite<dev<TestType>> && grpo::detail::counts_not_binary<dev<TestType>>);
  grpo::detail::expect_finite(grpo::full(b, shape::matrix(3, 2), 2.0), "x");
  grpo::detail::expect_mask(grpo::make_tensor(b, std::vector<double>{0.0, 1.0, -0.0}, shape::vector(3)), "mask");
  grpo::testing::require_error([&] { grpo::detail::expect_finite(values, "logits"); }, {"logits: element 2 is nan"});
  grpo::testing::require_error([&] { grpo::detail::expect_mask(values, "mask"); },
                               {"mask: element 2 is nan", "must be 0 or 1"});
}

TEMPLATE_TEST_CASE("cccl backend: sums accumulate in double", "[cccl][reduce]", float, double) {
  using namespace cccl_test;
  const dev<TestType> b;
  for (const auto s : {shape::scalar(), shape::vector(0), shape::matrix(0, 4), shape::matrix(3, 0), shape::matrix(1, 1),
                       shape::matrix(5, 33), shape::matrix(2, 16384)}) {
    INFO("shape " << grpo::to_string(s));
    const auto x = both<TestType>(b, grpo::testing::uniform(static_cast<std::size_t>(s.numel()), -1, 1, 8), s);
    require_matches(sum(x.d).to_host(), sum(x.h).to_host(),
                    s.numel() > 16384 ? tolerance{1e-12, 1e-12} : ops_tolerance<TestType>());
    if (s.rank == 2) require_matches(sum_rows(x.d).to_host(), sum_rows(x.h).to_host(), ops_tolerance<TestType>());
  }
  // Rows longer than one part are summed part by part: the same value up to double rounding.
  const auto long_rows = both<TestType>(b, grpo::testing::uniform(3 * 50001, -1, 1, 9), shape::matrix(3, 50001));
  require_matches(sum_rows(long_rows.d).to_host(), sum_rows(long_rows.h).to_host(),
                  std::is_same_v<TestType, float> ? tolerance{1e-9, 3e-7} : tolerance{1e-12, 1e-12});
  // 1e8 + ten ones - 1e8 keeps the ones only with double accumulation, also in float storage.
  const auto f = grpo::make_tensor(b, std::vector<double>{1e8, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1e8}, shape::vector(12));
  grpo::testing::require_close(sum(f).item(), 10.0);
  grpo::testing::require_close(sum_rows(reshape(f, shape::matrix(1, 12))).to_host(), {10.0});
}

TEMPLATE_TEST_CASE("cccl backend: segment sums in index order, gather, expand, reshape, shift", "[cccl][reduce]", float,
                   double) {
  using namespace cccl_test;
  const dev<TestType> b;
  // Hand-worked: ids (1, 0, 1, 2) over (1, 2, 3, 4) give (2, 4, 4); segment 3 is empty.
  const auto v = grpo::make_tensor(b, std::vector<double>{1, 2, 3, 4}, shape::vector(4));
  const auto seg = grpo::make_index(b, std::vector<std::int64_t>{1, 0, 1, 2}, shape::vector(4));
  grpo::testing::require_close(sum_segments(v, seg, 4).to_host(), {2, 4, 4, 0});
  grpo::testing::require_close(
      gather(grpo::make_tensor(b, std::vector<double>{10, 20, 30}, shape::vector(3)), seg).to_host(), {20, 10, 20, 30});
  for (const std::int64_t n : {0, 1, 7, 1000}) {
    for (const std::int64_t segments : {0, 1, 5, 64}) {
      if (segments == 0 && n > 0) continue;
      INFO("n " << n << " segments " << segments);
      const auto x =
          both<TestType>(b, grpo::testing::uniform(static_cast<std::size_t>(n), -1, 1, 10), shape::vector(n));
      const auto ids = both_ids<TestType>(b, random_ids(static_cast<std::size_t>(n), segments, 11), shape::vector(n));
      require_matches(sum_segments(x.d, ids.first, segments).to_host(),
                      sum_segments(x.h, ids.second, segments).to_host(), ops_tolerance<TestType>());
      if (segments > 0) {
        const auto table = both<TestType>(b, grpo::testing::uniform(static_cast<std::size_t>(segments), -1, 1, 12),
                                          shape::vector(segments));
        require_matches(gather(table.d, ids.first).to_host(), gather(table.h, ids.second).to_host(), {0.0, 0.0});
      }
    }
  }
  for (const auto s : {shape::matrix(0, 3), shape::matrix(3, 0), shape::matrix(1, 1), shape::matrix(4, 7)}) {
    INFO("shape " << grpo::to_string(s));
    const auto x = both<TestType>(b, grpo::testing::uniform(static_cast<std::size_t>(s.numel()), -1, 1, 13), s);
    require_matches(shift_left(x.d).to_host(), shift_left(x.h).to_host(), {0.0, 0.0});
    const auto rows = both<TestType>(b, grpo::testing::uniform(static_cast<std::size_t>(s.dims[0]), -1, 1, 14),
                                     shape::vector(s.dims[0]));
    require_matches(expand_rows(rows.d, s.dims[1]).to_host(), expand_rows(rows.h, s.dims[1]).to_host(), {0.0, 0.0});
    const auto flat = reshape(x.d, shape::vector(s.numel()));
    CHECK(flat.shape() == shape::vector(s.numel()));
    require_matches(flat.to_host(), x.h.to_host(), {0.0, 0.0});
  }
}

TEMPLATE_TEST_CASE("cccl backend: reverse scan of rows", "[cccl][scan]", float, double) {
  using namespace cccl_test;
  const dev<TestType> b;
  // y[c] = x[c] + decay[c] y[c+1]: x = 1, decay = 0.5 gives 1.75, 1.5, 1 (and rows do not leak into each other).
  const auto ones = grpo::full(b, shape::matrix(2, 3), 1.0);
  grpo::testing::require_close(reverse_scan_rows(ones, grpo::full(b, shape::matrix(2, 3), 0.5)).to_host(),
                               {1.75, 1.5, 1.0, 1.75, 1.5, 1.0});
  for (const auto s :
       {shape::matrix(0, 3), shape::matrix(3, 0), shape::matrix(1, 1), shape::matrix(5, 64), shape::matrix(64, 1025)}) {
    INFO("shape " << grpo::to_string(s));
    const auto n = static_cast<std::size_t>(s.numel());
    const auto x = both<TestType>(b, grpo::testing::uniform(n, -1, 1, 15), s);
    auto decays = grpo::testing::uniform(n, 0.5, 1.0, 16);
    for (std::size_t i = 0; i < n; i += 7) decays[i] = 0.0;  // a zero decay cuts the row, as a mask hole does in GAE
    const auto d = both<TestType>(b, decays, s);
    require_matches(reverse_scan_rows(x.d, d.d).to_host(), reverse_scan_rows(x.h, d.h).to_host(),
                    scan_tolerance<TestType>());
  }
}

namespace cccl_test {

/// Seeded logits [rows, vocab] in [-spread, spread] with a few -inf (masked) entries, ids in range.
struct logits_case {
  std::int64_t rows, vocab;
  std::vector<double> z, zt;
  std::vector<std::int64_t> ids;
};

inline logits_case make_logits_case(std::int64_t rows, std::int64_t vocab, double spread, std::uint32_t seed,
                                    bool masked) {
  const auto n = static_cast<std::size_t>(rows * vocab);
  logits_case c{rows, vocab, grpo::testing::uniform(n, -spread, spread, seed),
                grpo::testing::uniform(n, -spread, spread, seed + 1),
                random_ids(static_cast<std::size_t>(rows), vocab, seed + 2)};
  if (masked && vocab > 1) {
    for (std::int64_t r = 0; r < rows; ++r) {
      const auto id = c.ids[static_cast<std::size_t>(r)];
      const auto hole = static_cast<std::size_t>(r * vocab + (id + 1) % vocab);  // never the target
      c.z[hole] = -INFINITY;
      c.zt[hole] = -INFINITY;
    }
  }
  return c;
}

}  // namespace cccl_test

TEMPLATE_TEST_CASE("cccl backend: softmax statistics and backward match the reference, also in place", "[cccl][logits]",
                   float, double) {
  using namespace cccl_test;
  const dev<TestType> b;
  const host<TestType> r;
  struct sweep {
    std::int64_t rows, vocab;
    double spread;
    bool masked;
  };
  for (const auto sw : {sweep{0, 5, 3, false}, sweep{1, 1, 3, false}, sweep{3, 5, 3, true}, sweep{7, 257, 8, true},
                        sweep{4, 1024, 1e4, false}, sweep{2, 3001, 20, true}}) {
    for (const double inv_t : {1.0, 1.0 / 0.7}) {
      INFO("rows " << sw.rows << " vocab " << sw.vocab << " spread " << sw.spread << " inv_t " << inv_t);
      const auto c = make_logits_case(sw.rows, sw.vocab, sw.spread, 20, sw.masked);
      const auto z = both<TestType>(b, c.z, shape::matrix(c.rows, c.vocab));
      const auto ids = both_ids<TestType>(b, c.ids, shape::vector(c.rows));
      const auto got = row_softmax_stats(b, z.d.raw(), ids.first.raw(), inv_t);
      const auto want = row_softmax_stats(r, z.h.raw(), ids.second.raw(), inv_t);
      // Logits of magnitude 1e4 in fp32 carry absolute rounding of about 1e-3 in lse and log-probs.
      const tolerance big =
          sw.spread > 100 && std::is_same_v<TestType, float> ? tolerance{2e-3, 1e-6} : rows_tolerance<TestType>();
      require_matches(download(b, got.lse), download(r, want.lse), big);
      require_matches(download(b, got.logprob), download(r, want.logprob), big);
      require_matches(download(b, got.entropy), download(r, want.entropy), big);

      const auto gl =
          both<TestType>(b, grpo::testing::uniform(static_cast<std::size_t>(c.rows), -1, 1, 21), shape::vector(c.rows));
      const auto ge =
          both<TestType>(b, grpo::testing::uniform(static_cast<std::size_t>(c.rows), -1, 1, 22), shape::vector(c.rows));
      // The backward takes the reference's forward so that only the backward is compared.
      const auto lse = both<TestType>(b, download(r, want.lse), shape::vector(c.rows));
      const auto ent = both<TestType>(b, download(r, want.entropy), shape::vector(c.rows));
      typename dev<TestType>::tensor_type grad;
      row_softmax_backward(b, z.d.raw(), ids.first.raw(), inv_t, lse.d.raw(), ent.d.raw(), gl.d.raw(), ge.d.raw(),
                           grad);
      typename host<TestType>::tensor_type want_grad;
      row_softmax_backward(r, z.h.raw(), ids.second.raw(), inv_t, lse.h.raw(), ent.h.raw(), gl.h.raw(), ge.h.raw(),
                           want_grad);
      // There the fp32 scaled logit s z itself is rounded by half an ulp of 1.4e4 (5e-4), and p_v with it.
      const tolerance gt =
          sw.spread > 100 && std::is_same_v<TestType, float> ? tolerance{4e-3, 1e-4} : rows_tolerance<TestType>();
      require_matches(download(b, grad), download(r, want_grad), gt);
      // In place: the gradient overwrites the logits, with the same values.
      auto inplace = z.d.raw();
      row_softmax_backward(b, inplace, ids.first.raw(), inv_t, lse.d.raw(), ent.d.raw(), gl.d.raw(), ge.d.raw(),
                           inplace);
      require_matches(download(b, inplace), download(b, grad), {0.0, 0.0});
      // The copy was deep: the original logits are untouched.
      require_matches(z.d.to_host(), z.h.to_host(), {0.0, 0.0});
    }
  }
}

TEMPLATE_TEST_CASE("cccl backend: divergences and their gradients match the reference, also in place",
                   "[cccl][distill]", float, double) {
  using namespace cccl_test;
  const dev<TestType> b;
  const host<TestType> r;
  for (const auto& [rows, vocab] : {std::pair<std::int64_t, std::int64_t>{0, 4}, {1, 1}, {3, 6}, {5, 513}}) {
    const auto c = make_logits_case(rows, vocab, 3.0, 30, true);
    const auto zs = both<TestType>(b, c.z, shape::matrix(rows, vocab)),
               zt = both<TestType>(b, c.zt, shape::matrix(rows, vocab));
    const auto w =
        both<TestType>(b, grpo::testing::uniform(static_cast<std::size_t>(rows), -1, 1, 31), shape::vector(rows));
    for (const double beta : {0.0, 0.3, 1.0}) {
      for (const double inv_t : {1.0, 0.5}) {
        INFO("rows " << rows << " vocab " << vocab << " beta " << beta << " inv_t " << inv_t);
        typename dev<TestType>::tensor_type grad;
        typename host<TestType>::tensor_type want_grad;
        const auto loss = row_divergence(b, zs.d.raw(), zt.d.raw(), inv_t, beta, w.d.raw(), grad);
        const auto want = row_divergence(r, zs.h.raw(), zt.h.raw(), inv_t, beta, w.h.raw(), want_grad);
        require_matches(download(b, loss), download(r, want), rows_tolerance<TestType>());
        require_matches(download(b, grad), download(r, want_grad), rows_tolerance<TestType>());
        auto inplace = zs.d.raw();
        const auto loss_inplace = row_divergence(b, inplace, zt.d.raw(), inv_t, beta, w.d.raw(), inplace);
        require_matches(download(b, loss_inplace), download(b, loss), {0.0, 0.0});
        require_matches(download(b, inplace), download(b, grad), {0.0, 0.0});
      }
    }
  }
}

TEMPLATE_TEST_CASE("cccl backend: sparse forward KL matches the reference, with repeated ids and zero teacher mass",
                   "[cccl][distill]", float, double) {
  using namespace cccl_test;
  const dev<TestType> b;
  const host<TestType> r;
  const std::int64_t rows = 4, vocab = 37, k = 6;
  const auto c = make_logits_case(rows, vocab, 3.0, 40, false);
  auto teacher_ids = random_ids(static_cast<std::size_t>(rows * k), vocab, 41);
  teacher_ids[1] = teacher_ids[0];  // a repeated id: both corrections land on one entry
  auto logp = grpo::testing::uniform(static_cast<std::size_t>(rows * k), -4, -0.5, 42);
  logp[7] = -INFINITY;  // probability 0: adds nothing
  const auto zs = both<TestType>(b, c.z, shape::matrix(rows, vocab));
  const auto ids = both_ids<TestType>(b, teacher_ids, shape::matrix(rows, k));
  const auto lp = both<TestType>(b, logp, shape::matrix(rows, k));
  const auto w = both<TestType>(b, {0.5, -1.0, 2.0, 1.0}, shape::vector(rows));
  for (const double inv_t : {1.0, 1.0 / 0.7}) {
    typename dev<TestType>::tensor_type grad;
    typename host<TestType>::tensor_type want_grad;
    const auto loss = row_sparse_forward_kl(b, zs.d.raw(), ids.first.raw(), lp.d.raw(), inv_t, w.d.raw(), grad);
    const auto want = row_sparse_forward_kl(r, zs.h.raw(), ids.second.raw(), lp.h.raw(), inv_t, w.h.raw(), want_grad);
    require_matches(download(b, loss), download(r, want), rows_tolerance<TestType>());
    require_matches(download(b, grad), download(r, want_grad), rows_tolerance<TestType>());
    auto inplace = zs.d.raw();
    (void)row_sparse_forward_kl(b, inplace, ids.first.raw(), lp.d.raw(), inv_t, w.d.raw(), inplace);
    require_matches(download(b, inplace), download(b, grad), {0.0, 0.0});
  }
  // K = 0: no teacher mass, loss 0, gradient 0.
  typename dev<TestType>::tensor_type grad;
  const auto none = grpo::make_index(b, std::vector<std::int64_t>{}, shape::matrix(rows, 0));
  const auto no_logp = grpo::make_tensor(b, std::vector<double>{}, shape::matrix(rows, 0));
  grpo::testing::require_close(
      download(b, row_sparse_forward_kl(b, zs.d.raw(), none.raw(), no_logp.raw(), 1.0, w.d.raw(), grad)),
      std::vector<double>(rows, 0.0));
  grpo::testing::require_close(download(b, grad), std::vector<double>(static_cast<std::size_t>(rows * vocab), 0.0));
  // One token, 1000 teacher entries on it with mass 1: the exact gradient there is 0. It must be computed whole and
  // rounded once; rounding to T after each of the 1000 subtractions left about 1e-5 in float.
  const std::int64_t many = 1000;
  const auto same = grpo::make_index(b, std::vector<std::int64_t>(many, 0), shape::matrix(1, many));
  const auto spread = grpo::make_tensor(b, std::vector<double>(many, std::log(1.0 / many)), shape::matrix(1, many));
  auto one_token = grpo::make_tensor(b, std::vector<double>{0.75}, shape::matrix(1, 1));
  (void)row_sparse_forward_kl(b, one_token.raw(), same.raw(), spread.raw(), 1.0,
                              grpo::make_tensor(b, std::vector<double>{1.0}, shape::vector(1)).raw(), one_token.raw());
  grpo::testing::require_close(download(b, one_token.raw()), {0.0}, 1e-6, 0.0);
}

TEMPLATE_TEST_CASE("cccl backend: logits-level algorithms of the core run on it", "[cccl][logits]", float, double) {
  using namespace cccl_test;
  const dev<TestType> b;
  const auto c = make_logits_case(6, 50, 4.0, 50, false);
  const auto z = both<TestType>(b, c.z, shape::matrix(6, 50));
  const auto ids = both_ids<TestType>(b, c.ids, shape::vector(6));
  const auto got = grpo::token_logprobs(z.d, ids.first, 0.8);
  const auto want = grpo::token_logprobs(z.h, ids.second, 0.8);
  require_matches(got.logprobs.to_host(), want.logprobs.to_host(), rows_tolerance<TestType>());
  require_matches(got.entropy.to_host(), want.entropy.to_host(), rows_tolerance<TestType>());
  const auto dl = both<TestType>(b, grpo::testing::uniform(6, -1, 1, 51), shape::vector(6));
  const auto de = both<TestType>(b, grpo::testing::uniform(6, -1, 1, 52), shape::vector(6));
  auto grad = z.d.raw();
  grpo::token_logprobs_backward(z.d, ids.first, 0.8, got, dl.d, de.d, grad);
  typename host<TestType>::tensor_type want_grad;
  grpo::token_logprobs_backward(z.h, ids.second, 0.8, want, dl.h, de.h, want_grad);
  require_matches(download(b, grad), download(host<TestType>{}, want_grad), rows_tolerance<TestType>());
  // A NaN logit is found by the core's one-pass check, which runs the backend's row statistics at 1/T = 0.
  auto bad = c.z;
  bad[77] = NAN;
  grpo::testing::require_error(
      [&] { (void)grpo::token_logprobs(grpo::make_tensor(b, bad, shape::matrix(6, 50)), ids.first); },
      {"logits", "element [1, 27]", "NaN"});
}

TEMPLATE_TEST_CASE("cccl backend: shape errors name the operation, as the reference's do", "[cccl][errors]", float,
                   double) {
  using namespace cccl_test;
  using grpo::testing::require_error;
  const dev<TestType> b;
  const auto v2 = grpo::full(b, shape::vector(2), 1.0), v3 = grpo::full(b, shape::vector(3), 1.0);
  const auto m = grpo::full(b, shape::matrix(2, 3), 1.0);
  const auto i2 = grpo::make_index(b, std::vector<std::int64_t>{0, 1}, shape::vector(2));
  require_error([&] { (void)(v2 + v3); }, {"binary", "[2]", "[3]"});
  require_error([&] { (void)where(v2, v2, v3); }, {"select", "[2]", "[3]"});
  require_error([&] { (void)sum_rows(v2); }, {"sum_rows", "rank-2"});
  require_error([&] { (void)shift_left(v2); }, {"shift_left", "rank-2"});
  require_error([&] { (void)reverse_scan_rows(m, grpo::full(b, shape::matrix(3, 2), 1.0)); },
                {"reverse_scan_rows", "[2,3]"});
  require_error([&] { (void)sum_segments(v3, i2, 2); }, {"sum_segments", "ids [2]", "[3]"});
  require_error([&] { (void)sum_segments(v2, i2, -1); }, {"sum_segments", "negative segment count -1"});
  require_error([&] { (void)gather(m, i2); }, {"gather", "rank-1"});
  require_error([&] { (void)expand_rows(v2, -1); }, {"expand_rows", "negative"});
  require_error([&] { (void)reshape(m, shape::vector(5)); }, {"reshape", "[2,3]", "[5]"});
  require_error(
      [&] {
        (void)grpo::make_tensor(b, std::vector<double>{1, 2, 3}, shape::matrix(2, 2));
      },
      {"upload", "[2,2]"});
  require_error([&] { (void)grpo::make_index(b, std::vector<std::int64_t>{1}, shape::vector(2)); },
                {"upload_index", "[2]"});
  require_error([&] { (void)unary(b, static_cast<grpo::unary_op>(99), v2.raw()); }, {"unary", "unknown operation"});
  require_error([&] { (void)binary(b, static_cast<grpo::binary_op>(99), v2.raw(), 1.0); },
                {"binary", "unknown operation"});
  typename dev<TestType>::tensor_type out;
  require_error([&] { (void)row_softmax_stats(b, v2.raw(), i2.raw(), 1.0); }, {"row_softmax_stats", "[N, V]"});
  require_error(
      [&] {
        (void)row_softmax_stats(b, m.raw(), grpo::make_index(b, std::vector<std::int64_t>{0}, shape::vector(1)).raw(),
                                1.0);
      },
      {"row_softmax_stats", "ids [1]"});
  require_error([&] { row_softmax_backward(b, m.raw(), i2.raw(), 1.0, v2.raw(), v3.raw(), v2.raw(), v2.raw(), out); },
                {"row_softmax_backward", "row vector [3]"});
  require_error([&] { (void)row_divergence(b, m.raw(), m.raw(), 1.0, 1.5, v2.raw(), out); },
                {"row_divergence", "beta", "1.5"});
  require_error([&] { (void)row_divergence(b, m.raw(), m.raw(), 1.0, 0.5, v3.raw(), out); },
                {"row_divergence", "weight [3]"});
  require_error([&] { (void)row_sparse_forward_kl(b, m.raw(), i2.raw(), v2.raw(), 1.0, v2.raw(), out); },
                {"row_sparse_forward_kl", "[N, K]"});
}

TEMPLATE_TEST_CASE("cccl backend: indices out of range are reported at the next download", "[cccl][errors]", float,
                   double) {
  using namespace cccl_test;
  using grpo::testing::require_error;
  const dev<TestType> b;
  const auto table = grpo::make_tensor(b, std::vector<double>{10, 20, 30}, shape::vector(3));
  const auto bad = grpo::make_index(b, std::vector<std::int64_t>{0, 5}, shape::vector(2));
  // The device cannot throw: the operation returns (its bad element NaN) and the download throws.
  const auto gathered = gather(table, bad);
  require_error([&] { (void)gathered.to_host(); }, {"gather", "index 5", "out of range [0, 3)"});
  // Reported once: the next synchronisation point is clean again.
  CHECK(table.to_host() == std::vector<double>{10, 20, 30});
  require_error(
      [&] {
        (void)sum_segments(table, grpo::make_index(b, std::vector<std::int64_t>{0, -2, 1}, shape::vector(3)), 2)
            .to_host();
      },
      {"sum_segments", "index -2", "[0, 2)"});
  const auto logits = grpo::full(b, shape::matrix(2, 3), 0.0);
  require_error([&] { (void)download(b, row_softmax_stats(b, logits.raw(), bad.raw(), 1.0).logprob); },
                {"row_softmax_stats", "index 5", "[0, 3)"});
  typename dev<TestType>::tensor_type out;
  const auto teacher = grpo::make_index(b, std::vector<std::int64_t>{0, 1, 2, 3}, shape::matrix(2, 2));
  const auto logp = grpo::full(b, shape::matrix(2, 2), -1.0);
  require_error(
      [&] {
        (void)download(b, row_sparse_forward_kl(b, logits.raw(), teacher.raw(), logp.raw(), 1.0,
                                                grpo::full(b, shape::vector(2), 1.0).raw(), out));
      },
      {"row_sparse_forward_kl", "index 3", "[0, 3)"});
  // synchronize() is a synchronisation point too.
  (void)gather(table, bad);
  require_error([&] { b.synchronize(); }, {"gather", "index 5"});
  b.synchronize();
}

TEMPLATE_TEST_CASE("cccl backend: after a first call, the same calls take no new memory from upstream",
                   "[cccl][memory]", float, double) {
  using namespace cccl_test;
  const dev<TestType> b;
  const auto c = make_logits_case(8, 300, 3.0, 60, false);
  const auto logits = grpo::make_tensor(b, c.z, shape::matrix(8, 300));
  const auto ids = grpo::make_index(b, c.ids, shape::vector(8));
  const auto seg = grpo::make_index(b, random_ids(8, 3, 61), shape::vector(8));
  auto step = [&] {
    const auto fwd = grpo::token_logprobs(logits, ids, 0.9);
    const auto loss = sum(exp(fwd.logprobs) * 0.5 - fwd.entropy);
    const auto groups = sum_segments(fwd.logprobs, seg, 3);
    const auto returns =
        reverse_scan_rows(reshape(fwd.logprobs, shape::matrix(2, 4)), grpo::full(b, shape::matrix(2, 4), 0.9));
    auto grad = logits.raw();
    grpo::token_logprobs_backward(logits, ids, 0.9, fwd, grpo::full(b, shape::vector(8), 1.0),
                                  grpo::full(b, shape::vector(8), 0.1), grad);
    return loss.item() + sum(groups).item() + sum(returns).item();
  };
  const double first = step();
  const auto warm = b.memory_statistics();
  CHECK(warm.upstream_allocations > 0);
  for (int i = 0; i < 3; ++i) CHECK(step() == first);
  const auto after = b.memory_statistics();
  CHECK(after.upstream_allocations == warm.upstream_allocations);
  CHECK(after.bytes_reserved == warm.bytes_reserved);
  // Copies share the workspace; releasing the cache returns what no tensor holds.
  const dev<TestType> copy = b;
  CHECK(copy.memory_statistics().bytes_reserved == after.bytes_reserved);
  b.release_cached_memory();
  CHECK(b.memory_statistics().bytes_cached == 0);
  CHECK(b.memory_statistics().bytes_reserved < after.bytes_reserved);
}
