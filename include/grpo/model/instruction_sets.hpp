// SPDX-License-Identifier: Apache-2.0
// grpo/model/instruction_sets.hpp: the instruction sets the native model's CPU kernels are built for and the
// run-time choice among them. On x86-64 with GCC or Clang the hot loops are also compiled for AVX2+FMA and
// AVX-512 (function attributes, no global flags: GRPO_MODEL_AVX2 / GRPO_MODEL_AVX512) and chosen once by
// cpuid; elsewhere the generic build runs.
#pragma once

#include <optional>
#include <string_view>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define GRPO_MODEL_X86_DISPATCH 1
#define GRPO_MODEL_AVX2 [[gnu::target("avx2,fma")]]
#define GRPO_MODEL_AVX512 [[gnu::target("avx512f,avx2,fma")]]
#else
#define GRPO_MODEL_X86_DISPATCH 0
#endif

#if GRPO_MODEL_X86_DISPATCH
#include <immintrin.h>
#endif

#if defined(__GNUC__) || defined(__clang__)
#define GRPO_MODEL_INLINE [[gnu::always_inline]] inline
#else
#define GRPO_MODEL_INLINE inline
#endif

namespace grpo::model {

/// The instruction set the kernels run with.
enum class isa {
  generic,  ///< whatever the compiler targets by default (SSE2 on x86-64)
  avx2,     ///< AVX2 + FMA, x86-64 with GCC or Clang only
  avx512,   ///< AVX-512F (with AVX2 + FMA) for the matrix products, x86-64 with GCC or Clang only
};

/// The best instruction set this CPU and build support (decided once).
inline isa best_isa() {
#if GRPO_MODEL_X86_DISPATCH
  static const isa chosen = [] {
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return isa::generic;
    return __builtin_cpu_supports("avx512f") ? isa::avx512 : isa::avx2;
  }();
  return chosen;
#else
  return isa::generic;
#endif
}

/// Whether this CPU and build run `kernels` (each instruction set includes the ones before it).
inline bool supported(isa kernels) {
  switch (kernels) {
    case isa::generic: return true;
    case isa::avx2: return best_isa() != isa::generic;
    case isa::avx512: return best_isa() == isa::avx512;
  }
  return false;
}

/// The instruction set's name, as the benchmarks and error messages print it.
inline const char* isa_name(isa kernels) {
  switch (kernels) {
    case isa::generic: return "generic";
    case isa::avx2: return "avx2";
    case isa::avx512: return "avx512";
  }
  return "unknown";
}

/// The instruction set named `name` (isa_name's spelling), or nothing for any other name.
inline std::optional<isa> isa_from_name(std::string_view name) {
  for (const isa kernels : {isa::generic, isa::avx2, isa::avx512})
    if (name == isa_name(kernels)) return kernels;
  return std::nullopt;
}

}  // namespace grpo::model
