// SPDX-License-Identifier: Apache-2.0
// grpo/safetensors.hpp: reading and writing safetensors files (format of huggingface/safetensors),
// the interchange format of grpo's command-line tool and checkpoints. Layout: an 8-byte
// little-endian u64 N, N bytes of UTF-8 JSON {name: {"dtype", "shape", "data_offsets": [begin,
// end)}, "__metadata__": {string: string}}, then the little-endian row-major byte buffer.
// Reading validates everything the format promises (header size, strict JSON, sizes by checked
// arithmetic, exact non-overlapping coverage of the buffer), so a truncated or hostile file is an
// io_error, never an out-of-bounds read. Writing is deterministic (sorted names) and atomic.
// Not a memory-mapped or lazy reader: the whole file is read into memory.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "grpo/detail/json.hpp"
#include "grpo/error.hpp"

// fsync and an exclusive create are POSIX; elsewhere the atomic write falls back to the standard
// library (still write-then-rename, but without the fsync).
#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#endif

namespace grpo::safetensors {

/// Element types of the format, by their names in the header ("F32", "BF16", "BOOL", ...).
/// F8_E4M3 is the "fn" variant (no infinities, S.1111.111 is NaN); F8_E5M2 follows IEEE rules.
enum class dtype { f64, f32, f16, bf16, f8_e4m3, f8_e5m2, i64, i32, i16, i8, u64, u32, u16, u8, boolean };

namespace detail {

struct dtype_info {
  safetensors::dtype type;
  std::string_view name;
  std::size_t size;
};

inline constexpr std::array<dtype_info, 15> dtype_table{{{dtype::f64, "F64", 8},
                                                         {dtype::f32, "F32", 4},
                                                         {dtype::f16, "F16", 2},
                                                         {dtype::bf16, "BF16", 2},
                                                         {dtype::f8_e4m3, "F8_E4M3", 1},
                                                         {dtype::f8_e5m2, "F8_E5M2", 1},
                                                         {dtype::i64, "I64", 8},
                                                         {dtype::i32, "I32", 4},
                                                         {dtype::i16, "I16", 2},
                                                         {dtype::i8, "I8", 1},
                                                         {dtype::u64, "U64", 8},
                                                         {dtype::u32, "U32", 4},
                                                         {dtype::u16, "U16", 2},
                                                         {dtype::u8, "U8", 1},
                                                         {dtype::boolean, "BOOL", 1}}};

inline const dtype_info& info(dtype type) {
  for (const auto& entry : dtype_table)
    if (entry.type == type) return entry;
  grpo::detail::fail<config_error>("dtype: unknown value ", static_cast<int>(type));
}

}  // namespace detail

/// The header name of a dtype ("F32").
inline std::string_view name_of(dtype type) { return detail::info(type).name; }

/// Bytes per element.
inline std::size_t size_of(dtype type) { return detail::info(type).size; }

/// The dtype with this header name, or nullopt (names are case-sensitive, as in the format).
inline std::optional<dtype> dtype_from_name(std::string_view name) {
  for (const auto& entry : detail::dtype_table)
    if (entry.name == name) return entry.type;
  return std::nullopt;
}

inline bool is_floating_point(dtype type) {
  return type == dtype::f64 || type == dtype::f32 || type == dtype::f16 || type == dtype::bf16 ||
         type == dtype::f8_e4m3 || type == dtype::f8_e5m2;
}

/// Headers longer than this are rejected before any parsing (the format's own reader uses the same
/// 100 MB cap), so a corrupt length cannot make the reader allocate or scan gigabytes.
inline constexpr std::uint64_t max_header_size = 100'000'000;

/// One tensor of a file: its bytes are a view into the file object, valid while that object lives.
struct tensor_view {
  std::string name;
  safetensors::dtype type = dtype::f32;
  std::vector<std::int64_t> shape;  ///< empty for a 0-d scalar
  std::span<const std::byte> data;  ///< numel() * size_of(type) bytes, little-endian, row-major

  /// Product of the shape (1 for a 0-d scalar, 0 when any extent is 0).
  std::int64_t numel() const {
    // In unsigned arithmetic: before a zero extent the others may multiply past 2^63 ([2^62, 2^62,
    // 0] holds no bytes), which would be undefined for a signed product.
    std::uint64_t n = 1;
    bool empty = false;
    for (const auto d : shape) {
      n *= static_cast<std::uint64_t>(d);
      empty = empty || d == 0;
    }
    return empty ? 0 : static_cast<std::int64_t>(n);
  }
};

/// "[2,3]" (and "[]" for a scalar), as shapes are printed in messages.
inline std::string to_string(std::span<const std::int64_t> shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ',';
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

namespace detail {

using grpo::detail::concat;
using grpo::detail::fail;

inline std::uint64_t load_le(const std::byte* p, std::size_t n) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < n; ++i) v |= static_cast<std::uint64_t>(p[i]) << (8 * i);
  return v;
}

inline void store_le(std::uint64_t v, std::size_t n, std::byte* out) {
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::byte>((v >> (8 * i)) & 0xFF);
}

/// Value of a binary floating-point encoding with the given field widths (sign bit on top). With
/// has_infinity (IEEE 754 rules) an all-ones exponent is Inf/NaN; without it (F8_E4M3 "fn") only
/// the all-ones pattern is NaN and the rest of that binade holds finite values.
inline double decode_float(std::uint64_t bits, int exponent_bits, int mantissa_bits, bool has_infinity) {
  const std::uint64_t exponent_mask = (std::uint64_t{1} << exponent_bits) - 1;
  const std::uint64_t mantissa_mask = (std::uint64_t{1} << mantissa_bits) - 1;
  const bool negative = ((bits >> (exponent_bits + mantissa_bits)) & 1) != 0;
  const std::uint64_t e = (bits >> mantissa_bits) & exponent_mask;
  const std::uint64_t m = bits & mantissa_mask;
  const int bias = (1 << (exponent_bits - 1)) - 1;
  double magnitude = 0.0;
  if (has_infinity && e == exponent_mask) {
    if (m != 0) return std::numeric_limits<double>::quiet_NaN();
    magnitude = std::numeric_limits<double>::infinity();
  } else if (!has_infinity && e == exponent_mask && m == mantissa_mask) {
    return std::numeric_limits<double>::quiet_NaN();
  } else if (e == 0) {
    magnitude = std::ldexp(static_cast<double>(m), 1 - bias - mantissa_bits);
  } else {
    magnitude = std::ldexp(static_cast<double>(m | (mantissa_mask + 1)), static_cast<int>(e) - bias - mantissa_bits);
  }
  return negative ? -magnitude : magnitude;
}

/// Round half to even of a non-negative value below 2^52 (exact in double), independent of the
/// floating-point environment's rounding mode.
inline double round_half_even(double v) {
  double r = std::floor(v);
  const double fraction = v - r;
  if (fraction > 0.5 || (fraction == 0.5 && std::fmod(r, 2.0) != 0.0)) r += 1.0;
  return r;
}

/// IEEE 754 encoding of x with the given field widths, rounded to nearest even: F32 (8, 23),
/// F16 (5, 10), BF16 (8, 7). Overflow gives Inf, NaN a quiet NaN, both keeping the sign.
inline std::uint64_t encode_float(double x, int exponent_bits, int mantissa_bits) {
  const std::uint64_t sign = std::signbit(x) ? std::uint64_t{1} << (exponent_bits + mantissa_bits) : 0;
  const std::uint64_t exponent_all = (std::uint64_t{1} << exponent_bits) - 1;
  const std::uint64_t one = std::uint64_t{1} << mantissa_bits;
  const std::uint64_t infinity = exponent_all << mantissa_bits;
  if (std::isnan(x)) return sign | infinity | (one >> 1);
  const double a = std::fabs(x);
  if (std::isinf(a)) return sign | infinity;
  const int bias = (1 << (exponent_bits - 1)) - 1;
  const int e_min = 1 - bias;
  if (a < std::ldexp(1.0, e_min)) {
    // Subnormal range: a multiple of 2^(e_min - mantissa_bits); rounding up to `one` lands exactly
    // on the smallest normal's encoding.
    return sign | static_cast<std::uint64_t>(round_half_even(std::ldexp(a, mantissa_bits - e_min)));
  }
  int e = std::ilogb(a);
  auto q = static_cast<std::uint64_t>(round_half_even(std::ldexp(a, mantissa_bits - e)));
  if (q == 2 * one) {  // the mantissa rounded up into the next binade
    q = one;
    ++e;
  }
  if (e > bias) return sign | infinity;
  return sign | (static_cast<std::uint64_t>(e + bias) << mantissa_bits) | (q - one);
}

inline double decode_element(const std::byte* p, dtype type) {
  switch (type) {
    case dtype::f64: return std::bit_cast<double>(load_le(p, 8));
    case dtype::f32: return static_cast<double>(std::bit_cast<float>(static_cast<std::uint32_t>(load_le(p, 4))));
    case dtype::f16: return decode_float(load_le(p, 2), 5, 10, true);
    case dtype::bf16: return decode_float(load_le(p, 2), 8, 7, true);
    case dtype::f8_e4m3: return decode_float(load_le(p, 1), 4, 3, false);
    case dtype::f8_e5m2: return decode_float(load_le(p, 1), 5, 2, true);
    case dtype::i64: return static_cast<double>(static_cast<std::int64_t>(load_le(p, 8)));
    case dtype::i32: return static_cast<double>(static_cast<std::int32_t>(load_le(p, 4)));
    case dtype::i16: return static_cast<double>(static_cast<std::int16_t>(load_le(p, 2)));
    case dtype::i8: return static_cast<double>(static_cast<std::int8_t>(load_le(p, 1)));
    case dtype::u64: return static_cast<double>(load_le(p, 8));
    case dtype::u32:
    case dtype::u16:
    case dtype::u8:
    case dtype::boolean: return static_cast<double>(load_le(p, size_of(type)));
  }
  fail<config_error>("dtype: unknown value ", static_cast<int>(type));
}

/// Bit pattern of an integer-valued x in an integer dtype, or nullopt when x is not an integer in
/// the dtype's range (BOOL: 0 or 1).
inline std::optional<std::uint64_t> encode_integer(double x, dtype type) {
  if (!std::isfinite(x) || x != std::floor(x)) return std::nullopt;
  const auto in = [&](double lo, double hi_exclusive) { return x >= lo && x < hi_exclusive; };
  switch (type) {
    case dtype::i64:
      if (!in(-0x1p63, 0x1p63)) return std::nullopt;
      return static_cast<std::uint64_t>(static_cast<std::int64_t>(x));
    case dtype::i32:
      if (!in(-0x1p31, 0x1p31)) return std::nullopt;
      return static_cast<std::uint32_t>(static_cast<std::int32_t>(x));
    case dtype::i16:
      if (!in(-0x1p15, 0x1p15)) return std::nullopt;
      return static_cast<std::uint16_t>(static_cast<std::int16_t>(x));
    case dtype::i8:
      if (!in(-0x1p7, 0x1p7)) return std::nullopt;
      return static_cast<std::uint8_t>(static_cast<std::int8_t>(x));
    case dtype::u64:
      if (!in(0.0, 0x1p64)) return std::nullopt;
      return static_cast<std::uint64_t>(x);
    case dtype::u32:
      if (!in(0.0, 0x1p32)) return std::nullopt;
      return static_cast<std::uint64_t>(x);
    case dtype::u16:
      if (!in(0.0, 0x1p16)) return std::nullopt;
      return static_cast<std::uint64_t>(x);
    case dtype::u8:
      if (!in(0.0, 0x1p8)) return std::nullopt;
      return static_cast<std::uint64_t>(x);
    case dtype::boolean:
      if (x != 0.0 && x != 1.0) return std::nullopt;
      return static_cast<std::uint64_t>(x);
    default: return std::nullopt;
  }
}

/// n_bytes = (product of shape) * element_size, or nullopt on u64 overflow. Any zero extent makes
/// the product 0, whatever the other extents are.
inline std::optional<std::uint64_t> checked_byte_count(std::span<const std::uint64_t> shape,
                                                       std::uint64_t element_size) {
  if (std::find(shape.begin(), shape.end(), std::uint64_t{0}) != shape.end()) return 0;
  std::uint64_t n = element_size;
  for (const auto d : shape) {
    if (n > std::numeric_limits<std::uint64_t>::max() / d) return std::nullopt;
    n *= d;
  }
  return n;
}

inline std::string format_dims(std::span<const std::uint64_t> shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ',';
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

inline std::string dtype_names() {
  std::string out;
  for (const auto& entry : dtype_table) {
    if (!out.empty()) out += ", ";
    out += entry.name;
  }
  return out;
}

}  // namespace detail

/// Every element as a double: floating-point types exactly (F16, BF16 and F8 widen exactly),
/// integers exactly up to 2^53 in magnitude and rounded to nearest beyond. BOOL bytes must be 0 or
/// 1 (io_error naming the tensor and element otherwise).
inline std::vector<double> to_doubles(const tensor_view& t) {
  const std::size_t size = size_of(t.type);
  GRPO_CHECK(t.data.size() == static_cast<std::size_t>(t.numel()) * size, shape_error, "tensor '", t.name,
             "': ", t.data.size(), " bytes for shape ", to_string(t.shape), " of ", name_of(t.type));
  const std::size_t count = t.data.size() / size;
  // Reserved and appended rather than sized up front: GCC 12 cannot bound `count` through the check above
  // and warns (-Wstringop-overflow) about the zero fill of std::vector<double>(count).
  std::vector<double> out;
  out.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    const std::byte* p = t.data.data() + i * size;
    if (t.type == dtype::boolean)
      GRPO_CHECK(p[0] == std::byte{0} || p[0] == std::byte{1}, io_error, "tensor '", t.name, "': element ", i,
                 " of a BOOL tensor is ", static_cast<int>(p[0]), " (expected 0 or 1)");
    out.push_back(detail::decode_element(p, t.type));
  }
  return out;
}

/// A parsed safetensors file, owning its bytes. Every tensor is validated when the file is parsed,
/// so lookups and conversions cannot read out of bounds.
class file {
 public:
  /// Parses a whole file image, copying the bytes. `source` names the file in error messages.
  /// Throws io_error when: the image is shorter than 8 bytes; the header length is above
  /// max_header_size or past the end of the image; the header is not strict JSON; it is not an
  /// object of tensors {dtype, shape, data_offsets} (exactly these fields) plus an optional
  /// "__metadata__" object of strings; a dtype is unknown; a shape entry or offset is not a
  /// non-negative integer; shape * dtype size overflows or differs from end - begin; begin > end;
  /// an offset is past the end of the buffer; two tensors overlap, leave a gap, or leave bytes at
  /// the end of the buffer; two tensors share a name.
  static file parse(std::span<const std::byte> bytes, std::string source = "safetensors") {
    return parse(std::vector<std::byte>(bytes.begin(), bytes.end()), std::move(source));
  }

  /// As above, taking ownership of the bytes without a copy.
  static file parse(std::vector<std::byte>&& bytes, std::string source = "safetensors") {
    file f;
    f.bytes_ = std::move(bytes);
    f.source_ = std::move(source);
    f.validate();
    return f;
  }

  /// As above, from the bytes held in a string.
  static file parse(std::string_view bytes, std::string source = "safetensors") {
    return parse(std::as_bytes(std::span<const char>(bytes.data(), bytes.size())), std::move(source));
  }

  /// Reads and parses a file; the path names it in error messages.
  static file read(const std::filesystem::path& path) {
    const std::string name = path.string();
    std::error_code ec;
    const bool regular = std::filesystem::is_regular_file(path, ec);
    GRPO_CHECK(regular, io_error, name, ": cannot read (", ec ? ec.message() : "not a regular file", ")");
    const auto size = std::filesystem::file_size(path, ec);
    GRPO_CHECK(!ec, io_error, name, ": cannot read (", ec.message(), ")");
    std::ifstream in(path, std::ios::binary);
    GRPO_CHECK(in.good(), io_error, name, ": cannot open for reading");
    std::vector<std::byte> bytes(static_cast<std::size_t>(size));
    in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    GRPO_CHECK(static_cast<std::uintmax_t>(in.gcount()) == size, io_error, name, ": read ", in.gcount(), " of ", size,
               " bytes");
    return parse(std::move(bytes), name);
  }

  /// The name given to parse, or the path given to read.
  const std::string& source() const { return source_; }

  /// Tensor names in sorted (byte-wise) order; "__metadata__" is not a tensor.
  const std::vector<std::string>& names() const { return names_; }

  bool contains(std::string_view name) const { return entries_.find(name) != entries_.end(); }

  /// The tensor called `name`; io_error naming it (and the file's tensors) when there is none.
  tensor_view at(std::string_view name) const {
    const auto it = entries_.find(name);
    if (it == entries_.end()) {
      std::string available;
      for (const auto& n : names_) {
        if (!available.empty()) available += ", ";
        available += n;
      }
      grpo::detail::fail<io_error>("tensor '", name, "': not found in ", source_, " (it has: ",
                                   available.empty() ? "no tensors" : available, ")");
    }
    const entry& e = it->second;
    return {it->first, e.type, e.shape, std::span<const std::byte>(bytes_).subspan(e.begin, e.end - e.begin)};
  }

  /// at(name) converted with grpo::safetensors::to_doubles.
  std::vector<double> to_doubles(std::string_view name) const { return safetensors::to_doubles(at(name)); }

  /// The "__metadata__" map (empty when the header has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  struct entry {
    dtype type = dtype::f32;
    std::vector<std::int64_t> shape;
    std::size_t begin = 0;  ///< absolute offsets into bytes_
    std::size_t end = 0;
  };

  std::vector<std::byte> bytes_;
  std::string source_;
  std::map<std::string, entry, std::less<>> entries_;
  std::vector<std::string> names_;
  std::map<std::string, std::string> metadata_;

  file() = default;

  [[noreturn]] void fail(const auto&... parts) const { grpo::detail::fail<io_error>(source_, ": ", parts...); }

  void validate() {
    namespace json = grpo::detail::json;
    const std::uint64_t size = bytes_.size();
    if (size < 8) fail("file of ", size, " bytes is shorter than the 8-byte header length (truncated file?)");
    const std::uint64_t header_size = detail::load_le(bytes_.data(), 8);
    if (header_size > max_header_size)
      fail("header length ", header_size, " exceeds the limit of ", max_header_size, " bytes");
    if (header_size > size - 8)
      fail("header length ", header_size, " exceeds the ", size - 8, " bytes after the length (truncated file?)");
    const std::string_view header(reinterpret_cast<const char*>(bytes_.data()) + 8,
                                  static_cast<std::size_t>(header_size));
    const json::value root = json::parse(header, source_ + ": header");
    if (root.kind != json::kind::object) fail("header: expected a JSON object, got ", json::kind_name(root.kind));

    const std::uint64_t data_start = 8 + header_size;
    const std::uint64_t buffer_size = size - data_start;
    for (const auto& [name, v] : root.members) {
      if (name == "__metadata__") {
        read_metadata(v);
        continue;
      }
      entries_.emplace(name, read_entry(name, v, data_start, buffer_size));
      names_.push_back(name);
    }
    std::sort(names_.begin(), names_.end());
    check_coverage(data_start, buffer_size);
  }

  void read_metadata(const grpo::detail::json::value& v) {
    namespace json = grpo::detail::json;
    if (v.kind != json::kind::object)
      fail("__metadata__: expected an object of strings, got ", json::kind_name(v.kind));
    for (const auto& [key, item] : v.members) {
      if (item.kind != json::kind::string)
        fail("__metadata__: value of \"", key, "\" must be a string, got ", json::kind_name(item.kind));
      metadata_.emplace(key, item.text);
    }
  }

  entry read_entry(const std::string& name, const grpo::detail::json::value& v, std::uint64_t data_start,
                   std::uint64_t buffer_size) const {
    namespace json = grpo::detail::json;
    if (v.kind != json::kind::object)
      fail("tensor '", name, "': expected an object {dtype, shape, data_offsets}, got ", json::kind_name(v.kind));
    const json::value* dtype_value = nullptr;
    const json::value* shape_value = nullptr;
    const json::value* offsets_value = nullptr;
    for (const auto& [key, item] : v.members) {
      if (key == "dtype") dtype_value = &item;
      else if (key == "shape") shape_value = &item;
      else if (key == "data_offsets") offsets_value = &item;
      else fail("tensor '", name, "': unexpected field \"", key, "\" (expected exactly dtype, shape, data_offsets)");
    }
    if (!dtype_value) fail("tensor '", name, "': missing field \"dtype\"");
    if (!shape_value) fail("tensor '", name, "': missing field \"shape\"");
    if (!offsets_value) fail("tensor '", name, "': missing field \"data_offsets\"");

    if (dtype_value->kind != json::kind::string)
      fail("tensor '", name, "': dtype must be a string, got ", json::kind_name(dtype_value->kind));
    const auto type = dtype_from_name(dtype_value->text);
    if (!type)
      fail("tensor '", name, "': unknown dtype \"", dtype_value->text, "\" (expected one of: ", detail::dtype_names(),
           ")");

    if (shape_value->kind != json::kind::array)
      fail("tensor '", name, "': shape must be an array, got ", json::kind_name(shape_value->kind));
    std::vector<std::uint64_t> dims;
    for (std::size_t i = 0; i < shape_value->items.size(); ++i) {
      const auto& item = shape_value->items[i];
      std::uint64_t d = 0;
      if (!json::to_uint64(item, d, static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())))
        fail("tensor '", name, "': shape entry ", i, " must be a non-negative integer below 2^63, got ",
             item.kind == json::kind::number ? item.text : std::string(json::kind_name(item.kind)));
      dims.push_back(d);
    }

    if (offsets_value->kind != json::kind::array || offsets_value->items.size() != 2)
      fail("tensor '", name, "': data_offsets must be an array [begin, end]");
    std::array<std::uint64_t, 2> offsets{};
    for (std::size_t i = 0; i < 2; ++i) {
      const auto& item = offsets_value->items[i];
      if (!json::to_uint64(item, offsets[i]))
        fail("tensor '", name, "': data_offsets entry ", i, " must be a non-negative integer, got ",
             item.kind == json::kind::number ? item.text : std::string(json::kind_name(item.kind)));
    }
    const auto [begin, end] = offsets;
    if (begin > end) fail("tensor '", name, "': data_offsets [", begin, ", ", end, "] has begin after end");
    if (end > buffer_size)
      fail("tensor '", name, "': data_offsets end ", end, " is past the end of the ", buffer_size,
           "-byte data buffer (truncated file?)");
    const auto n_bytes = detail::checked_byte_count(dims, size_of(*type));
    if (!n_bytes)
      fail("tensor '", name, "': shape ", detail::format_dims(dims), " of ", name_of(*type),
           " overflows a 64-bit byte count");
    if (*n_bytes != end - begin)
      fail("tensor '", name, "': shape ", detail::format_dims(dims), " of ", name_of(*type), " needs ", *n_bytes,
           " bytes but data_offsets [", begin, ", ", end, "] hold ", end - begin);

    entry e;
    e.type = *type;
    for (const auto d : dims) e.shape.push_back(static_cast<std::int64_t>(d));
    e.begin = static_cast<std::size_t>(data_start + begin);
    e.end = static_cast<std::size_t>(data_start + end);
    return e;
  }

  // The tensors must tile the buffer: sorted by offsets, each begins where the previous ended and
  // the last ends at the end of the file, so no byte is shared, unaccounted for or left over.
  void check_coverage(std::uint64_t data_start, std::uint64_t buffer_size) const {
    std::vector<std::pair<const std::string*, const entry*>> order;
    for (const auto& [name, e] : entries_) order.emplace_back(&name, &e);
    std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
      return std::pair(a.second->begin, a.second->end) < std::pair(b.second->begin, b.second->end);
    });
    std::uint64_t expected = 0;
    const std::string* previous = nullptr;
    for (const auto& [name, e] : order) {
      const std::uint64_t begin = e->begin - data_start, end = e->end - data_start;
      if (begin < expected)
        fail("tensor '", *name, "': data_offsets [", begin, ", ", end, "] overlap tensor '", *previous,
             "', which ends at ", expected);
      if (begin > expected)
        fail("tensor '", *name, "': data_offsets [", begin, ", ", end, "] leave bytes [", expected, ", ", begin,
             ") of the data buffer unused");
      expected = end;
      previous = name;
    }
    if (expected != buffer_size)
      fail("bytes [", expected, ", ", buffer_size, ") at the end of the data buffer belong to no tensor");
  }
};

namespace detail {

/// What a file type is called in a message.
inline std::string_view describe(std::filesystem::file_type type) {
  using std::filesystem::file_type;
  switch (type) {
    case file_type::directory: return "a directory";
    case file_type::character: return "a character device";
    case file_type::block: return "a block device";
    case file_type::fifo: return "a FIFO";
    case file_type::socket: return "a socket";
    case file_type::symlink: return "a symbolic link";
    default: return "not a regular file";
  }
}

/// The file a write to `path` should replace: `path`, or the final target of the symbolic links
/// it names (relative targets resolve against the link's directory, at most 40 links, as
/// POSIX's SYMLOOP_MAX minimum is 8 and Linux allows 40). \throws io_error naming `path` when
/// the target exists and is not a regular file, or the links loop.
inline std::filesystem::path regular_file_target(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  const std::string name = path.string();
  fs::path target = path;
  std::error_code ec;
  for (int links = 0; fs::is_symlink(fs::symlink_status(target, ec)); ++links) {
    GRPO_CHECK(links < 40, io_error, name, ": too many levels of symbolic links");
    const fs::path next = fs::read_symlink(target, ec);
    GRPO_CHECK(!ec, io_error, name, ": cannot read the symbolic link ", target.string(), " (", ec.message(), ")");
    target = next.is_absolute() ? next : target.parent_path() / next;
  }
  const fs::file_status status = fs::status(target, ec);
  GRPO_CHECK(!fs::exists(status) || fs::is_regular_file(status), io_error, name, ": exists and is ",
             describe(status.type()), target == path ? "" : " (" + target.string() + ")",
             ", not a regular file; refusing to replace it");
  return target;
}

}  // namespace detail

/// Writes `bytes` to `path` atomically: into a new temporary file in the same directory, flushed
/// and fsync'ed, then renamed over `path` (POSIX rename replaces the target in one step), and the
/// directory fsync'ed (best effort) so the rename itself is durable. A process killed at any point
/// leaves either the old file or the complete new one, never a partial file; at worst a hidden
/// ".<name>.tmp-*" file stays behind. The new file has default permissions (0666 & ~umask), not
/// those of the file it replaces. Without POSIX the same write-then-rename sequence runs through
/// the standard library, without fsync. The rename would replace whatever `path` names, so a path
/// that exists and is not a regular file (a directory, a device node such as /dev/null, a FIFO, a
/// socket) is refused, and a symbolic link is followed: the link's final target is written (and
/// created when it is missing), the link stays a link. Throws io_error naming the path and the cause.
inline void write_file_atomically(const std::filesystem::path& requested, std::span<const std::byte> bytes) {
  const std::string name = requested.string();
  GRPO_CHECK(requested.has_filename(), io_error, name, ": not a file name");
  const std::filesystem::path path = detail::regular_file_target(requested);
  const std::filesystem::path directory = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  static std::atomic<unsigned> counter{0};
#if defined(__unix__) || defined(__APPLE__)
  const auto system_message = [](int code) { return std::generic_category().message(code); };
  std::filesystem::path temporary;
  int fd = -1;
  for (int attempt = 0; fd < 0; ++attempt) {
    temporary = directory / grpo::detail::concat('.', path.filename().string(), ".tmp-", ::getpid(), '-',
                                                 counter.fetch_add(1));
    fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && (errno != EEXIST || attempt >= 100))
      grpo::detail::fail<io_error>(name, ": cannot create a temporary file in ", directory.string(), " (",
                                   system_message(errno), ")");
  }
  const auto abandon = [&](std::string_view what, int code) {
    if (fd >= 0) ::close(fd);
    ::unlink(temporary.c_str());
    grpo::detail::fail<io_error>(name, ": ", what, " failed (", system_message(code), ")");
  };
  const std::byte* p = bytes.data();
  std::size_t left = bytes.size();
  while (left > 0) {
    const ::ssize_t n = ::write(fd, p, std::min<std::size_t>(left, std::size_t{1} << 30));
    if (n < 0) {
      if (errno == EINTR) continue;
      abandon("write", errno);
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) abandon("fsync", errno);
  const int closed = ::close(fd);
  fd = -1;
  if (closed != 0) abandon("close", errno);
  if (::rename(temporary.c_str(), path.c_str()) != 0) abandon("rename", errno);
  const int dir_fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
#else
  const std::filesystem::path temporary =
      directory / grpo::detail::concat('.', path.filename().string(), ".tmp-", counter.fetch_add(1));
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    if (!out.good()) {
      out.close();
      std::error_code ignored;
      std::filesystem::remove(temporary, ignored);
      grpo::detail::fail<io_error>(name, ": writing the temporary file ", temporary.string(), " failed");
    }
  }
  std::error_code ec;
  std::filesystem::rename(temporary, path, ec);
  if (ec) {
    std::error_code ignored;
    std::filesystem::remove(temporary, ignored);
    grpo::detail::fail<io_error>(name, ": rename failed (", ec.message(), ")");
  }
#endif
}

/// Collects named tensors and metadata and produces a safetensors file. The output is a pure
/// function of the contents: "__metadata__" first, then tensors in sorted (byte-wise) name order
/// with their data in that order, and the header padded with spaces so the data starts at a
/// multiple of 8 bytes (as the format's reference writer does).
class writer {
 public:
  /// Adds a tensor from its raw little-endian bytes. Throws config_error for a name that is not
  /// UTF-8, is "__metadata__" or was already added, and shape_error for a negative extent or a
  /// byte count that differs from numel(shape) * size_of(type).
  void add(std::string name, dtype type, std::vector<std::int64_t> shape, std::span<const std::byte> bytes) {
    check_name(name);
    std::uint64_t expected = size_of(type);
    for (const auto d : shape) {
      GRPO_CHECK(d >= 0, shape_error, "tensor '", name, "': shape ", to_string(shape), " has a negative extent");
      const auto ud = static_cast<std::uint64_t>(d);
      GRPO_CHECK(ud == 0 || expected <= std::numeric_limits<std::uint64_t>::max() / ud, shape_error, "tensor '",
                 name, "': shape ", to_string(shape), " overflows a 64-bit byte count");
      expected *= ud;
    }
    GRPO_CHECK(expected == bytes.size(), shape_error, "tensor '", name, "': shape ", to_string(shape), " of ",
               name_of(type), " needs ", expected, " bytes, got ", bytes.size());
    tensors_.emplace(std::move(name),
                     entry{type, std::move(shape), std::vector<std::byte>(bytes.begin(), bytes.end())});
  }

  /// Adds a tensor from values, stored as `type`: floating-point types round to nearest even
  /// (values beyond the type's range become Inf); integer types and BOOL need every value to be
  /// an integer in range (value_error naming the tensor and element otherwise). F8 types are not
  /// written from values (config_error). numel(shape) must equal values.size() (shape_error).
  void add(std::string name, std::span<const double> values, std::vector<std::int64_t> shape, dtype type = dtype::f64) {
    GRPO_CHECK(type != dtype::f8_e4m3 && type != dtype::f8_e5m2, config_error, "tensor '", name, "': writing ",
               name_of(type), " from values is not supported (pass raw bytes)");
    std::int64_t n = 1;
    for (const auto d : shape) {
      GRPO_CHECK(d >= 0, shape_error, "tensor '", name, "': shape ", to_string(shape), " has a negative extent");
      n = d == 0 || n <= std::numeric_limits<std::int64_t>::max() / d ? n * d : -1;
      GRPO_CHECK(n >= 0, shape_error, "tensor '", name, "': shape ", to_string(shape), " is too large");
    }
    GRPO_CHECK(static_cast<std::uint64_t>(n) == values.size(), shape_error, "tensor '", name, "': shape ",
               to_string(shape), " holds ", n, " values, got ", values.size());
    const std::size_t size = size_of(type);
    std::vector<std::byte> bytes(values.size() * size);
    for (std::size_t i = 0; i < values.size(); ++i) {
      std::uint64_t bits = 0;
      switch (type) {
        case dtype::f64: bits = std::bit_cast<std::uint64_t>(values[i]); break;
        case dtype::f32: bits = detail::encode_float(values[i], 8, 23); break;
        case dtype::f16: bits = detail::encode_float(values[i], 5, 10); break;
        case dtype::bf16: bits = detail::encode_float(values[i], 8, 7); break;
        default: {
          const auto encoded = detail::encode_integer(values[i], type);
          GRPO_CHECK(encoded.has_value(), value_error, "tensor '", name, "': element ", i, " is ", values[i],
                     ", not representable as ", name_of(type));
          bits = *encoded;
        }
      }
      detail::store_le(bits, size, bytes.data() + i * size);
    }
    add(std::move(name), type, std::move(shape), bytes);
  }

  /// Adds an F32 tensor from floats (stored exactly).
  void add(std::string name, std::span<const float> values, std::vector<std::int64_t> shape) {
    std::vector<std::byte> bytes(values.size() * 4);
    for (std::size_t i = 0; i < values.size(); ++i)
      detail::store_le(std::bit_cast<std::uint32_t>(values[i]), 4, bytes.data() + i * 4);
    add(std::move(name), dtype::f32, std::move(shape), bytes);
  }

  /// Sets a "__metadata__" entry (replacing an earlier value for the key). Keys and values must be
  /// valid UTF-8 (config_error).
  void add_metadata(std::string key, std::string value) {
    GRPO_CHECK(grpo::detail::json::is_valid_utf8(key), config_error, "metadata key: not valid UTF-8");
    GRPO_CHECK(grpo::detail::json::is_valid_utf8(value), config_error, "metadata '", key,
               "': value is not valid UTF-8");
    metadata_.insert_or_assign(std::move(key), std::move(value));
  }

  bool contains(std::string_view name) const { return tensors_.find(name) != tensors_.end(); }

  /// The complete file image.
  std::vector<std::byte> serialize() const {
    namespace json = grpo::detail::json;
    std::string header = "{";
    if (!metadata_.empty()) {
      header += "\"__metadata__\":{";
      bool first = true;
      for (const auto& [key, value] : metadata_) {
        if (!first) header += ',';
        header += json::quote(key);
        header += ':';
        header += json::quote(value);
        first = false;
      }
      header += "}";
    }
    std::uint64_t offset = 0;
    for (const auto& [name, e] : tensors_) {
      if (header.size() > 1) header += ',';
      header += grpo::detail::concat(json::quote(name), ":{\"dtype\":\"", name_of(e.type), "\",\"shape\":",
                                     to_string(e.shape), ",\"data_offsets\":[", offset, ',', offset + e.bytes.size(),
                                     "]}");
      offset += e.bytes.size();
    }
    header += "}";
    header.append((8 - header.size() % 8) % 8, ' ');

    std::vector<std::byte> out(8 + header.size() + offset);
    detail::store_le(header.size(), 8, out.data());
    std::transform(header.begin(), header.end(), out.begin() + 8, [](char c) { return static_cast<std::byte>(c); });
    auto cursor = out.begin() + static_cast<std::ptrdiff_t>(8 + header.size());
    for (const auto& [name, e] : tensors_) cursor = std::copy(e.bytes.begin(), e.bytes.end(), cursor);
    return out;
  }

  /// serialize() written with write_file_atomically.
  void write(const std::filesystem::path& path) const { write_file_atomically(path, serialize()); }

 private:
  struct entry {
    dtype type;
    std::vector<std::int64_t> shape;
    std::vector<std::byte> bytes;
  };
  std::map<std::string, entry, std::less<>> tensors_;
  std::map<std::string, std::string> metadata_;

  void check_name(const std::string& name) const {
    GRPO_CHECK(grpo::detail::json::is_valid_utf8(name), config_error, "tensor name: not valid UTF-8");
    GRPO_CHECK(name != "__metadata__", config_error, "tensor '__metadata__': the name is reserved for metadata");
    GRPO_CHECK(!contains(name), config_error, "tensor '", name, "': already added");
  }
};

}  // namespace grpo::safetensors
