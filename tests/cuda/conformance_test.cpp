// SPDX-License-Identifier: Apache-2.0
// The conformance suite (tests/conformance/suite.hpp) instantiated for grpo::cccl::backend<double> and <float> on
// this executable's Thrust device system (CPP or OMP; gpu_test.cu instantiates it on CUDA).
#include <tuple>

#include "conformance_fixtures.hpp"

using conformance_fixtures = std::tuple<cccl_test::double_fixture, cccl_test::float_fixture>;

#include "conformance/suite.hpp"
