// SPDX-License-Identifier: Apache-2.0
// grpo/train/run_directory.hpp: one run per output directory. run_directory_lock holds an advisory
// lock on DIR/.grpo.lock (flock(2), with the holder's pid written in the file) for as long as a run
// writes there; the kernel drops it when the process ends, however it ends, so a run killed with
// SIGKILL never leaves a lock that blocks its resume. check_run_directory / prepare_run_directory
// refuse to start a new run over a directory that holds one (model/, checkpoint/ or metrics.jsonl)
// unless told to replace it.
#pragma once

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "grpo/error.hpp"

// flock and getpid are POSIX; elsewhere the lock is not taken (the directory checks still apply).
#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>
#endif

namespace grpo::train {

/// What a run writes into its output directory.
namespace run_files {
inline constexpr std::string_view lock = ".grpo.lock";
inline constexpr std::string_view checkpoint = "checkpoint";  ///< with ".checkpoint.tmp" / ".checkpoint.old" mid-save
inline constexpr std::string_view model = "model";
inline constexpr std::string_view metrics = "metrics.jsonl";
}  // namespace run_files

/// The advisory lock of an output directory, held from construction to destruction. The lock file
/// stays behind (empty) when released: removing it would let two runs lock two different files.
class run_directory_lock {
 public:
  /// Creates `directory` (empty: ".") when missing, locks directory/.grpo.lock and writes this
  /// process's pid into it. Another lock of the same directory, in this process or another, fails
  /// until this one is released. \throws io_error naming the directory and the holder's pid when
  /// it is locked, or the path that cannot be created or opened.
  explicit run_directory_lock(const std::filesystem::path& directory)
      : directory_(directory.empty() ? std::filesystem::path(".") : directory) {
    std::error_code ec;
    std::filesystem::create_directories(directory_, ec);
    GRPO_CHECK(!ec, io_error, directory_.string(), ": cannot create the output directory (", ec.message(), ")");
#if defined(__unix__) || defined(__APPLE__)
    const auto file = directory_ / run_files::lock;
    fd_ = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    GRPO_CHECK(fd_ >= 0, io_error, file.string(), ": cannot open the lock file (",
               std::generic_category().message(errno), ")");
    int rc = 0;
    while ((rc = ::flock(fd_, LOCK_EX | LOCK_NB)) != 0 && errno == EINTR) {
    }
    if (rc != 0) {
      const int code = errno;
      const std::string holder = read_holder();
      ::close(fd_);
      fd_ = -1;
      GRPO_CHECK(code != EWOULDBLOCK, io_error, directory_.string(),
                 ": another run is writing into this directory (pid ", holder.empty() ? "unknown" : holder, " holds ",
                 file.string(),
                 "); wait for it to end or stop it, or choose another output directory");
      grpo::detail::fail<io_error>(file.string(), ": cannot lock (", std::generic_category().message(code), ")");
    }
    const std::string pid = std::to_string(::getpid()) + "\n";
    // Best effort: the pid only makes the message of a refused run more useful.
    if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) < 0) {
    }
#endif
  }

  run_directory_lock(run_directory_lock&& other) noexcept
      : directory_(std::move(other.directory_)), fd_(std::exchange(other.fd_, -1)) {}
  run_directory_lock& operator=(run_directory_lock&& other) noexcept {
    if (this != &other) {
      release();
      directory_ = std::move(other.directory_);
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  run_directory_lock(const run_directory_lock&) = delete;
  run_directory_lock& operator=(const run_directory_lock&) = delete;
  ~run_directory_lock() { release(); }

  const std::filesystem::path& directory() const { return directory_; }

 private:
  std::filesystem::path directory_;
  int fd_ = -1;

  void release() noexcept {
#if defined(__unix__) || defined(__APPLE__)
    if (fd_ < 0) return;
    if (::ftruncate(fd_, 0) != 0) {
    }
    ::close(fd_);  // drops the flock
    fd_ = -1;
#endif
  }

#if defined(__unix__) || defined(__APPLE__)
  /// The pid the holder wrote (empty when it has not yet).
  std::string read_holder() const {
    char text[32] = {};
    const ::ssize_t n = ::pread(fd_, text, sizeof text - 1, 0);
    std::string pid(text, n > 0 ? static_cast<std::size_t>(n) : 0);
    while (!pid.empty() && (pid.back() == '\n' || pid.back() == '\r')) pid.pop_back();
    return pid;
  }
#endif
};

namespace detail {

/// DIR/NAME for a run_contents entry (a directory's ends in "/").
inline std::filesystem::path run_piece(const std::filesystem::path& directory, std::string_view name) {
  if (name.ends_with('/')) name.remove_suffix(1);
  return directory / name;
}

}  // namespace detail

/// The pieces of a run that `directory` holds: "model/", "checkpoint/" (also an interrupted
/// save's ".checkpoint.tmp/" or ".checkpoint.old/") and "metrics.jsonl", those present. The lock
/// file alone is not a run.
inline std::vector<std::string> run_contents(const std::filesystem::path& directory) {
  const std::filesystem::path dir = directory.empty() ? std::filesystem::path(".") : directory;
  const std::string checkpoint(run_files::checkpoint);
  const std::vector<std::string> pieces = {std::string(run_files::model) + "/", checkpoint + "/",
                                           "." + checkpoint + ".tmp/", "." + checkpoint + ".old/",
                                           std::string(run_files::metrics)};
  std::vector<std::string> found;
  std::error_code ec;
  for (const auto& name : pieces)
    if (std::filesystem::exists(detail::run_piece(dir, name), ec)) found.push_back(name);
  return found;
}

/// Whether `directory` may take a run started from a command line, without changing anything: a
/// run resuming from a checkpoint inside `directory` (`resume`, e.g. DIR/checkpoint) continues it;
/// otherwise a directory that holds a run (run_contents) is refused unless `overwrite`, and then
/// `init`, the model the new run starts from, must not lie inside what prepare_run_directory removes.
/// Returns the pieces to remove (empty: none). \throws config_error naming the directory, what it
/// holds and the ways on (--overwrite, --resume DIR/checkpoint, another --output-dir), or model.init.
inline std::vector<std::filesystem::path> check_run_directory(const std::filesystem::path& directory,
                                                              const std::filesystem::path& resume, bool overwrite,
                                                              const std::filesystem::path& init = {}) {
  const std::filesystem::path dir = directory.empty() ? std::filesystem::path(".") : directory;
  std::error_code ec;
  if (!resume.empty()) {
    std::filesystem::path checkpoint = resume.lexically_normal();
    if (!checkpoint.has_filename()) checkpoint = checkpoint.parent_path();  // "DIR/checkpoint/"
    const auto parent = checkpoint.has_parent_path() ? checkpoint.parent_path() : std::filesystem::path(".");
    if (std::filesystem::equivalent(parent, dir, ec)) return {};
  }
  const auto found = run_contents(dir);
  if (found.empty()) return {};
  if (!overwrite) {
    std::string what;
    for (const auto& name : found) what += (what.empty() ? "" : ", ") + name;
    grpo::detail::fail<config_error>(
        "output_dir: ", dir.string(), " holds a run already (", what, "): --overwrite replaces it, --resume ",
        (dir / run_files::checkpoint).string(), " continues it, or choose another --output-dir");
  }
  const auto inside = [&ec](const std::filesystem::path& path, const std::filesystem::path& root) {
    const auto p = std::filesystem::weakly_canonical(path, ec), r = std::filesystem::weakly_canonical(root, ec);
    return std::mismatch(r.begin(), r.end(), p.begin(), p.end()).first == r.end();
  };
  std::vector<std::filesystem::path> pieces;
  for (const auto& name : found) {
    pieces.push_back(detail::run_piece(dir, name));
    GRPO_CHECK(init.empty() || !inside(init, pieces.back()), config_error, "model.init: ", init.string(),
               " lies inside ", pieces.back().string(),
               ", which --overwrite would remove; copy the model elsewhere first");
  }
  return pieces;
}

/// check_run_directory, then removes the pieces of the run it would replace (so that neither its
/// checkpoint nor its metrics can be mistaken for the new run's). Call it holding the directory's
/// run_directory_lock for the whole run, so that no other run can start there in between.
/// \throws as check_run_directory; io_error naming a path that cannot be removed.
inline void prepare_run_directory(const std::filesystem::path& directory, const std::filesystem::path& resume,
                                  bool overwrite, const std::filesystem::path& init = {}) {
  for (const auto& piece : check_run_directory(directory, resume, overwrite, init)) {
    std::error_code ec;
    std::filesystem::remove_all(piece, ec);
    GRPO_CHECK(!ec, io_error, piece.string(), ": cannot remove the previous run's files (", ec.message(), ")");
  }
}

}  // namespace grpo::train
