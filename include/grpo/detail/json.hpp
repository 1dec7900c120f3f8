// SPDX-License-Identifier: Apache-2.0
// grpo/detail/json.hpp: the strict, minimal JSON (RFC 8259) reader and string quoting that the
// safetensors header needs. Not a general JSON library: values are kept as a small tree, numbers
// as their source text (the caller decides whether it wants an integer), and anything RFC 8259
// does not allow (trailing commas, leading zeros, unescaped control characters, invalid UTF-8,
// lone surrogates, trailing garbage) is an error rather than something to guess about.
#pragma once

#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include "grpo/error.hpp"

namespace grpo::detail::json {

enum class kind { null, boolean, number, string, array, object };

struct member;

/// One JSON value. `text` holds a string's decoded UTF-8 or a number's literal source text.
/// Object members keep their source order; duplicate keys are rejected while parsing.
struct value {
  json::kind kind = json::kind::null;
  bool boolean = false;
  std::string text;
  std::vector<value> items;
  std::vector<member> members;
};

struct member {
  std::string key;
  json::value value;
};

inline std::string_view kind_name(kind k) {
  switch (k) {
    case kind::null: return "null";
    case kind::boolean: return "a boolean";
    case kind::number: return "a number";
    case kind::string: return "a string";
    case kind::array: return "an array";
    case kind::object: return "an object";
  }
  return "?";
}

/// The value of a number literal that is a non-negative integer (no sign, fraction or exponent)
/// not above `max`; false otherwise (including on overflow).
inline bool to_uint64(const value& v, std::uint64_t& out,
                      std::uint64_t max = std::numeric_limits<std::uint64_t>::max()) {
  if (v.kind != kind::number || v.text.empty()) return false;
  std::uint64_t result = 0;
  for (const char c : v.text) {
    if (c < '0' || c > '9') return false;
    const auto digit = static_cast<std::uint64_t>(c - '0');
    if (result > (max - digit) / 10) return false;
    result = result * 10 + digit;
  }
  out = result;
  return true;
}

/// Length of the well-formed UTF-8 sequence starting at s[pos] (RFC 3629: no overlong forms, no
/// surrogates, nothing above U+10FFFF), or 0 when it is malformed or truncated.
inline std::size_t utf8_sequence_length(std::string_view s, std::size_t pos) {
  const auto at = [&](std::size_t i) { return static_cast<unsigned char>(s[pos + i]); };
  const std::size_t left = s.size() - pos;
  const auto cont = [&](std::size_t i) { return i < left && (at(i) & 0xC0) == 0x80; };
  const unsigned char b0 = at(0);
  if (b0 < 0x80) return 1;
  if (b0 >= 0xC2 && b0 <= 0xDF) return cont(1) ? 2 : 0;
  if (b0 >= 0xE0 && b0 <= 0xEF) {
    if (!cont(1) || !cont(2)) return 0;
    if (b0 == 0xE0 && at(1) < 0xA0) return 0;   // overlong
    if (b0 == 0xED && at(1) >= 0xA0) return 0;  // UTF-16 surrogate
    return 3;
  }
  if (b0 >= 0xF0 && b0 <= 0xF4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    if (b0 == 0xF0 && at(1) < 0x90) return 0;   // overlong
    if (b0 == 0xF4 && at(1) >= 0x90) return 0;  // above U+10FFFF
    return 4;
  }
  return 0;
}

inline bool is_valid_utf8(std::string_view s) {
  for (std::size_t pos = 0; pos < s.size();) {
    const std::size_t n = utf8_sequence_length(s, pos);
    if (n == 0) return false;
    pos += n;
  }
  return true;
}

/// Nesting deeper than this is rejected, so a hostile header of 10^8 '[' cannot exhaust the stack.
inline constexpr int max_depth = 64;

class parser {
 public:
  /// `context` prefixes every error message (e.g. "batch.safetensors: header").
  parser(std::string_view text, std::string_view context) : text_(text), context_(context) {}

  value parse_document() {
    skip_whitespace();
    value result = parse_value(0);
    skip_whitespace();
    if (pos_ != text_.size()) fail_at("unexpected trailing characters after the JSON value");
    return result;
  }

 private:
  std::string_view text_;
  std::string_view context_;
  std::size_t pos_ = 0;

  [[noreturn]] void fail_at(std::string_view what) const {
    fail<io_error>(context_, ": invalid JSON at byte ", pos_, ": ", what);
  }

  bool at_end() const { return pos_ >= text_.size(); }
  char peek() const { return text_[pos_]; }

  void skip_whitespace() {
    while (!at_end() && (peek() == ' ' || peek() == '\t' || peek() == '\n' || peek() == '\r')) ++pos_;
  }

  void expect(char c) {
    if (at_end() || peek() != c) fail_at(concat("expected '", c, "'"));
    ++pos_;
  }

  value parse_value(int depth) {
    if (at_end()) fail_at("unexpected end of input, expected a value");
    switch (peek()) {
      case '{': return parse_object(depth + 1);
      case '[': return parse_array(depth + 1);
      case '"': {
        value v;
        v.kind = kind::string;
        v.text = parse_string();
        return v;
      }
      case 't': return parse_literal("true", kind::boolean, true);
      case 'f': return parse_literal("false", kind::boolean, false);
      case 'n': return parse_literal("null", kind::null, false);
      default: return parse_number();
    }
  }

  value parse_literal(std::string_view word, kind k, bool b) {
    if (text_.substr(pos_, word.size()) != word) fail_at("invalid literal");
    pos_ += word.size();
    value v;
    v.kind = k;
    v.boolean = b;
    return v;
  }

  value parse_object(int depth) {
    if (depth > max_depth) fail_at("nesting deeper than 64 levels");
    expect('{');
    value v;
    v.kind = kind::object;
    std::unordered_set<std::string> keys;
    skip_whitespace();
    if (!at_end() && peek() == '}') {
      ++pos_;
      return v;
    }
    while (true) {
      skip_whitespace();
      if (at_end() || peek() != '"') fail_at("expected a string key");
      const std::size_t key_pos = pos_;
      std::string key = parse_string();
      // A hash set rather than a scan of the members: tokenizer.json vocabularies have 150k keys.
      if (!keys.insert(key).second) {
        pos_ = key_pos;
        fail_at(concat("duplicate key \"", key, "\""));
      }
      skip_whitespace();
      expect(':');
      skip_whitespace();
      value item = parse_value(depth);
      v.members.push_back({std::move(key), std::move(item)});
      skip_whitespace();
      if (at_end()) fail_at("unexpected end of input in an object");
      if (peek() == '}') {
        ++pos_;
        return v;
      }
      if (peek() != ',') fail_at("expected ',' or '}'");
      ++pos_;
    }
  }

  value parse_array(int depth) {
    if (depth > max_depth) fail_at("nesting deeper than 64 levels");
    expect('[');
    value v;
    v.kind = kind::array;
    skip_whitespace();
    if (!at_end() && peek() == ']') {
      ++pos_;
      return v;
    }
    while (true) {
      skip_whitespace();
      v.items.push_back(parse_value(depth));
      skip_whitespace();
      if (at_end()) fail_at("unexpected end of input in an array");
      if (peek() == ']') {
        ++pos_;
        return v;
      }
      if (peek() != ',') fail_at("expected ',' or ']'");
      ++pos_;
    }
  }

  static bool is_digit(char c) { return c >= '0' && c <= '9'; }

  // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
  value parse_number() {
    const std::size_t start = pos_;
    if (!at_end() && peek() == '-') ++pos_;
    if (at_end() || !is_digit(peek())) fail_at("expected a value");
    if (peek() == '0') {
      ++pos_;
      if (!at_end() && is_digit(peek())) fail_at("leading zeros are not allowed in numbers");
    } else {
      while (!at_end() && is_digit(peek())) ++pos_;
    }
    if (!at_end() && peek() == '.') {
      ++pos_;
      if (at_end() || !is_digit(peek())) fail_at("expected a digit after the decimal point");
      while (!at_end() && is_digit(peek())) ++pos_;
    }
    if (!at_end() && (peek() == 'e' || peek() == 'E')) {
      ++pos_;
      if (!at_end() && (peek() == '+' || peek() == '-')) ++pos_;
      if (at_end() || !is_digit(peek())) fail_at("expected a digit in the exponent");
      while (!at_end() && is_digit(peek())) ++pos_;
    }
    value v;
    v.kind = kind::number;
    v.text = std::string(text_.substr(start, pos_ - start));
    return v;
  }

  unsigned parse_hex4() {
    if (text_.size() - pos_ < 4) fail_at("truncated \\u escape");
    unsigned code = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = text_[pos_++];
      code <<= 4;
      if (c >= '0' && c <= '9') code |= static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f') code |= static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') code |= static_cast<unsigned>(c - 'A' + 10);
      else fail_at("invalid hex digit in a \\u escape");
    }
    return code;
  }

  static void append_utf8(std::string& out, unsigned code) {
    const auto byte = [](unsigned b) { return static_cast<char>(static_cast<unsigned char>(b)); };
    if (code < 0x80) {
      out += byte(code);
    } else if (code < 0x800) {
      out += byte(0xC0 | (code >> 6));
      out += byte(0x80 | (code & 0x3F));
    } else if (code < 0x10000) {
      out += byte(0xE0 | (code >> 12));
      out += byte(0x80 | ((code >> 6) & 0x3F));
      out += byte(0x80 | (code & 0x3F));
    } else {
      out += byte(0xF0 | (code >> 18));
      out += byte(0x80 | ((code >> 12) & 0x3F));
      out += byte(0x80 | ((code >> 6) & 0x3F));
      out += byte(0x80 | (code & 0x3F));
    }
  }

  std::string parse_string() {
    expect('"');
    std::string out;
    while (true) {
      if (at_end()) fail_at("unterminated string");
      const char c = peek();
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (static_cast<unsigned char>(c) < 0x20) fail_at("unescaped control character in a string");
      if (c != '\\') {
        const std::size_t n = utf8_sequence_length(text_, pos_);
        if (n == 0) fail_at("invalid UTF-8 in a string");
        out.append(text_.substr(pos_, n));
        pos_ += n;
        continue;
      }
      ++pos_;
      if (at_end()) fail_at("unterminated escape");
      const char e = text_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned code = parse_hex4();
          if (code >= 0xDC00 && code <= 0xDFFF) fail_at("lone low surrogate in a \\u escape");
          if (code >= 0xD800 && code <= 0xDBFF) {
            if (text_.substr(pos_, 2) != "\\u") fail_at("high surrogate not followed by a low surrogate");
            pos_ += 2;
            const unsigned low = parse_hex4();
            if (low < 0xDC00 || low > 0xDFFF) fail_at("high surrogate not followed by a low surrogate");
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
          }
          append_utf8(out, code);
          break;
        }
        default: --pos_; fail_at("invalid escape character");
      }
    }
  }
};

/// Parses one complete JSON document; errors are io_error starting with `context`.
inline value parse(std::string_view text, std::string_view context) { return parser(text, context).parse_document(); }

/// Shortest text that reads back as the same double, in fixed notation for moderate magnitudes
/// (1000000.0 rather than 1e+06) with a ".0" on integers so Python reads a float.
inline std::string number(double value) {
  char buffer[400];
  const double magnitude = std::fabs(value);
  const bool fixed = magnitude == 0.0 || (magnitude >= 1e-4 && magnitude < 1e16);
  const auto result = std::to_chars(buffer, buffer + sizeof buffer, value,
                                    fixed ? std::chars_format::fixed : std::chars_format::scientific);
  std::string text(buffer, result.ptr);
  if (text.find_first_of(".eE") == std::string::npos) text += ".0";
  return text;
}

/// `s` as a JSON string literal: quotes, backslashes and control characters escaped; other bytes
/// (UTF-8) copied as they are.
inline std::string quote(std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out = "\"";
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (u < 0x20) {
          out += "\\u00";
          out += hex[u >> 4];
          out += hex[u & 0xF];
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

}  // namespace grpo::detail::json
