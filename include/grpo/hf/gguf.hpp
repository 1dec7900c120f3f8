// SPDX-License-Identifier: Apache-2.0
// grpo/hf/gguf.hpp: reading GGUF, the model format of llama.cpp (versions 2 and 3, little-endian),
// and dequantizing its tensors to float. Layout (ggml's docs/gguf.md): "GGUF", u32 version, u64
// tensor count, u64 metadata count; the metadata as (string key, u32 value type, value); the tensor
// infos as (string name, u32 n_dims, u64 dims fastest-varying first, u32 ggml type, u64 offset into
// the data section); padding to general.alignment (default 32); the data section. Strings are a u64
// length and that many bytes. Block layouts follow ggml/src/ggml-common.h, values dequantize_row_*
// of ggml/src/ggml-quants.c (each element is rounded to float once, as there). Every size, count and
// offset is checked against the file before use, so a truncated or hostile file is an io_error
// naming the file and the field, never an out-of-bounds read. The file is read into memory once;
// tensors are views into that image. (Past 500 lines: the format and its eleven block layouts.)
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "grpo/error.hpp"

namespace grpo::hf::gguf {

/// Metadata value types, numbered as in the format.
enum class value_type : std::uint32_t {
  uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5, float32 = 6,
  boolean = 7, string = 8, array = 9, uint64 = 10, int64 = 11, float64 = 12,
};

inline std::string_view name_of(value_type type) {
  static constexpr std::array<std::string_view, 13> names{"uint8", "int8",  "uint16", "int16",  "uint32",
                                                          "int32", "float32", "bool", "string", "array",
                                                          "uint64", "int64", "float64"};
  const auto index = static_cast<std::uint32_t>(type);
  return index < names.size() ? names[index] : std::string_view("unknown");
}

/// One metadata value. Exactly the field of its type is meaningful.
struct value {
  value_type type = value_type::uint8;
  std::uint64_t unsigned_integer = 0;  ///< uint8, uint16, uint32, uint64
  std::int64_t signed_integer = 0;     ///< int8, int16, int32, int64
  double real = 0;                     ///< float32 (widened exactly) and float64
  bool boolean = false;
  std::string text;                             ///< string: its bytes as stored (meant to be UTF-8; not checked)
  value_type element_type = value_type::uint8;  ///< array: the type of every item
  std::vector<value> items;                     ///< array (items may be arrays themselves)
};

/// Tensor element types (ggml_type), numbered as in ggml.h; the gaps are retired types.
enum class ggml_type : std::uint32_t {
  f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, q8_1 = 9,
  q2_k = 10, q3_k = 11, q4_k = 12, q5_k = 13, q6_k = 14, q8_k = 15,
  iq2_xxs = 16, iq2_xs = 17, iq3_xxs = 18, iq1_s = 19, iq4_nl = 20, iq3_s = 21, iq2_s = 22, iq4_xs = 23,
  i8 = 24, i16 = 25, i32 = 26, i64 = 27, f64 = 28, iq1_m = 29, bf16 = 30, tq1_0 = 34, tq2_0 = 35,
  mxfp4 = 39,
};

struct ggml_type_traits {
  ggml_type type;
  std::string_view name;
  std::uint64_t block_size;  ///< elements per block
  std::uint64_t type_size;   ///< bytes per block
  bool dequantizable;        ///< dequantize() supports it
};

/// Sizes from ggml's type traits (gguf-py's GGML_QUANT_SIZES); QK_K = 256.
inline constexpr std::array<ggml_type_traits, 32> ggml_types{{
    {ggml_type::f32, "F32", 1, 4, true},          {ggml_type::f16, "F16", 1, 2, true},
    {ggml_type::q4_0, "Q4_0", 32, 18, true},      {ggml_type::q4_1, "Q4_1", 32, 20, true},
    {ggml_type::q5_0, "Q5_0", 32, 22, true},      {ggml_type::q5_1, "Q5_1", 32, 24, true},
    {ggml_type::q8_0, "Q8_0", 32, 34, true},      {ggml_type::q8_1, "Q8_1", 32, 40, false},
    {ggml_type::q2_k, "Q2_K", 256, 84, false},    {ggml_type::q3_k, "Q3_K", 256, 110, false},
    {ggml_type::q4_k, "Q4_K", 256, 144, true},    {ggml_type::q5_k, "Q5_K", 256, 176, true},
    {ggml_type::q6_k, "Q6_K", 256, 210, true},    {ggml_type::q8_k, "Q8_K", 256, 292, false},
    {ggml_type::iq2_xxs, "IQ2_XXS", 256, 66, false}, {ggml_type::iq2_xs, "IQ2_XS", 256, 74, false},
    {ggml_type::iq3_xxs, "IQ3_XXS", 256, 98, false}, {ggml_type::iq1_s, "IQ1_S", 256, 50, false},
    {ggml_type::iq4_nl, "IQ4_NL", 32, 18, false}, {ggml_type::iq3_s, "IQ3_S", 256, 110, false},
    {ggml_type::iq2_s, "IQ2_S", 256, 82, false},  {ggml_type::iq4_xs, "IQ4_XS", 256, 136, false},
    {ggml_type::i8, "I8", 1, 1, false},           {ggml_type::i16, "I16", 1, 2, false},
    {ggml_type::i32, "I32", 1, 4, false},         {ggml_type::i64, "I64", 1, 8, false},
    {ggml_type::f64, "F64", 1, 8, false},         {ggml_type::iq1_m, "IQ1_M", 256, 56, false},
    {ggml_type::bf16, "BF16", 1, 2, true},        {ggml_type::tq1_0, "TQ1_0", 256, 54, false},
    {ggml_type::tq2_0, "TQ2_0", 256, 66, false},  {ggml_type::mxfp4, "MXFP4", 32, 17, false},
}};

/// The traits of a type id, or nullptr for an id ggml does not define.
inline const ggml_type_traits* find_ggml_type(std::uint32_t id) {
  for (const auto& traits : ggml_types)
    if (static_cast<std::uint32_t>(traits.type) == id) return &traits;
  return nullptr;
}

inline const ggml_type_traits& traits_of(ggml_type type) {
  const auto* traits = find_ggml_type(static_cast<std::uint32_t>(type));
  GRPO_CHECK(traits != nullptr, config_error, "ggml type: unknown id ", static_cast<std::uint32_t>(type));
  return *traits;
}

inline std::string_view name_of(ggml_type type) { return traits_of(type).name; }

/// "F32, F16, ..." of the types dequantize() supports.
inline std::string dequantizable_type_names() {
  std::string out;
  for (const auto& traits : ggml_types) {
    if (!traits.dequantizable) continue;
    if (!out.empty()) out += ", ";
    out += traits.name;
  }
  return out;
}

namespace detail {

inline std::uint64_t load_le(const std::byte* p, std::size_t n) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < n; ++i) v |= static_cast<std::uint64_t>(p[i]) << (8 * i);
  return v;
}

inline unsigned byte_at(const std::byte* p, std::size_t i) { return static_cast<unsigned>(p[i]); }

/// IEEE 754 binary16 to float, exactly (every half is a float).
inline float half_to_float(std::uint16_t bits) {
  const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x8000u) << 16;
  const std::uint32_t exponent = (bits >> 10) & 0x1Fu;
  const std::uint32_t mantissa = bits & 0x3FFu;
  if (exponent == 0x1F) return std::bit_cast<float>(sign | 0x7F800000u | (mantissa << 13));  // Inf, NaN
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24
    const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
    return sign != 0 ? -magnitude : magnitude;
  }
  return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

inline float half_at(const std::byte* p) { return half_to_float(static_cast<std::uint16_t>(load_le(p, 2))); }

// The 6-bit scale and min of sub-block j of a Q4_K / Q5_K super-block, packed in 12 bytes: bytes 0-3
// hold scales 0-3 (low 6 bits) and the top 2 bits of scales 4-7, bytes 4-7 the same for the mins,
// bytes 8-11 the low 4 bits of scales 4-7 (low nibble) and mins 4-7 (high nibble).
inline void scale_min_k4(int j, const std::byte* q, float& scale, float& min) {
  const auto at = [&](int i) { return byte_at(q, static_cast<std::size_t>(i)); };
  if (j < 4) {
    scale = static_cast<float>(at(j) & 63);
    min = static_cast<float>(at(j + 4) & 63);
  } else {
    scale = static_cast<float>((at(j + 4) & 0xF) | ((at(j - 4) >> 6) << 4));
    min = static_cast<float>((at(j + 4) >> 4) | ((at(j) >> 6) << 4));
  }
}

// One block of each type: `in` holds type_size bytes, `out` receives block_size floats.

inline void element_f32(const std::byte* in, float* out) {
  *out = std::bit_cast<float>(static_cast<std::uint32_t>(load_le(in, 4)));
}

// BF16 is the top half of a float.
inline void element_bf16(const std::byte* in, float* out) {
  *out = std::bit_cast<float>(static_cast<std::uint32_t>(load_le(in, 2) << 16));
}

// Q4_0: f16 d, 16 bytes of nibbles; element j is the low nibble of byte j, element j + 16 the high
// one; x = (q - 8) d.
inline void block_q4_0(const std::byte* in, float* out) {
  const float d = half_at(in);
  for (std::size_t j = 0; j < 16; ++j) {
    const unsigned q = byte_at(in, 2 + j);
    out[j] = static_cast<float>(static_cast<int>(q & 0xF) - 8) * d;
    out[j + 16] = static_cast<float>(static_cast<int>(q >> 4) - 8) * d;
  }
}

// Q4_1: f16 d, f16 m, 16 bytes of nibbles; x = q d + m.
inline void block_q4_1(const std::byte* in, float* out) {
  const float d = half_at(in), m = half_at(in + 2);
  for (std::size_t j = 0; j < 16; ++j) {
    const unsigned q = byte_at(in, 4 + j);
    out[j] = static_cast<float>(q & 0xF) * d + m;
    out[j + 16] = static_cast<float>(q >> 4) * d + m;
  }
}

// Q5_0 / Q5_1: as Q4_0 / Q4_1 with a fifth bit per element in a little-endian u32 (bit j for
// element j); Q5_0 is centred on 16.
inline void block_q5(const std::byte* in, float* out, bool has_min) {
  const float d = half_at(in), m = has_min ? half_at(in + 2) : 0.0f;
  const std::byte* rest = in + (has_min ? 4 : 2);
  const auto high_bits = static_cast<std::uint32_t>(load_le(rest, 4));
  const int offset = has_min ? 0 : 16;
  for (std::size_t j = 0; j < 16; ++j) {
    const unsigned q = byte_at(rest, 4 + j);
    const auto low = static_cast<int>((q & 0xF) | (((high_bits >> j) & 1u) << 4)) - offset;
    const auto high = static_cast<int>((q >> 4) | (((high_bits >> (j + 16)) & 1u) << 4)) - offset;
    out[j] = has_min ? static_cast<float>(low) * d + m : static_cast<float>(low) * d;
    out[j + 16] = has_min ? static_cast<float>(high) * d + m : static_cast<float>(high) * d;
  }
}

// Q8_0: f16 d, 32 signed bytes; x = q d.
inline void block_q8_0(const std::byte* in, float* out) {
  const float d = half_at(in);
  for (std::size_t j = 0; j < 32; ++j)
    out[j] = static_cast<float>(static_cast<std::int8_t>(static_cast<std::uint8_t>(in[2 + j]))) * d;
}

// Q4_K / Q5_K: f16 d, f16 dmin, 12 bytes of 6-bit scales and mins, (Q5_K: 32 bytes of fifth bits),
// 128 bytes of nibbles. Eight sub-blocks of 32; per 64 elements, 32 low nibbles then 32 high ones;
// x = (d scale) q - (dmin min). Q5_K's fifth bit of chunk c's low / high half is bit 2c / 2c + 1 of
// byte l of the high-bit array.
inline void block_q45_k(const std::byte* in, float* out, bool five_bits) {
  const float d = half_at(in), dmin = half_at(in + 2);
  const std::byte* scales = in + 4;
  const std::byte* high = in + 16;
  const std::byte* q = in + (five_bits ? 48 : 16);
  for (int chunk = 0; chunk < 4; ++chunk) {
    float scale_lo = 0, min_lo = 0, scale_hi = 0, min_hi = 0;
    scale_min_k4(2 * chunk, scales, scale_lo, min_lo);
    scale_min_k4(2 * chunk + 1, scales, scale_hi, min_hi);
    const float d_lo = d * scale_lo, m_lo = dmin * min_lo, d_hi = d * scale_hi, m_hi = dmin * min_hi;
    for (std::size_t l = 0; l < 32; ++l) {
      const unsigned byte = byte_at(q, l);
      unsigned lo = byte & 0xF, hi = byte >> 4;
      if (five_bits) {
        lo += ((byte_at(high, l) >> (2 * chunk)) & 1u) << 4;
        hi += ((byte_at(high, l) >> (2 * chunk + 1)) & 1u) << 4;
      }
      out[l] = d_lo * static_cast<float>(lo) - m_lo;
      out[l + 32] = d_hi * static_cast<float>(hi) - m_hi;
    }
    q += 32;
    out += 64;
  }
}

// Q6_K: 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 signed 8-bit scales, f16 d. Per 128
// elements, four runs of 32 take the low / high nibbles of ql[l] and ql[l + 32] and bit pairs 0-1,
// 2-3, 4-5, 6-7 of qh[l]; x = (d scale) (q - 32), the scale changing every 16 elements.
inline void block_q6_k(const std::byte* in, float* out) {
  const std::byte* ql = in;
  const std::byte* qh = in + 128;
  const std::byte* scales = in + 192;
  const float d = half_at(in + 208);
  const auto scale = [&](std::size_t i) {
    return static_cast<float>(static_cast<std::int8_t>(static_cast<std::uint8_t>(scales[i])));
  };
  for (std::size_t half = 0; half < 2; ++half) {
    for (std::size_t l = 0; l < 32; ++l) {
      const std::size_t s = l / 16;
      const unsigned a = byte_at(ql, l), b = byte_at(ql, l + 32), h = byte_at(qh, l);
      const auto q1 = static_cast<float>(static_cast<int>((a & 0xF) | ((h & 3u) << 4)) - 32);
      const auto q2 = static_cast<float>(static_cast<int>((b & 0xF) | (((h >> 2) & 3u) << 4)) - 32);
      const auto q3 = static_cast<float>(static_cast<int>((a >> 4) | (((h >> 4) & 3u) << 4)) - 32);
      const auto q4 = static_cast<float>(static_cast<int>((b >> 4) | (((h >> 6) & 3u) << 4)) - 32);
      out[l] = d * scale(s) * q1;
      out[l + 32] = d * scale(s + 2) * q2;
      out[l + 64] = d * scale(s + 4) * q3;
      out[l + 96] = d * scale(s + 6) * q4;
    }
    ql += 64;
    qh += 32;
    scales += 8;
    out += 128;
  }
}

}  // namespace detail

/// Dequantizes `out.size()` elements of `type` stored in `bytes` (out.size() / block_size whole
/// blocks). Throws config_error for a type dequantize does not support and shape_error when the
/// sizes disagree.
inline void dequantize(ggml_type type, std::span<const std::byte> bytes, std::span<float> out) {
  const auto& traits = traits_of(type);
  GRPO_CHECK(traits.dequantizable, config_error, "ggml type ", traits.name,
             ": dequantization is not supported (supported: ", dequantizable_type_names(), ")");
  GRPO_CHECK(out.size() % traits.block_size == 0, shape_error, "dequantize: ", out.size(), " elements of ",
             traits.name, " are not a whole number of ", traits.block_size, "-element blocks");
  GRPO_CHECK(out.size() / traits.block_size * traits.type_size == bytes.size(), shape_error, "dequantize: ",
             out.size(), " elements of ", traits.name, " need ", out.size() / traits.block_size * traits.type_size,
             " bytes, got ", bytes.size());
  const std::size_t n_blocks = out.size() / traits.block_size;
  const auto each_block = [&](auto&& decode_block) {
    for (std::size_t b = 0; b < n_blocks; ++b)
      decode_block(bytes.data() + b * traits.type_size, out.data() + b * traits.block_size);
  };
  switch (type) {
    case ggml_type::f32: each_block(detail::element_f32); break;
    case ggml_type::f16: each_block([](const std::byte* in, float* y) { *y = detail::half_at(in); }); break;
    case ggml_type::bf16: each_block(detail::element_bf16); break;
    case ggml_type::q4_0: each_block(detail::block_q4_0); break;
    case ggml_type::q4_1: each_block(detail::block_q4_1); break;
    case ggml_type::q5_0: each_block([](const std::byte* in, float* y) { detail::block_q5(in, y, false); }); break;
    case ggml_type::q5_1: each_block([](const std::byte* in, float* y) { detail::block_q5(in, y, true); }); break;
    case ggml_type::q8_0: each_block(detail::block_q8_0); break;
    case ggml_type::q4_k: each_block([](const std::byte* in, float* y) { detail::block_q45_k(in, y, false); }); break;
    case ggml_type::q5_k: each_block([](const std::byte* in, float* y) { detail::block_q45_k(in, y, true); }); break;
    case ggml_type::q6_k: each_block(detail::block_q6_k); break;
    default: break;  // not dequantizable: rejected above
  }
}

/// One tensor of a file; `data` is a view into the file object, valid while that object lives.
struct tensor_info {
  std::string name;
  std::vector<std::uint64_t> dims;  ///< ggml order: dims[0] is the row length (fastest varying)
  ggml_type type = ggml_type::f32;
  std::uint64_t offset = 0;  ///< from the start of the data section
  std::uint64_t n_elements = 0;
  std::span<const std::byte> data;

  /// The row-major shape (dims reversed), as numpy and Hugging Face list it: an HF [out, in]
  /// matrix is stored with dims [in, out].
  std::vector<std::int64_t> shape() const {
    return std::vector<std::int64_t>(dims.rbegin(), dims.rend());
  }
};

/// A parsed GGUF file, owning its bytes. Move-only: tensors view the owned image.
class file {
 public:
  /// Largest number of dimensions a tensor may have (GGML_MAX_DIMS).
  static constexpr std::uint32_t max_dims = 4;
  /// Deepest nesting of arrays accepted, so a hostile file cannot exhaust the stack.
  static constexpr int max_array_depth = 16;

  /// Reads and parses the file at `path` (io_error naming the path when it cannot be read).
  static file read(const std::filesystem::path& path) {
    const std::string name = path.string();
    std::error_code ec;
    GRPO_CHECK(!std::filesystem::is_directory(path, ec), io_error, name, ": is a directory, not a GGUF file");
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    GRPO_CHECK(in.good(), io_error, name, ": cannot open for reading");
    const std::streamoff size = in.tellg();
    GRPO_CHECK(size >= 0, io_error, name, ": cannot determine the file size");
    std::vector<std::byte> bytes(static_cast<std::size_t>(size));
    in.seekg(0);
    in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size));
    GRPO_CHECK(in.good() || (size == 0 && !in.bad()), io_error, name, ": reading ", size, " bytes failed");
    return parse(std::move(bytes), name);
  }

  /// Parses a whole file image; `source` names the file in error messages. Throws io_error for a bad
  /// magic, an unsupported version, a count or length beyond what the file holds, an unknown value
  /// or ggml type, a duplicate key or tensor name, a bad general.alignment, more than four dims, dims
  /// whose element count overflows or whose row length is not a whole number of blocks, and tensor
  /// data that is unaligned, overlapping or past the end of the file.
  static file parse(std::vector<std::byte>&& bytes, std::string source = "gguf") {
    file f;
    f.bytes_ = std::move(bytes);
    f.source_ = std::move(source);
    f.parse_image();
    return f;
  }

  file(file&&) noexcept = default;
  file& operator=(file&&) noexcept = default;
  file(const file&) = delete;
  file& operator=(const file&) = delete;

  const std::string& source() const { return source_; }
  std::uint32_t version() const { return version_; }
  std::uint64_t alignment() const { return alignment_; }
  /// Where the data section starts in the file.
  std::uint64_t data_offset() const { return data_offset_; }

  /// Every key and value, in file order.
  const std::vector<std::pair<std::string, value>>& metadata() const { return metadata_; }
  const value* find(std::string_view key) const {
    const auto it = key_index_.find(key);
    return it == key_index_.end() ? nullptr : &metadata_[it->second].second;
  }
  bool contains(std::string_view key) const { return find(key) != nullptr; }

  /// Typed getters: io_error naming the file and key when the key is missing or of another type.
  /// get_uint takes any integer type holding a non-negative value, get_int any integer type that
  /// fits int64, get_float float32 or float64.
  std::uint64_t get_uint(std::string_view key) const { return as_uint(at(key), key); }
  std::int64_t get_int(std::string_view key) const { return as_int(at(key), key); }
  double get_float(std::string_view key) const { return as_float(at(key), key); }
  bool get_bool(std::string_view key) const { return expect(at(key), key, value_type::boolean).boolean; }
  const std::string& get_string(std::string_view key) const {
    return expect(at(key), key, value_type::string).text;
  }
  /// An array of strings.
  std::vector<std::string> get_string_array(std::string_view key) const {
    const value& v = expect_array(key, value_type::string);
    std::vector<std::string> out;
    out.reserve(v.items.size());
    for (const auto& item : v.items) out.push_back(item.text);
    return out;
  }
  /// An array of any integer type.
  std::vector<std::int64_t> get_int_array(std::string_view key) const {
    const value& v = expect_array(key, value_type::array);
    std::vector<std::int64_t> out;
    out.reserve(v.items.size());
    for (std::size_t i = 0; i < v.items.size(); ++i)
      out.push_back(as_int(v.items[i], concat_key(key, i)));
    return out;
  }

  /// Every tensor, in file order.
  const std::vector<tensor_info>& tensors() const { return tensors_; }
  const tensor_info* find_tensor(std::string_view name) const {
    const auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
  }
  /// io_error naming the file and tensor when there is no such tensor.
  const tensor_info& tensor(std::string_view name) const {
    const auto* t = find_tensor(name);
    GRPO_CHECK(t != nullptr, io_error, source_, ": tensor '", name, "' is missing");
    return *t;
  }

  /// The tensor's elements as floats, in row-major order of shape(). config_error naming the file
  /// and tensor for a type that cannot be dequantized.
  std::vector<float> dequantize(const tensor_info& t) const {
    const auto& traits = traits_of(t.type);
    GRPO_CHECK(traits.dequantizable, config_error, source_, ": tensor '", t.name, "': ggml type ", traits.name,
               " cannot be dequantized (supported: ", dequantizable_type_names(), ")");
    std::vector<float> out(static_cast<std::size_t>(t.n_elements));
    gguf::dequantize(t.type, t.data, out);
    return out;
  }
  std::vector<float> dequantize(std::string_view name) const { return dequantize(tensor(name)); }

  /// As dequantize, widened to double (exactly).
  std::vector<double> to_doubles(const tensor_info& t) const {
    const auto floats = dequantize(t);
    return std::vector<double>(floats.begin(), floats.end());
  }

 private:
  std::vector<std::byte> bytes_;
  std::string source_;
  std::uint32_t version_ = 0;
  std::uint64_t alignment_ = 32;
  std::uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, value>> metadata_;
  std::map<std::string, std::size_t, std::less<>> key_index_;
  std::vector<tensor_info> tensors_;
  std::map<std::string, std::size_t, std::less<>> tensor_index_;
  std::vector<std::uint64_t> n_bytes_;  // per tensor, while parsing
  std::size_t pos_ = 0;

  file() = default;

  template <class... Parts>
  [[noreturn]] void fail(Parts&&... parts) const {
    grpo::detail::fail<io_error>(source_, ": ", std::forward<Parts>(parts)...);
  }

  static std::string concat_key(std::string_view key, std::size_t index) {
    return grpo::detail::concat(key, '[', index, ']');
  }

  const value& at(std::string_view key) const {
    const value* v = find(key);
    if (v == nullptr) fail("metadata key '", key, "' is missing");
    return *v;
  }

  const value& expect(const value& v, std::string_view key, value_type type) const {
    if (v.type != type) fail("metadata key '", key, "': expected ", name_of(type), ", got ", name_of(v.type));
    return v;
  }

  // An array whose items are of `element` (value_type::array standing for "any integer type").
  const value& expect_array(std::string_view key, value_type element) const {
    const value& v = expect(at(key), key, value_type::array);
    const bool integer = is_integer(v.element_type);
    if (element == value_type::array ? !integer : v.element_type != element)
      fail("metadata key '", key, "': expected an array of ",
           element == value_type::array ? std::string_view("integers") : name_of(element), ", got an array of ",
           name_of(v.element_type));
    return v;
  }

  static bool is_integer(value_type t) {
    return t == value_type::uint8 || t == value_type::uint16 || t == value_type::uint32 || t == value_type::uint64 ||
           t == value_type::int8 || t == value_type::int16 || t == value_type::int32 || t == value_type::int64;
  }
  static bool is_signed(value_type t) {
    return t == value_type::int8 || t == value_type::int16 || t == value_type::int32 || t == value_type::int64;
  }

  std::uint64_t as_uint(const value& v, std::string_view key) const {
    if (!is_integer(v.type)) fail("metadata key '", key, "': expected an integer, got ", name_of(v.type));
    if (is_signed(v.type) && v.signed_integer < 0)
      fail("metadata key '", key, "': expected a non-negative integer, got ", v.signed_integer);
    return is_signed(v.type) ? static_cast<std::uint64_t>(v.signed_integer) : v.unsigned_integer;
  }

  std::int64_t as_int(const value& v, std::string_view key) const {
    if (!is_integer(v.type)) fail("metadata key '", key, "': expected an integer, got ", name_of(v.type));
    if (!is_signed(v.type) && v.unsigned_integer > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      fail("metadata key '", key, "': ", v.unsigned_integer, " does not fit int64");
    return is_signed(v.type) ? v.signed_integer : static_cast<std::int64_t>(v.unsigned_integer);
  }

  double as_float(const value& v, std::string_view key) const {
    if (v.type != value_type::float32 && v.type != value_type::float64)
      fail("metadata key '", key, "': expected float32 or float64, got ", name_of(v.type));
    return v.real;
  }

  // --- Parsing -----------------------------------------------------------------------------------

  std::size_t remaining() const { return bytes_.size() - pos_; }

  const std::byte* take(std::size_t n, std::string_view what) {
    if (remaining() < n)
      fail(what, ": the file ends at byte ", bytes_.size(), ", ", n - remaining(), " bytes short (truncated file?)");
    const std::byte* p = bytes_.data() + pos_;
    pos_ += n;
    return p;
  }
  std::uint64_t read_le(std::size_t n, std::string_view what) { return detail::load_le(take(n, what), n); }

  std::string read_string(std::string_view what) {
    const std::uint64_t length = read_le(8, what);
    if (length > remaining())
      fail(what, ": string length ", length, " is past the end of the file (", remaining(), " bytes left)");
    const auto* p = reinterpret_cast<const char*>(take(static_cast<std::size_t>(length), what));
    return std::string(p, static_cast<std::size_t>(length));
  }

  // Smallest encoding of one item of `type`, to bound counts by the bytes left before allocating.
  static std::size_t min_size(value_type type) {
    switch (type) {
      case value_type::uint8: case value_type::int8: case value_type::boolean: return 1;
      case value_type::uint16: case value_type::int16: return 2;
      case value_type::uint32: case value_type::int32: case value_type::float32: return 4;
      case value_type::string: case value_type::uint64: case value_type::int64: case value_type::float64: return 8;
      case value_type::array: return 12;
    }
    return 1;
  }

  value_type read_value_type(std::string_view what) {
    const auto id = static_cast<std::uint32_t>(read_le(4, what));
    if (id > static_cast<std::uint32_t>(value_type::float64)) fail(what, ": unknown value type ", id);
    return static_cast<value_type>(id);
  }

  // `path` names the value in messages ("metadata key 'x'[3]"); items extend it while they are read.
  value read_value(value_type type, std::string& path, int depth) {
    value v;
    v.type = type;
    const auto sign_extend = [](std::uint64_t bits, int width) {
      const std::uint64_t sign = std::uint64_t{1} << (width - 1);
      return static_cast<std::int64_t>((bits ^ sign) - sign);
    };
    switch (type) {
      case value_type::uint8: v.unsigned_integer = read_le(1, path); break;
      case value_type::uint16: v.unsigned_integer = read_le(2, path); break;
      case value_type::uint32: v.unsigned_integer = read_le(4, path); break;
      case value_type::uint64: v.unsigned_integer = read_le(8, path); break;
      case value_type::int8: v.signed_integer = sign_extend(read_le(1, path), 8); break;
      case value_type::int16: v.signed_integer = sign_extend(read_le(2, path), 16); break;
      case value_type::int32: v.signed_integer = sign_extend(read_le(4, path), 32); break;
      case value_type::int64: v.signed_integer = static_cast<std::int64_t>(read_le(8, path)); break;
      case value_type::float32: v.real = std::bit_cast<float>(static_cast<std::uint32_t>(read_le(4, path))); break;
      case value_type::float64: v.real = std::bit_cast<double>(read_le(8, path)); break;
      case value_type::boolean: {
        const std::uint64_t b = read_le(1, path);
        if (b > 1) fail(path, ": bool value ", b, " (expected 0 or 1)");
        v.boolean = b == 1;
        break;
      }
      case value_type::string: v.text = read_string(path); break;
      case value_type::array: {
        if (depth >= max_array_depth) fail(path, ": arrays nested deeper than ", max_array_depth, " levels");
        v.element_type = read_value_type(path + " array element type");
        const std::uint64_t count = read_le(8, path + " array length");
        if (count > remaining() / min_size(v.element_type))
          fail(path, ": array of ", count, " ", name_of(v.element_type), " items cannot fit in the ", remaining(),
               " bytes left");
        v.items.reserve(static_cast<std::size_t>(count));
        const std::size_t path_length = path.size();
        for (std::uint64_t i = 0; i < count; ++i) {
          path += '[';
          path += std::to_string(i);
          path += ']';
          v.items.push_back(read_value(v.element_type, path, depth + 1));
          path.resize(path_length);
        }
        break;
      }
    }
    return v;
  }

  void parse_image() {
    if (bytes_.size() < 4 || std::memcmp(bytes_.data(), "GGUF", 4) != 0)
      fail("not a GGUF file (the first 4 bytes are not \"GGUF\")");
    pos_ = 4;
    version_ = static_cast<std::uint32_t>(read_le(4, "version"));
    if (version_ != 2 && version_ != 3) {
      if (version_ == 1) fail("version 1 is not supported (its counts are 32-bit; expected version 2 or 3)");
      if (version_ == 0x02000000u || version_ == 0x03000000u)
        fail("version field ", version_, ": a big-endian GGUF, which is not supported");
      fail("unsupported version ", version_, " (expected 2 or 3)");
    }
    const std::uint64_t n_tensors = read_le(8, "tensor count");
    const std::uint64_t n_keys = read_le(8, "metadata count");
    // A key is at least a length, a type and one byte of value; a tensor info at least a name
    // length, n_dims, a type and an offset.
    if (n_keys > remaining() / 13) fail("metadata count ", n_keys, " cannot fit in the ", remaining(), " bytes left");
    for (std::uint64_t i = 0; i < n_keys; ++i) {
      std::string key = read_string(grpo::detail::concat("metadata key ", i));
      std::string what = grpo::detail::concat("metadata key '", key, "'");
      if (key_index_.count(key) != 0) fail(what, ": duplicate key");
      const value_type type = read_value_type(what);
      value v = read_value(type, what, 0);
      key_index_.emplace(key, metadata_.size());
      metadata_.emplace_back(std::move(key), std::move(v));
    }
    if (const value* a = find("general.alignment")) {
      if (a->type != value_type::uint32)
        fail("metadata key 'general.alignment': expected uint32, got ", name_of(a->type));
      if (a->unsigned_integer == 0 || !std::has_single_bit(a->unsigned_integer))
        fail("metadata key 'general.alignment': ", a->unsigned_integer, " is not a power of two");
      alignment_ = a->unsigned_integer;
    }
    if (n_tensors > remaining() / 24)
      fail("tensor count ", n_tensors, " cannot fit in the ", remaining(), " bytes left");
    for (std::uint64_t i = 0; i < n_tensors; ++i) tensors_.push_back(read_tensor_info(i));
    data_offset_ = (pos_ + alignment_ - 1) / alignment_ * alignment_;
    place_tensors();
    n_bytes_ = {};
  }

  tensor_info read_tensor_info(std::uint64_t index) {
    tensor_info t;
    t.name = read_string(grpo::detail::concat("tensor ", index, " name"));
    const std::string what = grpo::detail::concat("tensor '", t.name, "'");
    if (tensor_index_.count(t.name) != 0) fail(what, ": duplicate tensor name");
    const auto n_dims = static_cast<std::uint32_t>(read_le(4, what + " n_dims"));
    if (n_dims == 0 || n_dims > max_dims) fail(what, ": n_dims ", n_dims, " (expected 1 to ", max_dims, ")");
    std::uint64_t n = 1;
    bool overflow = false;
    for (std::uint32_t d = 0; d < n_dims; ++d) {
      const std::uint64_t extent = read_le(8, what + " dims");
      t.dims.push_back(extent);
      if (extent != 0 && n > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) / extent)
        overflow = true;
      n *= extent;
    }
    const std::string dims = format_dims(t.dims);
    if (overflow) fail(what, ": dims ", dims, " overflow a 64-bit element count");
    const auto type_id = static_cast<std::uint32_t>(read_le(4, what + " type"));
    const ggml_type_traits* traits = find_ggml_type(type_id);
    if (traits == nullptr) fail(what, ": unknown ggml type ", type_id);
    t.type = traits->type;
    t.offset = read_le(8, what + " offset");
    if (t.dims[0] % traits->block_size != 0)
      fail(what, ": row length dims[0] = ", t.dims[0], " is not a multiple of the ", traits->name, " block size ",
           traits->block_size);
    t.n_elements = n;
    const std::uint64_t n_blocks = n / traits->block_size;
    if (n_blocks > std::numeric_limits<std::uint64_t>::max() / traits->type_size)
      fail(what, ": dims ", dims, " of ", traits->name, " overflow a 64-bit byte count");
    n_bytes_.push_back(n_blocks * traits->type_size);
    tensor_index_.emplace(t.name, tensors_.size());
    return t;
  }

  // Checks every tensor's data against the data section and points it into the image.
  void place_tensors() {
    // The data section must start inside the file even when every tensor is empty (found by fuzz_gguf: a file cut
    // inside the alignment padding left empty tensors pointing past the image).
    if (!tensors_.empty() && data_offset_ > bytes_.size())
      fail("the data section starts at byte ", data_offset_, ", past the end of the ", bytes_.size(),
           "-byte file (truncated file?)");
    const std::uint64_t section = bytes_.size() - std::min<std::uint64_t>(data_offset_, bytes_.size());
    std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;  // [begin, end) per tensor index
    for (std::size_t i = 0; i < tensors_.size(); ++i) {
      auto& t = tensors_[i];
      const auto& traits = traits_of(t.type);
      const std::uint64_t n_bytes = n_bytes_[i];
      const std::string what = grpo::detail::concat("tensor '", t.name, "'");
      if (t.offset % alignment_ != 0)
        fail(what, ": offset ", t.offset, " is not a multiple of the alignment ", alignment_);
      if (t.offset > section || n_bytes > section - t.offset)
        fail(what, ": data [", t.offset, ", ", t.offset + n_bytes, ") of ", traits.name, " ", format_dims(t.dims),
             " is past the end of the ", section, "-byte data section (truncated file?)");
      t.data = std::span<const std::byte>(bytes_.data() + data_offset_ + t.offset, static_cast<std::size_t>(n_bytes));
      ranges.emplace_back(t.offset, t.offset + n_bytes);
    }
    std::vector<std::size_t> order(tensors_.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return ranges[a] < ranges[b]; });
    std::uint64_t covered_end = 0;  // furthest end of the tensors sorted before
    std::size_t covered_by = 0;
    for (const std::size_t k : order) {
      const auto [begin, end] = ranges[k];
      if (begin == end) continue;
      if (begin < covered_end)
        fail("tensor '", tensors_[k].name, "': data [", begin, ", ", end, ") overlaps tensor '",
             tensors_[covered_by].name, "', which ends at ", covered_end);
      covered_end = end;
      covered_by = k;
    }
  }

  static std::string format_dims(const std::vector<std::uint64_t>& dims) {
    std::string out = "[";
    for (std::size_t i = 0; i < dims.size(); ++i) out += grpo::detail::concat(i ? "," : "", dims[i]);
    return out + "]";
  }
};

}  // namespace grpo::hf::gguf
