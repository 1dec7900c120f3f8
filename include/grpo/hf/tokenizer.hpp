// SPDX-License-Identifier: Apache-2.0
// grpo/hf/tokenizer.hpp: a Hugging Face tokenizer.json byte-level BPE tokenizer (GPT-2, SmolLM2,
// Qwen2/2.5, Llama 3 layouts) whose ids equal the `tokenizers` library's. Reads the file's
// normalizer (NFC/NFD/NFKC/NFKD, Sequence), pre-tokenizer (Split, ByteLevel, Digits, Sequence),
// BPE model (merges as "a b" strings or ["a", "b"] pairs, ignore_merges), added tokens and ByteLevel
// decoder; anything else is a config_error naming the file and field. The file is read in
// tokenizer_json.hpp, the stages are in tokenizer_pipeline.hpp, the Unicode operations (PCRE2,
// utf8proc) in tokenizer_unicode.hpp.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "grpo/concepts.hpp"
#include "grpo/detail/json.hpp"
#include "grpo/error.hpp"
#include "grpo/hf/chat_format.hpp"
#include "grpo/hf/tokenizer_json.hpp"
#include "grpo/hf/tokenizer_pipeline.hpp"
#include "grpo/hf/tokenizer_unicode.hpp"

namespace grpo::hf {

/// An added token as the tokenizer uses it: tokenizer.json's entry (content and flags) and the id
/// it was given.
struct added_token : detail::added_token_spec {
  token_id id = 0;
};

/// A byte-level BPE tokenizer loaded from a Hugging Face tokenizer.json.
///
/// encode(text) gives the ids of Python's `tokenizer.encode(text, add_special_tokens=False).ids`:
/// added and special tokens written in the text are recognised (the library's default), and no
/// BOS/EOS or other post-processor tokens are added. The file's truncation and padding settings
/// are ignored: encode never truncates or pads. decode follows `tokenizer.decode(ids,
/// skip_special_tokens)`, except that an id outside the vocabulary is a value_error rather than
/// silently dropped. Copies share the immutable tables and the word cache; all const members may be
/// called from several threads.
class tokenizer {
 public:
  /// Loads tokenizer.json; io_error (unreadable or malformed file) or config_error (a component
  /// grpo does not implement), naming the file and the field.
  static tokenizer load(const std::filesystem::path& tokenizer_json) {
    return from_json(detail::read_file(tokenizer_json), tokenizer_json.string());
  }

  /// Builds the tokenizer from tokenizer.json text; `file` names it in error messages.
  static tokenizer from_json(std::string_view json_text, std::string_view file = "tokenizer.json") {
    tokenizer t;
    t.data_ = std::make_shared<const detail::tokenizer_data>(detail::read_tokenizer_json(json_text, std::string(file)));
    return t;
  }

  /// Loads a model directory: tokenizer.json, and tokenizer_config.json when present (its bos, eos
  /// and pad tokens must then be tokens of the vocabulary). The chat template is tokenizer_config.json's,
  /// or chat_template.jinja's where transformers saved it there.
  static tokenizer from_pretrained(const std::filesystem::path& directory) {
    tokenizer t = load(directory / "tokenizer.json");
    const auto config_path = directory / "tokenizer_config.json";
    const auto template_path = directory / "chat_template.jinja";
    if (std::filesystem::exists(config_path)) t.config_ = read_tokenizer_config(config_path);
    if (!t.config_.chat_template && std::filesystem::exists(template_path))
      t.config_.chat_template = detail::read_file(template_path);
    const auto resolve = [&](const std::optional<std::string>& text, std::string_view field) -> std::optional<token_id> {
      if (!text) return std::nullopt;
      const auto id = t.token_to_id(*text);
      GRPO_CHECK(id.has_value(), io_error, config_path.string(), ": field \"", field, "\": \"", *text,
                 "\" is not a token of tokenizer.json");
      return id;
    };
    t.bos_ = resolve(t.config_.bos_token, "bos_token");
    t.eos_ = resolve(t.config_.eos_token, "eos_token");
    t.pad_ = resolve(t.config_.pad_token, "pad_token");
    return t;
  }

  /// The ids of `text` (UTF-8; value_error naming the byte offset of invalid UTF-8).
  std::vector<token_id> encode(std::string_view text) const {
    detail::require_utf8(text, "encode: text");
    const detail::tokenizer_data& d = *data_;
    const auto spec_of = [&](token_id id) -> const detail::added_token_spec& { return d.added_specs.at(id); };
    std::vector<detail::segment> raw_split;
    detail::split_added_tokens(text, d.raw_matcher, spec_of, raw_split);
    std::vector<token_id> ids;
    std::vector<detail::segment> normalized_split;
    for (detail::segment& raw : raw_split) {
      if (raw.id) {
        ids.push_back(*raw.id);
        continue;
      }
      normalized_split.clear();
      detail::split_added_tokens(d.normalize_text(std::move(raw.text)), d.normalized_matcher, spec_of, normalized_split);
      for (detail::segment& s : normalized_split) {
        if (s.id) {
          ids.push_back(*s.id);
          continue;
        }
        std::vector<std::string> pieces{std::move(s.text)};
        for (const auto& step : d.pre_tokenizers) pieces = detail::apply_step(step, std::move(pieces));
        for (const std::string& piece : pieces) encode_piece(piece, ids);
      }
    }
    return ids;
  }

  /// The ids of a prompt in a chat format: encode(render_chat_prompt(format, prompt)).
  std::vector<token_id> encode_prompt(const chat_format& format, std::string_view prompt) const {
    return encode(render_chat_prompt(format, prompt));
  }

  /// The text of `ids`, through the ByteLevel decoder (bytes to UTF-8, each ill-formed part
  /// replaced by U+FFFD); special tokens left out when skip_special_tokens. value_error for an id
  /// outside the vocabulary.
  std::string decode(std::span<const token_id> ids, bool skip_special_tokens = false) const {
    const detail::tokenizer_data& d = *data_;
    std::string bytes;
    bool first = true;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      const std::string* token = token_text(ids[i]);
      GRPO_CHECK(token != nullptr, value_error, "decode: ids[", i, "] = ", ids[i], " is not in the vocabulary (",
                 d.vocab_size, " ids)");
      if (skip_special_tokens && d.special_texts.contains(*token)) continue;
      if (!d.byte_level_decoder) {  // no decoder: the library joins the tokens with spaces
        if (!first) bytes += ' ';
        bytes += *token;
        first = false;
        continue;
      }
      append_token_bytes(*token, bytes);
    }
    return d.byte_level_decoder ? detail::utf8_lossy(bytes) : bytes;
  }

  /// The id of a token (an added token's text, or a vocabulary entry in its byte-level form).
  std::optional<token_id> token_to_id(std::string_view token) const {
    if (const auto it = data_->added_ids.find(token); it != data_->added_ids.end()) return it->second;
    return data_->model.find(token);
  }

  /// The token of an id, as the library's id_to_token gives it.
  std::optional<std::string> id_to_token(token_id id) const {
    const std::string* text = token_text(id);
    if (text == nullptr) return std::nullopt;
    return *text;
  }

  /// One more than the largest id of the vocabulary and the added tokens.
  std::int64_t vocab_size() const { return data_->vocab_size; }

  /// The added tokens, by increasing id.
  std::vector<added_token> added_tokens() const {
    std::vector<added_token> out;
    for (const auto& [id, s] : data_->added_specs)
      out.push_back({s, id});
    std::sort(out.begin(), out.end(), [](const added_token& a, const added_token& b) { return a.id < b.id; });
    return out;
  }

  /// Whether decode(..., skip_special_tokens=true) leaves the id out.
  bool is_special(token_id id) const {
    const std::string* text = token_text(id);
    return text != nullptr && data_->special_texts.contains(*text);
  }

  /// tokenizer_config.json's fields when from_pretrained found one, else empty.
  const tokenizer_config& config() const { return config_; }
  std::optional<token_id> bos_token_id() const { return bos_; }
  std::optional<token_id> eos_token_id() const { return eos_; }
  std::optional<token_id> pad_token_id() const { return pad_; }

 private:
  std::shared_ptr<const detail::tokenizer_data> data_;
  std::shared_ptr<detail::word_cache> cache_ = std::make_shared<detail::word_cache>();
  tokenizer_config config_;
  std::optional<token_id> bos_, eos_, pad_;

  tokenizer() = default;

  void encode_piece(const std::string& piece, std::vector<token_id>& ids) const {
    if (cache_->lookup(piece, ids)) return;
    std::vector<token_id> word;
    data_->model.tokenize(piece, word);
    ids.insert(ids.end(), word.begin(), word.end());
    cache_->store(piece, std::move(word));
  }

  /// An added token's text (its normalized form for a normalized one) or the vocabulary entry.
  const std::string* token_text(token_id id) const {
    const detail::tokenizer_data& d = *data_;
    if (const auto normalized = d.added_normalized.find(id); normalized != d.added_normalized.end())
      return &normalized->second;
    if (const auto added = d.added_specs.find(id); added != d.added_specs.end()) return &added->second.content;
    if (const auto it = d.model.token_of.find(id); it != d.model.token_of.end()) return it->second;
    return nullptr;
  }

  /// The ByteLevel decoder's bytes for one token: the bytes its characters stand for, or the token's
  /// own UTF-8 when any character stands for no byte (an added token such as "你好").
  static void append_token_bytes(const std::string& token, std::string& bytes) {
    const detail::byte_level_map& map = detail::byte_level_map::get();
    const std::size_t mark = bytes.size();
    for (std::size_t pos = 0; pos < token.size();) {
      std::size_t length = 0;
      const int byte = map.decode(detail::decode_utf8(token, pos, length));
      if (byte < 0) {
        bytes.resize(mark);
        bytes += token;
        return;
      }
      bytes += static_cast<char>(static_cast<unsigned char>(byte));
      pos += length;
    }
  }
};

}  // namespace grpo::hf
