// SPDX-License-Identifier: Apache-2.0
// grpo/train/checkpoint.hpp: atomic checkpoint directories. Every file is written into a fresh
// temporary directory next to the target (each file fsync'ed by write_file_atomically), the
// directory is fsync'ed, then renamed onto the target; an existing target is first renamed
// aside and removed after. A run killed at any point leaves the old checkpoint or the new one,
// never a mix (at worst a hidden ".NAME.tmp" or ".NAME.old" directory: resolve_checkpoint finds
// the complete one, the next save first puts it back in place). trainer_state.json records where
// a run stands (phase, step, data order, the evaluation before RL, the size of metrics.jsonl).
#pragma once

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <sstream>
#include <system_error>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "grpo/detail/json.hpp"
#include "grpo/error.hpp"
#include "grpo/model/config.hpp"
#include "grpo/safetensors.hpp"
#include "grpo/train/evaluation.hpp"

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

/// `directory` without a trailing separator ("run/checkpoint/" names "run/checkpoint").
inline std::filesystem::path without_trailing_separator(const std::filesystem::path& directory) {
  const auto normal = directory.lexically_normal();
  return normal.has_filename() || !normal.has_parent_path() ? normal : normal.parent_path();
}

/// The hidden directories of a save of `target`: {".NAME.tmp", ".NAME.old"} beside it.
inline std::pair<std::filesystem::path, std::filesystem::path> save_directories(const std::filesystem::path& target) {
  const std::filesystem::path parent = target.has_parent_path() ? target.parent_path() : ".";
  const std::string name = target.filename().string();
  return {parent / ("." + name + ".tmp"), parent / ("." + name + ".old")};
}

}  // namespace detail

/// Writes the directory `directory` atomically (see the file header): `fill` writes the files into
/// the temporary directory it is given (each file fsync'ed, e.g. by write_file_atomically).
/// \throws io_error naming the path that failed, and whatever `fill` throws (the target is then
///         left as it was).
inline void write_checkpoint_directory(const std::filesystem::path& directory,
                                       const std::function<void(const std::filesystem::path&)>& fill) {
  const auto target = detail::without_trailing_separator(directory);
  const std::filesystem::path parent = target.has_parent_path() ? target.parent_path() : ".";
  const std::string name = target.filename().string();
  GRPO_CHECK(!name.empty() && name != "." && name != "..", io_error, directory.string(), ": not a directory name");
  const auto [temporary, old] = detail::save_directories(target);
  std::error_code ec;
  std::filesystem::create_directories(parent, ec);
  GRPO_CHECK(!ec, io_error, parent.string(), ": cannot create the directory (", ec.message(), ")");
  // A previous save killed between its renames left the only complete checkpoint in .tmp (or
  // .old): put it back in place first, or clearing .tmp and .old below would leave none at all
  // until this save completes.
  if (!std::filesystem::exists(target)) {
    const auto complete = std::filesystem::exists(old) && std::filesystem::exists(temporary) ? temporary : old;
    if (std::filesystem::exists(complete)) {
      std::filesystem::rename(complete, target, ec);
      GRPO_CHECK(!ec, io_error, complete.string(), ": cannot restore the interrupted save's checkpoint (",
                 ec.message(), ")");
      detail::fsync_directory(parent);
    }
  }
  std::filesystem::remove_all(temporary, ec);
  std::filesystem::remove_all(old, ec);
  std::filesystem::create_directory(temporary, ec);
  GRPO_CHECK(!ec, io_error, temporary.string(), ": cannot create the directory (", ec.message(), ")");
  try {
    fill(temporary);
  } catch (...) {
    std::filesystem::remove_all(temporary, ec);
    throw;
  }
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

/// Writes `text` to `path` atomically (io_error naming it on failure).
inline void write_text_file(const std::filesystem::path& path, std::string_view text) {
  safetensors::write_file_atomically(
      path, std::span<const std::byte>(reinterpret_cast<const std::byte*>(text.data()), text.size()));
}

/// The newest complete checkpoint written as `directory`: the directory itself, or, when a save was killed
/// between its two renames (the previous checkpoint moved aside to ".NAME.old", the new one
/// complete in ".NAME.tmp" but not yet renamed), the new one; when only ".NAME.old" is left (killed
/// after the first rename, before the new one was complete it would still be the target), that one.
/// \throws io_error naming `directory` when none of them exists.
inline std::filesystem::path resolve_checkpoint(const std::filesystem::path& directory) {
  if (std::filesystem::exists(directory)) return directory;
  const auto [temporary, old] = detail::save_directories(detail::without_trailing_separator(directory));
  // A .tmp next to a .old was complete (the target is moved aside only after the new one is synced).
  if (std::filesystem::exists(old) && std::filesystem::exists(temporary)) return temporary;
  if (std::filesystem::exists(old)) return old;
  grpo::detail::fail<io_error>(directory.string(), ": no checkpoint there (nor an interrupted save's ", old.filename().string(),
                               ")");
}

/// The whole contents of a file; io_error naming it when it cannot be read.
inline std::string read_text_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  GRPO_CHECK(in.good(), io_error, path.string(), ": cannot open for reading");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  GRPO_CHECK(!in.bad(), io_error, path.string(), ": read failed");
  return text;
}

/// Where a run stands; with the policy's state (weights, optimizer, reference) it is everything
/// a checkpoint holds.
struct trainer_state {
  std::string phase = "sft";            ///< "sft", "grpo" or "done"
  std::int64_t step = 0;                ///< optimizer steps done in the phase
  std::mt19937_64 data_rng{};           ///< draws the GRPO prompts
  std::optional<eval_result> before{};  ///< held-out evaluation after the cold start
  /// Bytes of metrics.jsonl when the checkpoint was saved (nullopt: the run wrote none): a resumed
  /// run cuts the file back to them, dropping the records logged after the checkpoint.
  std::optional<std::uint64_t> metrics_bytes{};
};

namespace detail {

inline std::string eval_json(const eval_result& e) {
  std::ostringstream out;
  out << "{\"problems\": " << e.problems << ", \"accuracy\": " << grpo::detail::json::number(e.accuracy)
      << ", \"format_rate\": " << grpo::detail::json::number(e.format_rate) << ", \"pass_at\": [";
  for (std::size_t i = 0; i < e.pass_at.size(); ++i)
    out << (i ? ", " : "") << "[" << e.pass_at[i].first << ", " << grpo::detail::json::number(e.pass_at[i].second)
        << "]";
  return out.str() + "]}";
}

}  // namespace detail

/// trainer_state.json: the state, and global_step (both phases together) for readers.
inline std::string to_json(const trainer_state& state, std::int64_t global_step) {
  std::ostringstream rng;
  rng << state.data_rng;
  std::ostringstream json;
  json << "{\n  \"phase\": " << grpo::detail::json::quote(state.phase) << ",\n  \"step\": " << state.step
       << ",\n  \"global_step\": " << global_step << ",\n  \"data_rng\": " << grpo::detail::json::quote(rng.str())
       << ",\n  \"eval_before\": " << (state.before ? detail::eval_json(*state.before) : "null")
       << ",\n  \"metrics_bytes\": " << (state.metrics_bytes ? std::to_string(*state.metrics_bytes) : "null")
       << "\n}\n";
  return json.str();
}

/// Reads a trainer_state.json written by to_json.
/// \throws io_error naming the file and the field that is missing or malformed.
inline trainer_state read_trainer_state(const std::filesystem::path& path) {
  namespace json = grpo::detail::json;
  const auto root = json::parse(read_text_file(path), path.string());
  const auto find = [&](std::string_view key) -> const json::value& {
    for (const auto& m : root.members)
      if (m.key == key) return m.value;
    grpo::detail::fail<io_error>(path.string(), ": missing \"", key, "\"");
  };
  const auto integer = [&](const json::value& v, std::string_view what) {
    std::uint64_t out = 0;
    GRPO_CHECK(json::to_uint64(v, out, static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())), io_error,
               path.string(), ": \"", what, "\" must be a non-negative integer");
    return static_cast<std::int64_t>(out);
  };
  const auto real = [&](const json::value& v, std::string_view what) {
    double out = 0;
    const auto [end, ec] = std::from_chars(v.text.data(), v.text.data() + v.text.size(), out);
    GRPO_CHECK(v.kind == json::kind::number && ec == std::errc() && end == v.text.data() + v.text.size(), io_error,
               path.string(), ": \"", what, "\" must be a number");
    return out;
  };
  trainer_state state;
  state.phase = find("phase").text;
  GRPO_CHECK(state.phase == "sft" || state.phase == "grpo" || state.phase == "done", io_error, path.string(),
             ": \"phase\" must be sft, grpo or done, got \"", state.phase, "\"");
  state.step = integer(find("step"), "step");
  std::istringstream rng(find("data_rng").text);
  rng >> state.data_rng;
  GRPO_CHECK(!rng.fail(), io_error, path.string(), ": malformed \"data_rng\"");
  const auto& before = find("eval_before");
  if (before.kind == json::kind::object) {
    eval_result e;
    for (const auto& m : before.members) {
      if (m.key == "problems") e.problems = integer(m.value, "eval_before.problems");
      if (m.key == "accuracy") e.accuracy = real(m.value, "eval_before.accuracy");
      if (m.key == "format_rate") e.format_rate = real(m.value, "eval_before.format_rate");
      if (m.key == "pass_at")
        for (const auto& pair : m.value.items) {
          GRPO_CHECK(pair.kind == json::kind::array && pair.items.size() == 2, io_error, path.string(),
                     ": \"eval_before.pass_at\" must hold [k, value] pairs");
          e.pass_at.emplace_back(integer(pair.items[0], "eval_before.pass_at"), real(pair.items[1], "eval_before.pass_at"));
        }
    }
    state.before = e;
  }
  // Absent from checkpoints written before it was recorded: nothing is cut then.
  for (const auto& m : root.members)
    if (m.key == "metrics_bytes" && m.value.kind != json::kind::null)
      state.metrics_bytes = static_cast<std::uint64_t>(integer(m.value, "metrics_bytes"));
  return state;
}

}  // namespace grpo::train
