// SPDX-License-Identifier: Apache-2.0
// grpo/host/policy_rows.hpp: policy_loss (policy_loss.hpp) for one row of the [B,T] inputs on the host, which the
// fused policy losses of grpo::cccl's host systems (cccl/host_fused.hpp) and grpo::libtorch's CPU path
// (libtorch/fused_losses.hpp) run over their rows. A row is two sweeps: the value checks and |o_i| first (counted in
// integers, vectorized; then, at sequence level only, the summed log-ratios in double: the row's weight and ratio
// need them), then every token's loss, gradient and terms of the row's sums while the row is still in L1. For fp32 storage each token's arithmetic runs in fp32 SIMD
// lanes (simd_math's exp and expm1, selects by bit masks: no branch; an AVX2+FMA clone picked at run time, isa.hpp)
// and its sums in fp32 per block of 1024 tokens, then in double; for fp64 in double, token after token. Callers add
// the rows' sums in row order (add_policy_rows), so a result never depends on how rows are shared among threads.
// Standard library only (and the core's option types).
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include "grpo/aggregation.hpp"
#include "grpo/host/isa.hpp"
#include "grpo/host/simd_math.hpp"
#include "grpo/policy_loss.hpp"

// The fp32 token sweep sums in SIMD lanes only where OpenMP's simd reduction lets the compiler reassociate the
// block sums (plain C++ may not): under -fopenmp, or -fopenmp-simd with GRPO_HOST_OPENMP_SIMD defined (grpo::torch
// adds both for GCC and Clang; -fopenmp-simd defines no macro of its own); otherwise it runs scalar. The two builds
// order their fp32 additions differently, so they live in different inline namespaces and never share a
// definition (ODR).
#if defined(_OPENMP) || defined(GRPO_HOST_OPENMP_SIMD)
#define GRPO_HOST_POLICY_SUMS_NAMESPACE simd_sums
#define GRPO_HOST_POLICY_SIMD_REDUCTION \
  _Pragma("omp simd reduction(+ : s_loss, s_pg, s_kl, s_entropy, s_low, s_high, s_dual, s_ratio, s_rho, s_above, s_seq)")
#else
#define GRPO_HOST_POLICY_SUMS_NAMESPACE scalar_sums
#define GRPO_HOST_POLICY_SIMD_REDUCTION
#endif

namespace grpo::host_kernels {
inline namespace GRPO_HOST_ISA_NAMESPACE {
inline namespace GRPO_HOST_POLICY_SUMS_NAMESPACE {

/// The per-row sums of policy_loss_row, each added over the valid tokens of a row.
enum policy_row_sum : int {
  loss_sum,      // W L (the aggregated loss)
  pg_sum,        // rho pg
  kl_sum,        // KL estimate
  entropy_sum,   // H
  clip_low,      // r < 1 - epsilon_low and A < 0
  clip_high,     // r > 1 + epsilon_high and A > 0
  clip_dual,     // the dual clip replaced the loss
  ratio_sum,     // r
  rho_sum,       // IS weight after truncation / masking
  is_above_cap,  // raw IS weight > is_cap
  invalid,       // elements the value checks reject (any element of the row, padding included)
  policy_row_sum_count
};

using policy_row_sums = std::array<double, policy_row_sum_count>;

/// One row [T] of policy_loss's inputs in storage type T. An absent optional input is nullptr; advantages points
/// at the row's scalar when advantage_per_row (advantages [B]), at its T values otherwise.
template <class T>
struct policy_row_inputs {
  const T* logprobs;
  const T* mask;
  const T* advantages;
  bool advantage_per_row;
  const T* old_logprobs;
  const T* ref_logprobs;
  const T* rollout_logprobs;
  const T* entropy;
};

/// One row [T] of policy_loss's outputs; grad_entropy is nullptr without entropy.
template <class T>
struct policy_row_outputs {
  T* per_token_loss;
  T* grad_logprobs;
  T* grad_entropy;
};

namespace policy_detail {

inline double clamp_bound(double x, double bound) { return x < -bound ? -bound : (bound < x ? bound : x); }

inline double minimum(double a, double b) { return b < a ? b : a; }  // backend.hpp's minimum(a, b)

/// What the fp32 token sweep of a row needs besides the tokens: the options as row constants. An absent optional
/// input is read from another valid row and masked out by its flag, so the sweep has no branch.
struct token_constants {
  float bound, low, high;
  float delta;  // +inf without delta: min(r, inf) = r and r <= inf
  float dual_clip;
  float beta, entropy_coef, is_cap;
  float weight;  // W of a valid token of this row
  float sequence_ratio, sequence_is;
  bool sequence, is_sequence, has_dual, has_ref, has_rollout, truncate;
  bool k1, k2;  // the KL estimator (k3 otherwise)
};

/// The rows of a token sweep; adv is per token (a row's advantage is broadcast into a buffer first).
struct token_rows {
  const float *logp, *old, *ref, *rollout, *entropy, *mask, *adv;
  float *loss, *grad, *grad_entropy;
};

/// What one token adds to the row's sums (policy_row_sum), and at sequence level W rho dpg/ds.
struct token_terms {
  float loss, pg, kl, entropy, clip_low, clip_high, dual, ratio, rho, above, sequence_grad;
};

inline constexpr std::int64_t token_block = 1024;

/// c ? a : b by bit masks: a conditional the compiler would keep as a branch (comparisons of floats may trap,
/// so it does not speculate them) stops the sweep from vectorizing; masks never branch.
GRPO_HOST_ALWAYS_INLINE float pick(bool c, float a, float b) {
  const std::uint32_t m = 0u - static_cast<std::uint32_t>(c);
  return std::bit_cast<float>((std::bit_cast<std::uint32_t>(a) & m) | (std::bit_cast<std::uint32_t>(b) & ~m));
}
GRPO_HOST_ALWAYS_INLINE float lesser(float a, float b) { return pick(b < a, b, a); }    // backend.hpp's minimum
GRPO_HOST_ALWAYS_INLINE float greater(float a, float b) { return pick(a < b, b, a); }  // backend.hpp's maximum
GRPO_HOST_ALWAYS_INLINE float clamp_f32(float x, float lo, float hi) { return lesser(greater(x, lo), hi); }

/// One token of policy_loss (policy_loss.hpp) in fp32: writes its outputs, returns its terms of the sums.
GRPO_HOST_ALWAYS_INLINE token_terms policy_token(const token_constants& c, const float* __restrict logp,
                                                 const float* __restrict old, const float* __restrict ref,
                                                 const float* __restrict rollout, const float* __restrict entropy,
                                                 const float* __restrict mask, const float* __restrict adv,
                                                 float* __restrict out_loss, float* __restrict out_grad,
                                                 float* __restrict out_grad_entropy, std::int64_t k) {
  const float m = mask[k], lp = logp[k], od = old[k], a = adv[k];
  const float w = m * c.weight;
  const float x = lp - od;
  const float r = pick(c.sequence, c.sequence_ratio, exp_f32(clamp_f32(x, -c.bound, c.bound)));
  const float unclipped = lesser(r, c.delta) * a;
  const float clipped = clamp_f32(r, c.low, c.high) * a;
  const float pg_clip = -lesser(unclipped, clipped);
  const float slope = pick(unclipped <= clipped, pick(r <= c.delta, 1.0f, 0.0f),
                           pick((r >= c.low) & (r <= c.high), 1.0f, 0.0f));
  const float cap = a * -c.dual_clip;
  const bool dual = c.has_dual & (a < 0.0f) & (cap < pg_clip);
  const float pg = pick(dual, cap, pg_clip);
  const float dpg = pick(dual, 0.0f, -a * slope);
  const float raw_is = pick(c.is_sequence, c.sequence_is, exp_f32(clamp_f32(od - rollout[k], -c.bound, c.bound)));
  const bool above_cap = c.has_rollout & (raw_is > c.is_cap);
  const float rho_rollout = pick(c.truncate, lesser(raw_is, c.is_cap), pick(above_cap, 0.0f, raw_is));
  const float rho = pick(c.has_rollout, rho_rollout, 1.0f);
  const float grad_ratio = w * rho * dpg;
  const float policy_grad = pick(c.sequence, 0.0f, grad_ratio * pick(std::fabs(x) <= c.bound, r, 0.0f));
  // KL(pi || ref), x = clamp(ref - logp, +-bound) (policy_loss.hpp); 0 without ref_logprobs.
  const float x_raw = ref[k] - lp;
  const float inside = pick(std::fabs(x_raw) <= c.bound, 1.0f, 0.0f);
  const float xk = clamp_f32(x_raw, -c.bound, c.bound);
  const float e = expm1_f32(xk);
  const float kl = pick(c.has_ref, pick(c.k1, -xk, pick(c.k2, 0.5f * xk * xk, e - xk)), 0.0f);
  const float dkl = pick(c.has_ref, pick(c.k1, inside, pick(c.k2, -xk * inside, -e * inside)), 0.0f);
  const float h = entropy[k];
  const float loss = pick(m != 0.0f, rho * pg + kl * c.beta - h * c.entropy_coef, 0.0f);
  out_loss[k] = loss;
  out_grad[k] = policy_grad + w * dkl * c.beta;
  out_grad_entropy[k] = w * -c.entropy_coef;
  return {w * loss,
          m * (rho * pg),
          m * kl,
          m * h,
          pick((r < c.low) & (a < 0.0f), m, 0.0f),
          pick((r > c.high) & (a > 0.0f), m, 0.0f),
          pick(dual, m, 0.0f),
          m * r,
          m * rho,
          pick(above_cap, m, 0.0f),
          grad_ratio};
}

/// Sweep 2 of a row of n tokens in fp32: writes the outputs and adds the row's sums (policy_row_sum order) in
/// double, each block of token_block tokens summed in fp32 first.
GRPO_HOST_ALWAYS_INLINE void policy_tokens(const token_constants& constants, const token_rows& rows, std::int64_t n,
                                           policy_row_sums& row, double& sequence_grad) {
  const token_constants c = constants;  // a local copy: no store through the outputs can change it
  const float *__restrict logp = rows.logp, *__restrict old = rows.old, *__restrict ref = rows.ref;
  const float *__restrict rollout = rows.rollout, *__restrict entropy = rows.entropy, *__restrict mask = rows.mask;
  const float* __restrict adv = rows.adv;
  float *__restrict out_loss = rows.loss, *__restrict out_grad = rows.grad, *__restrict out_ge = rows.grad_entropy;
  for (std::int64_t b0 = 0; b0 < n; b0 += token_block) {
    const std::int64_t end = std::min(n, b0 + token_block);
    float s_loss = 0, s_pg = 0, s_kl = 0, s_entropy = 0, s_low = 0, s_high = 0, s_dual = 0, s_ratio = 0, s_rho = 0,
          s_above = 0, s_seq = 0;
    GRPO_HOST_POLICY_SIMD_REDUCTION
    for (std::int64_t k = b0; k < end; ++k) {
      const token_terms t = policy_token(c, logp, old, ref, rollout, entropy, mask, adv, out_loss, out_grad, out_ge, k);
      s_loss += t.loss, s_pg += t.pg, s_kl += t.kl, s_entropy += t.entropy, s_low += t.clip_low;
      s_high += t.clip_high, s_dual += t.dual, s_ratio += t.ratio, s_rho += t.rho, s_above += t.above;
      s_seq += t.sequence_grad;
    }
    row[loss_sum] += s_loss, row[pg_sum] += s_pg, row[kl_sum] += s_kl, row[entropy_sum] += s_entropy;
    row[clip_low] += s_low, row[clip_high] += s_high, row[clip_dual] += s_dual, row[ratio_sum] += s_ratio;
    row[rho_sum] += s_rho, row[is_above_cap] += s_above;
    sequence_grad += s_seq;
  }
}

GRPO_HOST_FLATTEN inline void policy_tokens_generic(const token_constants& c, const token_rows& rows, std::int64_t n,
                                                    policy_row_sums& row, double& sequence_grad) {
  policy_tokens(c, rows, n, row, sequence_grad);
}

#if GRPO_HOST_AVX2
__attribute__((target("avx2,fma"))) GRPO_HOST_FLATTEN inline void policy_tokens_avx2(const token_constants& c,
                                                                                   const token_rows& rows,
                                                                                   std::int64_t n,
                                                                                   policy_row_sums& row,
                                                                                   double& sequence_grad) {
  policy_tokens(c, rows, n, row, sequence_grad);
}
#endif

/// What sweep 1's checks count over a row: elements the value checks reject, and valid tokens (mask = 1).
struct token_counts {
  std::int64_t rejected, valid;
};

/// x is NaN or +-Inf: its exponent bits are all ones (a test on the bits, which vectorizes; std::isfinite does not).
template <class T>
GRPO_HOST_ALWAYS_INLINE std::uint32_t not_finite(T x) {
  using bits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
  constexpr bits exponent = static_cast<bits>(sizeof(T) == 4 ? 0x7f800000ull : 0x7ff0000000000000ull);
  return static_cast<std::uint32_t>((std::bit_cast<bits>(x) & exponent) == exponent);
}

/// Sweep 1's value checks of a row of n tokens: every element NaN or +-Inf and every mask entry other than 0 or 1
/// counted, and the mask's ones, in integers (exact in any order, so the loop vectorizes). An absent input is passed
/// as another present one (logp): counted twice, it changes no count from zero to non-zero.
template <class T>
GRPO_HOST_ALWAYS_INLINE token_counts check_tokens(const T* __restrict logp, const T* __restrict old,
                                                  const T* __restrict ref, const T* __restrict rollout,
                                                  const T* __restrict entropy, const T* __restrict mask,
                                                  const T* __restrict adv, std::int64_t n) {
  token_counts counts{0, 0};
  for (std::int64_t b0 = 0; b0 < n; b0 += token_block) {
    const std::int64_t end = std::min(n, b0 + token_block);
    std::uint32_t rejected = 0, valid = 0;
    for (std::int64_t k = b0; k < end; ++k) {
      const T m = mask[k];
      rejected += static_cast<std::uint32_t>(!((m == T(0)) | (m == T(1)))) + not_finite(logp[k]) + not_finite(old[k]) +
                  not_finite(ref[k]) + not_finite(rollout[k]) + not_finite(entropy[k]) + not_finite(adv[k]);
      valid += static_cast<std::uint32_t>(m == T(1));
    }
    counts.rejected += rejected, counts.valid += valid;
  }
  return counts;
}

template <class T>
GRPO_HOST_FLATTEN inline token_counts check_tokens_generic(const T* logp, const T* old, const T* ref,
                                                           const T* rollout, const T* entropy, const T* mask,
                                                           const T* adv, std::int64_t n) {
  return check_tokens(logp, old, ref, rollout, entropy, mask, adv, n);
}

#if GRPO_HOST_AVX2
template <class T>
__attribute__((target("avx2,fma"))) GRPO_HOST_FLATTEN inline token_counts check_tokens_avx2(
    const T* logp, const T* old, const T* ref, const T* rollout, const T* entropy, const T* mask, const T* adv,
    std::int64_t n) {
  return check_tokens(logp, old, ref, rollout, entropy, mask, adv, n);
}
#endif

/// check_tokens for the inputs of a row, on the instruction set `which`.
template <class T>
token_counts check_row(const policy_row_inputs<T>& in, std::int64_t cols, isa which) {
  const auto or_logp = [&](const T* p) { return p ? p : in.logprobs; };
  const T* adv = in.advantage_per_row ? in.logprobs : in.advantages;
  token_counts counts{};
#if GRPO_HOST_AVX2
  if (which == isa::avx2)
    counts = check_tokens_avx2(in.logprobs, or_logp(in.old_logprobs), or_logp(in.ref_logprobs),
                               or_logp(in.rollout_logprobs), or_logp(in.entropy), in.mask, adv, cols);
  else
#endif
    counts = check_tokens_generic(in.logprobs, or_logp(in.old_logprobs), or_logp(in.ref_logprobs),
                                  or_logp(in.rollout_logprobs), or_logp(in.entropy), in.mask, adv, cols);
  (void)which;
  if (in.advantage_per_row) counts.rejected += not_finite(in.advantages[0]);
  return counts;
}

/// The row's scalars sweep 2 needs: |o_i| (at least 1), W of its valid tokens, and the sequence-level ratios.
struct row_scalars {
  double length, weight, sequence_ratio, sequence_slope, sequence_is;
};

/// Sweep 2 in double, token after token (fp64 storage).
template <class T>
void policy_tokens_f64(const policy_loss_options& o, const row_scalars& s, const policy_row_inputs<T>& in,
                       const policy_row_outputs<T>& out, std::int64_t cols, policy_row_sums& row,
                       double& sequence_grad) {
  const double bound = o.log_ratio_bound, low = 1.0 - o.epsilon_low, high = 1.0 + o.epsilon_high;
  const bool sequence = o.level == ratio_level::sequence;
  const bool is_sequence = o.is_level == ratio_level::sequence;
  const bool truncate = o.is_mode == is_correction_mode::truncate;
  const auto value = [](const T* p, std::int64_t k) { return static_cast<double>(p[k]); };
  for (std::int64_t k = 0; k < cols; ++k) {
    const double m = value(in.mask, k), lp = value(in.logprobs, k);
    const double od = in.old_logprobs ? value(in.old_logprobs, k) : lp;
    const double a = in.advantage_per_row ? value(in.advantages, 0) : value(in.advantages, k);
    const double w = m * s.weight;
    const double log_ratio = lp - od;
    const double r = sequence ? s.sequence_ratio : std::exp(clamp_bound(log_ratio, bound));
    const double unclipped = (o.delta ? minimum(r, *o.delta) : r) * a;
    const double clipped = minimum(r < low ? low : r, high) * a;
    double pg = -minimum(unclipped, clipped);
    const double unclipped_slope = o.delta ? static_cast<double>(r <= *o.delta) : 1.0;
    const double clipped_slope = static_cast<double>(r >= low && r <= high);
    double dpg = -a * (unclipped <= clipped ? unclipped_slope : clipped_slope);
    bool dual = false;
    if (o.dual_clip) {
      const double cap = a * -*o.dual_clip;
      dual = a < 0.0 && cap < pg;
      if (dual) pg = cap, dpg = 0.0;
    }
    double rho = 1.0;
    bool above_cap = false;
    if (in.rollout_logprobs) {
      const double raw = is_sequence ? s.sequence_is : std::exp(clamp_bound(od - value(in.rollout_logprobs, k), bound));
      above_cap = raw > o.is_cap;
      rho = truncate ? minimum(raw, o.is_cap) : (above_cap ? 0.0 : raw);
    }
    double loss = rho * pg;
    const double grad_ratio = w * rho * dpg;
    double g = 0.0;
    if (sequence) sequence_grad += grad_ratio;
    else g = grad_ratio * (std::fabs(log_ratio) <= bound ? r : 0.0);
    row[pg_sum] += m * loss;
    if (in.ref_logprobs) {
      const double x_raw = value(in.ref_logprobs, k) - lp, inside = std::fabs(x_raw) <= bound ? 1.0 : 0.0;
      const double x = clamp_bound(x_raw, bound);
      double kl = 0.0, dkl = 0.0;
      switch (o.kl) {
        case kl_estimator::k1: kl = -x, dkl = inside; break;
        case kl_estimator::k2: kl = x * x * 0.5, dkl = -x * inside; break;
        case kl_estimator::k3: {
          const double e = std::expm1(x);
          kl = e - x, dkl = -e * inside;
          break;
        }
      }
      loss += kl * o.beta;
      g += w * dkl * o.beta;
      row[kl_sum] += m * kl;
    }
    if (in.entropy) {
      const double h = value(in.entropy, k);
      loss -= h * o.entropy_coef;
      out.grad_entropy[k] = static_cast<T>(w * -o.entropy_coef);
      row[entropy_sum] += m * h;
    }
    loss = m != 0.0 ? loss : 0.0;
    out.per_token_loss[k] = static_cast<T>(loss);
    out.grad_logprobs[k] = static_cast<T>(g);
    row[loss_sum] += w * loss;
    row[clip_low] += m * static_cast<double>(r < low && a < 0.0);
    row[clip_high] += m * static_cast<double>(r > high && a > 0.0);
    row[clip_dual] += m * static_cast<double>(dual);
    row[ratio_sum] += m * r;
    row[rho_sum] += m * rho;
    row[is_above_cap] += m * static_cast<double>(above_cap);
  }
}

/// Sweep 2 in fp32 SIMD lanes (fp32 storage), on the instruction set `which`.
inline void policy_tokens_f32(const policy_loss_options& o, const row_scalars& s, const policy_row_inputs<float>& in,
                              const policy_row_outputs<float>& out, std::int64_t cols, policy_row_sums& row,
                              double& sequence_grad, isa which) {
  // A row's advantage broadcast over its tokens and, without entropy, its (zero) gradient: per-thread rows, so
  // that every load and store of the sweep is unconditional, as vectorizing it needs.
  thread_local std::vector<float> row_advantages, unused_grad_entropy;
  if (in.advantage_per_row) row_advantages.assign(static_cast<std::size_t>(cols), in.advantages[0]);
  if (!in.entropy) unused_grad_entropy.resize(static_cast<std::size_t>(cols));
  const float* old = in.old_logprobs ? in.old_logprobs : in.logprobs;
  const token_rows rows{in.logprobs,
                        old,
                        in.ref_logprobs ? in.ref_logprobs : in.logprobs,
                        in.rollout_logprobs ? in.rollout_logprobs : old,
                        in.entropy ? in.entropy : in.logprobs,
                        in.mask,
                        in.advantage_per_row ? row_advantages.data() : in.advantages,
                        out.per_token_loss,
                        out.grad_logprobs,
                        in.entropy ? out.grad_entropy : unused_grad_entropy.data()};
  const token_constants constants{static_cast<float>(o.log_ratio_bound),
                                  static_cast<float>(1.0 - o.epsilon_low),
                                  static_cast<float>(1.0 + o.epsilon_high),
                                  o.delta ? static_cast<float>(*o.delta) : INFINITY,
                                  o.dual_clip ? static_cast<float>(*o.dual_clip) : 0.0f,
                                  static_cast<float>(o.beta),
                                  static_cast<float>(o.entropy_coef),
                                  static_cast<float>(o.is_cap),
                                  static_cast<float>(s.weight),
                                  static_cast<float>(s.sequence_ratio),
                                  static_cast<float>(s.sequence_is),
                                  o.level == ratio_level::sequence,
                                  o.is_level == ratio_level::sequence,
                                  o.dual_clip.has_value(),
                                  in.ref_logprobs != nullptr,
                                  in.rollout_logprobs != nullptr,
                                  o.is_mode == is_correction_mode::truncate,
                                  o.kl == kl_estimator::k1,
                                  o.kl == kl_estimator::k2};
#if GRPO_HOST_AVX2
  if (which == isa::avx2) return policy_tokens_avx2(constants, rows, cols, row, sequence_grad);
#endif
  (void)which;
  policy_tokens_generic(constants, rows, cols, row, sequence_grad);
}

}  // namespace policy_detail

/// policy_loss (policy_loss.hpp) for row i of validated options, denominators and shapes: writes the row's
/// per-token loss and gradients and returns its sums (policy_row_sum). When an element of the row is NaN or +-Inf
/// or a mask entry is neither 0 nor 1, the sums hold only that count under `invalid` and the outputs are
/// unspecified: the caller then leaves the inputs to policy_loss's own checks, which name them.
/// T is float (fp32 SIMD sweep on `which`) or double (a double sweep; `which` unused).
template <class T>
policy_row_sums policy_loss_row(const policy_loss_options& o, const loss_denominators& d,
                                const policy_row_inputs<T>& in, const policy_row_outputs<T>& out, std::int64_t cols,
                                isa which = best_isa()) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "policy_loss_row: T is float or double");
  namespace pd = policy_detail;
  policy_row_sums row{};
  const auto value = [](const T* p, std::int64_t k) { return static_cast<double>(p[k]); };
  const double bound = o.log_ratio_bound;

  // Sweep 1: the value checks and |o_i| (the sum of a 0/1 mask: its count of ones); then, for sequence-level ratios
  // only, the row's summed log-ratios in double, token after token.
  const pd::token_counts counts = pd::check_row(in, cols, which);
  if (counts.rejected > 0) {
    row[invalid] = static_cast<double>(counts.rejected);
    return row;
  }
  double policy_log_ratio = 0.0, is_log_ratio = 0.0;
  const bool sequence_is = in.rollout_logprobs && o.is_level == ratio_level::sequence;
  if (o.level == ratio_level::sequence || sequence_is) {
    for (std::int64_t k = 0; k < cols; ++k) {
      const double m = value(in.mask, k), lp = value(in.logprobs, k);
      const double od = in.old_logprobs ? value(in.old_logprobs, k) : lp;
      policy_log_ratio += m * (lp - od);
      if (in.rollout_logprobs) is_log_ratio += m * (od - value(in.rollout_logprobs, k));
    }
  }
  pd::row_scalars s{};
  s.length = std::max(static_cast<double>(counts.valid), 1.0);
  // W = d aggregate / d L per valid token (aggregation.hpp).
  switch (o.aggregation) {
    case loss_aggregation::token_mean: s.weight = 1.0 / d.tokens; break;
    case loss_aggregation::seq_mean_token_mean: s.weight = 1.0 / (s.length * d.sequences); break;
    case loss_aggregation::seq_mean_token_sum: s.weight = 1.0 / d.sequences; break;
    case loss_aggregation::seq_mean_token_sum_norm: s.weight = 1.0 / (d.sequences * d.constant); break;
  }
  const double sequence_log_ratio = policy_log_ratio / s.length;
  s.sequence_ratio = std::exp(pd::clamp_bound(sequence_log_ratio, bound));
  s.sequence_slope = std::fabs(sequence_log_ratio) <= bound ? s.sequence_ratio : 0.0;
  s.sequence_is = std::exp(pd::clamp_bound(is_log_ratio, bound));

  // Sweep 2: every token's loss, its gradient (at sequence level only the row's d loss / d s, summed) and sums.
  double sequence_grad = 0.0;
  if constexpr (std::is_same_v<T, float>)
    pd::policy_tokens_f32(o, s, in, out, cols, row, sequence_grad, which);
  else
    pd::policy_tokens_f64(o, s, in, out, cols, row, sequence_grad);

  // Sequence level: d loss / d logp_t = (sum_t W rho dpg/ds) s_i m_t / |o_i| (policy_loss.hpp).
  if (o.level == ratio_level::sequence) {
    const double per_token_grad = sequence_grad * s.sequence_slope / s.length;
    for (std::int64_t k = 0; k < cols; ++k)
      out.grad_logprobs[k] = static_cast<T>(value(in.mask, k) * per_token_grad + value(out.grad_logprobs, k));
  }
  return row;
}

/// The rows' sums added in row order (so the total does not depend on which thread did which row).
inline policy_row_sums add_policy_rows(std::span<const policy_row_sums> rows) {
  policy_row_sums total{};
  for (const auto& row : rows)
    for (std::size_t c = 0; c < total.size(); ++c) total[c] += row[c];
  return total;
}

/// policy_loss's metrics from the batch's sums (no row invalid), with which optional inputs were present.
inline policy_loss_metrics policy_metrics(const policy_row_sums& total, const policy_loss_options& o,
                                          const loss_denominators& d, bool has_ref, bool has_rollout,
                                          bool has_entropy) {
  const double n = d.tokens;
  policy_loss_metrics metrics;
  metrics.pg_loss = total[pg_sum] / n;
  metrics.kl_mean = has_ref ? total[kl_sum] / n : 0.0;
  metrics.entropy_mean = has_entropy ? total[entropy_sum] / n : 0.0;
  metrics.clip_fraction_low = total[clip_low] / n;
  metrics.clip_fraction_high = total[clip_high] / n;
  metrics.clip_fraction_dual = total[clip_dual] / n;
  metrics.ratio_mean = total[ratio_sum] / n;
  metrics.is_weight_mean = total[rho_sum] / n;
  if (has_rollout)
    (o.is_mode == is_correction_mode::truncate ? metrics.is_truncated_fraction : metrics.is_masked_fraction) =
        total[is_above_cap] / n;
  return metrics;
}

}  // namespace GRPO_HOST_POLICY_SUMS_NAMESPACE
}  // namespace GRPO_HOST_ISA_NAMESPACE
}  // namespace grpo::host_kernels
