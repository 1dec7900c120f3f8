// SPDX-License-Identifier: Apache-2.0
// grpo/tasks/jsonl.hpp: user data for training and evaluation: JSON Lines files with one
// {"prompt": ..., "answer": ...} object per line (the layout of TRL's prompt-only datasets with a
// solution column), judged by one of the task checkers (answer_kind). Every line is validated on
// load, with errors that name the file and line. Rows whose answer the checker cannot read are
// kept and scored as unscorable, as open-r1 does, rather than rejected.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "grpo/detail/json.hpp"
#include "grpo/error.hpp"
#include "grpo/tasks/task.hpp"
#include "grpo/tasks/tokenizer.hpp"

namespace grpo::tasks {

/// Problems from JSON Lines `text`; `source` (the file name) starts every error message.
///
/// Each line that is not blank must be a JSON object with a non-empty string "prompt" that
/// `tokenizer` can encode and an "answer" that is a string or a number (a number keeps its source
/// text, so {"answer": 42} is "42"); other fields are ignored. Blank lines are skipped, a final
/// newline, CRLF line ends and a UTF-8 byte-order mark are accepted. A prompt that repeats an
/// earlier one must have the same answer. Demonstrations are empty: user data has no worked
/// solutions. Throws io_error "SOURCE:LINE: ..." for the first bad line, or "SOURCE: ..." when
/// there are no problems at all.
inline std::vector<problem> parse_jsonl(std::string_view text, std::string_view source,
                                        const char_tokenizer& tokenizer = builtin_tokenizer()) {
  namespace json = grpo::detail::json;
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
  std::vector<problem> problems;
  std::map<std::string, std::pair<std::string, std::size_t>, std::less<>> first_seen;  // prompt -> (answer, line)
  std::size_t line_number = 0;
  while (!text.empty()) {
    const std::size_t end = text.find('\n');
    std::string_view line = text.substr(0, end);
    text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (detail::trim(line).empty()) continue;

    const std::string where = grpo::detail::concat(source, ":", line_number);
    const json::value row = json::parse(line, where);
    GRPO_CHECK(row.kind == json::kind::object, io_error, where, ": expected a JSON object, got ", json::kind_name(row.kind));
    const json::value* prompt = nullptr;
    const json::value* answer = nullptr;
    for (const auto& [key, item] : row.members) {
      if (key == "prompt") prompt = &item;
      else if (key == "answer") answer = &item;
    }
    GRPO_CHECK(prompt, io_error, where, ": missing field \"prompt\"");
    GRPO_CHECK(answer, io_error, where, ": missing field \"answer\"");
    GRPO_CHECK(prompt->kind == json::kind::string, io_error, where, ": field \"prompt\" must be a string, got ",
               json::kind_name(prompt->kind));
    GRPO_CHECK(!prompt->text.empty(), io_error, where, ": field \"prompt\" is empty");
    GRPO_CHECK(answer->kind == json::kind::string || answer->kind == json::kind::number, io_error, where,
               ": field \"answer\" must be a string or a number, got ", json::kind_name(answer->kind));
    if (const std::optional<std::size_t> bad = tokenizer.first_unknown(prompt->text))
      grpo::detail::fail<io_error>(where, ": field \"prompt\" has character ", detail::describe_char(prompt->text[*bad]),
                                   " at byte ", *bad, ", which is not in the tokenizer's vocabulary");
    const auto [it, inserted] = first_seen.try_emplace(prompt->text, answer->text, line_number);
    GRPO_CHECK(inserted || it->second.first == answer->text, io_error, where, ": the prompt of line ",
               it->second.second, " is repeated with a different answer (", json::quote(answer->text), " here, ",
               json::quote(it->second.first), " there)");
    problems.push_back({prompt->text, answer->text, {}});
  }
  GRPO_CHECK(!problems.empty(), io_error, source, ": no problems (the file has no non-blank line)");
  return problems;
}

/// parse_jsonl on the contents of the file at `path`; throws io_error "PATH: ..." when it cannot
/// be read.
inline std::vector<problem> load_jsonl(const std::filesystem::path& path,
                                       const char_tokenizer& tokenizer = builtin_tokenizer()) {
  std::ifstream in(path, std::ios::binary);
  GRPO_CHECK(in.good(), io_error, path.string(), ": cannot open the file for reading");
  std::ostringstream contents;
  contents << in.rdbuf();
  GRPO_CHECK(!in.bad(), io_error, path.string(), ": read failed");
  return parse_jsonl(contents.str(), path.string(), tokenizer);
}

/// Splits `problems` by a fixed hash of the prompt: a share of about `heldout_fraction` goes to
/// the held-out split, the same share for the same prompt whatever the file order or seed.
/// Returns (train, heldout). Throws config_error unless heldout_fraction is in [0, 1].
inline std::pair<std::vector<problem>, std::vector<problem>> split_problems(std::vector<problem> problems,
                                                                            double heldout_fraction) {
  GRPO_CHECK(heldout_fraction >= 0 && heldout_fraction <= 1, config_error, "heldout_fraction: must be in [0, 1], got ",
             heldout_fraction);
  std::pair<std::vector<problem>, std::vector<problem>> out;
  for (problem& p : problems)
    (detail::in_heldout_split("jsonl:" + p.prompt, heldout_fraction) ? out.second : out.first).push_back(std::move(p));
  return out;
}

/// A task over user problems: sample_train draws uniformly from `train`, heldout lists
/// `heldout` in order, and reference_answer looks the prompt up (nullopt for an unknown prompt).
/// Correctness is decided by the checker of `kind`: for integer, the answer is the integer; for
/// countdown, the answer is one solution expression, whose numbers and value define the problem.
class dataset_task final : public task {
 public:
  /// Throws config_error for an empty name or train split, a prompt repeated with a different
  /// answer, or a held-out prompt that is also a training prompt; value_error "train: problem i:
  /// ..." / "heldout: problem i: ..." for a prompt the tokenizer cannot encode. The tokenizer is
  /// copied.
  dataset_task(std::string name, answer_kind kind, std::vector<problem> train, std::vector<problem> heldout = {},
               const char_tokenizer& tokenizer = builtin_tokenizer())
      : name_(std::move(name)), kind_(kind), train_(std::move(train)), heldout_(std::move(heldout)),
        tokenizer_(tokenizer) {
    GRPO_CHECK(!name_.empty(), config_error, "name: must not be empty");
    GRPO_CHECK(!train_.empty(), config_error, "train: no problems (", heldout_.size(),
               " held-out); a dataset task needs at least one training problem");
    add_answers(train_, "train");
    std::map<std::string, std::string, std::less<>> train_answers;
    train_answers.swap(answers_);
    add_answers(heldout_, "heldout");
    for (const auto& [prompt, answer] : answers_)
      GRPO_CHECK(!train_answers.count(prompt), config_error, "heldout: the prompt ", grpo::detail::json::quote(prompt),
                 " is also in the training split (held-out results would be inflated)");
    answers_.merge(train_answers);
  }

  std::string_view name() const override { return name_; }
  answer_kind kind() const override { return kind_; }
  const char_tokenizer& tokenizer() const override { return tokenizer_; }

  problem sample_train(std::mt19937_64& rng) const override { return train_[grpo::detail::uniform_below(rng, train_.size())]; }

  std::size_t heldout_size() const override { return heldout_.size(); }

  problem heldout(std::size_t index) const override {
    GRPO_CHECK(index < heldout_.size(), value_error, "index: ", index, " is outside the held-out split of size ",
               heldout_.size());
    return heldout_[index];
  }

  std::optional<std::string> reference_answer(std::string_view prompt) const override {
    const auto it = answers_.find(prompt);
    if (it == answers_.end()) return std::nullopt;
    return it->second;
  }

  /// The training split in file order, for epoch-style iteration.
  const std::vector<problem>& train_problems() const { return train_; }

 private:
  std::string name_;
  answer_kind kind_;
  std::vector<problem> train_;
  std::vector<problem> heldout_;
  char_tokenizer tokenizer_;
  std::map<std::string, std::string, std::less<>> answers_;

  void add_answers(const std::vector<problem>& problems, std::string_view split) {
    for (std::size_t i = 0; i < problems.size(); ++i) {
      const problem& p = problems[i];
      if (const std::optional<std::size_t> bad = tokenizer_.first_unknown(p.prompt))
        grpo::detail::fail<value_error>(split, ": problem ", i, ": prompt has character ",
                                        detail::describe_char(p.prompt[*bad]), " at byte ", *bad,
                                        ", which is not in the tokenizer's vocabulary");
      const auto [it, inserted] = answers_.try_emplace(p.prompt, p.answer);
      GRPO_CHECK(inserted || it->second == p.answer, config_error, split, ": problem ", i, " repeats the prompt ",
                 grpo::detail::json::quote(p.prompt), " with a different answer");
    }
  }
};

/// The task of `--data train.jsonl [--eval-data heldout.jsonl]`: problems from `train_path`, and
/// held-out problems from `heldout_path` when given, otherwise split off `train_path` by
/// split_problems with `heldout_fraction`. Named after the training file. Throws as load_jsonl,
/// split_problems and dataset_task do.
inline dataset_task load_dataset_task(const std::filesystem::path& train_path, answer_kind kind,
                                      const std::optional<std::filesystem::path>& heldout_path = std::nullopt,
                                      double heldout_fraction = 0.1,
                                      const char_tokenizer& tokenizer = builtin_tokenizer()) {
  std::vector<problem> train = load_jsonl(train_path, tokenizer);
  std::vector<problem> heldout;
  if (heldout_path) heldout = load_jsonl(*heldout_path, tokenizer);
  else std::tie(train, heldout) = split_problems(std::move(train), heldout_fraction);
  return dataset_task(train_path.filename().string(), kind, std::move(train), std::move(heldout), tokenizer);
}

}  // namespace grpo::tasks
