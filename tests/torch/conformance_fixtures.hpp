// SPDX-License-Identifier: Apache-2.0
// Fixtures of the conformance suite for the LibTorch backend, parameterised by device, with their tolerances and
// why each is what it is. The suite compares every output with the oracle reference_backend<double>.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>

#include "grpo/libtorch/backend.hpp"

namespace grpo::testing {

struct cpu_device {
  static at::Device device() { return at::kCPU; }
  static constexpr const char* fp64 = "libtorch fp64 on CPU";
  static constexpr const char* fp32 = "libtorch fp32 on CPU";
  static constexpr const char* fp32_rows = "libtorch fp32, row_dtype float, on CPU";
  static constexpr const char* bf16 = "libtorch bf16 on CPU";
  static constexpr double fp32_rows_rtol = 1e-5, fp32_rows_atol = 1e-6;
};

struct cuda_device {
  static at::Device device() { return {at::kCUDA, 0}; }
  static constexpr const char* fp64 = "libtorch fp64 on CUDA";
  static constexpr const char* fp32 = "libtorch fp32 on CUDA";
  static constexpr const char* fp32_rows = "libtorch fp32, row_dtype float, on CUDA";
  static constexpr const char* bf16 = "libtorch bf16 on CUDA";
  static constexpr double fp32_rows_rtol = 1e-5, fp32_rows_atol = 1e-6;
};

/// CUDA tensors in a file compiled by nvcc with grpo::cuda's kernels (conformance_cuda_kernels_test.cu): the row
/// primitives of the fixtures whose row_dtype is the kernels' accumulation type run those kernels. Those accumulate
/// fp32 rows in fp32 (tree reductions: about log2(V) x 6e-8 relative; the entropy as log S - U / S), so fp32 rows get
/// the cccl backend's CUDA budget (tests/cuda/conformance_fixtures.hpp): 2e-5 relative, 2e-6 absolute.
struct cuda_kernel_device {
  static at::Device device() { return {at::kCUDA, 0}; }
  static constexpr const char* fp64 = "libtorch fp64 on CUDA, grpo::cuda kernels";
  static constexpr const char* fp32 = "libtorch fp32 on CUDA, grpo::cuda kernels";
  static constexpr const char* fp32_rows = "libtorch fp32, row_dtype float, on CUDA, grpo::cuda kernels";
  static constexpr const char* bf16 = "libtorch bf16 on CUDA, grpo::cuda kernels";
  static constexpr const char* bf16_rows = "libtorch bf16, row_dtype float, on CUDA, grpo::cuda kernels";
  static constexpr double fp32_rows_rtol = 2e-5, fp32_rows_atol = 2e-6;
};

template <class Device>
libtorch::backend make_torch_backend(at::ScalarType dtype) {
  libtorch::backend b;
  b.device = Device::device();
  b.dtype = dtype;
  return b;
}

/// fp64 storage: the same formulas as the reference in double, but torch's own summation order (vectorized,
/// pairwise) and its vectorized exp/log (within 1 ulp, not always the same ulp as libm): about 1e-15 relative per
/// step, a few orders of magnitude more through cancellation (centring, r - 1). 1e-10 is far above that and far
/// below any formula mistake. Logits of magnitude 1e4 keep high precision: the row primitives compute in double.
template <class Device>
struct torch_double_fixture {
  using backend_type = libtorch::backend;
  static backend_type make() { return make_torch_backend<Device>(at::kDouble); }
  static constexpr double rtol = 1e-10, atol = 1e-10;
  static constexpr const char* name = Device::fp64;
};

/// fp32 storage: every elementwise step rounds to float (relative 6e-8) while reductions accumulate in double, as
/// reference_backend<float> does, so the same budget: 1e-5 relative, 1e-6 absolute for outputs that cancel to
/// about 0. Inputs are rounded to float first (quantize) so input rounding is not counted. The row primitives
/// compute in double but return the log-sum-exp in float: at logits of 1e4 its rounding, up to 5e-4, reaches the
/// backward's probabilities whole, hence high_precision = false (the suite's large-logits atol, 1e-2).
template <class Device>
struct torch_float_fixture {
  using backend_type = libtorch::backend;
  static backend_type make() { return make_torch_backend<Device>(at::kFloat); }
  static constexpr double rtol = 1e-5, atol = 1e-6;
  static constexpr bool high_precision = false;
  static double quantize(double x) { return static_cast<double>(static_cast<float>(x)); }
  static constexpr const char* name = Device::fp32;
};

/// fp32 storage with row_dtype float: on the CPU the row primitives run the host fp32 row kernels
/// (include/grpo/host/: fp32 lanes, polynomial exp/log under 1 ulp, block sums merged in double), the path
/// policy_loss_from_logits and the distillation losses take on fp32 CPU tensors with a float row_dtype; on CUDA,
/// torch ops in fp32. Each row's sums are over V terms of relative error about 1e-7 merged in double, so the fp32
/// budget holds: 1e-5 relative, 1e-6 absolute, and large logits at the suite's low-precision atol (the device's
/// fp32_rows_rtol and fp32_rows_atol; wider on grpo::cuda's kernels, cuda_kernel_device).
template <class Device>
struct torch_float_rows_fixture {
  using backend_type = libtorch::backend;
  static backend_type make() {
    auto b = make_torch_backend<Device>(at::kFloat);
    b.row_dtype = at::kFloat;
    return b;
  }
  static constexpr double rtol = Device::fp32_rows_rtol, atol = Device::fp32_rows_atol;
  static constexpr bool high_precision = false;
  static double quantize(double x) { return static_cast<double>(static_cast<float>(x)); }
  static constexpr const char* name = Device::fp32_rows;
};

/// bf16 inputs: uploads are stored in bf16 (8 significant bits) and every operation promotes them to fp32, so once
/// the inputs are rounded to bf16 for both backends (quantize) the arithmetic is the fp32 fixture's. One output is
/// stored in bf16 itself: a gradient written in place over bf16 logits, rounded to at most 2^-8 relative (half the
/// spacing of 8 significant bits). The suite has one tolerance per fixture, so rtol is that rounding; everything
/// else is also checked at fp32's 1e-5 by torch_float_fixture, which runs the same fp32 arithmetic.
template <class Device>
struct torch_bf16_fixture {
  using backend_type = libtorch::backend;
  static backend_type make() { return make_torch_backend<Device>(at::kBFloat16); }
  static constexpr double rtol = 1.0 / 256, atol = 1e-6;
  static constexpr bool high_precision = false;
  static double quantize(double x) {
    return static_cast<double>(static_cast<float>(c10::BFloat16(static_cast<float>(x))));
  }
  static constexpr const char* name = Device::bf16;
};

/// bf16 inputs with row_dtype float: the row primitives compute in fp32 from the bf16 values (on CUDA with grpo::cuda's
/// kernels, which accumulate bf16 rows in fp32), the rest as torch_bf16_fixture: its relative tolerance, the device's
/// fp32 rows' absolute one.
template <class Device>
struct torch_bf16_rows_fixture {
  using backend_type = libtorch::backend;
  static backend_type make() {
    auto b = make_torch_backend<Device>(at::kBFloat16);
    b.row_dtype = at::kFloat;
    return b;
  }
  static constexpr double rtol = 1.0 / 256, atol = Device::fp32_rows_atol;
  static constexpr bool high_precision = false;
  static double quantize(double x) { return torch_bf16_fixture<Device>::quantize(x); }
  static constexpr const char* name = Device::bf16_rows;
};

}  // namespace grpo::testing
