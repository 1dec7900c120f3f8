// SPDX-License-Identifier: Apache-2.0
// grpo/hf/tokenizer_unicode.hpp: the Unicode text operations of the Hugging Face tokenizer
// (grpo/hf/tokenizer.hpp): UTF-8 checks, the character classes the `tokenizers` library tests with
// Rust's char methods, Unicode normalization through utf8proc, regular expressions through PCRE2
// (UTF + UCP, standing in for the library's Oniguruma), the GPT-2 byte <-> character map of the
// ByteLevel pre-tokenizer and decoder, and lossy UTF-8 decoding as Rust's String::from_utf8_lossy.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>
#include <utf8proc.h>

#include "grpo/detail/json.hpp"
#include "grpo/error.hpp"

namespace grpo::hf::detail {

/// Throws value_error naming `context` and the byte offset of the first malformed sequence.
inline void require_utf8(std::string_view text, std::string_view context) {
  for (std::size_t pos = 0; pos < text.size();) {
    const std::size_t n = grpo::detail::json::utf8_sequence_length(text, pos);
    GRPO_CHECK(n != 0, value_error, context, ": invalid UTF-8 at byte ", pos, " (byte 0x", std::hex,
               static_cast<unsigned>(static_cast<unsigned char>(text[pos])), ")");
    pos += n;
  }
}

/// The code point of the well-formed UTF-8 sequence at text[pos]; `length` receives its byte count.
inline char32_t decode_utf8(std::string_view text, std::size_t pos, std::size_t& length) {
  const auto byte = [&](std::size_t i) { return static_cast<char32_t>(static_cast<unsigned char>(text[pos + i])); };
  const char32_t b0 = byte(0);
  if (b0 < 0x80) {
    length = 1;
    return b0;
  }
  if (b0 < 0xE0) {
    length = 2;
    return ((b0 & 0x1F) << 6) | (byte(1) & 0x3F);
  }
  if (b0 < 0xF0) {
    length = 3;
    return ((b0 & 0x0F) << 12) | ((byte(1) & 0x3F) << 6) | (byte(2) & 0x3F);
  }
  length = 4;
  return ((b0 & 0x07) << 18) | ((byte(1) & 0x3F) << 12) | ((byte(2) & 0x3F) << 6) | (byte(3) & 0x3F);
}

inline void append_utf8(std::string& out, char32_t code) {
  const auto put = [&](char32_t b) { out += static_cast<char>(static_cast<unsigned char>(b)); };
  if (code < 0x80) {
    put(code);
  } else if (code < 0x800) {
    put(0xC0 | (code >> 6));
    put(0x80 | (code & 0x3F));
  } else if (code < 0x10000) {
    put(0xE0 | (code >> 12));
    put(0x80 | ((code >> 6) & 0x3F));
    put(0x80 | (code & 0x3F));
  } else {
    put(0xF0 | (code >> 18));
    put(0x80 | ((code >> 12) & 0x3F));
    put(0x80 | ((code >> 6) & 0x3F));
    put(0x80 | (code & 0x3F));
  }
}

/// The last code point of non-empty valid UTF-8 text.
inline char32_t last_code_point(std::string_view text) {
  std::size_t start = text.size() - 1;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  std::size_t length = 0;
  return decode_utf8(text, start, length);
}

/// Rust's char::is_numeric: general category Nd, Nl or No (the Digits pre-tokenizer's test).
inline bool is_numeric(char32_t c) {
  const auto category = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return category == UTF8PROC_CATEGORY_ND || category == UTF8PROC_CATEGORY_NL || category == UTF8PROC_CATEGORY_NO;
}

/// The Unicode White_Space property (Rust's char::is_whitespace and regex \s; PropList.txt).
inline bool is_whitespace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/// Rust regex's Unicode \w (UTS #18 Annex C: Alphabetic, M, Nd, Pc, Join_Control), with
/// Alphabetic taken as the letters and letter numbers: the test of an added token's single_word.
inline bool is_word_char(char32_t c) {
  if (c == 0x200C || c == 0x200D) return true;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT: case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_PC: return true;
    default: return false;
  }
}

/// The Unicode normalization forms of tokenizer.json's NFC / NFD / NFKC / NFKD normalizers (UAX #15).
enum class normalization_form { nfc, nfd, nfkc, nfkd };

/// `text` (valid UTF-8) in the normalization form, through utf8proc_map with an explicit length so
/// that NUL characters are kept as the library keeps them.
inline std::string normalize(std::string_view text, normalization_form form) {
  if (text.empty()) return {};
  int options = UTF8PROC_STABLE;
  switch (form) {
    case normalization_form::nfc: options |= UTF8PROC_COMPOSE; break;
    case normalization_form::nfd: options |= UTF8PROC_DECOMPOSE; break;
    case normalization_form::nfkc: options |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
    case normalization_form::nfkd: options |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
  }
  utf8proc_uint8_t* mapped = nullptr;
  const utf8proc_ssize_t length =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()), static_cast<utf8proc_ssize_t>(text.size()),
                   &mapped, static_cast<utf8proc_option_t>(options));
  const std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> owned(mapped, &std::free);
  GRPO_CHECK(length >= 0, value_error, "normalize: utf8proc failed: ", utf8proc_errmsg(length));
  return std::string(reinterpret_cast<const char*>(mapped), static_cast<std::size_t>(length));
}

/// `literal` as a PCRE2 pattern that matches exactly it (a Split pre-tokenizer's String pattern):
/// every ASCII character that is not a letter or digit is escaped.
inline std::string escape_regex(std::string_view literal) {
  std::string out;
  for (const char c : literal) {
    const auto u = static_cast<unsigned char>(c);
    const bool alnum = (u >= '0' && u <= '9') || (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z');
    if (u < 0x80 && !alnum) out += '\\';
    out += c;
  }
  return out;
}

/// An Oniguruma (Ruby syntax) pattern rewritten for PCRE2 where the two read the same escape
/// differently under Unicode: Oniguruma's \s is [\t-\r\x{85}\p{Z}] while PCRE2's UCP \s also matches
/// U+180E; Oniguruma's \w is [\p{L}\p{M}\p{Nd}\p{Pc}] while PCRE2's is [\p{L}\p{N}_]; Ruby's \h is a
/// hex digit where PCRE2's is horizontal space. (Oniguruma doc/RE; pcre2pattern "Generic character
/// types".) Inside a character class the positive forms become their members; the negated forms
/// \S \W \H are kept there, so `[\S]` alone still differs at those few characters.
inline std::string translate_oniguruma(std::string_view pattern) {
  static constexpr std::string_view space = R"(\t-\r\x{85}\p{Z})", word = R"(\p{L}\p{M}\p{Nd}\p{Pc})",
                                    hex = "0-9a-fA-F";
  std::string out;
  int class_depth = 0;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[++i];
      const std::string_view members = e == 's' || e == 'S' ? space : e == 'w' || e == 'W' ? word
                                       : e == 'h' || e == 'H' ? hex : std::string_view{};
      const bool negated = e == 'S' || e == 'W' || e == 'H';
      if (members.empty() || (class_depth > 0 && negated)) {
        out += c;
        out += e;
      } else if (class_depth > 0) {
        out += members;
      } else {
        out += negated ? "[^" : "[";
        out += members;
        out += ']';
      }
      continue;
    }
    out += c;
    if (c == '[') {
      if (class_depth > 0 && pattern.substr(i, 2) == "[:") {  // a POSIX class such as [:alpha:]
        const std::size_t close = pattern.find(":]", i + 2);
        if (close != std::string_view::npos) {
          out += pattern.substr(i + 1, close + 1 - i);
          i = close + 1;
          continue;
        }
      }
      ++class_depth;
      // A ']' right after '[' or '[^' is a member, not the end of the class.
      if (pattern.substr(i + 1, 1) == "^") out += pattern[++i];
      if (pattern.substr(i + 1, 1) == "]") out += pattern[++i];
    } else if (c == ']' && class_depth > 0) {
      --class_depth;
    }
  }
  return out;
}

/// A compiled pattern of tokenizer.json (Oniguruma syntax, see translate_oniguruma) as PCRE2 with UTF
/// and UCP, so that \s, \p{L}, \p{N} and case-insensitive groups follow Unicode as the library's
/// Oniguruma patterns do. JIT-compiled where PCRE2 has a JIT.
class regex {
 public:
  /// config_error naming `context` (e.g. "tokenizer.json: pre_tokenizer.pattern.Regex") and
  /// PCRE2's message and offset when the pattern does not compile.
  regex(std::string_view oniguruma_pattern, std::string_view context) {
    const std::string pattern = translate_oniguruma(oniguruma_pattern);
    int error_code = 0;
    PCRE2_SIZE error_offset = 0;
    pcre2_code_8* code = pcre2_compile_8(reinterpret_cast<PCRE2_SPTR8>(pattern.data()), pattern.size(),
                                         PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr);
    if (code == nullptr) {
      std::array<PCRE2_UCHAR8, 256> message{};
      pcre2_get_error_message_8(error_code, message.data(), message.size());
      grpo::detail::fail<config_error>(context, ": invalid regular expression \"", oniguruma_pattern, "\": ",
                                       reinterpret_cast<const char*>(message.data()), " at offset ", error_offset,
                                       pattern == oniguruma_pattern ? "" : " of its PCRE2 form \"",
                                       pattern == oniguruma_pattern ? "" : pattern,
                                       pattern == oniguruma_pattern ? "" : "\"");
    }
    code_.reset(code, code_deleter{});
    pcre2_jit_compile_8(code, PCRE2_JIT_COMPLETE);  // an error here only means no JIT: matching still works
  }

  /// The [start, end) byte ranges of the successive matches in `text` (valid UTF-8), searched as
  /// the onig crate's find_iter does: each search starts where the last match ended, and an empty
  /// match right at the end of the previous match is skipped by advancing one character.
  std::vector<std::pair<std::size_t, std::size_t>> find_all(std::string_view text) const {
    std::vector<std::pair<std::size_t, std::size_t>> matches;
    const std::unique_ptr<pcre2_match_data_8, decltype(&pcre2_match_data_free_8)> data(
        pcre2_match_data_create_from_pattern_8(code_.get(), nullptr), &pcre2_match_data_free_8);
    GRPO_CHECK(data != nullptr, backend_error, "regex: PCRE2 could not allocate match data");
    // PCRE2's default limit of 10^7 backtracking steps per match stops a linear pattern such as
    // \s+(?!\S) on a run of ten million spaces; allow steps in proportion to the text instead.
    const std::unique_ptr<pcre2_match_context_8, decltype(&pcre2_match_context_free_8)> context(
        pcre2_match_context_create_8(nullptr), &pcre2_match_context_free_8);
    GRPO_CHECK(context != nullptr, backend_error, "regex: PCRE2 could not allocate a match context");
    constexpr std::uint64_t steps_per_byte = 64, max_limit = 0xFFFFFFFFu;
    pcre2_set_match_limit_8(context.get(), static_cast<std::uint32_t>(std::min<std::uint64_t>(
                                               max_limit, std::max<std::uint64_t>(10'000'000, steps_per_byte * text.size()))));
    std::size_t search_from = 0;
    bool matched_before = false;
    std::size_t last_match_end = 0;
    while (search_from <= text.size()) {
      const int rc = pcre2_match_8(code_.get(), reinterpret_cast<PCRE2_SPTR8>(text.data()), text.size(), search_from,
                                   PCRE2_NO_UTF_CHECK, data.get(), context.get());
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        std::array<PCRE2_UCHAR8, 256> message{};
        pcre2_get_error_message_8(rc, message.data(), message.size());
        grpo::detail::fail<value_error>("regex: matching failed at byte ", search_from, ": ",
                                        reinterpret_cast<const char*>(message.data()));
      }
      const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer_8(data.get());
      const std::size_t start = ovector[0];
      const std::size_t end = ovector[1];
      if (start == end && matched_before && last_match_end == end) {
        if (search_from >= text.size()) break;
        std::size_t length = 0;
        decode_utf8(text, search_from, length);
        search_from += length;
        continue;
      }
      matches.emplace_back(start, end);
      search_from = end;
      matched_before = true;
      last_match_end = end;
    }
    return matches;
  }

 private:
  struct code_deleter {
    void operator()(pcre2_code_8* code) const { pcre2_code_free_8(code); }
  };
  std::shared_ptr<pcre2_code_8> code_;  // compiled code is read-only while matching: shared by copies and threads
};

/// GPT-2's byte <-> character map (openai/gpt-2 src/encoder.py, bytes_to_unicode), which the
/// ByteLevel pre-tokenizer applies to every byte and the ByteLevel decoder inverts: the printable
/// bytes '!'..'~', 0xA1..0xAC and 0xAE..0xFF stand for themselves, the other 68 bytes in order for
/// U+0100, U+0101, ...
class byte_level_map {
 public:
  static const byte_level_map& get() {
    static const byte_level_map map;
    return map;
  }

  /// The UTF-8 text of the character standing for `byte`.
  const std::string& encode(unsigned char byte) const { return text_[byte]; }

  /// The byte a character stands for, or -1 when the character is none of the 256.
  int decode(char32_t c) const { return c < byte_of_.size() ? byte_of_[c] : -1; }

 private:
  std::array<std::string, 256> text_;
  std::array<int, 0x144> byte_of_{};

  byte_level_map() {
    byte_of_.fill(-1);
    char32_t next_unprintable = 0x100;
    for (unsigned b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const char32_t c = printable ? static_cast<char32_t>(b) : next_unprintable++;
      append_utf8(text_[b], c);
      byte_of_[c] = static_cast<int>(b);
    }
  }
};

/// `bytes` as UTF-8 text, each ill-formed part replaced by U+FFFD as Rust's
/// String::from_utf8_lossy does: one replacement per maximal subpart of an ill-formed sequence
/// (Unicode 15, section 3.9, "U+FFFD Substitution of Maximal Subparts").
inline std::string utf8_lossy(std::string_view bytes) {
  static constexpr std::string_view replacement = "\xEF\xBF\xBD";
  std::string out;
  out.reserve(bytes.size());
  std::size_t pos = 0;
  while (pos < bytes.size()) {
    const auto b0 = static_cast<unsigned char>(bytes[pos]);
    if (b0 < 0x80) {
      out += bytes[pos++];
      continue;
    }
    // The length of the sequence a lead byte announces, and the range its second byte must lie in.
    std::size_t need = 0;
    unsigned char low = 0x80, high = 0xBF;
    if (b0 >= 0xC2 && b0 <= 0xDF) need = 2;
    else if (b0 >= 0xE0 && b0 <= 0xEF) need = 3, low = b0 == 0xE0 ? 0xA0 : 0x80, high = b0 == 0xED ? 0x9F : 0xBF;
    else if (b0 >= 0xF0 && b0 <= 0xF4) need = 4, low = b0 == 0xF0 ? 0x90 : 0x80, high = b0 == 0xF4 ? 0x8F : 0xBF;
    std::size_t valid = 1;  // bytes of the sequence that are well-formed so far
    while (need != 0 && valid < need && pos + valid < bytes.size()) {
      const auto b = static_cast<unsigned char>(bytes[pos + valid]);
      const bool ok = valid == 1 ? (b >= low && b <= high) : (b >= 0x80 && b <= 0xBF);
      if (!ok) break;
      ++valid;
    }
    if (need != 0 && valid == need) {
      out.append(bytes.substr(pos, need));
    } else {
      out += replacement;
    }
    pos += valid;
  }
  return out;
}

}  // namespace grpo::hf::detail
