// SPDX-License-Identifier: Apache-2.0
// What the tests of the cccl host fast paths share (host_rows_test.cpp, host_fused_test.cpp): the instruction sets
// the CPU runs, fp32 logits rows with masked entries, and an element-wise tolerance check that reports the first
// mismatches.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "grpo/cccl/host_rows.hpp"
#include "test_support.hpp"

namespace grpo::testing::host {

namespace hr = grpo::cccl::host_rows;

/// The generic kernels always; the AVX2+FMA clones where the build has them and the CPU runs them.
inline std::vector<hr::isa> instruction_sets() {
  std::vector<hr::isa> out{hr::isa::generic};
  if (hr::avx2_available()) out.push_back(hr::isa::avx2);
  return out;
}

inline const char* isa_name(hr::isa which) { return which == hr::isa::avx2 ? "avx2" : "generic"; }

/// Logits rows as fp32 values: normal(0, spread)-ish from uniform draws, a share of -inf (masked) entries.
inline std::vector<float> make_rows(std::int64_t rows, std::int64_t vocab, double spread, double masked_share,
                                    std::uint32_t seed) {
  const auto u = grpo::testing::uniform(static_cast<std::size_t>(rows * vocab), -spread, spread, seed);
  const auto m = grpo::testing::uniform(u.size(), 0.0, 1.0, seed + 1);
  std::vector<float> z(u.size());
  for (std::size_t i = 0; i < u.size(); ++i) z[i] = m[i] < masked_share ? -INFINITY : static_cast<float>(u[i]);
  return z;
}

/// |got - want| <= atol + rtol |want|; NaN only against NaN, an infinity only against itself.
inline void require_near(const std::vector<double>& got, const std::vector<double>& want, double atol, double rtol) {
  REQUIRE(got.size() == want.size());
  int bad = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const bool ok = std::isnan(want[i])   ? std::isnan(got[i])
                    : std::isinf(want[i]) ? got[i] == want[i]
                                          : std::fabs(got[i] - want[i]) <= atol + rtol * std::fabs(want[i]);
    if (!ok && bad++ < 5) {
      INFO("element " << i << ": got " << got[i] << ", want " << want[i]);
      CHECK(ok);
    }
  }
  REQUIRE(bad == 0);
}

}  // namespace grpo::testing::host
