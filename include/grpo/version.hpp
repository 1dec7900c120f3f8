// SPDX-License-Identifier: Apache-2.0
// grpo/version.hpp: the library version, kept in step with project(VERSION) in CMakeLists.txt.
#pragma once

#define GRPO_VERSION_MAJOR 0
#define GRPO_VERSION_MINOR 1
#define GRPO_VERSION_PATCH 0
#define GRPO_VERSION_STRING "0.1.0"

namespace grpo {
inline constexpr int version_major = GRPO_VERSION_MAJOR;
inline constexpr int version_minor = GRPO_VERSION_MINOR;
inline constexpr int version_patch = GRPO_VERSION_PATCH;
inline constexpr const char* version_string = GRPO_VERSION_STRING;
}  // namespace grpo
