// SPDX-License-Identifier: Apache-2.0
// grpo/cccl/host_fused.hpp: the fused paths of grpo::cccl::backend<T> on the host device systems (CPP, OMP), which the
// generic algorithms take where a backend offers them (backend.hpp, "optional fused paths"), with their semantics:
//   fused_policy_loss      policy_loss.hpp in one sweep over the [B,T] inputs, a row at a time (the row's length and,
//                          at sequence level, its ratio need the row's sums first; the row is then still in L1), rows
//                          in parallel under OpenMP. For fp32 storage each token's arithmetic runs in fp32 SIMD lanes
//                          (simd_math's exp and expm1, selects by bit masks: no branch), its sums in fp32 per block
//                          of 1024 tokens, then in double; for fp64 in double, token after token. The rows' sums are
//                          added in row order, so the result does not depend on the number of threads.
//   fused_grpo_advantages  advantages.hpp's grpo_core: the group sums in two sweeps (mean, then squared deviations,
//                          as group_stats does, so a constant group has exactly zero spread), no [B] temporaries.
// The generic algorithms run one Thrust transform per operation, each reading and writing a whole tensor (about forty
// for the loss); these read each input once and write each output once (bench/RESULTS.md, issue 14).
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
#include <type_traits>
#include <vector>

#include "grpo/cccl/backend.hpp"

#if !GRPO_CCCL_CUDA
#include "grpo/advantages.hpp"
#include "grpo/cccl/host_rows.hpp"
#include "grpo/host/isa.hpp"
#include "grpo/host/simd_math.hpp"
#include "grpo/policy_loss.hpp"

namespace grpo::cccl {
inline namespace GRPO_CCCL_SYSTEM_NAMESPACE {
namespace host_fused {

/// The per-row sums of fused_policy_loss, each added over the valid tokens of a row.
enum row_sum : int {
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
  row_sum_count
};

inline double clamp_bound(double x, double bound) { return x < -bound ? -bound : (bound < x ? bound : x); }

inline double minimum(double a, double b) { return b < a ? b : a; }  // backend.hpp's minimum(a, b)

template <class T>
const T* data_of(const std::optional<tensor<backend<T>>>& t) {
  return t ? t->raw().data.data() : nullptr;
}

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

/// What one token adds to the row's sums (row_sum), and at sequence level W rho dpg/ds.
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
  const float r = pick(c.sequence, c.sequence_ratio, grpo::host_kernels::exp_f32(clamp_f32(x, -c.bound, c.bound)));
  const float unclipped = lesser(r, c.delta) * a;
  const float clipped = clamp_f32(r, c.low, c.high) * a;
  const float pg_clip = -lesser(unclipped, clipped);
  const float slope = pick(unclipped <= clipped, pick(r <= c.delta, 1.0f, 0.0f),
                           pick((r >= c.low) & (r <= c.high), 1.0f, 0.0f));
  const float cap = a * -c.dual_clip;
  const bool dual = c.has_dual & (a < 0.0f) & (cap < pg_clip);
  const float pg = pick(dual, cap, pg_clip);
  const float dpg = pick(dual, 0.0f, -a * slope);
  const float raw_is =
      pick(c.is_sequence, c.sequence_is, grpo::host_kernels::exp_f32(clamp_f32(od - rollout[k], -c.bound, c.bound)));
  const bool above_cap = c.has_rollout & (raw_is > c.is_cap);
  const float rho_rollout = pick(c.truncate, lesser(raw_is, c.is_cap), pick(above_cap, 0.0f, raw_is));
  const float rho = pick(c.has_rollout, rho_rollout, 1.0f);
  const float grad_ratio = w * rho * dpg;
  const float policy_grad = pick(c.sequence, 0.0f, grad_ratio * pick(std::fabs(x) <= c.bound, r, 0.0f));
  // KL(pi || ref), x = clamp(ref - logp, +-bound) (policy_loss.hpp); 0 without ref_logprobs.
  const float x_raw = ref[k] - lp;
  const float inside = pick(std::fabs(x_raw) <= c.bound, 1.0f, 0.0f);
  const float xk = clamp_f32(x_raw, -c.bound, c.bound);
  const float e = grpo::host_kernels::expm1_f32(xk);
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

// OpenMP's simd reduction lets the compiler reassociate the block sums across SIMD lanes (plain C++ may not);
// without OpenMP the sweep runs scalar.
#if defined(_OPENMP)
#define GRPO_HOST_FUSED_SIMD_REDUCTION \
  _Pragma("omp simd reduction(+ : s_loss, s_pg, s_kl, s_entropy, s_low, s_high, s_dual, s_ratio, s_rho, s_above, s_seq)")
#else
#define GRPO_HOST_FUSED_SIMD_REDUCTION
#endif

/// Sweep 2 of a row of n tokens in fp32: writes the outputs and adds the row's sums (row_sum order) in double,
/// each block of token_block tokens summed in fp32 first.
GRPO_HOST_ALWAYS_INLINE void policy_tokens(const token_constants& constants, const token_rows& rows, std::int64_t n,
                                           double (&row)[row_sum_count], double& sequence_grad) {
  const token_constants c = constants;  // a local copy: no store through the outputs can change it
  const float *__restrict logp = rows.logp, *__restrict old = rows.old, *__restrict ref = rows.ref;
  const float *__restrict rollout = rows.rollout, *__restrict entropy = rows.entropy, *__restrict mask = rows.mask;
  const float* __restrict adv = rows.adv;
  float *__restrict out_loss = rows.loss, *__restrict out_grad = rows.grad, *__restrict out_ge = rows.grad_entropy;
  for (std::int64_t b0 = 0; b0 < n; b0 += token_block) {
    const std::int64_t end = std::min(n, b0 + token_block);
    float s_loss = 0, s_pg = 0, s_kl = 0, s_entropy = 0, s_low = 0, s_high = 0, s_dual = 0, s_ratio = 0, s_rho = 0,
          s_above = 0, s_seq = 0;
    GRPO_HOST_FUSED_SIMD_REDUCTION
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
                                                    double (&row)[row_sum_count], double& sequence_grad) {
  policy_tokens(c, rows, n, row, sequence_grad);
}

#if GRPO_HOST_AVX2
__attribute__((target("avx2,fma"))) GRPO_HOST_FLATTEN inline void policy_tokens_avx2(
    const token_constants& c, const token_rows& rows, std::int64_t n, double (&row)[row_sum_count],
    double& sequence_grad) {
  policy_tokens(c, rows, n, row, sequence_grad);
}
#endif

}  // namespace host_fused

/// policy_loss (policy_loss.hpp) for validated options, denominators and shapes; nullopt when an input holds NaN
/// or Inf or the mask a value other than 0 or 1, so that the generic checks name it.
template <class T>
std::optional<policy_loss_result<backend<T>>> fused_policy_loss(const backend<T>& b,
                                                                const policy_loss_inputs<backend<T>>& in,
                                                                const policy_loss_options& o,
                                                                const loss_denominators& d) {
  namespace hf = host_fused;
  using tensor_t = tensor<backend<T>>;
  const shape s = in.logprobs.shape();
  const std::int64_t rows = s.dims[0], cols = s.dims[1];
  const T* logp = in.logprobs.raw().data.data();
  const T* mask = in.mask.raw().data.data();
  const T* adv = in.advantages.raw().data.data();
  const bool adv_per_row = in.advantages.shape().rank == 1;
  // Presence is the optional's, not the pointer's: an empty tensor has no storage.
  const bool old = in.old_logprobs.has_value(), ref = in.ref_logprobs.has_value();
  const bool rollout = in.rollout_logprobs.has_value(), entropy = in.entropy.has_value();
  const T* old_data = hf::data_of(in.old_logprobs);
  const T* ref_data = hf::data_of(in.ref_logprobs);
  const T* rollout_data = hf::data_of(in.rollout_logprobs);
  const T* entropy_data = hf::data_of(in.entropy);

  auto per_token = detail::allocate(b, s);
  auto grad = detail::allocate(b, s);
  std::optional<device_tensor<T>> grad_entropy;
  if (entropy) grad_entropy = detail::allocate(b, s);
  T* per_token_out = per_token.data.data();
  T* grad_out = grad.data.data();
  T* grad_entropy_out = entropy ? grad_entropy->data.data() : nullptr;

  const double bound = o.log_ratio_bound, low = 1.0 - o.epsilon_low, high = 1.0 + o.epsilon_high;
  const bool sequence = o.level == ratio_level::sequence;
  const bool is_sequence = o.is_level == ratio_level::sequence;
  const bool truncate = o.is_mode == is_correction_mode::truncate;
  std::vector<double> sums(static_cast<std::size_t>(rows * hf::row_sum_count), 0.0);

#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_OMP && defined(_OPENMP)
#pragma omp parallel for schedule(static)
#endif
  for (std::int64_t i = 0; i < rows; ++i) {
    double row[hf::row_sum_count] = {};  // in registers, copied to sums at the end of the row
    const std::int64_t begin = i * cols;
    const auto value = [](const T* p, std::int64_t k) { return static_cast<double>(p[k]); };
    const auto old_at = [&](std::int64_t k) { return old ? value(old_data, k) : value(logp, k); };

    // Sweep 1: the value checks, |o_i|, and the row's summed log-ratios for sequence-level ratios.
    double length = 0.0, policy_log_ratio = 0.0, is_log_ratio = 0.0, invalid = 0.0;
    if (adv_per_row && !std::isfinite(value(adv, i))) invalid += 1.0;
    for (std::int64_t k = begin; k < begin + cols; ++k) {
      const double m = value(mask, k), lp = value(logp, k), od = old_at(k);
      invalid += static_cast<double>(!(m == 0.0 || m == 1.0)) + static_cast<double>(!std::isfinite(lp)) +
                 static_cast<double>(old && !std::isfinite(od)) +
                 static_cast<double>(!adv_per_row && !std::isfinite(value(adv, k))) +
                 static_cast<double>(ref && !std::isfinite(value(ref_data, k))) +
                 static_cast<double>(rollout && !std::isfinite(value(rollout_data, k))) +
                 static_cast<double>(entropy && !std::isfinite(value(entropy_data, k)));
      length += m;
      policy_log_ratio += m * (lp - od);
      if (rollout) is_log_ratio += m * (od - value(rollout_data, k));
    }
    if (invalid > 0.0) {
      sums[static_cast<std::size_t>(i * hf::row_sum_count + hf::invalid)] = invalid;
      continue;
    }
    length = std::max(length, 1.0);
    // W = d aggregate / d L per valid token (aggregation.hpp).
    const double weight = [&] {
      switch (o.aggregation) {
        case loss_aggregation::token_mean: return 1.0 / d.tokens;
        case loss_aggregation::seq_mean_token_mean: return 1.0 / (length * d.sequences);
        case loss_aggregation::seq_mean_token_sum: return 1.0 / d.sequences;
        case loss_aggregation::seq_mean_token_sum_norm: return 1.0 / (d.sequences * d.constant);
      }
      return 0.0;
    }();
    const double sequence_log_ratio = policy_log_ratio / length;
    const double sequence_ratio = std::exp(hf::clamp_bound(sequence_log_ratio, bound));
    const double sequence_slope = std::fabs(sequence_log_ratio) <= bound ? sequence_ratio : 0.0;
    const double sequence_is = std::exp(hf::clamp_bound(is_log_ratio, bound));

    // Sweep 2: every token's loss, its gradient (at sequence level only the row's d loss / d s, summed) and sums:
    // for fp32 storage in fp32 SIMD lanes (host_fused::policy_tokens), for fp64 in double, token after token.
    double sequence_grad = 0.0;
    if constexpr (std::is_same_v<T, float>) {
      // A row's advantage broadcast over its tokens and, without entropy, its (zero) gradient: per-thread rows,
      // so that every load and store of the sweep is unconditional, as vectorizing it needs.
      thread_local std::vector<float> row_advantages, unused_grad_entropy;
      if (adv_per_row) row_advantages.assign(static_cast<std::size_t>(cols), adv[i]);
      if (!entropy) unused_grad_entropy.resize(static_cast<std::size_t>(cols));
      const float* row_logp = logp + begin;
      const float* row_old = old ? old_data + begin : row_logp;
      const hf::token_rows token_rows{row_logp,
                                      row_old,
                                      ref ? ref_data + begin : row_logp,
                                      rollout ? rollout_data + begin : row_old,
                                      entropy ? entropy_data + begin : row_logp,
                                      mask + begin,
                                      adv_per_row ? row_advantages.data() : adv + begin,
                                      per_token_out + begin,
                                      grad_out + begin,
                                      entropy ? grad_entropy_out + begin : unused_grad_entropy.data()};
      const hf::token_constants constants{static_cast<float>(bound),
                                          static_cast<float>(low),
                                          static_cast<float>(high),
                                          o.delta ? static_cast<float>(*o.delta) : INFINITY,
                                          o.dual_clip ? static_cast<float>(*o.dual_clip) : 0.0f,
                                          static_cast<float>(o.beta),
                                          static_cast<float>(o.entropy_coef),
                                          static_cast<float>(o.is_cap),
                                          static_cast<float>(weight),
                                          static_cast<float>(sequence_ratio),
                                          static_cast<float>(sequence_is),
                                          sequence,
                                          is_sequence,
                                          o.dual_clip.has_value(),
                                          ref,
                                          rollout,
                                          truncate,
                                          o.kl == kl_estimator::k1,
                                          o.kl == kl_estimator::k2};
#if GRPO_HOST_AVX2
      if (host_rows::avx2_available())
        hf::policy_tokens_avx2(constants, token_rows, cols, row, sequence_grad);
      else
        hf::policy_tokens_generic(constants, token_rows, cols, row, sequence_grad);
#else
      hf::policy_tokens_generic(constants, token_rows, cols, row, sequence_grad);
#endif
    } else {
    for (std::int64_t k = begin; k < begin + cols; ++k) {
      const double m = value(mask, k), lp = value(logp, k), od = old_at(k);
      const double a = adv_per_row ? value(adv, i) : value(adv, k);
      const double w = m * weight;
      const double log_ratio = lp - od;
      const double r = sequence ? sequence_ratio : std::exp(hf::clamp_bound(log_ratio, bound));
      const double unclipped = (o.delta ? hf::minimum(r, *o.delta) : r) * a;
      const double clipped = hf::minimum(r < low ? low : r, high) * a;
      double pg = -hf::minimum(unclipped, clipped);
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
      if (rollout) {
        const double raw = is_sequence ? sequence_is : std::exp(hf::clamp_bound(od - value(rollout_data, k), bound));
        above_cap = raw > o.is_cap;
        rho = truncate ? hf::minimum(raw, o.is_cap) : (above_cap ? 0.0 : raw);
      }
      double loss = rho * pg;
      const double grad_ratio = w * rho * dpg;
      double g = 0.0;
      if (sequence) sequence_grad += grad_ratio;
      else g = grad_ratio * (std::fabs(log_ratio) <= bound ? r : 0.0);
      row[hf::pg_sum] += m * loss;
      if (ref) {
        const double x_raw = value(ref_data, k) - lp, inside = std::fabs(x_raw) <= bound ? 1.0 : 0.0;
        const double x = hf::clamp_bound(x_raw, bound);
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
        row[hf::kl_sum] += m * kl;
      }
      if (entropy) {
        const double h = value(entropy_data, k);
        loss -= h * o.entropy_coef;
        grad_entropy_out[k] = static_cast<T>(w * -o.entropy_coef);
        row[hf::entropy_sum] += m * h;
      }
      loss = m != 0.0 ? loss : 0.0;
      per_token_out[k] = static_cast<T>(loss);
      grad_out[k] = static_cast<T>(g);
      row[hf::loss_sum] += w * loss;
      row[hf::clip_low] += m * static_cast<double>(r < low && a < 0.0);
      row[hf::clip_high] += m * static_cast<double>(r > high && a > 0.0);
      row[hf::clip_dual] += m * static_cast<double>(dual);
      row[hf::ratio_sum] += m * r;
      row[hf::rho_sum] += m * rho;
      row[hf::is_above_cap] += m * static_cast<double>(above_cap);
    }
    }
    // Sequence level: d loss / d logp_t = (sum_t W rho dpg/ds) s_i m_t / |o_i| (policy_loss.hpp).
    if (sequence) {
      const double per_token_grad = sequence_grad * sequence_slope / length;
      for (std::int64_t k = begin; k < begin + cols; ++k)
        grad_out[k] = static_cast<T>(value(mask, k) * per_token_grad + value(grad_out, k));
    }
    std::copy(row, row + hf::row_sum_count, sums.begin() + i * hf::row_sum_count);
  }

  double total[hf::row_sum_count] = {};
  for (std::int64_t i = 0; i < rows; ++i)
    for (int c = 0; c < hf::row_sum_count; ++c) total[c] += sums[static_cast<std::size_t>(i * hf::row_sum_count + c)];
  if (total[hf::invalid] > 0.0) return std::nullopt;

  const double n = d.tokens;
  policy_loss_metrics metrics;
  metrics.pg_loss = total[hf::pg_sum] / n;
  metrics.kl_mean = ref ? total[hf::kl_sum] / n : 0.0;
  metrics.entropy_mean = entropy ? total[hf::entropy_sum] / n : 0.0;
  metrics.clip_fraction_low = total[hf::clip_low] / n;
  metrics.clip_fraction_high = total[hf::clip_high] / n;
  metrics.clip_fraction_dual = total[hf::clip_dual] / n;
  metrics.ratio_mean = total[hf::ratio_sum] / n;
  metrics.is_weight_mean = total[hf::rho_sum] / n;
  if (rollout) (truncate ? metrics.is_truncated_fraction : metrics.is_masked_fraction) = total[hf::is_above_cap] / n;

  auto loss = detail::allocate(b, shape::scalar());
  loss.data.data()[0] = static_cast<T>(total[hf::loss_sum]);
  std::optional<tensor_t> grad_entropy_tensor;
  if (grad_entropy) grad_entropy_tensor = tensor_t(b, std::move(*grad_entropy));
  return policy_loss_result<backend<T>>{tensor_t(b, std::move(loss)), tensor_t(b, std::move(per_token)),
                                        tensor_t(b, std::move(grad)), std::move(grad_entropy_tensor), metrics};
}

/// grpo_core (advantages.hpp) for validated scores [B] (NaN = unscorable, no Inf), dense group ids [B] in
/// [0, groups) and validated options. The group means and stds are held in T, as the generic path holds them.
template <class T>
advantage_result<backend<T>> fused_grpo_advantages(const backend<T>& b, const device_tensor<T>& scores,
                                                   std::span<const std::int64_t> ids, std::int64_t groups,
                                                   const grpo_advantage_options& options) {
  const std::size_t rows = ids.size(), group_count = static_cast<std::size_t>(groups);
  const T* x = scores.data.data();
  std::vector<double> count(group_count, 0.0), total(group_count, 0.0), squares(group_count, 0.0);
  double batch_count = 0.0, batch_total = 0.0;
  // A run of equal ids (a group of consecutive rows) is summed in registers and added to its group once: adding
  // each row to memory would chain every addition of a group through a store and a load.
  for (std::size_t i = 0; i < rows;) {
    const std::int64_t g = ids[i];
    double run_count = 0.0, run_total = 0.0;
    for (; i < rows && ids[i] == g; ++i) {
      const bool scorable = !std::isnan(x[i]);
      run_count += scorable ? 1.0 : 0.0;
      run_total += scorable ? static_cast<double>(x[i]) : 0.0;
    }
    count[static_cast<std::size_t>(g)] += run_count, total[static_cast<std::size_t>(g)] += run_total;
    batch_count += run_count, batch_total += run_total;
  }
  std::vector<T> mean(group_count);
  for (std::size_t g = 0; g < group_count; ++g) mean[g] = static_cast<T>(total[g] / std::max(count[g], 1.0));

  auto advantages = detail::allocate(b, scores.shape);
  T* out = advantages.data.data();  // the deviations first, then the advantages in place
  const double batch_mean = batch_count >= 1.0 ? batch_total / batch_count : grpo::detail::quiet_nan;
  double batch_squares = 0.0;
  for (std::size_t i = 0; i < rows;) {
    const std::int64_t g = ids[i];
    const double group_mean = mean[static_cast<std::size_t>(g)];
    double run_squares = 0.0;
    for (; i < rows && ids[i] == g; ++i) {
      const bool scorable = !std::isnan(x[i]);
      const T deviation = scorable ? static_cast<T>(static_cast<double>(x[i]) - group_mean) : T(0);
      out[i] = deviation;
      run_squares += static_cast<double>(deviation) * static_cast<double>(deviation);
      const double batch_deviation = scorable ? static_cast<double>(x[i]) - batch_mean : 0.0;
      batch_squares += batch_deviation * batch_deviation;
    }
    squares[static_cast<std::size_t>(g)] += run_squares;
  }
  const double batch_std = batch_count >= 2.0 ? std::sqrt(batch_squares / (batch_count - 1.0)) : grpo::detail::quiet_nan;

  // keep: the group carries a signal (count >= 2, std >= floor, std > 0); divisor: what its deviations divide by.
  std::vector<char> keep(group_count);
  std::vector<T> divisor(group_count, T(1));
  double kept = 0.0;
  for (std::size_t g = 0; g < group_count; ++g) {
    const T std_dev = static_cast<T>(std::sqrt(squares[g] / std::max(count[g] - 1.0, 1.0)));
    keep[g] = count[g] >= 2.0 && std_dev >= options.std_floor && std_dev > T(0);
    kept += keep[g] ? 1.0 : 0.0;
    if (keep[g] && options.scale == reward_scale::group)
      divisor[g] = static_cast<T>(static_cast<double>(std_dev) + options.epsilon);
  }
  // Every scale is deviation / divisor where the group is kept: the group's std + epsilon, the batch's, or 1.
  const bool batch_signal = batch_count >= 2.0 && batch_std >= options.std_floor && batch_std > 0.0;
  if (options.scale == reward_scale::batch) std::fill(divisor.begin(), divisor.end(), T(1));
  const double batch_divisor = options.scale == reward_scale::batch ? batch_std + options.epsilon : 1.0;
  for (std::size_t g = 0; g < group_count; ++g)
    keep[g] = keep[g] && (options.scale != reward_scale::batch || batch_signal);
  for (std::size_t i = 0; i < rows; ++i) {
    const auto g = static_cast<std::size_t>(ids[i]);
    out[i] = keep[g] ? static_cast<T>(static_cast<double>(out[i]) / (static_cast<double>(divisor[g]) * batch_divisor))
                     : T(0);
  }
  return {tensor<backend<T>>(b, std::move(advantages)), groups == 0 ? 0.0 : 1.0 - kept / static_cast<double>(groups),
          batch_mean, batch_std};
}

}  // namespace GRPO_CCCL_SYSTEM_NAMESPACE
}  // namespace grpo::cccl
#endif
