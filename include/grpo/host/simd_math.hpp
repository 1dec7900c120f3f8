// SPDX-License-Identifier: Apache-2.0
// grpo/host/simd_math.hpp: a branch-free fp32 exp and log for the host fp32 row kernels (softmax_rows.hpp,
// divergence_rows.hpp; used by grpo::cccl's host systems and grpo::libtorch's CPU path), written so that GCC and Clang
// vectorize a loop calling them at -O3 for any x86-64 target (SSE2 upwards), which std::exp and std::log never are;
// and an fp32 expm1 for the policy loss's per-token loop (policy_rows.hpp), where these polynomials cost a few
// nanoseconds against glibc's double exp and expm1.
//   exp(x) = 2^n e^r,  n = round(x / ln 2),  r = x - n ln 2 in [-ln2/2, ln2/2],
// with Cody and Waite's range reduction (Cody & Waite 1980, "Software Manual for the Elementary Functions", ch. 6:
// ln 2 split in a 9-bit head, so n ln2_hi is exact, and a tail), e^r = 1 + r + r^2 g(r) with g a degree-4
// polynomial fitted to minimize the relative error of e^r on that interval (Lawson's iteratively reweighted least
// squares, which converges to the minimax fit: 3.1e-9 before rounding), and 2^n put together in the exponent bits.
#pragma once

#include <bit>
#include <cstdint>

namespace grpo::host_kernels {

/// e^x in fp32. Max relative error 2.2e-7 (under 2 ulp) against the exact value over every x whose e^x is a
/// normal float, measured over a dense sweep in tests/cuda/host_rows_test.cpp. Returns 0 for x < -87.3 (e^x below
/// about 1.2e-38, so no denormal is ever produced or operated on) and for -inf, +inf (by overflow of 2^128 e^r)
/// for x > ln(FLT_MAX), and NaN for NaN (the NaN flows through the polynomial, whatever the exponent bits made of it). No branches and no
/// table: a loop of it over an array is one stream of vector instructions.
inline float exp_f32(float x) {
  constexpr float lowest = -87.3f;                  // above ln(FLT_MIN) = -87.3365: 2^n e^r stays normal
  constexpr float highest = 88.72283935546875f;     // ln(FLT_MAX) rounded to float: above it e^x is +inf
  constexpr float log2e = 1.44269502162933349609375f;
  constexpr float ln2_hi = 0.693359375f;            // 355/512: n ln2_hi is exact for |n| < 2^15
  constexpr float ln2_lo = -2.12194440e-4f;         // ln 2 - ln2_hi
  constexpr float shifter = 12582912.0f;            // 1.5 2^23: adding it rounds to an integer, kept in the low bits
  constexpr std::uint32_t infinity_bits = 0x7f800000u;
  // No clamping of x: out of [lowest, highest] the arithmetic below is garbage (or NaN) and the masks at the end
  // replace it. Clamps written as conditionals let GCC thread separate paths for the clamped values, whose folded
  // constants may trap, and then (under the default -ftrapping-math) it refuses to vectorize the loop.
  const float t = x * log2e + shifter;
  const float n = t - shifter;
  const float r = (x - n * ln2_hi) - n * ln2_lo;
  const float g = 0.4999999403953552f +
                  r * (0.1666652113199234f +
                       r * (0.04166838899254799f + r * (0.008368710055947304f + r * 0.001381461275741458f)));
  const float p = 1.0f + (r + (r * r) * g);
  // 2^n as two factors 2^(n/2), so that n = 128 (x just under ln FLT_MAX) and n = -126 are representable.
  // Unsigned arithmetic, so that garbage n (x out of range) is wrap-around, never overflow UB.
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(t) - std::bit_cast<std::uint32_t>(shifter);
  const std::int32_t n_int = static_cast<std::int32_t>(bits);
  const std::int32_t n_half = n_int >> 1;
  const float s1 = std::bit_cast<float>((static_cast<std::uint32_t>(n_half) + 127u) << 23);
  const float s2 = std::bit_cast<float>((static_cast<std::uint32_t>(n_int) - static_cast<std::uint32_t>(n_half) + 127u)
                                        << 23);
  const std::uint32_t value = std::bit_cast<std::uint32_t>(p * s1 * s2);
  // Comparisons are false for NaN, which so keeps the NaN that p carries.
  const std::uint32_t keep = 0u - static_cast<std::uint32_t>(!(x < lowest));
  const std::uint32_t overflow = 0u - static_cast<std::uint32_t>(x > highest);
  return std::bit_cast<float>(((value & keep) & ~overflow) | (infinity_bits & overflow));
}

/// log(x) in fp32 for x a positive normal float (x >= FLT_MIN, finite); any other x gives an unspecified value, which
/// callers mask. x = 2^e m with m in [sqrt(1/2), sqrt(2)) read from the bits, then log m = 2 atanh(s) with
/// s = (m - 1) / (m + 1), |s| <= 0.1716, summed to s^9 (the next term is below 2e-9 relative), and e ln 2 added with
/// ln 2 split as in exp_f32. Max relative error 2.5e-7 against the exact value away from x = 1 and absolute error
/// 6e-8 near it, measured over a dense sweep in tests/cuda/host_rows_test.cpp. No branches and no table.
inline float log_f32(float x) {
  constexpr std::uint32_t sqrt_half_bits = 0x3f3504f3u;  // sqrt(1/2) rounded to float
  constexpr float ln2_hi = 0.693359375f;
  constexpr float ln2_lo = -2.12194440e-4f;
  // Subtracting sqrt(1/2)'s bits puts the exponent step at m = sqrt(1/2) instead of m = 1: the exponent field is e,
  // the mantissa field plus those bits is m in [sqrt(1/2), sqrt(2)). Unsigned, so garbage x wraps, never overflows.
  const std::uint32_t shifted = std::bit_cast<std::uint32_t>(x) - sqrt_half_bits;
  const float e = static_cast<float>(static_cast<std::int32_t>(shifted) >> 23);
  const float m = std::bit_cast<float>((shifted & 0x007fffffu) + sqrt_half_bits);
  const float f = m - 1.0f;  // exact (Sterbenz)
  const float s = f / (2.0f + f);
  const float z = s * s;
  const float series = z * (0.6666666865348816f + z * (0.4000000059604645f + z * (0.2857142984867096f +
                                                                                   z * 0.2222222238779068f)));
  return e * ln2_hi + ((f - s * (f - series)) + e * ln2_lo);
}

/// e^x - 1 in fp32 without the cancellation of exp_f32(x) - 1 near 0: where exp_f32's reduction gives n = 0
/// (|x| < ln2/2) the result is r + r^2 g(r) with r = x, exp_f32's polynomial without its leading 1; elsewhere e^x - 1
/// has no cancellation (it is above 0.41 or below -0.29). For x in [-87.3, 88.7].
inline float expm1_f32(float x) {
  constexpr float log2e = 1.44269502162933349609375f;
  constexpr float shifter = 12582912.0f;
  const float n = (x * log2e + shifter) - shifter;
  const float g = 0.4999999403953552f +
                  x * (0.1666652113199234f +
                       x * (0.04166838899254799f + x * (0.008368710055947304f + x * 0.001381461275741458f)));
  const float near_zero = x + (x * x) * g, elsewhere = exp_f32(x) - 1.0f;
  // Both computed and one kept by bit masks: a conditional would stay a branch and stop a loop from vectorizing.
  const std::uint32_t keep_near = 0u - static_cast<std::uint32_t>(n == 0.0f);
  return std::bit_cast<float>((std::bit_cast<std::uint32_t>(near_zero) & keep_near) |
                              (std::bit_cast<std::uint32_t>(elsewhere) & ~keep_near));
}

}  // namespace grpo::host_kernels
