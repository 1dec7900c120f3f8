// SPDX-License-Identifier: Apache-2.0
// grpo/train/traces.hpp: verified teacher traces, the data of R1's distilled models
// (arXiv:2501.12948, Sec. 2.3.3 rejection sampling, Sec. 2.4 distillation): the teacher samples k
// completions per training prompt, the rule-based verifier keeps those whose answer is correct
// (and, by default, in the <think>/<answer> format), and the kept ones are written as JSONL, one
// object per line, to be inspected or reused:
//   {"prompt": str, "completion": str, "completion_ids": [int], "reward": 1.0, "teacher_logprobs": [float]}
// completion_ids are the sampled tokens (ending with the stop token when the teacher stopped);
// teacher_logprobs[i] is log softmax(z / T)[completion_ids[i]] at the sampling temperature T.
#pragma once

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "grpo/concepts.hpp"
#include "grpo/detail/json.hpp"
#include "grpo/detail/random.hpp"
#include "grpo/error.hpp"
#include "grpo/tasks/rewards.hpp"
#include "grpo/tasks/task.hpp"
#include "grpo/train/checkpoint.hpp"
#include "grpo/train/codec.hpp"

namespace grpo::train {

/// One verified completion of the teacher.
struct trace {
  std::string prompt;
  std::string completion;  ///< the decoded completion_ids
  std::vector<token_id> completion_ids;
  double reward = 1.0;     ///< the accuracy reward (1: verified)
  std::vector<double> teacher_logprobs;  ///< one per completion id
};

/// One JSONL line (no newline).
inline std::string to_json(const trace& t) {
  namespace json = grpo::detail::json;
  std::string out = "{\"prompt\": " + json::quote(t.prompt) + ", \"completion\": " + json::quote(t.completion) +
                    ", \"completion_ids\": [";
  for (std::size_t i = 0; i < t.completion_ids.size(); ++i)
    out += (i ? ", " : "") + std::to_string(t.completion_ids[i]);
  out += "], \"reward\": " + json::number(t.reward) + ", \"teacher_logprobs\": [";
  for (std::size_t i = 0; i < t.teacher_logprobs.size(); ++i)
    out += (i ? ", " : "") + json::number(t.teacher_logprobs[i]);
  return out + "]}";
}

/// Writes the traces as JSONL, atomically (io_error naming the path on failure).
inline void write_traces(const std::filesystem::path& path, std::span<const trace> traces) {
  std::string text;
  for (const auto& t : traces) text += to_json(t) + "\n";
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  write_text_file(path, text);
}

/// Reads a traces file; every id must be in [0, vocab_size). Rows come back as written, whatever
/// their reward (the distiller trains on every row; the files it writes hold only verified ones).
/// \throws io_error naming the file and line of the first malformed row (not JSON, a missing or
///         mistyped field, an id out of range, a log-prob above 0 or NaN, log-probs and ids of
///         different lengths, an empty completion).
inline std::vector<trace> read_traces(const std::filesystem::path& path, std::int64_t vocab_size) {
  namespace json = grpo::detail::json;
  const std::string text = read_text_file(path);
  std::vector<trace> out;
  std::size_t begin = 0;
  for (std::int64_t line = 1; begin < text.size(); ++line) {
    std::size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    const std::string_view row(text.data() + begin, end - begin);
    begin = end + 1;
    if (row.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    const std::string where = path.string() + ":" + std::to_string(line);
    const auto root = json::parse(row, where);
    GRPO_CHECK(root.kind == json::kind::object, io_error, where, ": expected a JSON object, got ",
               json::kind_name(root.kind));
    const auto field = [&](std::string_view key, json::kind kind) -> const json::value& {
      for (const auto& m : root.members)
        if (m.key == key) {
          GRPO_CHECK(m.value.kind == kind, io_error, where, ": field \"", key, "\" must be ", json::kind_name(kind),
                     ", got ", json::kind_name(m.value.kind));
          return m.value;
        }
      grpo::detail::fail<io_error>(where, ": missing field \"", key, "\"");
    };
    const auto number = [&](const json::value& v, std::string_view key) {
      GRPO_CHECK(v.kind == json::kind::number, io_error, where, ": field \"", key, "\" must hold numbers, got ",
                 json::kind_name(v.kind));
      double x = 0;
      const auto [stop, ec] = std::from_chars(v.text.data(), v.text.data() + v.text.size(), x);
      GRPO_CHECK(ec == std::errc() && stop == v.text.data() + v.text.size() && std::isfinite(x), io_error, where,
                 ": field \"", key, "\": ", v.text, " is not a finite number");
      return x;
    };
    trace t;
    t.prompt = field("prompt", json::kind::string).text;
    t.completion = field("completion", json::kind::string).text;
    for (const auto& id : field("completion_ids", json::kind::array).items) {
      std::uint64_t value = 0;
      GRPO_CHECK(json::to_uint64(id, value) && value < static_cast<std::uint64_t>(vocab_size), io_error, where,
                 ": field \"completion_ids\": ", id.text, " is not a token id in [0, ", vocab_size, ")");
      t.completion_ids.push_back(static_cast<token_id>(value));
    }
    GRPO_CHECK(!t.completion_ids.empty(), io_error, where, ": field \"completion_ids\" is empty");
    t.reward = number(field("reward", json::kind::number), "reward");
    for (const auto& lp : field("teacher_logprobs", json::kind::array).items) {
      const double x = number(lp, "teacher_logprobs");
      GRPO_CHECK(x <= 0.0, io_error, where, ": field \"teacher_logprobs\": ", lp.text, " is not a log-probability");
      t.teacher_logprobs.push_back(x);
    }
    GRPO_CHECK(t.teacher_logprobs.size() == t.completion_ids.size(), io_error, where, ": field \"teacher_logprobs\": ",
               t.teacher_logprobs.size(), " values for ", t.completion_ids.size(), " completion_ids");
    out.push_back(std::move(t));
  }
  return out;
}

/// The rejection-sampling filter (R1 Sec. 2.3.3): of `completions` (group_size per problem, rows
/// [kG, (k+1)G) answering problems[k]), those whose accuracy reward is exactly 1 and, when
/// require_format, whose text has the R1 format. Unscorable completions are dropped.
inline std::vector<trace> verified_traces(std::span<const tasks::problem> problems,
                                          std::span<const sampled_completion> completions, std::int64_t group_size,
                                          const tasks::task& task, const text_codec& codec, bool require_format) {
  GRPO_CHECK(group_size > 0 && completions.size() == problems.size() * static_cast<std::size_t>(group_size), shape_error,
             "completions: expected ", problems.size(), " x ", group_size, " rows, got ", completions.size());
  const tasks::accuracy_reward accuracy(task);
  std::vector<trace> out;
  for (std::size_t r = 0; r < completions.size(); ++r) {
    const auto& p = problems[r / static_cast<std::size_t>(group_size)];
    const auto& c = completions[r];
    std::string text = codec.decode(c.tokens);
    const auto verdict = accuracy(p.prompt, text);
    if (!verdict || *verdict != 1.0 || c.tokens.empty()) continue;
    if (require_format && !tasks::has_r1_format(text)) continue;
    out.push_back({p.prompt, std::move(text), c.tokens, *verdict, c.full_logprobs});
  }
  return out;
}

/// What generate_traces is asked for.
struct trace_options {
  std::int64_t num_prompts = 512;  ///< training prompts, drawn with stream 6 of the seed
  std::int64_t num_samples = 4;    ///< k per prompt
  std::int64_t chunk = 32;         ///< prompts per teacher.generate call (results do not depend on it)
  bool require_format = true;
  sampling_options sampling{};
  std::uint64_t seed = 1;
};

/// The teacher's verified traces: num_prompts training prompts, num_samples samples of each (row r
/// of the whole set seeded by row_seed(mix_seed(seed, 7), r)), filtered by verified_traces.
/// `progress(done_prompts, kept)` is called after each chunk. Returns the kept traces and sets
/// `sampled` to the number of completions drawn.
template <trainable_policy T, class Progress>
std::vector<trace> generate_traces(T& teacher, const tasks::task& task, const text_codec& codec,
                                   const trace_options& o, std::int64_t& sampled, Progress&& progress) {
  std::mt19937_64 rng(grpo::detail::mix_seed(o.seed, 6));
  std::vector<tasks::problem> problems;
  for (std::int64_t i = 0; i < o.num_prompts; ++i) problems.push_back(task.sample_train(rng));
  std::vector<trace> out;
  sampled = 0;
  for (std::int64_t start = 0; start < o.num_prompts; start += o.chunk) {
    const auto count = std::min(o.chunk, o.num_prompts - start);
    const std::span<const tasks::problem> part(problems.data() + start, static_cast<std::size_t>(count));
    std::vector<std::vector<token_id>> prompts;
    for (const auto& p : part) prompts.push_back(codec.encode_prompt(p.prompt));
    auto sampling = o.sampling;
    sampling.first_row = static_cast<std::uint64_t>(start * o.num_samples);
    const auto completions = teacher.generate(prompts, sampling, grpo::detail::mix_seed(o.seed, 7), o.num_samples);
    sampled += static_cast<std::int64_t>(completions.size());
    for (auto& t : verified_traces(part, completions, o.num_samples, task, codec, o.require_format))
      out.push_back(std::move(t));
    progress(start + count, static_cast<std::int64_t>(out.size()));
  }
  return out;
}

}  // namespace grpo::train
