// SPDX-License-Identifier: Apache-2.0
// Checks the grpo tool's integer options share (main.cpp, distill_commands.cpp): CLI11 alone reads
// "-1" into an unsigned option as 2^64 - 1 and saturates 99999999999999999999, so the option's text
// is parsed here first (std::from_chars: no sign on an unsigned type, no overflow).
#pragma once

#include <CLI/CLI.hpp>

#include <charconv>
#include <cstdint>
#include <limits>
#include <string>
#include <system_error>

namespace grpo::cli {

/// A check that an integer option's text is a decimal integer in [lo, hi].
template <class T>
CLI::Validator integer_in(T lo, T hi) {
  const std::string range = "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  return CLI::Validator(
      [lo, hi, range](std::string& text) -> std::string {
        T value{};
        const char* end = text.data() + text.size();
        const auto r = std::from_chars(text.data(), end, value);
        if (r.ec == std::errc() && r.ptr == end && value >= lo && value <= hi) return {};
        return "must be an integer in " + range + ", got " + text;
      },
      "INT in " + range);
}

/// Any 64-bit seed.
inline CLI::Validator any_seed() { return integer_in<std::uint64_t>(0, std::numeric_limits<std::uint64_t>::max()); }

}  // namespace grpo::cli
