// SPDX-License-Identifier: Apache-2.0
// Helpers of the LibTorch backend's tests: torch tensors from host values, host values from torch tensors, the
// same inputs as reference-backend tensors, and an element-wise comparison that treats NaN == NaN and equal
// infinities as a match (the operations' special values are part of what is compared).
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "grpo/libtorch/backend.hpp"
#include "grpo/reference_backend.hpp"
#include "grpo/tensor.hpp"
#include "test_support.hpp"

namespace grpo::testing {

using torch_backend = libtorch::backend;

/// A CPU backend storing `dtype`.
inline torch_backend cpu_backend(at::ScalarType dtype = at::kDouble) {
  torch_backend b;
  b.dtype = dtype;
  return b;
}

/// A CPU tensor of the given sizes (empty sizes: rank 0) holding the values, in dtype.
inline at::Tensor torch_tensor(const std::vector<double>& values, std::vector<std::int64_t> sizes,
                               at::ScalarType dtype = at::kDouble) {
  auto t = at::empty(sizes, at::TensorOptions().dtype(at::kDouble));
  REQUIRE(t.numel() == static_cast<std::int64_t>(values.size()));
  std::copy(values.begin(), values.end(), t.data_ptr<double>());
  return t.to(dtype);
}

inline at::Tensor torch_ids(const std::vector<std::int64_t>& values, std::vector<std::int64_t> sizes) {
  auto t = at::empty(sizes, at::TensorOptions().dtype(at::kLong));
  REQUIRE(t.numel() == static_cast<std::int64_t>(values.size()));
  std::copy(values.begin(), values.end(), t.data_ptr<std::int64_t>());
  return t;
}

/// Host doubles of any tensor (detached, on the CPU).
inline std::vector<double> host(const at::Tensor& t) {
  const auto h = t.detach().to(at::kCPU, at::kDouble).contiguous();
  return std::vector<double>(h.data_ptr<double>(), h.data_ptr<double>() + h.numel());
}

/// The values of t rounded as its dtype rounds them, as doubles (what a bf16 or float tensor really holds).
inline std::vector<double> rounded(const std::vector<double>& values, at::ScalarType dtype) {
  return host(torch_tensor(values, {static_cast<std::int64_t>(values.size())}, dtype));
}

/// |got - want| <= atol + rtol |want| element-wise, with NaN matching NaN and an infinity matching itself.
inline void require_same(const std::vector<double>& got, const std::vector<double>& want, double atol, double rtol) {
  REQUIRE(got.size() == want.size());
  int reported = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const bool both_nan = std::isnan(got[i]) && std::isnan(want[i]);
    const bool same_inf = std::isinf(want[i]) && got[i] == want[i];
    const bool ok = both_nan || same_inf || std::fabs(got[i] - want[i]) <= atol + rtol * std::fabs(want[i]);
    if (!ok && reported++ < 5) {
      INFO("element " << i << ": got " << got[i] << ", want " << want[i]);
      CHECK(ok);
    }
  }
  REQUIRE(reported == 0);
}

}  // namespace grpo::testing
