// SPDX-License-Identifier: Apache-2.0
// grpo/detail/random.hpp: the one seed mixer, the one string hash and the platform-independent
// draws every seeded part of grpo uses (weight initialization, sampling, task generation, data
// order, data splits). The standard
// distributions leave their algorithm to each library, which would make a seed mean different
// numbers on different platforms; these are fixed.
#pragma once

#include <cstdint>
#include <random>
#include <string_view>

namespace grpo::detail {

/// splitmix64 (Steele, Lea & Flood 2014, "Fast splittable pseudorandom number generators"): a
/// bijective mix whose low and high bits both depend on every input bit.
inline std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/// 64-bit FNV-1a of the bytes of `text` (Fowler, Noll and Vo; offset basis 14695981039346656037,
/// prime 1099511628211). Fixed forever, so what is derived from it (a problem's split, a config's
/// fingerprint) never depends on the platform or the standard library. Not cryptographic.
inline std::uint64_t fnv1a_64(std::string_view text) noexcept {
  std::uint64_t hash = 14695981039346656037ull;
  for (const char c : text) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 1099511628211ull;
  }
  return hash;
}

/// The seed of stream `stream` of a run seeded with `seed`: distinct (seed, stream) pairs give
/// well-separated generator seeds (a sampling call's row r, the trainer's data order, ...).
inline std::uint64_t mix_seed(std::uint64_t seed, std::uint64_t stream) { return splitmix64(splitmix64(seed) ^ stream); }

/// A uniform double in [0, 1) from the top 53 bits of one draw.
inline double uniform01(std::mt19937_64& gen) { return static_cast<double>(gen() >> 11) * 0x1.0p-53; }

/// Uniform in [0, n), n > 0, by rejection from the raw 64-bit stream (no modulo bias).
inline std::uint64_t uniform_below(std::mt19937_64& rng, std::uint64_t n) {
  const std::uint64_t threshold = (0 - n) % n;  // 2^64 mod n: the draws below it would bias
  while (true) {
    const std::uint64_t r = rng();
    if (r >= threshold) return r % n;
  }
}

/// Uniform in [lo, hi], lo <= hi.
inline std::int64_t uniform_between(std::mt19937_64& rng, std::int64_t lo, std::int64_t hi) {
  return lo + static_cast<std::int64_t>(uniform_below(rng, static_cast<std::uint64_t>(hi - lo) + 1));
}

}  // namespace grpo::detail
