// SPDX-License-Identifier: Apache-2.0
// grpo/hf/tokenizer_pipeline.hpp: the encoding stages of the Hugging Face `tokenizers` library that
// grpo::hf::tokenizer (grpo/hf/tokenizer.hpp) chains: added-token extraction (AddedVocabulary),
// the pre-tokenizers Split / ByteLevel / Digits with the five split behaviours, and the BPE model
// (merges applied by rank, lowest first, as models/bpe/word.rs merge_all does). Written from the
// library's semantics (tokenizers 0.23, src/tokenizer/{added_vocabulary,normalizer,pattern}.rs,
// src/pre_tokenizers/*.rs, src/models/bpe/*.rs); nothing here parses JSON.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "grpo/concepts.hpp"
#include "grpo/hf/tokenizer_unicode.hpp"

namespace grpo::hf::detail {

/// How the pieces a pattern finds become splits (tokenizers' SplitDelimiterBehavior).
enum class split_behavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };

/// A contiguous part of a string and whether the pattern matched it. A pattern's parts cover the
/// whole string in order.
struct part {
  std::size_t start = 0;
  std::size_t end = 0;
  bool is_match = false;
};

/// The parts of `text` given the matches of a regex (Pattern for SysRegex in pattern.rs).
inline std::vector<part> regex_parts(const regex& pattern, std::string_view text) {
  if (text.empty()) return {{0, 0, false}};
  std::vector<part> parts;
  std::size_t previous = 0;
  for (const auto& [start, end] : pattern.find_all(text)) {
    if (previous != start) parts.push_back({previous, start, false});
    parts.push_back({start, end, true});
    previous = end;
  }
  if (previous != text.size()) parts.push_back({previous, text.size(), false});
  return parts;
}

/// The parts of `text` where each character satisfying `test` is one match (Pattern for Fn(char)).
template <class Test>
std::vector<part> char_parts(std::string_view text, Test test) {
  if (text.empty()) return {{0, 0, false}};
  std::vector<part> parts;
  std::size_t last_offset = 0;
  for (std::size_t pos = 0; pos < text.size();) {
    std::size_t length = 0;
    const char32_t c = decode_utf8(text, pos, length);
    if (test(c)) {
      if (last_offset < pos) parts.push_back({last_offset, pos, false});
      parts.push_back({pos, pos + length, true});
      last_offset = pos + length;
    }
    pos += length;
  }
  if (text.size() > last_offset) parts.push_back({last_offset, text.size(), false});
  return parts;
}

/// The byte ranges that `behavior` keeps from the parts (NormalizedString::split in normalizer.rs).
inline std::vector<std::pair<std::size_t, std::size_t>> apply_behavior(const std::vector<part>& parts,
                                                                       split_behavior behavior) {
  std::vector<std::pair<std::size_t, std::size_t>> kept;
  bool previous_match = false;
  switch (behavior) {
    case split_behavior::isolated:
      for (const part& p : parts) kept.emplace_back(p.start, p.end);
      break;
    case split_behavior::removed:
      for (const part& p : parts)
        if (!p.is_match) kept.emplace_back(p.start, p.end);
      break;
    case split_behavior::contiguous:
      for (const part& p : parts) {
        if (p.is_match == previous_match && !kept.empty()) kept.back().second = p.end;
        else kept.emplace_back(p.start, p.end);
        previous_match = p.is_match;
      }
      break;
    case split_behavior::merged_with_previous:
      for (const part& p : parts) {
        if (p.is_match && !previous_match && !kept.empty()) kept.back().second = p.end;
        else kept.emplace_back(p.start, p.end);
        previous_match = p.is_match;
      }
      break;
    case split_behavior::merged_with_next:
      for (auto p = parts.rbegin(); p != parts.rend(); ++p) {
        if (p->is_match && !previous_match && !kept.empty()) kept.back().first = p->start;
        else kept.emplace_back(p->start, p->end);
        previous_match = p->is_match;
      }
      std::reverse(kept.begin(), kept.end());
      break;
  }
  return kept;
}

/// Appends the non-empty pieces of `text` that the ranges select (empty splits are dropped, as
/// PreTokenizedString::split drops them).
inline void append_pieces(std::string_view text, const std::vector<std::pair<std::size_t, std::size_t>>& ranges,
                          std::vector<std::string>& out) {
  for (const auto& [start, end] : ranges)
    if (end > start) out.emplace_back(text.substr(start, end - start));
}

/// Split{pattern, behavior, invert}: a String pattern is compiled as its escaped literal.
struct split_step {
  regex pattern;
  split_behavior behavior = split_behavior::isolated;
  bool invert = false;
};

/// ByteLevel{add_prefix_space, use_regex}: optionally a leading space and GPT-2's split, then every
/// byte replaced by the character standing for it.
struct byte_level_step {
  bool add_prefix_space = false;
  std::optional<regex> gpt2_split;  // set when use_regex
};

/// Digits{individual_digits}: numeric characters isolated one by one, or runs of them kept together.
struct digits_step {
  bool individual_digits = false;
};

using pre_tokenizer_step = std::variant<split_step, byte_level_step, digits_step>;

/// The GPT-2 split of the ByteLevel pre-tokenizer (src/pre_tokenizers/byte_level.rs; openai/gpt-2
/// src/encoder.py).
inline constexpr std::string_view gpt2_split_pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

/// One pre-tokenizer step applied to each piece.
inline std::vector<std::string> apply_step(const pre_tokenizer_step& step, std::vector<std::string> pieces) {
  std::vector<std::string> out;
  out.reserve(pieces.size());
  for (std::string& piece : pieces) {
    if (const auto* split = std::get_if<split_step>(&step)) {
      std::vector<part> parts = regex_parts(split->pattern, piece);
      if (split->invert)
        for (part& p : parts) p.is_match = !p.is_match;
      append_pieces(piece, apply_behavior(parts, split->behavior), out);
    } else if (const auto* digits = std::get_if<digits_step>(&step)) {
      const auto behavior = digits->individual_digits ? split_behavior::isolated : split_behavior::contiguous;
      append_pieces(piece, apply_behavior(char_parts(piece, is_numeric), behavior), out);
    } else {
      const auto& byte_level = std::get<byte_level_step>(step);
      if (byte_level.add_prefix_space && (piece.empty() || piece.front() != ' ')) piece.insert(0, 1, ' ');
      std::vector<std::string> words;
      if (byte_level.gpt2_split) append_pieces(piece, apply_behavior(regex_parts(*byte_level.gpt2_split, piece),
                                                                     split_behavior::isolated), words);
      else if (!piece.empty()) words.push_back(std::move(piece));
      const byte_level_map& map = byte_level_map::get();
      for (const std::string& s : words) {
        std::string mapped;
        mapped.reserve(2 * s.size());
        for (const char c : s) mapped += map.encode(static_cast<unsigned char>(c));
        out.push_back(std::move(mapped));
      }
    }
  }
  return out;
}

/// Hashing of std::string keys that also accepts std::string_view lookups.
struct string_hash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

using vocabulary = std::unordered_map<std::string, token_id, string_hash, std::equal_to<>>;

/// What BPE merges a pair of ids into, and the merge's rank (its line in the merges list).
struct merge_rule {
  std::uint32_t rank = 0;
  token_id merged = 0;
};

inline std::uint64_t pair_key(token_id left, token_id right) {
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(left)) << 32) | static_cast<std::uint32_t>(right);
}

/// The BPE model (src/models/bpe/model.rs): every character of a piece becomes a symbol, then the
/// lowest-ranked applicable merge is applied repeatedly (ties to the leftmost pair) until none applies.
struct bpe_model {
  vocabulary vocab;
  std::unordered_map<token_id, const std::string*> token_of;
  std::unordered_map<std::uint64_t, merge_rule> merges;
  std::optional<token_id> unk;
  bool fuse_unk = false;
  bool ignore_merges = false;
  std::string continuing_subword_prefix;
  std::string end_of_word_suffix;

  std::optional<token_id> find(std::string_view token) const {
    const auto it = vocab.find(token);
    if (it == vocab.end()) return std::nullopt;
    return it->second;
  }

  /// The ids of one pre-tokenized piece (non-empty). A character missing from the vocabulary
  /// becomes unk_token when there is one and is dropped otherwise, as in the library.
  void tokenize(std::string_view piece, std::vector<token_id>& out) const {
    if (ignore_merges)
      if (const auto id = find(piece)) {
        out.push_back(*id);
        return;
      }
    struct symbol {
      token_id id;
      int prev;
      int next;
      std::size_t length;  // bytes of the piece it covers; 0 once merged into its left neighbour
    };
    std::vector<symbol> symbols;
    const auto add = [&](token_id id, std::size_t length) {
      const int index = static_cast<int>(symbols.size());
      if (index > 0) symbols.back().next = index;
      symbols.push_back({id, index - 1, -1, length});
    };
    // An unknown character waiting to be added as unk_token: consecutive ones fuse when fuse_unk.
    bool unk_pending = false;
    std::size_t unk_length = 0;
    std::string buffer;
    for (std::size_t pos = 0; pos < piece.size();) {
      std::size_t length = 0;
      decode_utf8(piece, pos, length);
      buffer.assign(piece.substr(pos, length));
      if (pos > 0 && !continuing_subword_prefix.empty()) buffer.insert(0, continuing_subword_prefix);
      if (pos + length == piece.size()) buffer += end_of_word_suffix;
      if (const auto id = find(buffer)) {
        if (unk_pending) add(*unk, unk_length);
        unk_pending = false;
        add(*id, length);
      } else if (unk) {
        if (unk_pending && fuse_unk) {
          unk_length += length;
        } else {
          if (unk_pending) add(*unk, unk_length);
          unk_pending = true;
          unk_length = length;
        }
      }
      pos += length;
    }
    if (unk_pending) add(*unk, unk_length);

    // A min-heap on (rank, position): the library's queue of candidate merges.
    struct candidate {
      std::uint32_t rank;
      int pos;
      token_id merged;
      bool operator>(const candidate& other) const {
        return rank != other.rank ? rank > other.rank : pos > other.pos;
      }
    };
    std::priority_queue<candidate, std::vector<candidate>, std::greater<>> queue;
    const auto push_pair = [&](int pos) {
      const symbol& left = symbols[static_cast<std::size_t>(pos)];
      if (left.next < 0) return;
      const auto it = merges.find(pair_key(left.id, symbols[static_cast<std::size_t>(left.next)].id));
      if (it != merges.end()) queue.push({it->second.rank, pos, it->second.merged});
    };
    for (int i = 0; i + 1 < static_cast<int>(symbols.size()); ++i) push_pair(i);
    while (!queue.empty()) {
      const candidate top = queue.top();
      queue.pop();
      symbol& current = symbols[static_cast<std::size_t>(top.pos)];
      if (current.length == 0 || current.next < 0) continue;
      const auto right_index = static_cast<std::size_t>(current.next);
      const symbol right = symbols[right_index];
      // A stale entry: one of the two symbols changed since it was queued.
      const auto it = merges.find(pair_key(current.id, right.id));
      if (it == merges.end() || it->second.merged != top.merged) continue;
      current.id = top.merged;
      current.length += right.length;
      current.next = right.next;
      symbols[right_index].length = 0;
      if (right.next >= 0) symbols[static_cast<std::size_t>(right.next)].prev = top.pos;
      if (current.prev >= 0) push_pair(current.prev);
      push_pair(top.pos);
    }
    for (const symbol& s : symbols)
      if (s.length != 0) out.push_back(s.id);
  }
};

/// A token of tokenizer.json's added_tokens (AddedToken in added_vocabulary.rs).
struct added_token_spec {
  std::string content;
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;

  bool operator==(const added_token_spec&) const = default;
};

/// Leftmost-longest matching of a set of added-token texts, as the library's Aho-Corasick
/// automaton (daachorse, MatchKind::LeftmostLongest) finds them.
class added_token_matcher {
 public:
  struct match {
    std::size_t start;
    std::size_t end;
    token_id id;
  };

  void add(std::string text, token_id id) {
    patterns_.emplace_back(std::move(text), id);
    auto& bucket = by_first_byte_[static_cast<unsigned char>(patterns_.back().first.front())];
    bucket.push_back(patterns_.size() - 1);
    std::stable_sort(bucket.begin(), bucket.end(),
                     [&](std::size_t a, std::size_t b) { return patterns_[a].first.size() > patterns_[b].first.size(); });
  }

  bool empty() const { return patterns_.empty(); }

  /// The leftmost match starting at or after `from`, the longest among those starting there.
  std::optional<match> find(std::string_view text, std::size_t from) const {
    for (std::size_t i = from; i < text.size(); ++i)
      for (const std::size_t index : by_first_byte_[static_cast<unsigned char>(text[i])]) {
        const std::string& pattern = patterns_[index].first;
        if (text.compare(i, pattern.size(), pattern) == 0) return match{i, i + pattern.size(), patterns_[index].second};
      }
    return std::nullopt;
  }

 private:
  std::vector<std::pair<std::string, token_id>> patterns_;
  std::array<std::vector<std::size_t>, 256> by_first_byte_;
};

/// A part of the input after added-token extraction: either an added token's id or text to encode.
struct segment {
  std::string text;
  std::optional<token_id> id;
};

/// Splits `sentence` around the added tokens the matcher finds, with their single_word, lstrip and
/// rstrip rules (AddedVocabulary::find_matches). `spec_of` gives the added token of an id.
template <class SpecOf>
void split_added_tokens(std::string_view sentence, const added_token_matcher& matcher, SpecOf spec_of,
                        std::vector<segment>& out) {
  const auto gap = [&](std::size_t start, std::size_t end) {
    if (end > start) out.push_back({std::string(sentence.substr(start, end - start)), std::nullopt});
  };
  if (matcher.empty()) {
    gap(0, sentence.size());
    return;
  }
  std::size_t start_offset = 0;
  std::size_t search_from = 0;
  while (const auto found = matcher.find(sentence, search_from)) {
    search_from = found->end;
    std::size_t start = found->start;
    std::size_t stop = found->end;
    const added_token_spec& spec = spec_of(found->id);
    if (spec.single_word) {
      std::size_t length = 0;
      const bool space_before = start == 0 || !is_word_char(last_code_point(sentence.substr(0, start)));
      const bool space_after = stop == sentence.size() || !is_word_char(decode_utf8(sentence, stop, length));
      if (!space_before || !space_after) continue;
    }
    if (spec.lstrip) {
      std::size_t new_start = start;
      while (new_start > 0) {
        const char32_t c = last_code_point(sentence.substr(0, new_start));
        if (!is_whitespace(c)) break;
        std::string encoded;
        append_utf8(encoded, c);
        new_start -= encoded.size();
      }
      start = std::max(new_start, start_offset);
    }
    if (spec.rstrip) {
      std::size_t length = 0;
      while (stop < sentence.size() && is_whitespace(decode_utf8(sentence, stop, length))) stop += length;
    }
    gap(start_offset, start);
    out.push_back({std::string(), found->id});
    start_offset = stop;
  }
  gap(start_offset, sentence.size());
}

/// The ids of words already encoded, as the library's BPE cache keeps them (at most `capacity`
/// words shorter than 256 bytes). Shared by copies of a tokenizer; safe to use from several threads.
class word_cache {
 public:
  static constexpr std::size_t capacity = 10000;
  static constexpr std::size_t max_word_bytes = 256;

  bool lookup(const std::string& word, std::vector<token_id>& out) const {
    std::lock_guard lock(mutex_);
    const auto it = words_.find(word);
    if (it == words_.end()) return false;
    out.insert(out.end(), it->second.begin(), it->second.end());
    return true;
  }

  void store(const std::string& word, std::vector<token_id> ids) {
    if (word.size() >= max_word_bytes) return;
    std::lock_guard lock(mutex_);
    if (words_.size() < capacity) words_.emplace(word, std::move(ids));
  }

 private:
  mutable std::mutex mutex_;
  std::unordered_map<std::string, std::vector<token_id>> words_;
};

}  // namespace grpo::hf::detail
