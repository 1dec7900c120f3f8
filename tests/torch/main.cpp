// SPDX-License-Identifier: Apache-2.0
// The Catch2 main of grpo_tests_torch: compiled once, without torch headers, linked with the torch test files.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
