// SPDX-License-Identifier: Apache-2.0
// grpo/tasks/tokenizer.hpp: the character-level tokenizer of the built-in tasks. One token per
// character of a small fixed alphabet, plus whole-tag tokens for <think> </think> <answer>
// </answer> and the control tokens <pad> <bos> <eos>; 64 ids in all, so a tiny model learns it
// fast. Not a subword tokenizer and not for arbitrary text: a character outside the vocabulary is
// an error naming it. The vocabulary is saved as JSON with checkpoints, so ids never depend on the
// version of this file that loads them.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "grpo/concepts.hpp"
#include "grpo/detail/json.hpp"
#include "grpo/error.hpp"
#include "grpo/train/codec.hpp"

namespace grpo::tasks {

/// The tags of the R1 completion format; each is one token of the built-in vocabulary.
inline constexpr std::string_view think_open = "<think>";
inline constexpr std::string_view think_close = "</think>";
inline constexpr std::string_view answer_open = "<answer>";
inline constexpr std::string_view answer_close = "</answer>";

namespace detail {

/// `c` as it should appear in an error message: 'x' (0x78), or just the code for unprintables.
inline std::string describe_char(char c) {
  static constexpr char hex[] = "0123456789abcdef";
  const auto u = static_cast<unsigned char>(c);
  std::string code = "0x";
  code += hex[u >> 4];
  code += hex[u & 0xF];
  if (u >= 0x20 && u < 0x7F) return grpo::detail::concat("'", c, "' (", code, ")");
  return grpo::detail::concat("byte ", code);
}

}  // namespace detail

/// A character-level tokenizer: ids are positions in a vocabulary of token texts.
///
/// Vocabulary rules (checked by the constructor and by from_json): every token is either one
/// byte, a printable ASCII character or '\n' or '\t' (a "character token"), or a text of two or
/// more bytes (a "special token"). The specials "<pad>", "<bos>" and "<eos>" are control tokens
/// and must be present; they have no text: encode never produces them and decode skips them.
/// Every other special (the four tags of the built-in vocabulary) is matched as a whole while
/// encoding, longest match first, before falling back to single characters.
///
/// Guarantees: decode(encode(s)) == s for every s that encodes. encode(decode(ids)) == ids
/// holds for ids without control tokens that are the canonical encoding of their text; it does
/// not for a tag spelled out character by character ('<', 't', 'h', ...), which re-encodes as the
/// single tag token.
class char_tokenizer {
 public:
  /// A tokenizer over `tokens` (id = index). Throws config_error naming the offending entry for
  /// an empty or duplicate token, a one-byte token outside printable ASCII / '\n' / '\t', or a
  /// missing control token, and for more than 2^31 - 1 tokens.
  explicit char_tokenizer(std::vector<std::string> tokens) : tokens_(std::move(tokens)) {
    GRPO_CHECK(tokens_.size() <= static_cast<std::size_t>(std::numeric_limits<token_id>::max()), config_error,
               "tokens: at most ", std::numeric_limits<token_id>::max(), " tokens are supported, got ", tokens_.size());
    char_ids_.assign(256, -1);
    for (std::size_t i = 0; i < tokens_.size(); ++i) {
      const std::string& t = tokens_[i];
      GRPO_CHECK(!t.empty(), config_error, "tokens: entry ", i, " is empty");
      for (std::size_t j = 0; j < i; ++j)
        GRPO_CHECK(tokens_[j] != t, config_error, "tokens: entry ", i, " duplicates entry ", j, " (",
                   json_quote(t), ")");
      const auto id = static_cast<token_id>(i);
      if (t.size() == 1) {
        const auto u = static_cast<unsigned char>(t[0]);
        GRPO_CHECK((u >= 0x20 && u < 0x7F) || t[0] == '\n' || t[0] == '\t', config_error, "tokens: entry ", i,
                   " is ", detail::describe_char(t[0]), ", not a printable ASCII character, '\\n' or '\\t'");
        char_ids_[u] = id;
      } else if (t == "<pad>") {
        pad_ = id;
      } else if (t == "<bos>") {
        bos_ = id;
      } else if (t == "<eos>") {
        eos_ = id;
      } else {
        specials_.emplace_back(t, id);
      }
    }
    GRPO_CHECK(pad_ >= 0, config_error, "tokens: the control token \"<pad>\" is missing");
    GRPO_CHECK(bos_ >= 0, config_error, "tokens: the control token \"<bos>\" is missing");
    GRPO_CHECK(eos_ >= 0, config_error, "tokens: the control token \"<eos>\" is missing");
    // Longest first, so a special that is a prefix of another never shadows it.
    std::stable_sort(specials_.begin(), specials_.end(),
                     [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  }

  /// The built-in vocabulary (64 tokens). Its ids are frozen: new tokens may only be appended.
  ///   0-2 <pad> <bos> <eos>   3-6 <think> </think> <answer> </answer>   7 '\n'   8 ' '
  ///   9-18 '0'-'9'   19-29 + - * / ( ) = , . : ?   30-55 'a'-'z'   56-63 < > ! ; ' " % _
  static char_tokenizer builtin() {
    std::vector<std::string> tokens = {"<pad>", "<bos>", "<eos>", std::string(think_open), std::string(think_close),
                                       std::string(answer_open), std::string(answer_close), "\n", " "};
    for (char c = '0'; c <= '9'; ++c) tokens.emplace_back(1, c);
    for (const char c : std::string_view("+-*/()=,.:?")) tokens.emplace_back(1, c);
    for (char c = 'a'; c <= 'z'; ++c) tokens.emplace_back(1, c);
    for (const char c : std::string_view("<>!;'\"%_")) tokens.emplace_back(1, c);
    return char_tokenizer(std::move(tokens));
  }

  /// Reads the form written by to_json. Throws io_error starting with `context` for malformed
  /// JSON or a wrong structure, config_error for an invalid vocabulary.
  static char_tokenizer from_json(std::string_view text, std::string_view context) {
    namespace json = grpo::detail::json;
    const json::value root = json::parse(text, context);
    GRPO_CHECK(root.kind == json::kind::object, io_error, context, ": expected a JSON object, got ",
               json::kind_name(root.kind));
    const json::value* format = nullptr;
    const json::value* version = nullptr;
    const json::value* tokens = nullptr;
    for (const auto& [key, item] : root.members) {
      if (key == "format") format = &item;
      else if (key == "version") version = &item;
      else if (key == "tokens") tokens = &item;
    }
    GRPO_CHECK(format && format->kind == json::kind::string && format->text == format_name, io_error, context,
               ": \"format\" must be \"", format_name, "\"");
    std::uint64_t v = 0;
    GRPO_CHECK(version && json::to_uint64(*version, v) && v == 1, io_error, context,
               ": \"version\" must be 1 (the only version this build reads)");
    GRPO_CHECK(tokens && tokens->kind == json::kind::array, io_error, context, ": \"tokens\" must be an array");
    std::vector<std::string> list;
    for (std::size_t i = 0; i < tokens->items.size(); ++i) {
      const json::value& t = tokens->items[i];
      GRPO_CHECK(t.kind == json::kind::string, io_error, context, ": tokens[", i, "] must be a string, got ",
                 json::kind_name(t.kind));
      list.push_back(t.text);
    }
    return char_tokenizer(std::move(list));
  }

  /// {"format": "grpo.char_tokenizer", "version": 1, "tokens": [...]}, one token per line, in id
  /// order: what a checkpoint stores as tokenizer.json.
  std::string to_json() const {
    std::string out = "{\n  \"format\": \"";
    out += format_name;
    out += "\",\n  \"version\": 1,\n  \"tokens\": [";
    for (std::size_t i = 0; i < tokens_.size(); ++i) {
      out += i == 0 ? "\n    " : ",\n    ";
      out += json_quote(tokens_[i]);
    }
    out += "\n  ]\n}\n";
    return out;
  }

  std::int64_t vocab_size() const { return static_cast<std::int64_t>(tokens_.size()); }
  token_id pad_id() const { return pad_; }
  token_id bos_id() const { return bos_; }
  token_id eos_id() const { return eos_; }
  const std::vector<std::string>& tokens() const { return tokens_; }

  /// The id of the token whose text is exactly `text`, if any.
  std::optional<token_id> find(std::string_view text) const {
    for (std::size_t i = 0; i < tokens_.size(); ++i)
      if (tokens_[i] == text) return static_cast<token_id>(i);
    return std::nullopt;
  }

  /// The text of token `id` ("<eos>" for the control tokens). Throws value_error when out of range.
  const std::string& token_text(token_id id) const {
    GRPO_CHECK(id >= 0 && id < vocab_size(), value_error, "id: ", id, " is outside [0, ", vocab_size(), ")");
    return tokens_[static_cast<std::size_t>(id)];
  }

  /// Byte position of the first character of `text` that cannot be encoded, if any.
  std::optional<std::size_t> first_unknown(std::string_view text) const {
    for (std::size_t pos = 0; pos < text.size();) {
      const std::size_t n = match(text, pos).second;
      if (n == 0) return pos;
      pos += n;
    }
    return std::nullopt;
  }

  /// Token ids of `text`: tags as single tokens (longest match first), everything else one id per
  /// character. Throws value_error "text: character 'X' (0x58) at byte N is not in the
  /// vocabulary" for the first character it cannot encode.
  std::vector<token_id> encode(std::string_view text) const {
    std::vector<token_id> ids;
    ids.reserve(text.size());
    for (std::size_t pos = 0; pos < text.size();) {
      const auto [id, n] = match(text, pos);
      GRPO_CHECK(n > 0, value_error, "text: character ", detail::describe_char(text[pos]), " at byte ", pos,
                 " is not in the vocabulary");
      ids.push_back(id);
      pos += n;
    }
    return ids;
  }

  /// <bos> followed by encode(prompt): what a policy is asked to continue.
  std::vector<token_id> encode_prompt(std::string_view prompt) const {
    std::vector<token_id> ids{bos_};
    const std::vector<token_id> body = encode(prompt);
    ids.insert(ids.end(), body.begin(), body.end());
    return ids;
  }

  /// encode(completion) followed by <eos>: an SFT target (the policy must learn to stop).
  std::vector<token_id> encode_completion(std::string_view completion) const {
    std::vector<token_id> ids = encode(completion);
    ids.push_back(eos_);
    return ids;
  }

  /// The text of `ids`, control tokens (<pad> <bos> <eos>) skipped. Throws value_error
  /// "ids: element N is K, outside [0, V)" for an id outside the vocabulary.
  std::string decode(std::span<const token_id> ids) const {
    std::string text;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      GRPO_CHECK(ids[i] >= 0 && ids[i] < vocab_size(), value_error, "ids: element ", i, " is ", ids[i],
                 ", outside [0, ", vocab_size(), ")");
      if (is_control(ids[i])) continue;
      text += tokens_[static_cast<std::size_t>(ids[i])];
    }
    return text;
  }

  bool is_control(token_id id) const { return id == pad_ || id == bos_ || id == eos_; }

  friend bool operator==(const char_tokenizer& a, const char_tokenizer& b) { return a.tokens_ == b.tokens_; }

 private:
  static constexpr std::string_view format_name = "grpo.char_tokenizer";

  std::vector<std::string> tokens_;
  std::vector<std::pair<std::string, token_id>> specials_;  // longest first
  std::vector<token_id> char_ids_;                           // by byte value; -1: not in the vocabulary
  token_id pad_ = -1;
  token_id bos_ = -1;
  token_id eos_ = -1;

  static std::string json_quote(std::string_view s) { return grpo::detail::json::quote(s); }

  // (id, bytes consumed) of the token at text[pos]; bytes 0 when nothing matches.
  std::pair<token_id, std::size_t> match(std::string_view text, std::size_t pos) const {
    for (const auto& [special, id] : specials_)
      if (text.substr(pos, special.size()) == special) return {id, special.size()};
    const token_id id = char_ids_[static_cast<unsigned char>(text[pos])];
    if (id < 0) return {0, 0};
    return {id, 1};
  }
};

/// The tokenizer of the built-in vocabulary, built once.
inline const char_tokenizer& builtin_tokenizer() {
  static const char_tokenizer instance = char_tokenizer::builtin();
  return instance;
}

/// A character tokenizer as the trainer's text codec: prompts are <bos> + the prompt, SFT targets
/// end with <eos>, which is also the only stop token. The tokenizer must outlive the codec.
class char_codec final : public train::text_codec {
 public:
  explicit char_codec(const char_tokenizer& tokenizer) : tokenizer_(&tokenizer) {}
  std::vector<token_id> encode_prompt(std::string_view prompt) const override {
    return tokenizer_->encode_prompt(prompt);
  }
  std::vector<token_id> encode_completion(std::string_view completion) const override {
    return tokenizer_->encode_completion(completion);
  }
  std::string decode(std::span<const token_id> ids) const override { return tokenizer_->decode(ids); }
  std::vector<token_id> stop_tokens() const override { return {tokenizer_->eos_id()}; }
  std::int64_t vocab_size() const override { return tokenizer_->vocab_size(); }

 private:
  const char_tokenizer* tokenizer_;
};

}  // namespace grpo::tasks
