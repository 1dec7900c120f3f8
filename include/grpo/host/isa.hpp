// SPDX-License-Identifier: Apache-2.0
// grpo/host/isa.hpp: the instruction-set dispatch of the host row kernels (softmax_rows.hpp, divergence_rows.hpp,
// policy_rows.hpp): each kernel is compiled once for the translation unit's own target (SSE2 for a default x86-64
// build) and, with GCC or Clang on x86-64, once more as an AVX2+FMA clone ([[gnu::target]]) picked at run time, so one
// binary runs everywhere and uses AVX2 where the CPU has it. Not under nvcc (__CUDACC__), whose host pass does not
// take the clones; the kernels then live in another inline namespace, so the two builds never share a definition (ODR).
#pragma once

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && !defined(__CUDACC__)
#define GRPO_HOST_AVX2 1
#define GRPO_HOST_ISA_NAMESPACE with_avx2_clone
#else
#define GRPO_HOST_AVX2 0
#define GRPO_HOST_ISA_NAMESPACE generic_only
#endif

#if defined(__GNUC__) || defined(__clang__)
#define GRPO_HOST_ALWAYS_INLINE __attribute__((always_inline)) inline
#define GRPO_HOST_FLATTEN __attribute__((flatten))
#else
#define GRPO_HOST_ALWAYS_INLINE inline
#define GRPO_HOST_FLATTEN
#endif

// A backward may write into its input (out == logits); each iteration reads z[v] before writing g[v], so there is
// no dependence between iterations, which the compiler cannot see through two pointers that may be equal.
#if defined(__clang__)
#define GRPO_HOST_NO_LOOP_DEPENDENCE _Pragma("clang loop vectorize(assume_safety)")
#elif defined(__GNUC__)
#define GRPO_HOST_NO_LOOP_DEPENDENCE _Pragma("GCC ivdep")
#else
#define GRPO_HOST_NO_LOOP_DEPENDENCE
#endif

namespace grpo::host_kernels {
inline namespace GRPO_HOST_ISA_NAMESPACE {

/// Which instruction set the row kernels are compiled for: the translation unit's own target or the AVX2+FMA clone.
enum class isa { generic, avx2 };

/// Whether the AVX2+FMA clone exists in this build and the CPU runs it (asked once).
inline bool avx2_available() {
#if GRPO_HOST_AVX2
  static const bool available = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return available;
#else
  return false;
#endif
}

/// The fastest instruction set this build and CPU run.
inline isa best_isa() { return avx2_available() ? isa::avx2 : isa::generic; }

}  // namespace GRPO_HOST_ISA_NAMESPACE
}  // namespace grpo::host_kernels
