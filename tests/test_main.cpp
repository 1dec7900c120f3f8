// SPDX-License-Identifier: Apache-2.0
// The Catch2 main of grpo_tests: compiled once, linked with every *_test.cpp.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
