// SPDX-License-Identifier: Apache-2.0
// grpo/train/toml.hpp: the subset of TOML v1.0 (toml.io) that training configs use: comments,
// [section] headers, `key = value` with basic "strings" (\" \\ \n \t escapes) and 'literal'
// strings, integers, floats (incl. exponents and inf/nan rejected), true/false, and one-line
// arrays of those. Keys are bare (A-Za-z0-9_-). Not supported (a clear error, never a silent
// misread): dotted keys, inline tables, arrays of tables, multi-line strings, dates.
#pragma once

#include <charconv>
#include <cstdint>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "grpo/error.hpp"

namespace grpo::train::toml {

enum class kind { string, integer, floating, boolean, array };

inline std::string_view kind_name(kind k) {
  switch (k) {
    case kind::string: return "a string";
    case kind::integer: return "an integer";
    case kind::floating: return "a float";
    case kind::boolean: return "a boolean";
    case kind::array: return "an array";
  }
  return "?";
}

/// One value; `text` is its source spelling (for messages).
struct value {
  kind type = kind::string;
  std::string string;
  std::int64_t integer = 0;
  double floating = 0.0;
  bool boolean = false;
  std::vector<value> array;
  std::string text;
};

/// One `key = value` line; key is "section.key" inside a [section], else "key".
struct entry {
  std::string key;
  value item;
  int line = 0;
};

/// A parsed document in file order.
struct document {
  std::vector<entry> entries;
  const entry* find(std::string_view key) const {
    for (const auto& e : entries)
      if (e.key == key) return &e;
    return nullptr;
  }
};

namespace detail {

/// TOML integers are signed 64-bit (toml.io: "Arbitrary 64-bit signed integers should be
/// accepted and handled losslessly"); a longer one is an error, never a wrapped or clamped value.
inline std::string out_of_range_message(std::string_view word) {
  return "integer '" + std::string(word) +
         "' is out of range (a TOML integer is a signed 64-bit value, -9223372036854775808 to "
         "9223372036854775807)";
}

class parser {
 public:
  parser(std::string_view text, std::string_view source, int line) : text_(text), source_(source), line_(line) {}

  [[noreturn]] void fail(std::string_view what) const {
    grpo::detail::fail<config_error>(source_, ":", line_, ": ", what);
  }

  void skip_blanks() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t')) ++pos_;
  }
  bool at_end_or_comment() {
    skip_blanks();
    return pos_ >= text_.size() || text_[pos_] == '#';
  }

  value parse_value() {
    skip_blanks();
    if (pos_ >= text_.size()) fail("expected a value after '='");
    const std::size_t start = pos_;
    value v;
    const char c = text_[pos_];
    if (c == '"') {
      v.type = kind::string;
      ++pos_;
      while (true) {
        if (pos_ >= text_.size()) fail("unterminated string");
        const char d = text_[pos_++];
        if (d == '"') break;
        if (d != '\\') {
          v.string += d;
          continue;
        }
        if (pos_ >= text_.size()) fail("unterminated string");
        const char e = text_[pos_++];
        if (e == 'n') v.string += '\n';
        else if (e == 't') v.string += '\t';
        else if (e == '"' || e == '\\') v.string += e;
        else fail(std::string("unsupported escape \\") + e + " in a string");
      }
    } else if (c == '\'') {
      v.type = kind::string;
      const std::size_t end = text_.find('\'', pos_ + 1);
      if (end == std::string_view::npos) fail("unterminated literal string");
      v.string = std::string(text_.substr(pos_ + 1, end - pos_ - 1));
      pos_ = end + 1;
    } else if (c == '[') {
      v.type = kind::array;
      ++pos_;
      while (true) {
        skip_blanks();
        if (pos_ < text_.size() && text_[pos_] == ']') {
          ++pos_;
          break;
        }
        v.array.push_back(parse_value());
        if (v.array.back().type == kind::array) fail("nested arrays are not supported");
        skip_blanks();
        if (pos_ < text_.size() && text_[pos_] == ',') {
          ++pos_;
          continue;
        }
        if (pos_ < text_.size() && text_[pos_] == ']') {
          ++pos_;
          break;
        }
        fail("expected ',' or ']' in an array (arrays must be on one line)");
      }
    } else if (c == '{') {
      fail("inline tables are not supported");
    } else {
      std::size_t end = pos_;
      while (end < text_.size() && text_[end] != ',' && text_[end] != ']' && text_[end] != ' ' && text_[end] != '\t' &&
             text_[end] != '#')
        ++end;
      const std::string_view word = text_.substr(pos_, end - pos_);
      pos_ = end;
      if (word == "true" || word == "false") {
        v.type = kind::boolean;
        v.boolean = word == "true";
      } else {
        std::string digits;
        for (const char d : word)
          if (d != '_') digits += d;
        if (!digits.empty() && digits.front() == '+') digits.erase(0, 1);
        const bool is_float = digits.find_first_of(".eE") != std::string::npos;
        const char* first = digits.data();
        const char* last = digits.data() + digits.size();
        if (digits.empty() || digits.find_first_not_of("0123456789+-.eE") != std::string::npos)
          fail("invalid value '" + std::string(word) + "' (strings must be quoted)");
        if (is_float) {
          v.type = kind::floating;
          const auto r = std::from_chars(first, last, v.floating);
          if (r.ec != std::errc() || r.ptr != last) fail("invalid float '" + std::string(word) + "'");
        } else {
          v.type = kind::integer;
          const auto r = std::from_chars(first, last, v.integer);
          if (r.ec == std::errc::result_out_of_range && r.ptr == last) fail(out_of_range_message(word));
          if (r.ec != std::errc() || r.ptr != last) fail("invalid integer '" + std::string(word) + "'");
        }
      }
    }
    v.text = std::string(text_.substr(start, pos_ - start));
    return v;
  }

  std::size_t position() const { return pos_; }

 private:
  std::string_view text_;
  std::string_view source_;
  int line_;
  std::size_t pos_ = 0;
};

/// Whether `text` is spelled as a TOML integer (optional sign, digits, '_' separators).
inline bool integer_syntax(std::string_view text) {
  if (!text.empty() && (text.front() == '+' || text.front() == '-')) text.remove_prefix(1);
  return !text.empty() && text.find_first_not_of("0123456789_") == std::string_view::npos;
}

inline bool bare_key_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

}  // namespace detail

/// Parses `text`; `source` (the file name) starts every message.
/// \throws config_error "SOURCE:LINE: ..." for a syntax error, an unsupported construct or a key
///         defined twice.
inline document parse(std::string_view text, std::string_view source = "config.toml") {
  document doc;
  std::string section;
  int line_number = 0;
  std::size_t begin = 0;
  while (begin <= text.size()) {
    std::size_t end = text.find('\n', begin);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(begin, end - begin);
    begin = end + 1;
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    detail::parser p(line, source, line_number);
    if (p.at_end_or_comment()) {
      if (end == text.size()) break;
      continue;
    }
    std::size_t i = line.find_first_not_of(" \t");
    if (line[i] == '[') {
      if (i + 1 < line.size() && line[i + 1] == '[') p.fail("arrays of tables ([[...]]) are not supported");
      const std::size_t close = line.find(']', i);
      if (close == std::string_view::npos) p.fail("expected ']' to close the section header");
      const std::string_view name = line.substr(i + 1, close - i - 1);
      if (name.empty()) p.fail("empty section name");
      for (const char c : name)
        if (!detail::bare_key_char(c)) p.fail("section names must be bare keys (A-Za-z0-9_-), got '" + std::string(name) + "'");
      const std::size_t rest = line.find_first_not_of(" \t", close + 1);
      if (rest != std::string_view::npos && line[rest] != '#') p.fail("unexpected text after the section header");
      section = std::string(name);
      if (end == text.size()) break;
      continue;
    }
    std::size_t k = i;
    while (k < line.size() && detail::bare_key_char(line[k])) ++k;
    const std::string_view key = line.substr(i, k - i);
    if (key.empty()) p.fail("expected a key (A-Za-z0-9_-)");
    if (k < line.size() && line[k] == '.') p.fail("dotted keys are not supported; use a [section]");
    std::size_t eq = line.find_first_not_of(" \t", k);
    if (eq == std::string_view::npos || line[eq] != '=') p.fail("expected '=' after the key '" + std::string(key) + "'");
    detail::parser vp(line.substr(eq + 1), source, line_number);
    entry e;
    e.key = section.empty() ? std::string(key) : section + "." + std::string(key);
    e.item = vp.parse_value();
    e.line = line_number;
    if (!vp.at_end_or_comment()) vp.fail("unexpected text after the value of '" + std::string(key) + "'");
    if (const entry* previous = doc.find(e.key))
      p.fail("'" + e.key + "' is defined twice (first on line " + std::to_string(previous->line) + ")");
    doc.entries.push_back(std::move(e));
    if (end == text.size()) break;
  }
  return doc;
}

/// A value from a command-line override: TOML syntax, or, when that does not parse, the whole
/// text as a string (so --set task=countdown needs no quotes).
/// \throws config_error for an integer out of the signed 64-bit range (not a string either).
inline value parse_override_value(std::string_view text) {
  try {
    detail::parser p(text, "--set", 1);
    value v = p.parse_value();
    if (p.at_end_or_comment()) return v;
  } catch (const config_error&) {
    if (detail::integer_syntax(text)) throw config_error(detail::out_of_range_message(text));
  }
  value v;
  v.type = kind::string;
  v.string = std::string(text);
  v.text = std::string(text);
  return v;
}

/// A string as a TOML basic string.
inline std::string quote(std::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else out += c;
  }
  return out + "\"";
}

/// A double that reads back bit-identically, always with a '.' or exponent so it stays a float.
inline std::string format_float(double x) {
  char buffer[64];
  const auto r = std::to_chars(buffer, buffer + sizeof buffer, x);
  std::string s(buffer, r.ptr);
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

}  // namespace grpo::train::toml
