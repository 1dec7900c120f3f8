// SPDX-License-Identifier: Apache-2.0
// The safetensors reader and writer: a hand-written file image byte for byte, round trips of every
// dtype, the float encodings' rounding, atomic writes, and every malformed-file rejection.
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "grpo/safetensors.hpp"
#include "test_support.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <sys/stat.h>
#endif

using namespace grpo;
using namespace grpo::testing;
namespace st = grpo::safetensors;

namespace {

// An image from a header text and raw data: the 8-byte little-endian header length is derived.
std::string image(const std::string& header, const std::string& data = "") {
  std::string out(8, '\0');
  for (std::size_t i = 0; i < 8; ++i) out[i] = static_cast<char>((header.size() >> (8 * i)) & 0xFF);
  return out + header + data;
}

std::string as_string(const std::vector<std::byte>& bytes) {
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

std::vector<std::byte> as_bytes(const std::string& s) {
  std::vector<std::byte> out(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) out[i] = static_cast<std::byte>(s[i]);
  return out;
}

st::file parse(const std::string& bytes) { return st::file::parse(std::string_view(bytes), "test.safetensors"); }

// A fresh empty directory under the system temp directory for one test.
std::filesystem::path scratch_directory(const std::string& name) {
  const auto dir = grpo::testing::scratch_path("grpo_safetensors_test_" + name);
  std::filesystem::create_directories(dir);
  return dir;
}

std::uint64_t f16_bits(double x) { return st::detail::encode_float(x, 5, 10); }
std::uint64_t bf16_bits(double x) { return st::detail::encode_float(x, 8, 7); }
std::uint64_t f32_bits(double x) { return st::detail::encode_float(x, 8, 23); }

}  // namespace

TEST_CASE("safetensors: dtype names and sizes", "[safetensors]") {
  CHECK(st::name_of(st::dtype::bf16) == "BF16");
  CHECK(st::name_of(st::dtype::boolean) == "BOOL");
  CHECK(st::size_of(st::dtype::f64) == 8);
  CHECK(st::size_of(st::dtype::f16) == 2);
  CHECK(st::size_of(st::dtype::u32) == 4);
  CHECK(st::size_of(st::dtype::f8_e4m3) == 1);
  for (const auto& entry : st::detail::dtype_table) CHECK(st::dtype_from_name(entry.name) == entry.type);
  CHECK_FALSE(st::dtype_from_name("f32").has_value());
  CHECK_FALSE(st::dtype_from_name("C64").has_value());
}

TEST_CASE("safetensors: the writer produces the format's bytes exactly", "[safetensors]") {
  st::writer w;
  // Added out of order: the header lists metadata first, then names sorted, offsets in that order.
  const std::vector<std::byte> minus_three{std::byte{0xFD}, std::byte{0xFF}};  // int16 -3 little-endian
  w.add("b", st::dtype::i16, {}, minus_three);
  w.add("a", std::vector<float>{1.0f, -2.0f}, {2});
  w.add_metadata("k", "v");
  // The header is 132 bytes, padded with 4 spaces to 136 so the data starts at 8 + 136 = 144, a
  // multiple of 8. 1.0f = 0x3f800000 and -2.0f = 0xc0000000, stored little-endian.
  const std::string header =
      R"({"__metadata__":{"k":"v"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"I16","shape":[],"data_offsets":[8,10]}}    )";
  REQUIRE(header.size() == 136);
  const std::string expected = std::string("\x88\0\0\0\0\0\0\0", 8) + header +
                               std::string("\x00\x00\x80\x3f\x00\x00\x00\xc0\xfd\xff", 10);
  CHECK(as_string(w.serialize()) == expected);
}

TEST_CASE("safetensors: a hand-written file parses", "[safetensors]") {
  // Whitespace, another key order, escapes in names and metadata (\u00e9 is U+00E9, the surrogate
  // pair \ud83d\ude00 is U+1F600), and a header without padding.
  const std::string header = "{ \"w\\u00e9\" : {\"shape\": [2, 1], \"data_offsets\": [0, 16], \"dtype\": \"F64\"},\n"
                             "  \"__metadata__\": {\"note\": \"tab\\there \\ud83d\\ude00\", \"format\": \"pt\"} }";
  const std::string data("\0\0\0\0\0\0\xf0\x3f\0\0\0\0\0\0\x04\xc0", 16);  // 1.0 and -2.5 as F64
  const auto f = parse(image(header, data));
  REQUIRE(f.names() == std::vector<std::string>{"w\xc3\xa9"});
  const auto t = f.at("w\xc3\xa9");
  CHECK(t.type == st::dtype::f64);
  CHECK(t.shape == std::vector<std::int64_t>{2, 1});
  CHECK(t.numel() == 2);
  require_close(f.to_doubles("w\xc3\xa9"), {1.0, -2.5});
  CHECK(f.metadata().at("note") == "tab\there \xf0\x9f\x98\x80");
  CHECK(f.metadata().at("format") == "pt");
  CHECK(f.source() == "test.safetensors");
}

TEST_CASE("safetensors: round trip of every dtype, a scalar and empty tensors", "[safetensors]") {
  st::writer w;
  const std::vector<double> f64{1.0, -0.1, 1e300, -0.0, 5e-324, 3.25};
  w.add("f64", f64, {2, 3});
  w.add("f32", std::vector<double>{0.5, -1.25, 3.0e38}, {3}, st::dtype::f32);
  w.add("f16", std::vector<double>{1.0, -0.5, 65504.0, 0x1p-24}, {4}, st::dtype::f16);
  w.add("bf16", std::vector<double>{1.5, -3.0, 0x1p-133}, {3}, st::dtype::bf16);
  w.add("i64", std::vector<double>{-9007199254740992.0, 42.0}, {2}, st::dtype::i64);
  w.add("i32", std::vector<double>{-2147483648.0, 2147483647.0}, {2}, st::dtype::i32);
  w.add("i16", std::vector<double>{-32768.0, 7.0}, {1, 2}, st::dtype::i16);
  w.add("i8", std::vector<double>{-128.0, 127.0}, {2}, st::dtype::i8);
  w.add("u64", std::vector<double>{0.0, 18446744073709549568.0}, {2}, st::dtype::u64);
  w.add("u32", std::vector<double>{4294967295.0}, {1}, st::dtype::u32);
  w.add("u16", std::vector<double>{65535.0}, {1}, st::dtype::u16);
  w.add("u8", std::vector<double>{0.0, 255.0}, {2}, st::dtype::u8);
  w.add("mask", std::vector<double>{1.0, 0.0, 1.0}, {3}, st::dtype::boolean);
  w.add("scalar", std::vector<double>{2.5}, {});
  w.add("empty", std::vector<double>{}, {0}, st::dtype::f32);
  w.add("empty_rows", std::vector<double>{}, {2, 0});
  w.add_metadata("format", "pt");
  w.add_metadata("quote\"and\\slash", "line\nbreak \xc3\xa9");

  const auto f = st::file::parse(w.serialize());
  CHECK(f.names() == std::vector<std::string>{"bf16", "empty", "empty_rows", "f16", "f32", "f64", "i16", "i32",
                                              "i64", "i8", "mask", "scalar", "u16", "u32", "u64", "u8"});
  // F64 round trips bit for bit, including -0.0 and the smallest subnormal.
  const auto got = f.to_doubles("f64");
  for (std::size_t i = 0; i < f64.size(); ++i)
    CHECK(std::bit_cast<std::uint64_t>(got[i]) == std::bit_cast<std::uint64_t>(f64[i]));
  CHECK(f.at("f64").shape == std::vector<std::int64_t>{2, 3});
  // 3.0e38 is not a float: it is stored rounded to the nearest float.
  require_close(f.to_doubles("f32"), {0.5, -1.25, static_cast<double>(3.0e38f)}, 0, 0);
  require_close(f.to_doubles("f16"), {1.0, -0.5, 65504.0, 0x1p-24}, 0, 0);
  require_close(f.to_doubles("bf16"), {1.5, -3.0, 0x1p-133}, 0, 0);
  require_close(f.to_doubles("i64"), {-9007199254740992.0, 42.0}, 0, 0);
  require_close(f.to_doubles("i32"), {-2147483648.0, 2147483647.0}, 0, 0);
  require_close(f.to_doubles("i16"), {-32768.0, 7.0}, 0, 0);
  require_close(f.to_doubles("i8"), {-128.0, 127.0}, 0, 0);
  require_close(f.to_doubles("u64"), {0.0, 18446744073709549568.0}, 0, 0);
  require_close(f.to_doubles("u32"), {4294967295.0}, 0, 0);
  require_close(f.to_doubles("u16"), {65535.0}, 0, 0);
  require_close(f.to_doubles("u8"), {0.0, 255.0}, 0, 0);
  require_close(f.to_doubles("mask"), {1.0, 0.0, 1.0}, 0, 0);
  CHECK(f.at("mask").type == st::dtype::boolean);
  const auto scalar = f.at("scalar");
  CHECK(scalar.shape.empty());
  CHECK(scalar.numel() == 1);
  require_close(f.to_doubles("scalar"), {2.5});
  CHECK(f.at("empty").numel() == 0);
  CHECK(f.at("empty").data.empty());
  CHECK(f.at("empty_rows").shape == std::vector<std::int64_t>{2, 0});
  CHECK(f.to_doubles("empty_rows").empty());
  CHECK(f.metadata().size() == 2);
  CHECK(f.metadata().at("quote\"and\\slash") == "line\nbreak \xc3\xa9");
  // Parsing and re-serializing gives the same bytes: the output is a function of the contents.
  st::writer again;
  for (const auto& name : f.names()) {
    const auto t = f.at(name);
    again.add(name, t.type, t.shape, t.data);
  }
  for (const auto& [key, value] : f.metadata()) again.add_metadata(key, value);
  CHECK(again.serialize() == w.serialize());
}

TEST_CASE("safetensors: float encodings round to nearest even", "[safetensors]") {
  // F16 (1 sign, 5 exponent, 10 mantissa bits, bias 15).
  CHECK(f16_bits(1.0) == 0x3C00);
  CHECK(f16_bits(-2.0) == 0xC000);
  CHECK(f16_bits(65504.0) == 0x7BFF);            // largest finite
  CHECK(f16_bits(65519.0) == 0x7BFF);            // below the halfway point 65520
  CHECK(f16_bits(65520.0) == 0x7C00);            // halfway to 2^16 rounds to even: Inf
  CHECK(f16_bits(1.0 + 0x1p-11) == 0x3C00);      // tie between 1 and 1 + 2^-10: even mantissa 0
  CHECK(f16_bits(1.0 + 3 * 0x1p-11) == 0x3C02);  // tie between mantissas 1 and 2: even 2
  CHECK(f16_bits(0x1p-14) == 0x0400);            // smallest normal
  CHECK(f16_bits(0x1p-24) == 0x0001);            // smallest subnormal
  CHECK(f16_bits(0x1p-25) == 0x0000);            // tie between 0 and 2^-24: even 0
  CHECK(f16_bits(3 * 0x1p-26) == 0x0001);        // 0.75 of the smallest subnormal rounds up
  CHECK(f16_bits(0x1p-14 - 0x1p-26) == 0x0400);  // 1023.75 subnormal steps round up into the normals
  CHECK(f16_bits(-0.0) == 0x8000);
  CHECK(f16_bits(-INFINITY) == 0xFC00);
  CHECK(f16_bits(NAN) == 0x7E00);
  CHECK(f16_bits(1e10) == 0x7C00);
  // BF16 (8 exponent, 7 mantissa bits): the top half of an F32 after rounding.
  CHECK(bf16_bits(1.0) == 0x3F80);
  CHECK(bf16_bits(3.14159265358979) == 0x4049);  // F32 0x40490FDB: lower half 0x0FDB < 0x8000
  CHECK(bf16_bits(1.0 + 0x1p-8) == 0x3F80);      // tie: even
  CHECK(bf16_bits(1.0 + 3 * 0x1p-8) == 0x3F82);  // tie: even
  CHECK(bf16_bits(1e39) == 0x7F80);              // above 0x1.fep127 + half an ulp: Inf
  // F32 from double agrees with the compiler's conversion.
  CHECK(f32_bits(0.1) == 0x3DCCCCCD);
  for (const double x : {0.1, -1.0 / 3.0, 1e-40, 3.4028235e38, 1e-45, 7e-46})
    CHECK(f32_bits(x) == std::bit_cast<std::uint32_t>(static_cast<float>(x)));
  CHECK(f32_bits(3.5e38) == 0x7F800000);
  // Decoding: F16, BF16 and both F8 flavours.
  CHECK(st::detail::decode_float(0x7BFF, 5, 10, true) == 65504.0);
  CHECK(st::detail::decode_float(0x0001, 5, 10, true) == 0x1p-24);
  CHECK(std::isinf(st::detail::decode_float(0xFC00, 5, 10, true)));
  CHECK(std::isnan(st::detail::decode_float(0x7E00, 5, 10, true)));
  CHECK(st::detail::decode_float(0xC049, 8, 7, true) == -3.140625);
  CHECK(st::detail::decode_float(0x7E, 4, 3, false) == 448.0);    // E4M3 largest: 1.75 * 2^8
  CHECK(st::detail::decode_float(0x78, 4, 3, false) == 256.0);    // exponent all ones is finite in E4M3
  CHECK(std::isnan(st::detail::decode_float(0x7F, 4, 3, false)));  // E4M3 NaN
  CHECK(st::detail::decode_float(0x01, 4, 3, false) == 0x1p-9);    // E4M3 smallest subnormal
  CHECK(st::detail::decode_float(0x7B, 5, 2, true) == 57344.0);   // E5M2 largest: 1.75 * 2^15
  CHECK(std::isinf(st::detail::decode_float(0x7C, 5, 2, true)));
  // F8 tensors are read through to_doubles.
  const std::string data("\x7e\xb8", 2);  // E4M3 448 and -1.0 (0xB8 = sign, exponent 7, mantissa 0)
  const auto f = parse(image(R"({"x":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", data));
  require_close(f.to_doubles("x"), {448.0, -1.0}, 0, 0);
}

TEST_CASE("safetensors: atomic write to a path and read back", "[safetensors]") {
  const auto dir = scratch_directory("write");
  const auto path = dir / "out.safetensors";
  st::writer first;
  first.add("x", std::vector<double>{1, 2, 3}, {3});
  first.write(path);
  CHECK(st::file::read(path).to_doubles("x") == std::vector<double>{1, 2, 3});
  // Overwriting replaces the file whole, and no temporary file stays behind.
  st::writer second;
  second.add("y", std::vector<double>{4}, {});
  second.write(path);
  const auto f = st::file::read(path);
  CHECK(f.names() == std::vector<std::string>{"y"});
  CHECK(f.source() == path.string());
  std::size_t entries = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator(dir)) ++entries;
  CHECK(entries == 1);
  require_error([&] { second.write(dir / "missing" / "out.safetensors"); },
                {(dir / "missing" / "out.safetensors").string(), "temporary file"});
  require_error([&] { (void)st::file::read(dir / "absent.safetensors"); }, {"absent.safetensors", "cannot read"});
  require_error([&] { (void)st::file::read(dir); }, {dir.string(), "cannot read"});
  std::filesystem::remove_all(dir);
}

TEST_CASE("safetensors: lookups and conversions name the tensor", "[safetensors][errors]") {
  st::writer w;
  w.add("a", std::vector<double>{1}, {1});
  w.add("b", std::vector<double>{1}, {1});
  const auto f = st::file::parse(w.serialize(), "batch.safetensors");
  CHECK(f.contains("a"));
  CHECK_FALSE(f.contains("c"));
  require_error([&] { (void)f.at("c"); }, {"tensor 'c': not found in batch.safetensors", "has: a, b"});
  const auto bad_bool =
      parse(image(R"({"m":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})", std::string("\1\2", 2)));
  require_error([&] { (void)bad_bool.to_doubles("m"); }, {"tensor 'm'", "element 1", "BOOL", "is 2"});
}

TEST_CASE("safetensors: the writer rejects bad tensors", "[safetensors][errors]") {
  st::writer w;
  w.add("x", std::vector<double>{1, 2}, {2});
  require_error([&] { w.add("x", std::vector<double>{1}, {1}); }, {"tensor 'x'", "already added"});
  require_error([&] { w.add("__metadata__", std::vector<double>{1}, {1}); }, {"__metadata__", "reserved"});
  require_error([&] { w.add("y", std::vector<double>{1, 2, 3}, {2}); }, {"tensor 'y'", "[2]", "got 3"});
  require_error([&] { w.add("y", std::vector<double>{}, {-1}); }, {"tensor 'y'", "negative"});
  require_error([&] { w.add("y", st::dtype::f32, {3}, std::vector<std::byte>(8)); },
                {"tensor 'y'", "needs 12 bytes, got 8"});
  require_error([&] { w.add("y", std::vector<double>{1.5}, {1}, st::dtype::i32); }, {"tensor 'y'", "element 0", "I32"});
  require_error([&] { w.add("y", std::vector<double>{128}, {1}, st::dtype::i8); }, {"tensor 'y'", "I8"});
  require_error([&] { w.add("y", std::vector<double>{-1}, {1}, st::dtype::u8); }, {"tensor 'y'", "U8"});
  require_error([&] { w.add("y", std::vector<double>{2}, {1}, st::dtype::boolean); }, {"tensor 'y'", "BOOL"});
  require_error([&] { w.add("y", std::vector<double>{1}, {1}, st::dtype::f8_e5m2); }, {"tensor 'y'", "F8_E5M2"});
  require_error([&] { w.add("\xff", std::vector<double>{1}, {1}); }, {"tensor name", "UTF-8"});
  require_error([&] { w.add_metadata("k", "\xc3"); }, {"metadata 'k'", "UTF-8"});
  require_error(
      [&] {
        st::writer{}.add("y", st::dtype::f64, {1ll << 40, 1ll << 40}, {});
      },
      {"tensor 'y'", "overflows"});
}

TEST_CASE("safetensors: truncated files and header lengths", "[safetensors][errors]") {
  require_error([] { (void)parse(""); }, {"test.safetensors", "file of 0 bytes", "truncated"});
  require_error([] { (void)parse(std::string("\x02\0\0\0\0\0\0", 7)); }, {"test.safetensors", "file of 7 bytes"});
  // 100'000'001 = 0x05F5E101.
  require_error([] { (void)parse(std::string("\x01\xe1\xf5\x05\0\0\0\0{}", 10)); },
                {"test.safetensors", "header length 100000001 exceeds the limit of 100000000"});
  require_error([] { (void)parse(std::string("\xff\xff\xff\xff\xff\xff\xff\xff{}", 10)); }, {"exceeds the limit"});
  require_error([] { (void)parse(std::string("\x10\0\0\0\0\0\0\0{}", 10)); },
                {"header length 16 exceeds the 2 bytes after the length", "truncated"});
  // The buffer is shorter than the last offset.
  const std::string header = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  CHECK_NOTHROW(parse(image(header, std::string(8, '\0'))));
  require_error([&] { (void)parse(image(header, std::string(5, '\0'))); },
                {"tensor 'x'", "end 8 is past the end of the 5-byte data buffer", "truncated"});
  require_error([&] { (void)parse(image(header)); }, {"tensor 'x'", "0-byte data buffer"});
}

TEST_CASE("safetensors: strict JSON", "[safetensors][errors]") {
  const auto bad = [](const std::string& header, const std::string& fragment) {
    INFO("header: " << header);
    require_error([&] { (void)parse(image(header)); }, {"test.safetensors: header: invalid JSON", fragment});
  };
  bad("", "expected a value");
  bad("{}x", "trailing characters");
  bad("{} {}", "trailing characters");
  bad(R"({"a":1,})", "expected a string key");
  bad(R"({"a" 1})", "expected ':'");
  bad(R"({"a":[1 2]})", "expected ',' or ']'");
  bad(R"({"a":01})", "leading zeros");
  bad(R"({"a":1.})", "decimal point");
  bad(R"({"a":1e})", "exponent");
  bad(R"({"a":-})", "expected a value");
  bad(R"({"a":tru})", "invalid literal");
  bad(R"({"a":"x)", "unterminated string");
  bad(R"({"a":"\x"})", "invalid escape");
  bad(R"({"a":"\u12G4"})", "hex digit");
  bad(R"({"a":"\ud800"})", "high surrogate");
  bad(R"({"a":"\ud800\u0041"})", "high surrogate");
  bad(R"({"a":"\udc00"})", "lone low surrogate");
  bad("{\"a\":\"tab\there\"}", "control character");
  bad("{\"a\":\"\xc3\x28\"}", "invalid UTF-8");
  bad("{\"a\":\"\xed\xa0\x80\"}", "invalid UTF-8");  // an encoded surrogate
  bad("{\"a\":\"\xc0\xaf\"}", "invalid UTF-8");      // overlong '/'
  bad(R"({"a":1,"a":2})", "duplicate key \"a\"");
  bad(std::string(100, '[') + std::string(100, ']'), "nesting");
  bad(R"({'a':1})", "expected a string key");
  // Valid JSON numbers that are not shape entries are rejected by the schema, not the parser.
  require_error([] { (void)parse(image(R"({"x":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}})", "abcd")); },
                {"tensor 'x': shape entry 0 must be a non-negative integer", "got 1.0"});
}

TEST_CASE("safetensors: header schema", "[safetensors][errors]") {
  const auto bad = [](const std::string& header, const std::string& data, const std::vector<std::string>& fragments) {
    INFO("header: " << header);
    require_error([&] { (void)parse(image(header, data)); }, fragments);
  };
  bad("[]", "", {"test.safetensors: header: expected a JSON object, got an array"});
  bad(R"({"x":[0]})", "", {"tensor 'x': expected an object"});
  bad(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":1}})", "abcd",
      {"tensor 'x': unexpected field \"extra\""});
  bad(R"({"x":{"shape":[1],"data_offsets":[0,4]}})", "abcd", {"tensor 'x': missing field \"dtype\""});
  bad(R"({"x":{"dtype":"F32","data_offsets":[0,4]}})", "abcd", {"tensor 'x': missing field \"shape\""});
  bad(R"({"x":{"dtype":"F32","shape":[1]}})", "abcd", {"tensor 'x': missing field \"data_offsets\""});
  bad(R"({"x":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", "abcd", {"tensor 'x': dtype must be a string"});
  bad(R"({"x":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}})", "abcd",
      {"tensor 'x': unknown dtype \"F33\"", "F64, F32, F16, BF16"});
  bad(R"({"x":{"dtype":"F32","shape":1,"data_offsets":[0,4]}})", "abcd", {"tensor 'x': shape must be an array"});
  bad(R"({"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", "abcd",
      {"tensor 'x': shape entry 0 must be a non-negative integer", "got -1"});
  bad(R"({"x":{"dtype":"F32","shape":[1,1e2],"data_offsets":[0,4]}})", "abcd", {"shape entry 1", "got 1e2"});
  bad(R"({"x":{"dtype":"F32","shape":["1"],"data_offsets":[0,4]}})", "abcd", {"shape entry 0", "got a string"});
  bad(R"({"x":{"dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,4]}})", "abcd",
      {"shape entry 0", "below 2^63"});
  // 2^40 * 2^40 * 4 bytes wraps a 64-bit count: rejected, not wrapped to a small number.
  bad(R"({"x":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,0]}})", "",
      {"tensor 'x': shape [1099511627776,1099511627776] of F32 overflows a 64-bit byte count"});
  // 2^62 * 4 = 2^64 wraps to exactly 0: still rejected.
  bad(R"({"x":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})", "", {"overflows"});
  bad(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", "abcd",
      {"tensor 'x': shape [2] of F32 needs 8 bytes but data_offsets [0, 4] hold 4"});
  bad(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", "abcd", {"tensor 'x'", "begin after end"});
  bad(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", "abcd",
      {"tensor 'x': data_offsets must be an array [begin, end]"});
  bad(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,-4]}})", "abcd", {"data_offsets entry 1", "got -4"});
  bad(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551616]}})", "abcd", {"data_offsets entry 1"});
  bad(R"({"__metadata__":{"k":1}})", "", {"__metadata__: value of \"k\" must be a string, got a number"});
  bad(R"({"__metadata__":["k"]})", "", {"__metadata__: expected an object of strings"});
}

TEST_CASE("safetensors: tensors must tile the data buffer", "[safetensors][errors]") {
  const auto bad = [](const std::string& header, std::size_t data_size, const std::vector<std::string>& fragments) {
    INFO("header: " << header);
    require_error([&] { (void)parse(image(header, std::string(data_size, '\0'))); }, fragments);
  };
  bad(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
      8, {"tensor 'b': data_offsets [4, 8] overlap tensor 'a', which ends at 8"});
  bad(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
      4, {"overlap"});
  bad(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
      12, {"tensor 'b': data_offsets [8, 12] leave bytes [4, 8) of the data buffer unused"});
  bad(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8, {"tensor 'a'", "leave bytes [0, 4)"});
  bad(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 6,
      {"test.safetensors: bytes [4, 6) at the end of the data buffer belong to no tensor"});
  bad("{}", 3, {"bytes [0, 3)"});
  // Out of order in the header and an empty tensor at the boundary: fine.
  const auto f = parse(image(
      R"({"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},)"
      R"("a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
      std::string(8, '\0')));
  CHECK(f.names() == std::vector<std::string>{"a", "b", "e"});
  CHECK(parse(image("{}")).names().empty());
  // A copied byte image parses the same as a moved one.
  const auto bytes = as_bytes(image(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "\x07"));
  CHECK(st::file::parse(std::span<const std::byte>(bytes)).to_doubles("a") == std::vector<double>{7});
}

TEST_CASE("safetensors: an atomic write refuses what is not a regular file and writes through links",
          "[safetensors][errors]") {
  const auto dir = scratch_directory("targets");
  st::writer w;
  w.add("x", std::vector<double>{1.0, 2.0}, {2}, st::dtype::f64);
  // A directory (and, where mkfifo exists, a FIFO) is refused and left as it was; the rename would
  // have replaced it, as it would a device node such as /dev/null when run as root.
  std::filesystem::create_directories(dir / "a-directory");
  require_error([&] { w.write(dir / "a-directory"); }, {"a-directory", "is a directory, not a regular file"});
  REQUIRE(std::filesystem::is_directory(dir / "a-directory"));
#if defined(__unix__) || defined(__APPLE__)
  REQUIRE(::mkfifo((dir / "a-fifo").c_str(), 0600) == 0);
  require_error([&] { w.write(dir / "a-fifo"); }, {"a-fifo", "is a FIFO, not a regular file"});
  REQUIRE(std::filesystem::is_fifo(std::filesystem::symlink_status(dir / "a-fifo")));
#endif
  // A symbolic link (relative, through a second link) is followed: the target gets the file.
  { std::ofstream(dir / "target.safetensors") << "old"; }
  std::filesystem::create_symlink("target.safetensors", dir / "inner-link");
  std::filesystem::create_symlink("inner-link", dir / "outer-link");
  w.write(dir / "outer-link");
  REQUIRE(std::filesystem::is_symlink(std::filesystem::symlink_status(dir / "outer-link")));
  REQUIRE(std::filesystem::read_symlink(dir / "outer-link") == "inner-link");
  REQUIRE(st::file::read(dir / "target.safetensors").to_doubles("x") == std::vector<double>{1.0, 2.0});
  // A dangling link creates its target; a loop of links is an error naming the path.
  std::filesystem::create_symlink("new.safetensors", dir / "dangling");
  w.write(dir / "dangling");
  REQUIRE(std::filesystem::is_regular_file(std::filesystem::symlink_status(dir / "new.safetensors")));
  std::filesystem::create_symlink("loop-b", dir / "loop-a");
  std::filesystem::create_symlink("loop-a", dir / "loop-b");
  require_error([&] { w.write(dir / "loop-a"); }, {"loop-a", "too many levels of symbolic links"});
  std::filesystem::remove_all(dir);
}

TEST_CASE("safetensors: a zero extent beside huge ones holds no bytes and counts 0 elements", "[safetensors]") {
  // [2^62, 2^62, 0] passes the byte count (0 bytes); numel must not multiply 2^62 * 2^62 first.
  const auto f = parse(image(R"({"z":{"dtype":"F64","shape":[4611686018427387904,4611686018427387904,0],)"
                             R"("data_offsets":[0,0]}})"));
  REQUIRE(f.at("z").numel() == 0);
  REQUIRE(f.to_doubles("z").empty());
}
