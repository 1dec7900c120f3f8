// SPDX-License-Identifier: Apache-2.0
// The host fast paths of grpo::cccl added for speed (issue 14), built for CPP and OMP: simd_math's fp32 log and expm1
// over dense sweeps; host_divergence.hpp's fp32 JSD / KL rows of both instruction sets against reference_backend<double>
// on the same fp32 inputs (beta at both ends and inside, masked entries, block edges, large logits, identical rows,
// in place, rows left to the exact functor), and its sparse top-k forward KL rows the same way; host_fused.hpp's
// policy loss and group advantages: that the algorithms take them, that a bad value is still named by the generic
// checks, and that OpenMP's thread count changes no bit.
// The shared conformance suite (conformance_test.cpp) compares every loss variant of these paths to the reference.
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <vector>

#include "grpo/advantages.hpp"
#include "grpo/cccl/backend.hpp"
#include "grpo/cccl/host_divergence.hpp"
#include "grpo/host/simd_math.hpp"
#include "grpo/policy_loss.hpp"
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
using cccl_float = grpo::cccl::backend<float>;

static_assert(grpo::detail::has_fused_policy_loss<cccl_float>);
static_assert(grpo::detail::has_fused_policy_loss<grpo::cccl::backend<double>>);
static_assert(grpo::detail::has_fused_grpo_advantages<cccl_float>);
static_assert(!grpo::detail::has_fused_policy_loss<grpo::reference_backend<double>>);

void log_array(const float* x, float* y, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) y[i] = grpo::host_kernels::log_f32(x[i]);
}

#if GRPO_HOST_AVX2
__attribute__((target("avx2,fma"))) void log_array_avx2(const float* x, float* y, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) y[i] = grpo::host_kernels::log_f32(x[i]);
}
#endif

/// The largest error of log_f32 against std::log in double over every `stride`-th positive normal float: relative
/// where |log x| >= 0.5, absolute (in units of FLT_EPSILON-ish 6e-8) near x = 1, where log x -> 0.
template <class Apply>
std::pair<double, double> worst_log_error(Apply apply, std::uint32_t stride) {
  std::vector<float> x, y;
  for (std::uint32_t u = std::bit_cast<std::uint32_t>(FLT_MIN); u < 0x7f800000u; u += stride)
    x.push_back(std::bit_cast<float>(u));
  y.resize(x.size());
  apply(x.data(), y.data(), x.size());
  double relative = 0.0, absolute = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double want = std::log(static_cast<double>(x[i])), error = std::fabs(static_cast<double>(y[i]) - want);
    if (std::fabs(want) >= 0.5) relative = std::max(relative, error / std::fabs(want));
    else absolute = std::max(absolute, error);
  }
  return {relative, absolute};
}

struct divergence_values {
  std::vector<double> loss, gradient;
};

divergence_values reference_divergence(const std::vector<float>& student, const std::vector<float>& teacher,
                                       const std::vector<double>& weight, std::int64_t vocab, double scale,
                                       double beta) {
  const auto rows = static_cast<std::int64_t>(weight.size());
  const grpo::reference_backend<double> r;
  const auto up = [&](const std::vector<float>& v) {
    return upload(r, std::vector<double>(v.begin(), v.end()), shape::matrix(rows, vocab));
  };
  grpo::reference_backend<double>::tensor_type out;
  const auto w = upload(r, weight, shape::vector(rows));
  const auto loss = row_divergence(r, up(student), up(teacher), scale, beta, w, out);
  return {download(r, loss), download(r, out)};
}

divergence_values fast_divergence(const std::vector<float>& student, const std::vector<float>& teacher,
                                  const std::vector<double>& weight, std::int64_t vocab, double scale, double beta,
                                  hr::isa which) {
  const auto rows = static_cast<std::int64_t>(weight.size());
  const std::vector<float> w(weight.begin(), weight.end());
  std::vector<float> loss(weight.size()), out(student.size());
  hr::divergence(student.data(), teacher.data(), rows, vocab, scale, beta, w.data(), loss.data(), out.data(), which);
  return {{loss.begin(), loss.end()}, {out.begin(), out.end()}};
}

/// The sparse forward KL to K (id, log-prob) pairs per row, by reference_backend<double> and by the host fast path.
divergence_values reference_sparse_kl(const std::vector<float>& student, const std::vector<std::int64_t>& ids,
                                      const std::vector<float>& logprobs, const std::vector<double>& weight,
                                      std::int64_t vocab, double scale) {
  const auto rows = static_cast<std::int64_t>(weight.size()), k = static_cast<std::int64_t>(ids.size()) / rows;
  const grpo::reference_backend<double> r;
  grpo::reference_backend<double>::tensor_type out;
  const auto loss = row_sparse_forward_kl(
      r, upload(r, std::vector<double>(student.begin(), student.end()), shape::matrix(rows, vocab)),
      upload_index(r, ids, shape::matrix(rows, k)),
      upload(r, std::vector<double>(logprobs.begin(), logprobs.end()), shape::matrix(rows, k)), scale,
      upload(r, weight, shape::vector(rows)), out);
  return {download(r, loss), download(r, out)};
}

divergence_values fast_sparse_kl(const std::vector<float>& student, const std::vector<std::int64_t>& ids,
                                 const std::vector<float>& logprobs, const std::vector<double>& weight,
                                 std::int64_t vocab, double scale, hr::isa which, std::int64_t* error_slot) {
  const auto rows = static_cast<std::int64_t>(weight.size()), k = static_cast<std::int64_t>(ids.size()) / rows;
  const std::vector<float> w(weight.begin(), weight.end());
  std::vector<float> loss(weight.size()), out(student.size()), picked(ids.size());
  hr::sparse_forward_kl(student.data(), ids.data(), logprobs.data(), rows, vocab, k, scale, w.data(), loss.data(),
                        out.data(), picked.data(), error_slot, which);
  return {{loss.begin(), loss.end()}, {out.begin(), out.end()}};
}

/// A GRPO batch on the cccl float backend: every optional input, sequence or token ratios.
struct policy_batch {
  std::int64_t rows = 37, cols = 129;
  std::vector<double> logp, old, ref, rollout, entropy, advantages, mask;
  policy_batch() {
    const auto n = static_cast<std::size_t>(rows * cols);
    logp = grpo::testing::uniform(n, -4.0, -0.01, 21);
    old = logp, ref = logp, rollout = logp;
    const auto a = grpo::testing::uniform(n, -0.4, 0.4, 22), b = grpo::testing::uniform(n, -0.6, 0.6, 23);
    const auto c = grpo::testing::uniform(n, -0.3, 0.3, 24);
    for (std::size_t i = 0; i < n; ++i) old[i] += a[i], ref[i] += b[i], rollout[i] += c[i];
    entropy = grpo::testing::uniform(n, 0.0, 3.0, 25);
    advantages = grpo::testing::uniform(static_cast<std::size_t>(rows), -2.0, 2.0, 26);
    const auto lengths = grpo::testing::uniform(static_cast<std::size_t>(rows), 0.0, static_cast<double>(cols), 27);
    mask.assign(n, 0.0);
    for (std::int64_t i = 0; i < rows; ++i)
      for (std::int64_t t = 0; t < static_cast<std::int64_t>(lengths[static_cast<std::size_t>(i)]); ++t)
        mask[static_cast<std::size_t>(i * cols + t)] = 1.0;
  }
  template <class B>
  grpo::policy_loss_inputs<B> inputs(const B& b) const {
    const auto s = shape::matrix(rows, cols);
    return {.logprobs = grpo::make_tensor(b, logp, s),
            .advantages = grpo::make_tensor(b, advantages, shape::vector(rows)),
            .mask = grpo::make_tensor(b, mask, s),
            .old_logprobs = grpo::make_tensor(b, old, s),
            .ref_logprobs = grpo::make_tensor(b, ref, s),
            .rollout_logprobs = grpo::make_tensor(b, rollout, s),
            .entropy = grpo::make_tensor(b, entropy, s)};
  }
};

grpo::policy_loss_options every_option(grpo::ratio_level level) {
  grpo::policy_loss_options o;
  o.level = level;
  o.epsilon_high = 0.28;
  o.delta = 1.5;
  o.dual_clip = 3.0;
  o.beta = 0.04;
  o.entropy_coef = 0.01;
  o.is_level = level;
  return o;
}

}  // namespace

TEST_CASE("host log_f32: error over a dense sweep of the positive normal floats", "[cccl][host_fused]") {
  // Every 61st float from FLT_MIN to FLT_MAX (35 million points, every binade).
  const auto [relative, absolute] = worst_log_error(log_array, 61);
  INFO("generic: relative " << relative << ", absolute near 1 " << absolute);
  CHECK(relative < 2.5e-7);
  CHECK(absolute < 6e-8);
#if GRPO_HOST_AVX2
  if (hr::avx2_available()) {
    const auto [r2, a2] = worst_log_error(log_array_avx2, 61);
    INFO("avx2: relative " << r2 << ", absolute near 1 " << a2);
    CHECK(r2 < 2.5e-7);
    CHECK(a2 < 6e-8);
  }
#endif
  CHECK(grpo::host_kernels::log_f32(1.0f) == 0.0f);
  CHECK(grpo::host_kernels::log_f32(2.0f) == static_cast<float>(std::log(2.0)));
}

TEST_CASE("host expm1_f32: relative error near 0 and over the range the policy loss uses", "[cccl][host_fused]") {
  // Every 31st float of [-30, 30] by bit pattern from 0 outwards: relative to std::expm1 in double, including the
  // tiny |x| where exp(x) - 1 in fp32 would lose every digit (k3 = expm1(x) - x is built on it).
  double worst = 0.0;
  for (const float sign : {1.0f, -1.0f})
    for (std::uint32_t u = 1; u <= std::bit_cast<std::uint32_t>(30.0f); u += 31) {
      const float x = sign * std::bit_cast<float>(u);
      const double want = std::expm1(static_cast<double>(x));
      worst = std::max(worst, std::fabs(grpo::host_kernels::expm1_f32(x) - want) / std::fabs(want));
    }
  INFO("worst relative error " << worst);
  CHECK(worst < 4e-7);
  CHECK(grpo::host_kernels::expm1_f32(0.0f) == 0.0f);
  CHECK(grpo::host_kernels::expm1_f32(1e-30f) == 1e-30f);
}

TEST_CASE("host divergence: both instruction sets match the reference on fp32 inputs", "[cccl][host_fused]") {
  struct sweep {
    std::int64_t rows, vocab;
    double spread, masked;
  };
  // Vocabulary sizes around the lane width and the block, masked shares up to 60%, logits up to 40.
  for (const auto sw : {sweep{3, 1, 3, 0}, sweep{4, 17, 3, 0.2}, sweep{3, 1025, 5, 0.1}, sweep{2, 3001, 40, 0.6},
                        sweep{2, 5000, 8, 0}}) {
    const auto student = make_rows(sw.rows, sw.vocab, sw.spread, sw.masked, 31);
    auto teacher = make_rows(sw.rows, sw.vocab, sw.spread, 0.0, 33);
    for (std::size_t i = 0; i < teacher.size(); ++i)  // teacher and student share the masked entries
      if (student[i] == -INFINITY) teacher[i] = -INFINITY;
    const auto weight = grpo::testing::uniform(static_cast<std::size_t>(sw.rows), 0.1, 2.0, 35);
    for (const double beta : {0.0, 0.1, 0.5, 0.9, 1.0}) {
      for (const double scale : {1.0, 1.0 / 0.7}) {
        const auto want = reference_divergence(student, teacher, weight, sw.vocab, scale, beta);
        for (const auto which : instruction_sets()) {
          INFO(isa_name(which) << ": rows " << sw.rows << " vocab " << sw.vocab << " spread "
                      << sw.spread << " beta " << beta << " scale " << scale);
          const auto got = fast_divergence(student, teacher, weight, sw.vocab, scale, beta, which);
          // fp32 entries (exp and log about 2e-7 relative) summed in 16 lanes per block, blocks merged in double.
          require_near(got.loss, want.loss, 2e-6, 2e-5);
          require_near(got.gradient, want.gradient, 2e-7, 2e-5);
        }
      }
    }
  }
}

TEST_CASE("host divergence: identical rows give zero, in place equals out of place, odd rows use the functor",
          "[cccl][host_fused]") {
  const std::int64_t rows = 4, vocab = 2100;
  auto student = make_rows(rows, vocab, 6.0, 0.1, 41);
  const std::vector<double> weight{1.0, 0.5, 1.0, 2.0};
  for (const double beta : {0.0, 0.5, 1.0}) {
    for (const auto which : instruction_sets()) {
      INFO("beta " << beta);
      const auto same = fast_divergence(student, student, weight, vocab, 1.0, beta, which);
      require_near(same.loss, std::vector<double>(rows, 0.0), 1e-6, 0.0);
      require_near(same.gradient, std::vector<double>(student.size(), 0.0), 1e-8, 0.0);
    }
  }
  auto teacher = make_rows(rows, vocab, 6.0, 0.0, 43);
  student[5] = NAN;                 // row 0: NaN -> the exact functor, which propagates it
  student[vocab + 7] = INFINITY;    // row 1: +inf
  const auto want = reference_divergence(student, teacher, weight, vocab, 1.0, 0.5);
  for (const auto which : instruction_sets()) {
    const auto got = fast_divergence(student, teacher, weight, vocab, 1.0, 0.5, which);
    require_near(got.loss, want.loss, 2e-6, 2e-5);
    std::vector<float> inplace = student;
    const std::vector<float> w(weight.begin(), weight.end());
    std::vector<float> loss(rows);
    hr::divergence(inplace.data(), teacher.data(), rows, vocab, 1.0, 0.5, w.data(), loss.data(), inplace.data(),
                   which);
    for (std::size_t i = 2 * static_cast<std::size_t>(vocab); i < inplace.size(); ++i)
      REQUIRE(static_cast<double>(inplace[i]) == got.gradient[i]);
  }
}

TEST_CASE("host sparse KL: both instruction sets match the reference, repeated ids, odd rows use the functor",
          "[cccl][host_fused]") {
  const std::int64_t rows = 5, vocab = 1500, k = 7;
  const auto student = make_rows(rows, vocab, 6.0, 0.1, 51);
  std::vector<std::int64_t> ids(static_cast<std::size_t>(rows * k));
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int64_t>((i * 211 + 3) % vocab);
  ids[1] = ids[0];  // row 0 names one id twice: its p's are summed there
  for (std::int64_t j = 0; j < k; ++j)  // a row whose K ids are all one token
    ids[static_cast<std::size_t>(2 * k + j)] = ids[static_cast<std::size_t>(2 * k)];
  const auto raw = grpo::testing::uniform(ids.size(), -4.0, 0.0, 53);
  std::vector<float> logprobs(raw.begin(), raw.end());
  logprobs[static_cast<std::size_t>(3 * k + 1)] = -INFINITY;  // probability 0: no term, no gradient
  const std::vector<double> weight{1.0, 0.5, 2.0, 0.0, 1.5};
  for (const double scale : {1.0, 1.0 / 0.7}) {
    const auto want = reference_sparse_kl(student, ids, logprobs, weight, vocab, scale);
    for (const auto which : instruction_sets()) {
      INFO(isa_name(which) << " scale " << scale);
      std::int64_t slot[3] = {0, 0, 0};
      const auto got = fast_sparse_kl(student, ids, logprobs, weight, vocab, scale, which, slot);
      require_near(got.loss, want.loss, 2e-6, 2e-5);
      require_near(got.gradient, want.gradient, 2e-7, 2e-5);
      CHECK(slot[0] == 0);
    }
  }
  // Rows the fast path hands back: a NaN student logit (row 0), a NaN teacher log-prob (row 1), an id out of range
  // (row 4: reported, its loss NaN, the id left out of the gradient); the others keep the fast path.
  auto odd_student = student;
  odd_student[9] = NAN;
  auto odd_logprobs = logprobs;
  odd_logprobs[static_cast<std::size_t>(k + 2)] = NAN;
  auto odd_ids = ids;
  odd_ids[static_cast<std::size_t>(4 * k + 3)] = vocab;
  for (const auto which : instruction_sets()) {
    INFO(isa_name(which));
    std::int64_t slot[3] = {0, 0, 0};
    const auto got = fast_sparse_kl(odd_student, odd_ids, odd_logprobs, weight, vocab, 1.0, which, slot);
    CHECK(slot[0] != 0);
    CHECK(slot[1] == vocab);
    CHECK(std::isnan(got.loss[0]));
    CHECK(std::isnan(got.gradient[static_cast<std::size_t>(vocab)]));  // row 1: the teacher mass is NaN
    CHECK(std::isnan(got.loss[4]));
    const auto clean = fast_sparse_kl(student, ids, logprobs, weight, vocab, 1.0, which, nullptr);
    for (const std::size_t row : {2u, 3u}) {
      REQUIRE(got.loss[row] == clean.loss[row]);
      for (std::int64_t v = 0; v < vocab; ++v)
        REQUIRE(got.gradient[row * vocab + static_cast<std::size_t>(v)] ==
                clean.gradient[row * vocab + static_cast<std::size_t>(v)]);
    }
  }
}

TEST_CASE("host fused policy loss: bits independent of the thread count, bad values named by the generic checks",
          "[cccl][host_fused]") {
  const cccl_float b;
  const policy_batch batch;
  for (const auto level : {grpo::ratio_level::token, grpo::ratio_level::sequence}) {
    const auto in = batch.inputs(b);
    const auto d = grpo::denominators_from_mask(in.mask);
#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_OMP
    omp_set_num_threads(1);
    const auto one = grpo::policy_loss(in, every_option(level), d);
    omp_set_num_threads(2);
#else
    const auto one = grpo::policy_loss(in, every_option(level), d);
#endif
    const auto two = grpo::policy_loss(in, every_option(level), d);
    CHECK(one.loss.item() == two.loss.item());
    CHECK(one.grad_logprobs.to_host() == two.grad_logprobs.to_host());
    CHECK(one.per_token_loss.to_host() == two.per_token_loss.to_host());
    CHECK(one.metrics.kl_mean == two.metrics.kl_mean);
    CHECK(one.metrics.is_truncated_fraction == two.metrics.is_truncated_fraction);
  }
  // A NaN in the padding of ref_logprobs and a mask entry of 0.5: found by the fused sweep, named by the checks.
  auto in = batch.inputs(b);
  auto ref = batch.ref;
  ref.back() = NAN;
  in.ref_logprobs = grpo::make_tensor(b, ref, shape::matrix(batch.rows, batch.cols));
  const auto d = grpo::denominators_from_mask(batch.inputs(b).mask);
  grpo::testing::require_error([&] { (void)grpo::policy_loss(in, every_option(grpo::ratio_level::token), d); },
                               {"ref_logprobs"});
  auto mask = batch.mask;
  mask[3] = 0.5;
  auto in2 = batch.inputs(b);
  in2.mask = grpo::make_tensor(b, mask, shape::matrix(batch.rows, batch.cols));
  grpo::testing::require_error([&] { (void)grpo::policy_loss(in2, every_option(grpo::ratio_level::token), d); },
                               {"mask"});
}

TEST_CASE("host fused advantages: explicit ids, NaN members and every scale match the reference",
          "[cccl][host_fused]") {
  const cccl_float b;
  const grpo::reference_backend<double> r;
  auto scores = grpo::testing::uniform(60, 0.0, 1.0, 51);
  scores[4] = NAN;
  for (std::size_t i = 10; i < 15; ++i) scores[i] = 0.25;  // a constant group (ids below put 10..14 together)
  std::vector<std::int64_t> ids(60);
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int64_t>((i / 5) * 7 % 12);
  for (const auto scale : {grpo::reward_scale::group, grpo::reward_scale::batch, grpo::reward_scale::none}) {
    const grpo::grpo_advantage_options options{scale, 1e-4, 1e-6};
    const auto layout = grpo::group_layout::from_ids(ids);
    const auto got = grpo::grpo_advantages(grpo::make_tensor(b, scores, shape::vector(60)), layout, options);
    const auto want = grpo::grpo_advantages(grpo::make_tensor(r, scores, shape::vector(60)), layout, options);
    require_near(got.advantages.to_host(), want.advantages.to_host(), 1e-6, 1e-6);
    CHECK(got.zero_std_fraction == want.zero_std_fraction);
    CHECK(got.reward_mean == Approx(want.reward_mean).epsilon(1e-7));
    CHECK(got.reward_std == Approx(want.reward_std).epsilon(1e-6));
  }
}
