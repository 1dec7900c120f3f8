// SPDX-License-Identifier: Apache-2.0
// grpo/train/metrics.hpp: what a run reports: one JSON object per step appended to a JSONL file
// with veRL-style slash keys ("actor/pg_loss", "response_length/mean", ...), in insertion order,
// NaN / Inf written as null (JSON has neither), and a one-line console progress with an ETA.
// cmake/plot_metrics.py turns the JSONL into learning curves.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <ostream>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "grpo/detail/json.hpp"
#include "grpo/error.hpp"
#include "grpo/model/config.hpp"

namespace grpo::train {

/// The metrics of one step, in the order they were added.
class metrics_record {
 public:
  void set(std::string key, double value) {
    for (auto& [k, v] : values_)
      if (k == key) {
        v = value;
        return;
      }
    values_.emplace_back(std::move(key), value);
  }
  /// The value of `key`, NaN when absent.
  double get(std::string_view key) const {
    for (const auto& [k, v] : values_)
      if (k == key) return v;
    return std::nan("");
  }
  bool contains(std::string_view key) const {
    for (const auto& [k, v] : values_)
      if (k == key) return true;
    return false;
  }
  const std::vector<std::pair<std::string, double>>& values() const { return values_; }

  /// One JSON object on one line (no newline); integers print without a fraction.
  std::string to_json() const {
    std::string out = "{";
    for (std::size_t i = 0; i < values_.size(); ++i) {
      const auto& [k, v] = values_[i];
      out += (i ? ", " : "") + grpo::detail::json::quote(k) + ": ";
      if (!std::isfinite(v)) out += "null";
      else if (v == std::round(v) && std::fabs(v) < 1e15) out += std::to_string(static_cast<std::int64_t>(v));
      else out += grpo::detail::json::number(v);
    }
    return out + "}";
  }

 private:
  std::vector<std::pair<std::string, double>> values_;
};

/// Appends records to a JSONL file, flushed after each line so a killed run keeps its history.
/// The file is open in append mode throughout, so that cutting it back (truncate) moves the point
/// where the next record goes.
class metrics_writer {
 public:
  /// Opens `path` for appending (emptying it first unless `append`); io_error naming it on failure.
  explicit metrics_writer(const std::filesystem::path& path, bool append = false) : path_(path) {
    if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
    if (!append) out_.open(path, std::ios::trunc);
    out_.close();
    out_.clear();
    out_.open(path, std::ios::app);
    GRPO_CHECK(out_.good(), io_error, path.string(), ": cannot open for writing");
  }
  void write(const metrics_record& record) {
    out_ << record.to_json() << '\n';
    out_.flush();
    GRPO_CHECK(out_.good(), io_error, path_.string(), ": write failed");
  }

  const std::filesystem::path& path() const { return path_; }

  /// The file's size in bytes: every record written so far, complete (each write is flushed).
  std::uint64_t size() const {
    std::error_code ec;
    const auto bytes = std::filesystem::file_size(path_, ec);
    GRPO_CHECK(!ec, io_error, path_.string(), ": cannot read its size (", ec.message(), ")");
    return bytes;
  }

  /// Cuts the file back to its first `bytes` bytes, which must end a line: a run resumed from a
  /// checkpoint drops the records logged after it, and a line torn by a kill. A file no longer
  /// than `bytes` is left as it is (it is not the file the checkpoint measured, or lost records).
  /// 	hrows io_error naming the file when byte `bytes` - 1 is not a newline (not the records the
  ///         size was taken of), or when it cannot be cut.
  void truncate(std::uint64_t bytes) {
    if (size() <= bytes) return;
    if (bytes > 0) {
      std::ifstream in(path_, std::ios::binary);
      char last = 0;
      in.seekg(static_cast<std::streamoff>(bytes - 1));
      in.get(last);
      GRPO_CHECK(in.good() && last == '\n', io_error, path_.string(), ": byte ", bytes,
                 " does not end a record, so the file is not the one the checkpoint measured");
    }
    out_.close();
    std::error_code ec;
    std::filesystem::resize_file(path_, bytes, ec);
    out_.clear();
    out_.open(path_, std::ios::app);
    GRPO_CHECK(!ec && out_.good(), io_error, path_.string(), ": cannot cut back to ", bytes, " bytes (", ec.message(),
               ")");
  }

 private:
  std::filesystem::path path_;
  std::ofstream out_;
};

/// "1h02m", "3m07s" or "12s".
inline std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<std::int64_t>(std::llround(seconds));
  std::ostringstream out;
  if (s >= 3600) out << s / 3600 << "h" << (s % 3600) / 60 / 10 << (s % 3600) / 60 % 10 << "m";
  else if (s >= 60) out << s / 60 << "m" << (s % 60) / 10 << (s % 60) % 10 << "s";
  else out << s << "s";
  return out.str();
}

/// "[phase] step 12/100 | key value | ... | 1.2s/step | ETA 1m46s": `keys` are (label, metric)
/// pairs; absent or NaN metrics are skipped.
inline std::string progress_line(std::string_view phase, std::int64_t step, std::int64_t total,
                                 const metrics_record& record,
                                 const std::vector<std::pair<std::string, std::string>>& keys,
                                 double seconds_per_step) {
  std::ostringstream out;
  out << "[" << phase << "] step " << step << "/" << total;
  out.setf(std::ios::fixed);
  for (const auto& [label, key] : keys) {
    const double v = record.get(key);
    if (!std::isfinite(v)) continue;
    out.precision(std::fabs(v) >= 100 ? 0 : std::fabs(v) >= 1 ? 2 : 3);
    out << " | " << label << " " << v;
  }
  out.precision(2);
  out << " | " << seconds_per_step << "s/step | ETA "
      << format_duration(seconds_per_step * static_cast<double>(total - step));
  return out.str();
}

}  // namespace grpo::train
