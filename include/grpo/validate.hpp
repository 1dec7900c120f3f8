// SPDX-License-Identifier: Apache-2.0
// grpo/validate.hpp: the input checks every algorithm runs at its entry point, before computing.
// Each names the argument and says what is wrong, so a bad batch fails loudly instead of turning
// into a silent NaN several steps later. A backend that counts the offending elements where its
// tensors live (the optional hooks count_not_finite and count_not_binary, see backend.hpp) is
// asked first, so a valid tensor costs one reduction and no copy; otherwise, and to name the
// first bad element, the values are read on the host. Either way the checks run once per call,
// never inside loops.
#pragma once

#include <cmath>
#include <concepts>
#include <cstdint>
#include <string_view>

#include "grpo/error.hpp"
#include "grpo/tensor.hpp"

namespace grpo::detail {

template <tensor_backend B>
void expect_shape(const tensor<B>& t, const shape& expected, std::string_view name) {
  GRPO_CHECK(t.shape() == expected, shape_error, name, ": expected shape ", to_string(expected), ", got ",
             to_string(t.shape()));
}

template <tensor_backend B>
void expect_rank(const tensor<B>& t, int rank, std::string_view name) {
  GRPO_CHECK(t.shape().rank == rank, shape_error, name, ": expected a rank-", rank, " tensor, got shape ",
             to_string(t.shape()));
}

template <class B>
concept counts_not_finite = requires(const B& b, const typename B::tensor_type& t) {
  { count_not_finite(b, t) } -> std::convertible_to<std::int64_t>;
};

template <class B>
concept counts_not_binary = requires(const B& b, const typename B::tensor_type& t) {
  { count_not_binary(b, t) } -> std::convertible_to<std::int64_t>;
};

/// Every element finite (no NaN, no Inf).
template <tensor_backend B>
void expect_finite(const tensor<B>& t, std::string_view name) {
  if constexpr (counts_not_finite<B>) {
    if (count_not_finite(t.backend(), t.raw()) == 0) return;
  }
  const auto values = t.to_host();
  for (std::size_t i = 0; i < values.size(); ++i)
    GRPO_CHECK(std::isfinite(values[i]), value_error, name, ": element ", i, " is ", values[i],
               " (NaN or Inf is not allowed)");
}

/// Every element exactly 0 or 1.
template <tensor_backend B>
void expect_mask(const tensor<B>& t, std::string_view name) {
  if constexpr (counts_not_binary<B>) {
    if (count_not_binary(t.backend(), t.raw()) == 0) return;
  }
  const auto values = t.to_host();
  for (std::size_t i = 0; i < values.size(); ++i)
    GRPO_CHECK(values[i] == 0.0 || values[i] == 1.0, value_error, name, ": element ", i, " is ", values[i],
               " (a mask must be 0 or 1)");
}

inline void expect_non_negative(double value, std::string_view name) {
  GRPO_CHECK(std::isfinite(value) && value >= 0.0, config_error, name, ": must be a finite value >= 0, got ", value);
}

inline void expect_positive(double value, std::string_view name) {
  GRPO_CHECK(std::isfinite(value) && value > 0.0, config_error, name, ": must be a finite value > 0, got ", value);
}

}  // namespace grpo::detail
