// SPDX-License-Identifier: Apache-2.0
// The shared conformance suite on the LibTorch backend with CUDA tensors whose row primitives run grpo::cuda's fused
// kernels (compiled by nvcc: grpo/libtorch/cuda_rows.hpp): fp64 logits with rows in double, fp32 and bf16 logits with
// rows in float. In grpo_tests_torch_cuda_kernels, whose main skips (exit code 77) where no CUDA device is present.
#include <tuple>

#include "conformance_fixtures.hpp"

static_assert(GRPO_LIBTORCH_CUDA_KERNELS == 1, "this file must see grpo::cuda's kernels (nvcc, a CUDA LibTorch)");

using conformance_fixtures = std::tuple<grpo::testing::torch_double_fixture<grpo::testing::cuda_kernel_device>,
                                        grpo::testing::torch_float_rows_fixture<grpo::testing::cuda_kernel_device>,
                                        grpo::testing::torch_bf16_rows_fixture<grpo::testing::cuda_kernel_device>>;

#include "conformance/suite.hpp"
