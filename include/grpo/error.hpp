// SPDX-License-Identifier: Apache-2.0
// grpo/error.hpp: the exception hierarchy every public entry point throws, and GRPO_CHECK.
// Library code never exits or aborts: bad input becomes a grpo::error whose message names the
// argument and what is wrong with it, so a caller's trainer can report it and carry on.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace grpo {

/// Base of everything grpo throws.
class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Mismatched or invalid tensor shapes.
class shape_error : public error {
 public:
  using error::error;
};

/// Out-of-range or unknown configuration values (negative epsilon, unknown loss type, ...).
class config_error : public error {
 public:
  using error::error;
};

/// Invalid tensor contents (NaN or Inf where finite values are required, a mask that is not 0/1).
class value_error : public error {
 public:
  using error::error;
};

/// Malformed files (safetensors, checkpoints) and I/O failures.
class io_error : public error {
 public:
  using error::error;
};

/// Failures reported by a backend (CUDA status codes are converted to this at the boundary).
class backend_error : public error {
 public:
  using error::error;
};

namespace detail {

template <class... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream out;
  (out << ... << std::forward<Parts>(parts));
  return out.str();
}

template <class Error, class... Parts>
[[noreturn]] void fail(Parts&&... parts) {
  throw Error(concat(std::forward<Parts>(parts)...));
}

}  // namespace detail
}  // namespace grpo

/// GRPO_CHECK(condition, error_type, message parts...): throws error_type with the parts
/// concatenated when the condition is false. Messages start with the argument's name.
#define GRPO_CHECK(cond, error_type, ...)                  \
  do {                                                     \
    if (!(cond)) ::grpo::detail::fail<error_type>(__VA_ARGS__); \
  } while (0)
