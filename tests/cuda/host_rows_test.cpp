// SPDX-License-Identifier: Apache-2.0
// The host fp32 row kernels of grpo::cccl (host_rows.hpp, simd_math.hpp), built for CPP and OMP: the vectorizable
// exp against std::exp in double over a dense sweep, and the row statistics and gradient of both instruction sets
// (the translation unit's own and the AVX2+FMA clone, where the CPU has it) against reference_backend<double> on
// the same fp32 inputs, including the block edges of the online log-sum-exp, masked (-inf) entries and blocks,
// rows the fast path leaves to the exact functors (NaN, +-Inf, all -inf, scale 0 or negative), targets out of
// range, in-place gradients, and thread-count independence under OpenMP.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

#include "grpo/cccl/backend.hpp"
#include "grpo/cccl/host_rows.hpp"
#include "grpo/host/simd_math.hpp"
#include "grpo/reference_backend.hpp"
#include "host_test_support.hpp"
#include "test_support.hpp"

#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_OMP
#include <omp.h>
#endif

namespace {

namespace hr = grpo::cccl::host_rows;
using grpo::testing::host::instruction_sets;
using grpo::testing::host::isa_name;
using grpo::testing::host::make_rows;
using grpo::testing::host::require_near;
using grpo::shape;

// The exp over an array, as the row kernels call it: a loop the compiler vectorizes (SSE2 here; the AVX2+FMA
// version below contracts the reduction into fused multiply-adds, so its rounding differs).
void exp_array(const float* x, float* y, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) y[i] = grpo::host_kernels::exp_f32(x[i]);
}

#if GRPO_HOST_AVX2
__attribute__((target("avx2,fma"))) void exp_array_avx2(const float* x, float* y, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) y[i] = grpo::host_kernels::exp_f32(x[i]);
}
#endif

/// The largest relative error of exp_f32 (through `apply`) against std::exp in double over every `stride`-th float
/// of [-lo, hi] (lo, hi >= 0), walked by bit pattern from 0 outwards on both sides.
template <class Apply>
double worst_relative_error(Apply apply, float lo, float hi, std::uint32_t stride) {
  std::vector<float> x, y;
  for (std::uint32_t u = 0; u <= std::bit_cast<std::uint32_t>(lo); u += stride) x.push_back(-std::bit_cast<float>(u));
  for (std::uint32_t u = 0; u <= std::bit_cast<std::uint32_t>(hi); u += stride) x.push_back(std::bit_cast<float>(u));
  y.resize(x.size());
  apply(x.data(), y.data(), x.size());
  double worst = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double want = std::exp(static_cast<double>(x[i]));
    worst = std::max(worst, std::fabs(static_cast<double>(y[i]) - want) / want);
  }
  return worst;
}

std::vector<std::int64_t> make_ids(std::int64_t rows, std::int64_t vocab, std::uint32_t seed) {
  const auto u = grpo::testing::uniform(static_cast<std::size_t>(rows), 0.0, static_cast<double>(vocab), seed);
  std::vector<std::int64_t> ids(u.size());
  for (std::size_t i = 0; i < u.size(); ++i) ids[i] = static_cast<std::int64_t>(u[i]);
  return ids;
}

struct stats {
  std::vector<double> lse, entropy, logprob;
};

/// The oracle: reference_backend<double> on the same fp32 values.
stats reference_stats(const std::vector<float>& z, const std::vector<std::int64_t>& ids, std::int64_t vocab,
                      double scale) {
  const auto rows = static_cast<std::int64_t>(ids.size());
  const grpo::reference_backend<double> r;
  const auto zt = upload(r, std::vector<double>(z.begin(), z.end()), shape::matrix(rows, vocab));
  const auto it = upload_index(r, ids, shape::vector(rows));
  const auto s = row_softmax_stats(r, zt, it, scale);
  return {download(r, s.lse), download(r, s.entropy), download(r, s.logprob)};
}

stats fast_stats(const std::vector<float>& z, const std::vector<std::int64_t>& ids, std::int64_t vocab, double scale,
                 hr::isa which, std::int64_t* slot = nullptr) {
  const auto rows = static_cast<std::int64_t>(ids.size());
  std::vector<float> lse(ids.size()), entropy(ids.size()), logprob(ids.size());
  hr::softmax_stats(z.data(), ids.data(), rows, vocab, scale, lse.data(), entropy.data(), logprob.data(), slot, which);
  return {{lse.begin(), lse.end()}, {entropy.begin(), entropy.end()}, {logprob.begin(), logprob.end()}};
}

/// Bit-for-bit equality, NaN matching NaN.
void require_identical(const std::vector<double>& got, const std::vector<double>& want) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("element " << i << ": got " << got[i] << ", want " << want[i]);
    CHECK((got[i] == want[i] || (std::isnan(got[i]) && std::isnan(want[i]))));
  }
}

std::vector<double> reference_gradient(const std::vector<float>& z, const std::vector<std::int64_t>& ids,
                                       std::int64_t vocab, double scale, const stats& forward,
                                       const std::vector<double>& gl, const std::vector<double>& ge) {
  const auto rows = static_cast<std::int64_t>(ids.size());
  const grpo::reference_backend<double> r;
  const auto zt = upload(r, std::vector<double>(z.begin(), z.end()), shape::matrix(rows, vocab));
  const auto it = upload_index(r, ids, shape::vector(rows));
  const auto row = [&](const std::vector<double>& v) { return upload(r, v, shape::vector(rows)); };
  grpo::reference_backend<double>::tensor_type out;
  row_softmax_backward(r, zt, it, scale, row(forward.lse), row(forward.entropy), row(gl), row(ge), out);
  return download(r, out);
}

std::vector<double> fast_gradient(const std::vector<float>& z, const std::vector<std::int64_t>& ids, std::int64_t vocab,
                                  double scale, const stats& forward, const std::vector<double>& gl,
                                  const std::vector<double>& ge, hr::isa which) {
  const auto rows = static_cast<std::int64_t>(ids.size());
  const auto f = [](const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); };
  const auto lse = f(forward.lse), entropy = f(forward.entropy), fgl = f(gl), fge = f(ge);
  std::vector<float> out(z.size());
  hr::softmax_backward(z.data(), ids.data(), rows, vocab, scale, lse.data(), entropy.data(), fgl.data(), fge.data(),
                       out.data(), which);
  return {out.begin(), out.end()};
}

}  // namespace

TEST_CASE("host exp_f32: relative error under 2 ulp over a dense sweep of its normal range", "[cccl][host_rows]") {
  // Every 127th float of [-87.3, 88.72] (17 million points, every exponent, mantissas spread over each binade);
  // the bound holds over every float of the range (measured once over all 2.2e9: 8.5e-8 without FMA, 8.3e-8 with
  // it, i.e. under 1 ulp); 2.2e-7 (< 2 ulp) leaves room for other compilers' contraction choices.
  const double generic = worst_relative_error(exp_array, 87.3f, 88.72f, 127);
  INFO("generic " << generic);
  CHECK(generic < 2.2e-7);
#if GRPO_HOST_AVX2
  if (hr::avx2_available()) {
    const double avx2 = worst_relative_error(exp_array_avx2, 87.3f, 88.72f, 127);
    INFO("avx2 " << avx2);
    CHECK(avx2 < 2.2e-7);
  }
#endif
}

TEST_CASE("host exp_f32: exact points, the ends of its range, infinities and NaN", "[cccl][host_rows]") {
  using grpo::host_kernels::exp_f32;
  CHECK(exp_f32(0.0f) == 1.0f);   // r = 0, n = 0: 1 + (0 + 0) exactly
  CHECK(exp_f32(-0.0f) == 1.0f);
  CHECK(exp_f32(-INFINITY) == 0.0f);
  CHECK(exp_f32(-1000.0f) == 0.0f);
  CHECK(exp_f32(-87.31f) == 0.0f);  // below -87.3: flushed to 0 instead of a denormal
  CHECK(exp_f32(-87.3f) > 1.17549435e-38f);  // the last value kept is normal (FLT_MIN = 1.1755e-38)
  CHECK(exp_f32(INFINITY) == INFINITY);
  CHECK(exp_f32(89.0f) == INFINITY);
  CHECK(exp_f32(1e30f) == INFINITY);
  const float below_overflow = exp_f32(88.72f);  // e^88.72 = 3.3932e38 < FLT_MAX = 3.4028e38
  CHECK(std::isfinite(below_overflow));
  CHECK(std::fabs(below_overflow / 3.39318e38f - 1.0f) < 1e-5f);
  CHECK(std::isnan(exp_f32(NAN)));
  CHECK(std::isnan(exp_f32(-NAN)));
  // ln 2 steps: 2^n exactly up to the polynomial's rounding at r ~ 0 (r = -ln2_lo n, 1e-4 here).
  CHECK(std::fabs(exp_f32(10.0f * 0.69314718f) / 1024.0f - 1.0f) < 3e-7f);
}

TEST_CASE("host rows: statistics of both instruction sets match the reference on fp32 inputs", "[cccl][host_rows]") {
  struct sweep {
    std::int64_t rows, vocab;
    double spread, masked;
  };
  // Vocabulary sizes around the lane width (16) and the block (1024), masked shares up to 90%, logits up to 1e3.
  for (const auto sw : {sweep{3, 1, 3, 0}, sweep{4, 15, 3, 0.2}, sweep{4, 16, 3, 0}, sweep{4, 17, 8, 0.3},
                        sweep{3, 1023, 5, 0.1}, sweep{3, 1024, 5, 0}, sweep{3, 1025, 5, 0.5}, sweep{2, 5000, 30, 0.9},
                        sweep{2, 3001, 1e3, 0.1}}) {
    for (const double scale : {1.0, 1.0 / 0.7, 0.25}) {
      const auto z = make_rows(sw.rows, sw.vocab, sw.spread, sw.masked, 7);
      auto ids = make_ids(sw.rows, sw.vocab, 8);
      for (std::size_t n = 0; n < ids.size(); ++n)  // a target that is masked would have logprob -inf: avoid it
        while (z[n * static_cast<std::size_t>(sw.vocab) + static_cast<std::size_t>(ids[n])] == -INFINITY)
          ids[n] = (ids[n] + 1) % sw.vocab;
      const auto want = reference_stats(z, ids, sw.vocab, scale);
      for (const auto which : instruction_sets()) {
        INFO(isa_name(which) << ": rows " << sw.rows << " vocab " << sw.vocab << " spread " << sw.spread << " masked "
                             << sw.masked << " scale " << scale);
        const auto got = fast_stats(z, ids, sw.vocab, scale, which);
        // fp32 terms summed over 16 lanes of at most 64 per block, blocks merged in double: about 1e-7 relative on
        // the sums; lse and log-probs are then rounded to fp32 (6e-8 relative, 6e-5 absolute at lse ~ 1e3).
        require_near(got.lse, want.lse, 1e-6, 3e-7);
        require_near(got.logprob, want.logprob, 2e-6, 3e-7);
        require_near(got.entropy, want.entropy, 1e-6, 1e-6);
      }
    }
  }
}

TEST_CASE("host rows: a nearly one-hot row has a tiny, non-negative entropy", "[cccl][host_rows]") {
  // One logit 30 above 99 zeros: p_rest = e^-30 / (1 + 99 e^-30) each; H = -p0 log p0 - 99 p log p
  // = about 99 e^-30 (30 + 1) = 2.87e-11 (python: 2.8709e-11).
  std::vector<float> z(100, 0.0f);
  z[42] = 30.0f;
  const std::vector<std::int64_t> ids{42};
  for (const auto which : instruction_sets()) {
    const auto got = fast_stats(z, ids, 100, 1.0, which);
    CHECK(got.entropy[0] >= 0.0);
    CHECK(got.entropy[0] < 1e-9);
    CHECK(std::fabs(got.logprob[0]) < 1e-9);  // log(1 / (1 + 99 e^-30)) = -9.3e-12
  }
}

TEST_CASE("host rows: rows the fast path hands to the exact functors give the reference's values",
          "[cccl][host_rows]") {
  const std::int64_t vocab = 2100;  // three blocks
  // Row 0: NaN in the second block. Row 1: +inf. Row 2: all -inf. Row 3: the first block all -inf but one NaN.
  // Row 4: the first two blocks all -inf, the rest ordinary (fast path, skipping whole blocks). Row 5: -inf and
  // +inf. Row 6: ordinary.
  auto z = make_rows(7, vocab, 4.0, 0.0, 11);
  const auto at = [&](std::int64_t n, std::int64_t v) -> float& { return z[static_cast<std::size_t>(n * vocab + v)]; };
  at(0, 1500) = NAN;
  at(1, 7) = INFINITY;
  for (std::int64_t v = 0; v < vocab; ++v) at(2, v) = -INFINITY;
  for (std::int64_t v = 0; v < 1024; ++v) at(3, v) = -INFINITY;
  at(3, 500) = NAN;
  for (std::int64_t v = 0; v < 2048; ++v) at(4, v) = -INFINITY;
  at(5, 3) = -INFINITY;
  at(5, 2000) = INFINITY;
  const std::vector<std::int64_t> ids{1500, 7, 3, 9, 2050, 2000, 100};
  for (const double scale : {1.0, 0.0, -0.5}) {  // 0: the core's finiteness check; negative: not the fast path
    INFO("scale " << scale);
    const auto want = reference_stats(z, ids, vocab, scale);
    for (const auto which : instruction_sets()) {
      INFO(isa_name(which));
      const auto got = fast_stats(z, ids, vocab, scale, which);
      // The functors compute in double like the reference: rows they handle agree to fp32 rounding.
      require_near(got.lse, want.lse, 1e-6, 3e-7);
      require_near(got.logprob, want.logprob, 2e-6, 3e-7);
      require_near(got.entropy, want.entropy, 1e-6, 1e-6);
      if (scale == 0.0) {
        // lse = log V (python: log(2100) = 7.649692623711514) for finite rows, not finite for rows with NaN or
        // +-inf: NaN, except the row all -inf, where the reference's running max never leaves -inf (lse -inf).
        CHECK(got.lse[6] == static_cast<double>(static_cast<float>(7.649692623711514)));
        for (const int n : {0, 1, 3, 4, 5}) CHECK(std::isnan(got.lse[static_cast<std::size_t>(n)]));
        CHECK(got.lse[2] == -INFINITY);
      }
    }
  }
}

TEST_CASE("host rows: a target out of range gives NaN and is reported, others are unaffected", "[cccl][host_rows]") {
  const auto z = make_rows(3, 40, 2.0, 0.0, 12);
  const std::vector<std::int64_t> ids{5, 40, -1};
  for (const auto which : instruction_sets()) {
    std::int64_t slot[3] = {0, 0, 0};
    const auto got = fast_stats(z, ids, 40, 1.0, which, slot);
    CHECK(std::isfinite(got.logprob[0]));
    CHECK(std::isnan(got.logprob[1]));
    CHECK(std::isnan(got.logprob[2]));
    CHECK(std::isfinite(got.lse[1]));
    CHECK(slot[0] == grpo::cccl::detail::device_error_row_softmax_stats);
    CHECK((slot[1] == 40 || slot[1] == -1));  // the first one reported: rows may run in parallel
    CHECK(slot[2] == 40);
  }
}

TEST_CASE("host rows: the gradient of both instruction sets matches the reference, also in place",
          "[cccl][host_rows]") {
  struct sweep {
    std::int64_t rows, vocab;
    double spread, masked;
  };
  for (const auto sw : {sweep{3, 1, 3, 0}, sweep{4, 17, 3, 0.3}, sweep{3, 1025, 6, 0.2}, sweep{2, 3001, 40, 0.5}}) {
    for (const double scale : {1.0, 1.0 / 0.7}) {
      const auto z = make_rows(sw.rows, sw.vocab, sw.spread, sw.masked, 13);
      auto ids = make_ids(sw.rows, sw.vocab, 14);
      const auto forward = reference_stats(z, ids, sw.vocab, scale);
      ids[0] = sw.vocab;  // out of range: no target term (the forward has reported it), as in the reference
      const auto gl = grpo::testing::uniform(static_cast<std::size_t>(sw.rows), -1, 1, 15);
      const auto ge = grpo::testing::uniform(static_cast<std::size_t>(sw.rows), -1, 1, 16);
      // The reference gets the fp32-rounded row vectors the fast path reads.
      const auto round = [](std::vector<double> v) {
        for (auto& x : v) x = static_cast<double>(static_cast<float>(x));
        return v;
      };
      const stats rounded{round(forward.lse), round(forward.entropy), forward.logprob};
      const auto want = reference_gradient(z, ids, sw.vocab, scale, rounded, round(gl), round(ge));
      for (const auto which : instruction_sets()) {
        INFO(isa_name(which) << ": rows " << sw.rows << " vocab " << sw.vocab << " scale " << scale);
        const auto got = fast_gradient(z, ids, sw.vocab, scale, rounded, gl, ge, which);
        // p in fp32 from log p = s (z - c) - r0: about 2e-7 relative, times |g| <= s (|g_lp| + |g_H| (|log p| + H)).
        require_near(got, want, 1e-7, 1e-6);
        // In place: the same values, the target entry included (it is read before the row is written).
        auto inplace = z;
        const auto f = [](const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); };
        const auto lse = f(rounded.lse), ent = f(rounded.entropy), fgl = f(gl), fge = f(ge);
        hr::softmax_backward(inplace.data(), ids.data(), sw.rows, sw.vocab, scale, lse.data(), ent.data(), fgl.data(),
                             fge.data(), inplace.data(), which);
        require_identical(std::vector<double>(inplace.begin(), inplace.end()), got);
      }
    }
  }
}

TEST_CASE("host rows: gradient rows with non-finite inputs go through the exact functor", "[cccl][host_rows]") {
  const std::int64_t vocab = 50;
  auto z = make_rows(3, vocab, 2.0, 0.0, 17);
  z[10] = NAN;  // row 0: a NaN logit with a finite lse
  const std::vector<std::int64_t> ids{1, 2, 3};
  const stats forward{{5.0, INFINITY, 4.0}, {1.0, 1.0, NAN}, {0, 0, 0}};  // rows 1 and 2: lse / entropy not finite
  const std::vector<double> gl{1.0, 1.0, 1.0}, ge{0.5, 0.5, 0.5};
  const auto want = reference_gradient(z, ids, vocab, 1.0, forward, gl, ge);
  for (const auto which : instruction_sets()) {
    const auto got = fast_gradient(z, ids, vocab, 1.0, forward, gl, ge, which);
    require_near(got, want, 1e-7, 1e-6);
  }
}

TEST_CASE("host rows: the cccl backend<float> runs them, and they agree with its double functors",
          "[cccl][host_rows]") {
  const grpo::cccl::backend<float> b;
  const std::int64_t rows = 5, vocab = 3000;
  const auto z = make_rows(rows, vocab, 6.0, 0.1, 18);
  auto ids = make_ids(rows, vocab, 19);
  const auto zt = upload(b, std::vector<double>(z.begin(), z.end()), shape::matrix(rows, vocab));
  const auto it = upload_index(b, ids, shape::vector(rows));
  const auto got = row_softmax_stats(b, zt, it, 1.25);
  std::vector<float> lse(rows), entropy(rows), logprob(rows);
  for (std::int64_t n = 0; n < rows; ++n)
    grpo::cccl::fn::row_softmax_stats<float>{z.data(), ids.data(), vocab, 1.25, lse.data(), entropy.data(),
                                             logprob.data(), nullptr}(n);
  require_near(download(b, got.lse), {lse.begin(), lse.end()}, 1e-6, 3e-7);
  require_near(download(b, got.entropy), {entropy.begin(), entropy.end()}, 1e-6, 1e-6);
  require_near(download(b, got.logprob), {logprob.begin(), logprob.end()}, 2e-6, 3e-7);
}

#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_OMP
TEST_CASE("host rows (OMP): results do not depend on the number of threads", "[cccl][host_rows][omp]") {
  const std::int64_t rows = 37, vocab = 2000;
  const auto z = make_rows(rows, vocab, 5.0, 0.1, 20);
  const auto ids = make_ids(rows, vocab, 21);
  const auto gl = grpo::testing::uniform(static_cast<std::size_t>(rows), -1, 1, 22);
  const auto ge = grpo::testing::uniform(static_cast<std::size_t>(rows), -1, 1, 23);
  const int saved = omp_get_max_threads();
  for (const auto which : instruction_sets()) {
    omp_set_num_threads(1);
    const auto one = fast_stats(z, ids, vocab, 1.0, which);
    const auto one_grad = fast_gradient(z, ids, vocab, 1.0, one, gl, ge, which);
    omp_set_num_threads(3);
    const auto three = fast_stats(z, ids, vocab, 1.0, which);
    const auto three_grad = fast_gradient(z, ids, vocab, 1.0, three, gl, ge, which);
    require_identical(three.lse, one.lse);
    require_identical(three.entropy, one.entropy);
    require_identical(three.logprob, one.logprob);
    require_identical(three_grad, one_grad);
  }
  omp_set_num_threads(saved);
}
#endif
