// SPDX-License-Identifier: Apache-2.0
// grpo/hf/tokenizer_json.hpp: reading a Hugging Face tokenizer.json into the tables of
// grpo::hf::tokenizer (grpo/hf/tokenizer.hpp), following the layout the `tokenizers` library
// serializes (tokenizers 0.23: src/tokenizer/serialization.rs, src/models/bpe/serialization.rs and
// each component's serde form). Errors name the file and the field's path, e.g.
// `tokenizer.json: model.type: "Unigram" is not supported (byte-level BPE only)`.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "grpo/concepts.hpp"
#include "grpo/detail/json.hpp"
#include "grpo/error.hpp"
#include "grpo/hf/tokenizer_pipeline.hpp"
#include "grpo/hf/tokenizer_unicode.hpp"

namespace grpo::hf::detail {

/// Everything a loaded tokenizer.json fixes; immutable once built.
struct tokenizer_data {
  std::vector<normalization_form> normalizers;
  std::vector<pre_tokenizer_step> pre_tokenizers;
  bpe_model model;
  bool byte_level_decoder = false;
  // AddedVocabulary: the texts' ids, each id's token, the normalized text of normalized tokens
  // whose normalization changes them, the special tokens' texts, and one matcher per pass.
  std::unordered_map<std::string, token_id, string_hash, std::equal_to<>> added_ids;
  std::unordered_map<token_id, added_token_spec> added_specs;
  std::unordered_map<token_id, std::string> added_normalized;
  std::unordered_set<std::string, string_hash, std::equal_to<>> special_texts;
  added_token_matcher raw_matcher;
  added_token_matcher normalized_matcher;
  std::int64_t vocab_size = 0;

  std::string normalize_text(std::string text) const {
    for (const normalization_form form : normalizers) text = normalize(text, form);
    return text;
  }
};

/// Field access with errors that name the file and the field's path ("model.merges[3]").
class json_reader {
 public:
  using value = grpo::detail::json::value;
  using kind = grpo::detail::json::kind;

  explicit json_reader(std::string file) : file_(std::move(file)) {}

  const std::string& file() const { return file_; }

  static std::string join(std::string_view path, std::string_view key) {
    return path.empty() ? std::string(key) : grpo::detail::concat(path, ".", key);
  }

  template <class Error = io_error, class... Parts>
  [[noreturn]] void fail(std::string_view path, Parts&&... parts) const {
    grpo::detail::fail<Error>(file_, ": ", path, ": ", std::forward<Parts>(parts)...);
  }

  static const value* find(const value& object, std::string_view key) {
    for (const auto& m : object.members)
      if (m.key == key) return &m.value;
    return nullptr;
  }

  /// object[key], which must be present and of the kind.
  const value& need(const value& object, std::string_view path, std::string_view key, kind k) const {
    const value* v = find(object, key);
    if (v == nullptr) fail(join(path, key), "missing");
    expect(*v, join(path, key), k);
    return *v;
  }

  void expect(const value& v, std::string_view path, kind k) const {
    if (v.kind != k)
      fail(path, "expected ", grpo::detail::json::kind_name(k), ", got ", grpo::detail::json::kind_name(v.kind));
  }

  /// object[key] as a boolean; `fallback` when absent (required when there is none).
  bool boolean(const value& object, std::string_view path, std::string_view key,
               std::optional<bool> fallback = std::nullopt) const {
    if (fallback && find(object, key) == nullptr) return *fallback;
    return need(object, path, key, kind::boolean).boolean;
  }

  /// object[key] as a string, or nothing when absent or null.
  std::optional<std::string> optional_string(const value& object, std::string_view path, std::string_view key) const {
    const value* v = find(object, key);
    if (v == nullptr || v->kind == kind::null) return std::nullopt;
    expect(*v, join(path, key), kind::string);
    return v->text;
  }

  /// object["type"], which must be a string.
  std::string type(const value& object, std::string_view path) const {
    return need(object, path, "type", kind::string).text;
  }

 private:
  std::string file_;
};

inline void read_normalizer(const json_reader& r, const grpo::detail::json::value& v, const std::string& path,
                            std::vector<normalization_form>& out) {
  if (v.kind == json_reader::kind::null) return;
  r.expect(v, path, json_reader::kind::object);
  const std::string type = r.type(v, path);
  if (type == "NFC") out.push_back(normalization_form::nfc);
  else if (type == "NFD") out.push_back(normalization_form::nfd);
  else if (type == "NFKC") out.push_back(normalization_form::nfkc);
  else if (type == "NFKD") out.push_back(normalization_form::nfkd);
  else if (type == "Sequence") {
    const auto& list = r.need(v, path, "normalizers", json_reader::kind::array);
    for (std::size_t i = 0; i < list.items.size(); ++i)
      read_normalizer(r, list.items[i], grpo::detail::concat(path, ".normalizers[", i, "]"), out);
  } else {
    r.fail<config_error>(json_reader::join(path, "type"), "\"", type,
                         "\" is not supported (NFC, NFD, NFKC, NFKD or a Sequence of them)");
  }
}

inline split_behavior read_behavior(const json_reader& r, const grpo::detail::json::value& v, const std::string& path) {
  const std::string name = r.need(v, path, "behavior", json_reader::kind::string).text;
  if (name == "Removed") return split_behavior::removed;
  if (name == "Isolated") return split_behavior::isolated;
  if (name == "MergedWithPrevious") return split_behavior::merged_with_previous;
  if (name == "MergedWithNext") return split_behavior::merged_with_next;
  if (name == "Contiguous") return split_behavior::contiguous;
  r.fail<config_error>(json_reader::join(path, "behavior"), "unknown split behavior \"", name, "\"");
}

inline void read_pre_tokenizer(const json_reader& r, const grpo::detail::json::value& v, const std::string& path,
                               std::vector<pre_tokenizer_step>& out) {
  using kind = json_reader::kind;
  if (v.kind == kind::null) return;
  r.expect(v, path, kind::object);
  const std::string type = r.type(v, path);
  if (type == "Sequence") {
    const auto& list = r.need(v, path, "pretokenizers", kind::array);
    for (std::size_t i = 0; i < list.items.size(); ++i)
      read_pre_tokenizer(r, list.items[i], grpo::detail::concat(path, ".pretokenizers[", i, "]"), out);
  } else if (type == "ByteLevel") {
    byte_level_step step;
    step.add_prefix_space = r.boolean(v, path, "add_prefix_space");
    if (r.boolean(v, path, "use_regex", true))
      step.gpt2_split.emplace(gpt2_split_pattern, grpo::detail::concat(r.file(), ": ", path));
    out.emplace_back(std::move(step));
  } else if (type == "Digits") {
    out.emplace_back(digits_step{r.boolean(v, path, "individual_digits")});
  } else if (type == "Split") {
    const std::string pattern_path = json_reader::join(path, "pattern");
    const auto& pattern = r.need(v, path, "pattern", kind::object);
    std::string source;
    if (const auto* re = json_reader::find(pattern, "Regex"); re != nullptr) {
      r.expect(*re, pattern_path + ".Regex", kind::string);
      source = re->text;
    } else if (const auto* literal = json_reader::find(pattern, "String"); literal != nullptr) {
      r.expect(*literal, pattern_path + ".String", kind::string);
      source = escape_regex(literal->text);
    } else {
      r.fail(pattern_path, "expected {\"Regex\": ...} or {\"String\": ...}");
    }
    out.emplace_back(split_step{regex(source, grpo::detail::concat(r.file(), ": ", pattern_path)),
                                read_behavior(r, v, path), r.boolean(v, path, "invert")});
  } else {
    r.fail<config_error>(json_reader::join(path, "type"), "\"", type,
                         "\" is not supported (ByteLevel, Split, Digits or a Sequence of them)");
  }
}

inline bool read_decoder(const json_reader& r, const grpo::detail::json::value& v, const std::string& path) {
  if (v.kind == json_reader::kind::null) return false;
  r.expect(v, path, json_reader::kind::object);
  const std::string type = r.type(v, path);
  if (type == "ByteLevel") return true;
  if (type == "Sequence") {
    const auto& list = r.need(v, path, "decoders", json_reader::kind::array);
    if (list.items.size() == 1) return read_decoder(r, list.items[0], path + ".decoders[0]");
  }
  r.fail<config_error>(json_reader::join(path, "type"), "\"", type,
                       "\" is not supported (the ByteLevel decoder of byte-level BPE)");
}

inline void read_model(const json_reader& r, const grpo::detail::json::value& v, bpe_model& model) {
  using kind = json_reader::kind;
  namespace json = grpo::detail::json;
  r.expect(v, "model", kind::object);
  // Files from before tokenizers 0.9 have no "type"; the library then recognises BPE by its fields.
  if (const auto* type = json_reader::find(v, "type"); type != nullptr || json_reader::find(v, "merges") == nullptr) {
    const std::string name = r.type(v, "model");
    if (name != "BPE") r.fail<config_error>("model.type", "\"", name, "\" is not supported (byte-level BPE only)");
  }
  if (const auto* dropout = json_reader::find(v, "dropout"); dropout != nullptr && dropout->kind != kind::null) {
    r.expect(*dropout, "model.dropout", kind::number);
    if (std::strtod(dropout->text.c_str(), nullptr) != 0.0)
      r.fail<config_error>("model.dropout", dropout->text, " is not supported (BPE dropout is random; use null)");
  }
  if (r.boolean(v, "model", "byte_fallback", false))
    r.fail<config_error>("model.byte_fallback", "true is not supported (byte-level BPE covers every byte)");
  model.ignore_merges = r.boolean(v, "model", "ignore_merges", false);
  model.fuse_unk = r.boolean(v, "model", "fuse_unk", false);
  model.continuing_subword_prefix = r.optional_string(v, "model", "continuing_subword_prefix").value_or("");
  model.end_of_word_suffix = r.optional_string(v, "model", "end_of_word_suffix").value_or("");

  const auto& vocab = r.need(v, "model", "vocab", kind::object);
  model.vocab.reserve(vocab.members.size());
  for (const auto& m : vocab.members) {
    std::uint64_t id = 0;
    if (!json::to_uint64(m.value, id, static_cast<std::uint64_t>(std::numeric_limits<token_id>::max())))
      r.fail("model.vocab", "the id of \"", m.key, "\" must be an integer in [0, 2^31), got ",
             m.value.kind == kind::number ? m.value.text : std::string(json::kind_name(m.value.kind)));
    const auto [it, inserted] = model.vocab.emplace(m.key, static_cast<token_id>(id));
    const auto [slot, fresh] = model.token_of.emplace(it->second, &it->first);
    if (!fresh) r.fail("model.vocab", "id ", id, " is given to both \"", *slot->second, "\" and \"", m.key, "\"");
  }
  if (const auto unk = r.optional_string(v, "model", "unk_token")) {
    model.unk = model.find(*unk);
    if (!model.unk) r.fail("model.unk_token", "\"", *unk, "\" is not in model.vocab");
  }

  const auto& merges = r.need(v, "model", "merges", kind::array);
  model.merges.reserve(merges.items.size());
  const auto id_of = [&](const std::string& token, std::size_t rank) {
    const auto id = model.find(token);
    if (!id) r.fail(grpo::detail::concat("model.merges[", rank, "]"), "\"", token, "\" is not in model.vocab");
    return *id;
  };
  std::string merged;
  for (std::size_t rank = 0; rank < merges.items.size(); ++rank) {
    const auto& item = merges.items[rank];
    std::string left, right;
    if (item.kind == kind::string) {  // "a b", as tokenizers wrote merges before 0.20
      const std::size_t space = item.text.find(' ');
      if (space == std::string::npos || item.text.find(' ', space + 1) != std::string::npos)
        r.fail(grpo::detail::concat("model.merges[", rank, "]"), "expected two tokens separated by one space, got \"",
               item.text, "\"");
      left = item.text.substr(0, space);
      right = item.text.substr(space + 1);
    } else if (item.kind == kind::array && item.items.size() == 2 && item.items[0].kind == kind::string &&
               item.items[1].kind == kind::string) {
      left = item.items[0].text;
      right = item.items[1].text;
    } else {
      r.fail(grpo::detail::concat("model.merges[", rank, "]"), "expected \"a b\" or [\"a\", \"b\"]");
    }
    // The merged token drops the right part's continuing_subword_prefix (BpeBuilder::build).
    const std::size_t prefix = model.continuing_subword_prefix.size();
    if (right.size() < prefix)
      r.fail(grpo::detail::concat("model.merges[", rank, "]"), "\"", right, "\" is shorter than continuing_subword_prefix");
    merged = left + right.substr(prefix);
    const token_id left_id = id_of(left, rank), right_id = id_of(right, rank), merged_id = id_of(merged, rank);
    // Later duplicates win, as when the library collects the merges into its map.
    model.merges.insert_or_assign(pair_key(left_id, right_id),
                                  merge_rule{static_cast<std::uint32_t>(rank), merged_id});
  }
}

/// Registers the added tokens as AddedVocabulary::add_tokens does when the library loads a file:
/// a text already in the vocabulary keeps its id, any other gets the next id after the model's
/// vocabulary, in file order (the file's "id" is not what decides).
inline void read_added_tokens(const json_reader& r, const grpo::detail::json::value& list, tokenizer_data& data) {
  using kind = json_reader::kind;
  r.expect(list, "added_tokens", kind::array);
  auto next_id = static_cast<token_id>(data.model.vocab.size());
  for (std::size_t i = 0; i < list.items.size(); ++i) {
    const auto& item = list.items[i];
    const std::string path = grpo::detail::concat("added_tokens[", i, "]");
    r.expect(item, path, kind::object);
    std::uint64_t file_id = 0;
    if (!grpo::detail::json::to_uint64(r.need(item, path, "id", kind::number), file_id))
      r.fail(path + ".id", "expected a non-negative integer");
    added_token_spec spec;
    spec.content = r.need(item, path, "content", kind::string).text;
    spec.single_word = r.boolean(item, path, "single_word");
    spec.lstrip = r.boolean(item, path, "lstrip");
    spec.rstrip = r.boolean(item, path, "rstrip");
    spec.normalized = r.boolean(item, path, "normalized");
    spec.special = r.boolean(item, path, "special");
    if (spec.content.empty()) continue;
    if (const auto known = data.added_ids.find(spec.content); known != data.added_ids.end())
      if (data.added_specs.at(known->second) == spec) continue;
    token_id id = 0;
    if (const auto known = data.added_ids.find(spec.content); known != data.added_ids.end()) id = known->second;
    else if (const auto in_vocab = data.model.find(spec.content)) id = *in_vocab;
    else id = next_id++;
    if (spec.normalized && !data.normalizers.empty())
      if (std::string normalized = data.normalize_text(spec.content); normalized != spec.content)
        data.added_normalized[id] = std::move(normalized);
    data.added_ids[spec.content] = id;
    if (spec.special) data.special_texts.insert(spec.content);
    data.added_specs[id] = std::move(spec);
  }
  for (const auto& [id, spec] : data.added_specs) {
    if (spec.normalized) {
      const auto normalized = data.added_normalized.find(id);
      data.normalized_matcher.add(normalized != data.added_normalized.end() ? normalized->second : spec.content, id);
    } else {
      data.raw_matcher.add(spec.content, id);
    }
  }
}

inline tokenizer_data read_tokenizer_json(std::string_view text, const std::string& file) {
  using kind = json_reader::kind;
  const json_reader r(file);
  const auto root = grpo::detail::json::parse(text, file);
  if (root.kind != kind::object) r.fail("(root)", "expected a JSON object");
  if (const auto version = r.optional_string(root, "", "version"); version && *version != "1.0")
    r.fail<config_error>("version", "\"", *version, "\" is not supported (1.0)");
  tokenizer_data data;
  if (const auto* n = json_reader::find(root, "normalizer")) read_normalizer(r, *n, "normalizer", data.normalizers);
  if (const auto* p = json_reader::find(root, "pre_tokenizer")) read_pre_tokenizer(r, *p, "pre_tokenizer", data.pre_tokenizers);
  // Any post-processor is accepted: with add_special_tokens=false, which encode always means, none of
  // them (ByteLevel, TemplateProcessing, RobertaProcessing, BertProcessing, Sequence) changes the ids.
  if (const auto* p = json_reader::find(root, "post_processor"); p != nullptr && p->kind != kind::null)
    r.expect(*p, "post_processor", kind::object);
  if (const auto* d = json_reader::find(root, "decoder")) data.byte_level_decoder = read_decoder(r, *d, "decoder");
  const auto* model = json_reader::find(root, "model");
  if (model == nullptr) r.fail("model", "missing");
  read_model(r, *model, data.model);
  if (const auto* added = json_reader::find(root, "added_tokens")) read_added_tokens(r, *added, data);
  token_id max_id = -1;
  for (const auto& [id, token] : data.model.token_of) max_id = std::max(max_id, id);
  for (const auto& [id, spec] : data.added_specs) max_id = std::max(max_id, id);
  data.vocab_size = static_cast<std::int64_t>(max_id) + 1;
  return data;
}

inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  GRPO_CHECK(in.good(), io_error, path.string(), ": cannot open the file");
  std::ostringstream text;
  text << in.rdbuf();
  GRPO_CHECK(!in.bad(), io_error, path.string(), ": read failed");
  return text.str();
}

}  // namespace grpo::hf::detail
