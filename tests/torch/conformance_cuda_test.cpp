// SPDX-License-Identifier: Apache-2.0
// The shared conformance suite on the LibTorch backend with CUDA tensors (fp64, fp32 with rows in double and in float, bf16 inputs), in its own
// executable whose main skips (exit code 77) where no CUDA device is present.
#include <tuple>

#include "conformance_fixtures.hpp"

using conformance_fixtures = std::tuple<grpo::testing::torch_double_fixture<grpo::testing::cuda_device>,
                                        grpo::testing::torch_float_fixture<grpo::testing::cuda_device>,
                                        grpo::testing::torch_float_rows_fixture<grpo::testing::cuda_device>,
                                        grpo::testing::torch_bf16_fixture<grpo::testing::cuda_device>>;

#include "conformance/suite.hpp"
