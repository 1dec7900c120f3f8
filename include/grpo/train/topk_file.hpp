// SPDX-License-Identifier: Apache-2.0
// grpo/train/topk_file.hpp: a teacher's top-k next-token log-probs over a set of sequences, the
// offline data of sparse-teacher distillation (as a teacher server returns them, veRL; the loss is
// grpo::topk_distillation_loss). Stored as safetensors (written atomically), one row per
// completion position, sequences concatenated in order:
//   prompt_ids I32 [sum P_s]     completion_ids I32 [N = sum C_s]
//   prompt_lengths I64 [S]       completion_lengths I64 [S]
//   topk_ids I32 [N, K]          topk_logprobs F32 [N, K]  (log softmax(z / T), descending per row)
// with metadata {"format": "grpo-teacher-topk", "k", "temperature", "teacher"}. Row n of
// sequence s predicts completion_ids[n]: the teacher saw the prompt and the completion before it.
#pragma once

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <numeric>
#include <set>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "grpo/concepts.hpp"
#include "grpo/detail/json.hpp"
#include "grpo/error.hpp"
#include "grpo/safetensors.hpp"

namespace grpo::train {

/// Sequences with the teacher's top-k log-probs at every completion position.
struct topk_sequences {
  std::int64_t k = 0;
  double temperature = 1.0;
  std::string teacher;                              ///< where the log-probs came from (metadata)
  std::vector<std::vector<token_id>> prompts;       ///< [S]
  std::vector<std::vector<token_id>> completions;   ///< [S]
  std::vector<std::int32_t> ids;                    ///< [N, K]
  std::vector<float> logprobs;                      ///< [N, K]
  std::vector<std::int64_t> offsets{0};             ///< [S + 1] first row of each sequence

  std::size_t size() const { return completions.size(); }
};

/// Appends the teacher's top-k (ids, log softmax(z / temperature)) of every completion position of
/// `batch` (ties: the lower id first). Reads the logits to the host one call at a time.
/// \throws config_error naming "distill.top_k" when k is < 1 or larger than the teacher's vocabulary.
template <trainable_policy T>
void append_teacher_topk(T& teacher, const sequence_batch& batch, topk_sequences& out) {
  const std::int64_t v = teacher.vocab_size();
  GRPO_CHECK(out.k >= 1 && out.k <= v, config_error, "distill.top_k: k = ", out.k,
             " must be in [1, vocabulary size = ", v, "]");
  const auto t = static_cast<std::size_t>(batch.max_completion_length());
  const auto logits = teacher.forward(batch).to_host();
  const auto vocab = static_cast<std::size_t>(v), k = static_cast<std::size_t>(out.k);
  std::vector<double> z(vocab);
  std::vector<std::int32_t> order(vocab);
  for (std::size_t r = 0; r < batch.rows(); ++r) {
    out.prompts.push_back(batch.prompts[r]);
    out.completions.push_back(batch.completions[r]);
    for (std::size_t i = 0; i < batch.completions[r].size(); ++i) {
      const double* row = logits.data() + (r * t + i) * vocab;
      double top = row[0] / out.temperature;
      for (std::size_t j = 0; j < vocab; ++j) top = std::max(top, z[j] = row[j] / out.temperature);
      double s = 0;
      for (const double x : z) s += std::exp(x - top);
      const double lse = top + std::log(s);
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(),
                        [&](std::int32_t a, std::int32_t b) { return z[static_cast<std::size_t>(a)] > z[static_cast<std::size_t>(b)] || (z[static_cast<std::size_t>(a)] == z[static_cast<std::size_t>(b)] && a < b); });
      for (std::size_t j = 0; j < k; ++j) {
        out.ids.push_back(order[j]);
        out.logprobs.push_back(static_cast<float>(z[static_cast<std::size_t>(order[j])] - lse));
      }
    }
    out.offsets.push_back(out.offsets.back() + static_cast<std::int64_t>(batch.completions[r].size()));
  }
}

namespace detail {

inline std::vector<double> flatten(const std::vector<std::vector<token_id>>& rows, std::vector<double>& lengths) {
  std::vector<double> flat;
  for (const auto& row : rows) {
    lengths.push_back(static_cast<double>(row.size()));
    flat.insert(flat.end(), row.begin(), row.end());
  }
  return flat;
}

}  // namespace detail

/// Writes the sequences and their top-k log-probs (layout in the file header), atomically.
inline void write_topk_file(const std::filesystem::path& path, const topk_sequences& s) {
  safetensors::writer w;
  std::vector<double> prompt_lengths, completion_lengths;
  const auto prompt_ids = detail::flatten(s.prompts, prompt_lengths);
  const auto completion_ids = detail::flatten(s.completions, completion_lengths);
  const auto n = static_cast<std::int64_t>(completion_ids.size()), rows = static_cast<std::int64_t>(s.size());
  GRPO_CHECK(s.ids.size() == static_cast<std::size_t>(n * s.k) && s.logprobs.size() == s.ids.size(), shape_error,
             "topk_sequences: ", s.ids.size(), " ids and ", s.logprobs.size(), " log-probs for ", n, " positions x k = ",
             s.k);
  w.add("prompt_ids", prompt_ids, {static_cast<std::int64_t>(prompt_ids.size())}, safetensors::dtype::i32);
  w.add("prompt_lengths", prompt_lengths, {rows}, safetensors::dtype::i64);
  w.add("completion_ids", completion_ids, {n}, safetensors::dtype::i32);
  w.add("completion_lengths", completion_lengths, {rows}, safetensors::dtype::i64);
  w.add("topk_ids", std::vector<double>(s.ids.begin(), s.ids.end()), {n, s.k}, safetensors::dtype::i32);
  w.add("topk_logprobs", std::span<const float>(s.logprobs), {n, s.k});
  w.add_metadata("format", "grpo-teacher-topk");
  w.add_metadata("k", std::to_string(s.k));
  w.add_metadata("temperature", grpo::detail::json::number(s.temperature));
  w.add_metadata("teacher", s.teacher);
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  w.write(path);
}

/// Reads a file written by write_topk_file for a student of `vocab_size` tokens.
/// \throws io_error naming the file and the tensor that is missing or inconsistent (lengths that
///         do not add up, an id outside [0, vocab_size) or twice in a row, a log-prob above 0 or
///         NaN); config_error naming "distill.top_k" when the file's k exceeds vocab_size.
inline topk_sequences read_topk_file(const std::filesystem::path& path, std::int64_t vocab_size) {
  const auto f = safetensors::file::read(path);
  const std::string name = path.string();
  const auto& meta = f.metadata();
  GRPO_CHECK(meta.count("format") && meta.at("format") == "grpo-teacher-topk", io_error, name,
             ": not a teacher top-k file (metadata \"format\" is not \"grpo-teacher-topk\")");
  topk_sequences s;
  s.teacher = meta.count("teacher") ? meta.at("teacher") : "";
  const auto topk_shape = f.at("topk_ids").shape;
  GRPO_CHECK(topk_shape.size() == 2 && topk_shape[1] >= 1, io_error, name, ": tensor 'topk_ids' must be [N, K]");
  s.k = topk_shape[1];
  GRPO_CHECK(s.k <= vocab_size, config_error, "distill.top_k: ", name, " holds k = ", s.k,
             " log-probs per position, more than the vocabulary of ", vocab_size, " tokens");
  if (meta.count("temperature")) {
    const std::string& text = meta.at("temperature");
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), s.temperature);
    GRPO_CHECK(ec == std::errc() && end == text.data() + text.size() && s.temperature > 0, io_error, name,
               ": metadata \"temperature\" is not a positive number: ", text);
  }
  const auto split = [&](std::string_view ids_name, std::string_view lengths_name) {
    const auto ids = f.to_doubles(ids_name);
    const auto lengths = f.to_doubles(lengths_name);
    std::vector<std::vector<token_id>> rows;
    std::size_t at = 0;
    for (const double len : lengths) {
      GRPO_CHECK(len >= 0 && at + static_cast<std::size_t>(len) <= ids.size(), io_error, name, ": tensor '",
                 lengths_name, "' does not add up to the ", ids.size(), " ids of '", ids_name, "'");
      std::vector<token_id> row;
      for (std::size_t i = at; i < at + static_cast<std::size_t>(len); ++i) {
        GRPO_CHECK(ids[i] >= 0 && ids[i] < static_cast<double>(vocab_size), io_error, name, ": tensor '", ids_name,
                   "': element ", i, " = ", ids[i], " is not a token id in [0, ", vocab_size, ")");
        row.push_back(static_cast<token_id>(ids[i]));
      }
      at += static_cast<std::size_t>(len);
      rows.push_back(std::move(row));
    }
    GRPO_CHECK(at == ids.size(), io_error, name, ": tensor '", lengths_name, "' does not add up to the ", ids.size(),
               " ids of '", ids_name, "'");
    return rows;
  };
  s.prompts = split("prompt_ids", "prompt_lengths");
  s.completions = split("completion_ids", "completion_lengths");
  GRPO_CHECK(s.prompts.size() == s.completions.size(), io_error, name, ": ", s.prompts.size(), " prompts for ",
             s.completions.size(), " completions");
  for (const auto& c : s.completions) s.offsets.push_back(s.offsets.back() + static_cast<std::int64_t>(c.size()));
  const auto n = s.offsets.back();
  GRPO_CHECK(topk_shape[0] == n, io_error, name, ": tensor 'topk_ids' has ", topk_shape[0], " rows for ", n,
             " completion positions");
  GRPO_CHECK(f.at("topk_logprobs").type == safetensors::dtype::f32 && f.at("topk_logprobs").shape == topk_shape,
             io_error, name, ": tensor 'topk_logprobs' must be F32 of the shape of 'topk_ids'");
  for (const double id : f.to_doubles("topk_ids")) {
    GRPO_CHECK(id >= 0 && id < static_cast<double>(vocab_size), io_error, name, ": tensor 'topk_ids': ", id,
               " is not a token id in [0, ", vocab_size, ")");
    s.ids.push_back(static_cast<std::int32_t>(id));
  }
  for (std::int64_t r = 0; r < n; ++r) {
    const std::set<std::int32_t> row(s.ids.begin() + r * s.k, s.ids.begin() + (r + 1) * s.k);
    GRPO_CHECK(static_cast<std::int64_t>(row.size()) == s.k, io_error, name, ": tensor 'topk_ids': row ", r,
               " holds an id twice");
  }
  for (const double lp : f.to_doubles("topk_logprobs")) {
    GRPO_CHECK(lp <= 0.0, io_error, name, ": tensor 'topk_logprobs': ", lp, " is not a log-probability");
    s.logprobs.push_back(static_cast<float>(lp));
  }
  return s;
}

}  // namespace grpo::train
