// SPDX-License-Identifier: Apache-2.0
// Fixtures of the conformance suite (tests/conformance/suite.hpp) for grpo::cccl::backend on the translation unit's
// Thrust device system, with their tolerances and why each is what it is. The suite compares every output with the
// oracle reference_backend<double>.
#pragma once

#include "grpo/cccl/backend.hpp"

namespace cccl_test {

#if GRPO_CCCL_CUDA
inline constexpr const char* fp64_name = "cccl<double> on CUDA, fused kernels";
inline constexpr const char* fp32_name = "cccl<float> on CUDA, fused kernels";
#elif THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_OMP
inline constexpr const char* fp64_name = "cccl<double> on OMP";
inline constexpr const char* fp32_name = "cccl<float> on OMP";
#else
inline constexpr const char* fp64_name = "cccl<double> on CPP";
inline constexpr const char* fp32_name = "cccl<float> on CPP";
#endif

/// fp64 storage. On CPP and OMP every operation evaluates the reference's double expressions with the same libm, in
/// the same order (sums of rows longer than 16384 and OMP's scans excepted, which regroup double additions), so the
/// outputs agree to the last bits; 1e-12 leaves room for the regrouping amplified by cancellation. On CUDA the
/// device libm (within 2 ulp) and the fused kernels' tree reductions and one-pass entropy move results by about
/// 1e-15 relative per step, a few orders more through cancellation: 1e-10, far below any formula mistake.
struct double_fixture {
  using backend_type = grpo::cccl::backend<double>;
  static backend_type make() { return backend_type{}; }
#if GRPO_CCCL_CUDA
  static constexpr double rtol = 1e-10, atol = 1e-10;
#else
  static constexpr double rtol = 1e-12, atol = 1e-12;
#endif
  static constexpr const char* name = fp64_name;
};

/// fp32 storage: every elementwise result is rounded to float once (2^-24 relative) while reductions accumulate in
/// double, exactly as reference_backend<float> does on CPP and OMP, hence its budget: 1e-5 relative for a loss that
/// chains about 20 such steps with some cancellation, 1e-6 absolute for outputs that cancel to about 0. Inputs are
/// rounded to float for both backends (quantize), so only the arithmetic is measured. Logits of magnitude 1e4: the
/// log-sum-exp stored in float is off by up to ulp(1.4e4) / 2 = 5e-4, passed whole to every probability of the
/// backward, hence high_precision = false (those cases use the suite's large-logits atol, 1e-2). On CPP and OMP the
/// row softmax statistics and backward run host_rows.hpp's fp32 kernels (fp32 exp within 1e-7 relative, lane sums
/// merged in double: about 3e-7 relative), well inside the same budget. On CUDA the fused
/// kernels also accumulate in fp32: a row of V logits loses about log2(V) x 6e-8 relative in its sums, and the
/// entropy is log S - U / S (both fp32), so the absolute budget doubles to 2e-6 and the relative one to 2e-5.
struct float_fixture {
  using backend_type = grpo::cccl::backend<float>;
  static backend_type make() { return backend_type{}; }
#if GRPO_CCCL_CUDA
  static constexpr double rtol = 2e-5, atol = 2e-6;
#else
  static constexpr double rtol = 1e-5, atol = 1e-6;
#endif
  static constexpr bool high_precision = false;
  static double quantize(double x) { return static_cast<double>(static_cast<float>(x)); }
  static constexpr const char* name = fp32_name;
};

}  // namespace cccl_test
