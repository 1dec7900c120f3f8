// SPDX-License-Identifier: Apache-2.0
// grpo/train/checkpoint.hpp: atomic checkpoint directories. Every file is written into a fresh
// temporary directory next to the target (each file fsync'ed by write_file_atomically), the
// directory is fsync'ed, then renamed onto the target; an existing target is first renamed
// aside and removed after. A run killed at any point leaves the old checkpoint or the new one,
// never a mix (at worst a hidden ".NAME.tmp" or ".NAME.old" directory, cleared by the next save).
#pragma once

#include <cstddef>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <system_error>

#include "grpo/error.hpp"
#include "grpo/safetensors.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <unistd.h>
#endif

namespace grpo::train {

namespace detail {

inline void fsync_directory(const std::filesystem::path& directory) {
#if defined(__unix__) || defined(__APPLE__)
  const int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
#else
  (void)directory;
#endif
}

}  // namespace detail

/// Files of a checkpoint: name -> bytes.
using checkpoint_files = std::map<std::string, std::string>;

/// Writes `files` as the directory `target`, atomically (see the file header).
/// \throws io_error naming the path that failed.
inline void write_checkpoint_directory(const std::filesystem::path& target, const checkpoint_files& files) {
  const std::filesystem::path parent = target.has_parent_path() ? target.parent_path() : ".";
  const std::string name = target.filename().string();
  GRPO_CHECK(!name.empty(), io_error, target.string(), ": not a directory name");
  const auto temporary = parent / ("." + name + ".tmp");
  const auto old = parent / ("." + name + ".old");
  std::error_code ec;
  std::filesystem::create_directories(parent, ec);
  GRPO_CHECK(!ec, io_error, parent.string(), ": cannot create the directory (", ec.message(), ")");
  std::filesystem::remove_all(temporary, ec);
  std::filesystem::remove_all(old, ec);
  std::filesystem::create_directory(temporary, ec);
  GRPO_CHECK(!ec, io_error, temporary.string(), ": cannot create the directory (", ec.message(), ")");
  for (const auto& [file, bytes] : files)
    safetensors::write_file_atomically(
        temporary / file, std::span<const std::byte>(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()));
  detail::fsync_directory(temporary);
  const bool replace = std::filesystem::exists(target);
  if (replace) {
    std::filesystem::rename(target, old, ec);
    GRPO_CHECK(!ec, io_error, target.string(), ": cannot move the previous checkpoint aside (", ec.message(), ")");
  }
  std::filesystem::rename(temporary, target, ec);
  GRPO_CHECK(!ec, io_error, target.string(), ": cannot rename the new checkpoint into place (", ec.message(), ")");
  detail::fsync_directory(parent);
  if (replace) std::filesystem::remove_all(old, ec);
}

/// The whole contents of a file; io_error naming it when it cannot be read.
inline std::string read_text_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  GRPO_CHECK(in.good(), io_error, path.string(), ": cannot open for reading");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  GRPO_CHECK(!in.bad(), io_error, path.string(), ": read failed");
  return text;
}

}  // namespace grpo::train
