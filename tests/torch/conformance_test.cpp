// SPDX-License-Identifier: Apache-2.0
// The shared conformance suite (tests/conformance/suite.hpp) on the LibTorch backend, CPU tensors: fp64, fp32 (rows
// in double, and rows in float: the host fp32 row kernels), and bf16 inputs computed in fp32. The same fixtures on a
// CUDA device are in conformance_cuda_test.cpp.
#include <tuple>

#include "conformance_fixtures.hpp"

using conformance_fixtures = std::tuple<grpo::testing::torch_double_fixture<grpo::testing::cpu_device>,
                                        grpo::testing::torch_float_fixture<grpo::testing::cpu_device>,
                                        grpo::testing::torch_float_rows_fixture<grpo::testing::cpu_device>,
                                        grpo::testing::torch_bf16_fixture<grpo::testing::cpu_device>>;

#include "conformance/suite.hpp"
