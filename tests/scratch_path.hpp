// SPDX-License-Identifier: Apache-2.0
// A scratch path per test and per process. Test processes run at once (ctest -j, and the sanitized grpo_tests
// beside the plain one run the same test cases), so a fixed name under the temp directory would be shared and one
// process would delete or overwrite the files of another.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>

namespace grpo::testing {

/// temp_directory_path() / "<name>_<pid>", removed if it exists (a pid reused by a later run gets a clean start).
inline std::filesystem::path scratch_path(const std::string& name) {
  auto path = std::filesystem::temp_directory_path() / (name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(path);
  return path;
}

}  // namespace grpo::testing
