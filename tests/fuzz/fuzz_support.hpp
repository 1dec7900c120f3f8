// SPDX-License-Identifier: Apache-2.0
// tests/fuzz/fuzz_support.hpp: what the libFuzzer targets of tests/fuzz share. A target treats
// grpo::error (and nothing else) as the expected outcome of bad input; FUZZ_REQUIRE states a property
// that must hold once an input was accepted, and aborts (which libFuzzer reports as a crash, saving the
// input) when it does not.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string_view>

#define FUZZ_REQUIRE(cond)                                                                  \
  do {                                                                                      \
    if (!(cond)) {                                                                          \
      std::fprintf(stderr, "%s:%d: property does not hold: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                         \
    }                                                                                       \
  } while (0)

namespace grpo::fuzz {

inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

inline std::span<const std::byte> as_bytes(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const std::byte*>(data), size};
}

}  // namespace grpo::fuzz
