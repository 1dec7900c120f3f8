// SPDX-License-Identifier: Apache-2.0
// Tests of grpo/hf/gguf.hpp and grpo/hf/gguf_convert.hpp. Fixtures (tests/data/hf/gguf/, from
// tests/fixtures/make_gguf_fixtures.py) were written by gguf-py and tokenizers: metadata of every
// value type and tensors of every supported ggml type with gguf-py's dequantized values (compared
// exactly), and two tiny models (llama with q / k rows permuted as llama.cpp stores them, qwen2
// with biases) with the tokenizer they came from and hashes of the expected HF tensors. Malformed
// files are built here byte by byte.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <limits>
#include <map>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "grpo/detail/json.hpp"
#include "grpo/detail/random.hpp"
#include "grpo/hf/gguf.hpp"
#include "grpo/hf/gguf_convert.hpp"
#include "grpo/safetensors.hpp"
#include "test_support.hpp"

namespace {

namespace gguf = grpo::hf::gguf;
namespace json = grpo::detail::json;
using grpo::testing::require_error;

const std::filesystem::path data_dir = std::filesystem::path(GRPO_TEST_DATA_DIR) / "hf" / "gguf";

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

json::value read_json(const std::filesystem::path& path) { return json::parse(read_text(path), path.string()); }

const json::value& member(const json::value& object, std::string_view key) {
  for (const auto& m : object.members)
    if (m.key == key) return m.value;
  FAIL("missing JSON key " << key);
  return object;
}

std::vector<std::byte> read_bytes(const std::filesystem::path& path) {
  const std::string text = read_text(path);
  return std::vector<std::byte>(reinterpret_cast<const std::byte*>(text.data()),
                                reinterpret_cast<const std::byte*>(text.data()) + text.size());
}

float to_float(const json::value& v) { return std::strtof(v.text.c_str(), nullptr); }

// A fresh directory under the system temp directory, unique per test and process.
std::filesystem::path scratch_directory(const std::string& name) {
  const auto dir = grpo::testing::scratch_path("grpo_hf_gguf_test_" + name);
  std::filesystem::create_directories(dir);
  return dir;
}

// --- A GGUF writer for malformed files -----------------------------------------------------------

struct raw_tensor {
  std::string name;
  std::vector<std::uint64_t> dims;
  std::uint32_t type = 0;
  std::vector<std::byte> data;
  std::optional<std::uint64_t> offset;  ///< default: packed in order, aligned
};

struct image {
  std::uint32_t version = 3;
  std::vector<std::pair<std::string, gguf::value>> metadata;
  std::vector<raw_tensor> tensors;
  std::uint64_t alignment = 32;

  std::vector<std::byte> bytes;
  void put(std::uint64_t v, int n) {
    for (int i = 0; i < n; ++i) bytes.push_back(static_cast<std::byte>((v >> (8 * i)) & 0xFF));
  }
  void put_string(const std::string& s) {
    put(s.size(), 8);
    for (char c : s) bytes.push_back(static_cast<std::byte>(c));
  }
  void put_value(const gguf::value& v) {
    using T = gguf::value_type;
    switch (v.type) {
      case T::uint8: case T::int8: put(v.unsigned_integer | static_cast<std::uint64_t>(v.signed_integer), 1); break;
      case T::uint16: case T::int16: put(v.unsigned_integer | static_cast<std::uint64_t>(v.signed_integer), 2); break;
      case T::uint32: case T::int32: put(v.unsigned_integer | static_cast<std::uint64_t>(v.signed_integer), 4); break;
      case T::uint64: case T::int64: put(v.unsigned_integer | static_cast<std::uint64_t>(v.signed_integer), 8); break;
      case T::float32: put(std::bit_cast<std::uint32_t>(static_cast<float>(v.real)), 4); break;
      case T::float64: put(std::bit_cast<std::uint64_t>(v.real), 8); break;
      case T::boolean: put(v.unsigned_integer != 0 ? v.unsigned_integer : (v.boolean ? 1 : 0), 1); break;
      case T::string: put_string(v.text); break;
      case T::array:
        put(static_cast<std::uint32_t>(v.element_type), 4);
        put(v.items.size(), 8);
        for (const auto& item : v.items) put_value(item);
        break;
      default: break;  // an unknown type id: nothing follows it
    }
  }

  std::vector<std::byte> build() {
    bytes.clear();
    for (char c : std::string("GGUF")) bytes.push_back(static_cast<std::byte>(c));
    put(version, 4);
    put(tensors.size(), 8);
    put(metadata.size(), 8);
    for (const auto& [key, v] : metadata) {
      put_string(key);
      put(static_cast<std::uint32_t>(v.type), 4);
      put_value(v);
    }
    std::vector<std::uint64_t> offsets;
    std::uint64_t next = 0;
    for (const auto& t : tensors) {
      offsets.push_back(t.offset.value_or(next));
      next = (offsets.back() + t.data.size() + alignment - 1) / alignment * alignment;
      put_string(t.name);
      put(t.dims.size(), 4);
      for (auto d : t.dims) put(d, 8);
      put(t.type, 4);
      put(offsets.back(), 8);
    }
    const std::size_t data_start = (bytes.size() + alignment - 1) / alignment * alignment;
    bytes.resize(data_start);
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      if (tensors[i].offset) continue;  // a hand-placed offset is left pointing wherever it points
      bytes.resize(std::max<std::size_t>(bytes.size(), data_start + offsets[i] + tensors[i].data.size()));
      std::copy(tensors[i].data.begin(), tensors[i].data.end(), bytes.begin() + static_cast<std::ptrdiff_t>(data_start + offsets[i]));
    }
    return bytes;
  }

  gguf::value& at(const std::string& key) {
    for (auto& [k, v] : metadata)
      if (k == key) return v;
    metadata.emplace_back(key, gguf::value{});
    return metadata.back().second;
  }
  void erase_tensor(const std::string& name) {
    std::erase_if(tensors, [&](const raw_tensor& t) { return t.name == name; });
  }
  raw_tensor& tensor(const std::string& name) {
    for (auto& t : tensors)
      if (t.name == name) return t;
    FAIL("no tensor " << name);
    return tensors.front();
  }
};

gguf::value scalar_u32(std::uint32_t v) {
  gguf::value out;
  out.type = gguf::value_type::uint32;
  out.unsigned_integer = v;
  return out;
}

gguf::value string_value(std::string s) {
  gguf::value out;
  out.type = gguf::value_type::string;
  out.text = std::move(s);
  return out;
}

// An image holding everything a parsed file holds, to be changed and rebuilt.
image copy_of(const gguf::file& f) {
  image im;
  im.version = f.version();
  im.alignment = f.alignment();
  im.metadata = f.metadata();
  for (const auto& t : f.tensors())
    im.tensors.push_back({t.name, t.dims, static_cast<std::uint32_t>(t.type),
                          std::vector<std::byte>(t.data.begin(), t.data.end()), std::nullopt});
  return im;
}

gguf::file parse(std::vector<std::byte> bytes) { return gguf::file::parse(std::move(bytes), "model.gguf"); }

// One F32 tensor of four elements, for the malformed-file cases.
image small_image() {
  image im;
  im.metadata.emplace_back("general.architecture", string_value("llama"));
  std::vector<std::byte> data(16);
  im.tensors.push_back({"blk.3.attn_q.weight", {4}, 0, data, std::nullopt});
  return im;
}

std::uint64_t fnv1a64(std::span<const std::byte> bytes) {
  return grpo::detail::fnv1a_64(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

std::string hex16(std::uint64_t v) {
  std::ostringstream out;
  out << std::hex;
  out.width(16);
  out.fill('0');
  out << v;
  return out.str();
}

}  // namespace

TEST_CASE("gguf: metadata of every value type as gguf-py wrote it", "[hf][gguf]") {
  const auto f = gguf::file::read(data_dir / "types.gguf");
  const auto expected = read_json(data_dir / "types.json");
  CHECK(f.version() == 3);
  CHECK(f.alignment() == 64);
  CHECK(f.data_offset() % 64 == 0);
  const auto& want = member(expected, "metadata");
  REQUIRE(f.metadata().size() == want.members.size());
  // An expected scalar compared with a value of the file, by type.
  const auto same = [](const gguf::value& got, std::string_view type, const json::value& v) {
    INFO("type " << type << ", expected " << (v.kind == json::kind::string ? v.text : v.text));
    CHECK(gguf::name_of(got.type) == type);
    if (type == "string") return got.text == v.text;
    if (type == "bool") return got.boolean == v.boolean;
    if (type == "float32") return got.real == static_cast<double>(std::strtof(v.text.c_str(), nullptr));
    if (type == "float64") return got.real == std::strtod(v.text.c_str(), nullptr);
    if (type.front() == 'u') return std::to_string(got.unsigned_integer) == v.text;
    return std::to_string(got.signed_integer) == v.text;
  };
  for (const auto& m : want.members) {
    INFO("key " << m.key);
    const gguf::value* got = f.find(m.key);
    REQUIRE(got != nullptr);
    const std::string& type = member(m.value, "type").text;
    const auto& v = member(m.value, "value");
    if (type != "array") {
      CHECK(same(*got, type, v));
      continue;
    }
    const std::string& element = member(m.value, "element_type").text;
    CHECK(gguf::name_of(got->element_type) == element);
    REQUIRE(got->items.size() == v.items.size());
    for (std::size_t i = 0; i < v.items.size(); ++i) {
      if (element != "array") {
        CHECK(same(got->items[i], element, v.items[i]));
        continue;
      }
      REQUIRE(got->items[i].items.size() == v.items[i].items.size());  // nested int32 arrays
      for (std::size_t j = 0; j < v.items[i].items.size(); ++j)
        CHECK(same(got->items[i].items[j], "int32", v.items[i].items[j]));
    }
  }
  // The typed getters.
  CHECK(f.get_uint("test.uint64") == 9223372036854775813ull);
  CHECK(f.get_int("test.int8") == -100);
  CHECK(f.get_float("test.float32") == static_cast<double>(0.1f));
  CHECK(f.get_bool("test.bool"));
  CHECK(f.get_string_array("test.array.string") == std::vector<std::string>{"a", "", "\xc3\xbc\xc3\x9f", "two words"});
  CHECK(f.get_int_array("test.array.int16") == std::vector<std::int64_t>{-32768, 32767});
  require_error([&] { f.get_uint("test.int32"); }, {"types.gguf", "test.int32", "non-negative", "-2000000000"});
  require_error([&] { f.get_uint("test.array.uint64"); }, {"types.gguf", "test.array.uint64", "expected an integer, got array"});
  require_error([&] { f.get_int("test.uint64"); }, {"types.gguf", "test.uint64", "does not fit int64"});
  require_error([&] { f.get_string("test.float64"); }, {"types.gguf", "test.float64", "expected string, got float64"});
  require_error([&] { f.get_float("test.missing"); }, {"types.gguf", "'test.missing' is missing"});
  require_error([&] { f.get_int_array("test.array.float32"); }, {"test.array.float32", "array of integers", "float32"});
}

TEST_CASE("gguf: every supported tensor type dequantizes exactly as gguf-py", "[hf][gguf]") {
  const auto f = gguf::file::read(data_dir / "types.gguf");
  const auto expected = read_json(data_dir / "types.json");
  const auto& tensors = member(expected, "tensors");
  REQUIRE(f.tensors().size() == tensors.items.size());
  int compared_types = 0;
  for (const auto& want : tensors.items) {
    const std::string& name = member(want, "name").text;
    INFO("tensor " << name);
    const auto& t = f.tensor(name);
    CHECK(gguf::name_of(t.type) == member(want, "type").text);
    std::vector<std::uint64_t> dims;
    for (const auto& d : member(want, "dims").items) dims.push_back(std::stoull(d.text));
    CHECK(t.dims == dims);
    std::vector<std::int64_t> shape;
    for (const auto& d : member(want, "shape").items) shape.push_back(std::stoll(d.text));
    CHECK(t.shape() == shape);
    CHECK(t.offset % 64 == 0);
    if (name == "q2_k_unsupported") continue;
    const auto& values = member(want, "values").items;
    const std::vector<float> got = f.dequantize(t);
    REQUIRE(got.size() == values.size());
    std::size_t mismatches = 0;
    for (std::size_t i = 0; i < got.size(); ++i)
      if (got[i] != to_float(values[i]) && mismatches++ < 3)
        INFO("element " << i << ": got " << got[i] << ", gguf-py " << values[i].text);
    CHECK(mismatches == 0);
    const auto doubles = f.to_doubles(t);
    CHECK(doubles[1] == static_cast<double>(got[1]));
    ++compared_types;
  }
  CHECK(compared_types == 13);
  CHECK(gguf::dequantizable_type_names() == "F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, BF16");
}

TEST_CASE("gguf: hand-worked blocks", "[hf][gguf]") {
  const auto b = [](std::initializer_list<unsigned> v) {
    std::vector<std::byte> out;
    for (unsigned x : v) out.push_back(static_cast<std::byte>(x));
    return out;
  };
  std::vector<float> out(32);
  // Q4_0: d = 0.5 (f16 0x3800); byte j = 0x9F: low nibble 15 -> (15 - 8) 0.5 = 3.5, high 9 -> 0.5.
  auto q4_0 = b({0x00, 0x38});
  q4_0.resize(18, std::byte{0x9F});
  gguf::dequantize(gguf::ggml_type::q4_0, q4_0, out);
  CHECK(out[0] == 3.5f);
  CHECK(out[15] == 3.5f);
  CHECK(out[16] == 0.5f);
  // Q4_1: d = 0.25 (0x3400), m = -1 (0xBC00); byte 0x30 -> low 0 -> -1, high 3 -> -0.25.
  auto q4_1 = b({0x00, 0x34, 0x00, 0xBC});
  q4_1.resize(20, std::byte{0x30});
  gguf::dequantize(gguf::ggml_type::q4_1, q4_1, out);
  CHECK(out[3] == -1.0f);
  CHECK(out[19] == -0.25f);
  // Q8_0: d = 2 (0x4000); -128 -> -256, 127 -> 254.
  auto q8_0 = b({0x00, 0x40, 0x80, 0x7F});
  q8_0.resize(34, std::byte{0x01});
  gguf::dequantize(gguf::ggml_type::q8_0, q8_0, out);
  CHECK(out[0] == -256.0f);
  CHECK(out[1] == 254.0f);
  CHECK(out[31] == 2.0f);
  // Q5_0: d = 1; fifth bits 0x00010001 set element 0 and element 16; nibbles 0 -> 16 - 16 = 0, others -16.
  auto q5_0 = b({0x00, 0x3C, 0x01, 0x00, 0x01, 0x00});
  q5_0.resize(22, std::byte{0x00});
  gguf::dequantize(gguf::ggml_type::q5_0, q5_0, out);
  CHECK(out[0] == 0.0f);
  CHECK(out[1] == -16.0f);
  CHECK(out[16] == 0.0f);
  CHECK(out[17] == -16.0f);
  // F16 specials: subnormal 2^-24, -Inf, largest finite.
  std::vector<float> three(3);
  gguf::dequantize(gguf::ggml_type::f16, b({0x01, 0x00, 0x00, 0xFC, 0xFF, 0x7B}), three);
  CHECK(three[0] == 0x1p-24f);
  CHECK(three[1] == -std::numeric_limits<float>::infinity());
  CHECK(three[2] == 65504.0f);
  require_error([&] { gguf::dequantize(gguf::ggml_type::q8_0, q8_0, std::span<float>(out).first(31)); },
                {"31 elements of Q8_0", "not a whole number of 32-element blocks"});
  require_error([&] { gguf::dequantize(gguf::ggml_type::q8_0, std::span(q8_0).first(33), out); },
                {"32 elements of Q8_0 need 34 bytes, got 33"});
  require_error([&] { gguf::dequantize(gguf::ggml_type::iq2_xxs, q8_0, out); }, {"IQ2_XXS", "not supported"});
}

TEST_CASE("gguf: files that cannot be read are io_errors naming the path", "[hf][gguf]") {
  require_error([&] { gguf::file::read(data_dir / "missing.gguf"); }, {"missing.gguf", "cannot open"});
  require_error([&] { gguf::file::read(data_dir); }, {"gguf", "is a directory"});
}

TEST_CASE("gguf: a type without dequantization is an error naming the file and tensor", "[hf][gguf]") {
  const auto f = gguf::file::read(data_dir / "types.gguf");
  require_error([&] { f.dequantize("q2_k_unsupported"); },
                {"types.gguf", "tensor 'q2_k_unsupported'", "Q2_K cannot be dequantized", "Q6_K"});
  require_error([&] { f.tensor("nope"); }, {"types.gguf", "tensor 'nope' is missing"});
}

TEST_CASE("gguf: every truncation of a valid file is an io_error", "[hf][gguf]") {
  const auto bytes = read_bytes(data_dir / "types.gguf");
  const auto f = gguf::file::read(data_dir / "types.gguf");
  // Every cut before the end of the last tensor's data must fail; cuts in the padding gguf-py
  // writes after it parse.
  std::size_t data_end = 0;
  for (const auto& t : f.tensors())
    data_end = std::max<std::size_t>(data_end, f.data_offset() + t.offset + t.data.size());
  REQUIRE(data_end <= bytes.size());
  std::size_t failures = 0;
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    try {
      parse(std::vector<std::byte>(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n)));
    } catch (const grpo::io_error& e) {
      ++failures;
      CHECK(std::string(e.what()).rfind("model.gguf: ", 0) == 0);
    }
  }
  CHECK(failures == data_end);
  require_error([&] { parse({bytes.begin(), bytes.begin() + 20}); },
                {"model.gguf: metadata count: the file ends at byte 20", "truncated file"});
  require_error([&] { parse({bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(data_end) - 1}); },
                {"model.gguf", "tensor 'q2_k_unsupported'", "past the end", "truncated file"});
}

TEST_CASE("gguf: malformed headers name the file and the field", "[hf][gguf]") {
  SECTION("bad magic") {
    auto bytes = small_image().build();
    bytes[0] = std::byte{'X'};
    require_error([&] { parse(bytes); }, {"model.gguf", "not a GGUF file"});
  }
  SECTION("versions") {
    auto im = small_image();
    im.version = 1;
    require_error([&] { parse(im.build()); }, {"model.gguf", "version 1 is not supported"});
    im.version = 0x03000000u;
    require_error([&] { parse(im.build()); }, {"model.gguf", "big-endian"});
    im.version = 4;
    require_error([&] { parse(im.build()); }, {"model.gguf", "unsupported version 4"});
  }
  SECTION("unknown value type") {
    auto im = small_image();
    gguf::value v;
    v.type = static_cast<gguf::value_type>(13);
    im.metadata.emplace_back("general.bogus", v);
    require_error([&] { parse(im.build()); }, {"model.gguf: metadata key 'general.bogus': unknown value type 13"});
  }
  SECTION("unknown array element type") {
    auto im = small_image();
    gguf::value v;
    v.type = gguf::value_type::array;
    v.element_type = static_cast<gguf::value_type>(77);
    im.metadata.emplace_back("tokenizer.ggml.tokens", v);
    require_error([&] { parse(im.build()); }, {"model.gguf", "'tokenizer.ggml.tokens'", "unknown value type 77"});
  }
  SECTION("bool other than 0 or 1") {
    auto im = small_image();
    gguf::value v;
    v.type = gguf::value_type::boolean;
    v.unsigned_integer = 2;
    im.metadata.emplace_back("tokenizer.ggml.add_bos_token", v);
    require_error([&] { parse(im.build()); }, {"model.gguf", "'tokenizer.ggml.add_bos_token'", "bool value 2"});
  }
  SECTION("duplicate key") {
    auto im = small_image();
    im.metadata.push_back(im.metadata.front());
    require_error([&] { parse(im.build()); }, {"model.gguf", "'general.architecture'", "duplicate key"});
  }
  SECTION("absurd counts are rejected before allocating") {
    auto bytes = small_image().build();
    for (int i = 0; i < 8; ++i) bytes[16 + i] = std::byte{0x7F};  // metadata count 0x7F7F...
    require_error([&] { parse(bytes); }, {"model.gguf", "metadata count", "cannot fit"});
    auto im = small_image();
    gguf::value strings;
    strings.type = gguf::value_type::array;
    strings.element_type = gguf::value_type::string;
    im.metadata.emplace_back("tokenizer.ggml.tokens", strings);
    bytes = im.build();
    // The array length follows the element type; patch it to 2^60.
    const std::string key = "tokenizer.ggml.tokens";
    const auto at = std::search(bytes.begin(), bytes.end(), reinterpret_cast<const std::byte*>(key.data()),
                                reinterpret_cast<const std::byte*>(key.data()) + key.size());
    const auto length_at = at + static_cast<std::ptrdiff_t>(key.size()) + 4 + 4;
    for (int i = 0; i < 8; ++i) length_at[i] = std::byte{0};
    length_at[7] = std::byte{0x10};
    require_error([&] { parse(bytes); }, {"model.gguf", "'tokenizer.ggml.tokens'", "array of 1152921504606846976",
                                          "cannot fit"});
    auto deep = small_image();
    gguf::value nested;
    nested.type = gguf::value_type::uint8;
    for (int depth = 0; depth < 20; ++depth) {
      gguf::value outer;
      outer.type = gguf::value_type::array;
      outer.element_type = nested.type;
      outer.items.push_back(nested);
      nested = outer;
    }
    deep.metadata.emplace_back("test.deep", nested);
    require_error([&] { parse(deep.build()); }, {"model.gguf", "'test.deep'", "nested deeper than 16"});
  }
  SECTION("string length past the end") {
    auto im = small_image();
    auto bytes = im.build();
    bytes[24] = std::byte{0xFF};  // the first key's length
    bytes[29] = std::byte{0x01};
    require_error([&] { parse(bytes); }, {"model.gguf", "metadata key 0", "past the end of the file"});
  }
  SECTION("general.alignment") {
    auto im = small_image();
    im.metadata.emplace_back("general.alignment", scalar_u32(48));
    require_error([&] { parse(im.build()); }, {"model.gguf", "'general.alignment'", "48 is not a power of two"});
    im.at("general.alignment") = string_value("32");
    require_error([&] { parse(im.build()); }, {"model.gguf", "'general.alignment'", "expected uint32, got string"});
  }
}

TEST_CASE("gguf: malformed tensor infos name the file and the tensor", "[hf][gguf]") {
  SECTION("unknown ggml type") {
    auto im = small_image();
    im.tensors[0].type = 99;
    require_error([&] { parse(im.build()); }, {"model.gguf: tensor 'blk.3.attn_q.weight': unknown ggml type 99"});
  }
  SECTION("offset past the end") {
    auto im = small_image();
    im.tensors[0].offset = 4096;
    require_error([&] { parse(im.build()); },
                  {"model.gguf: tensor 'blk.3.attn_q.weight'", "[4096, 4112)", "past the end", "data section"});
  }
  SECTION("misaligned offset") {
    auto im = small_image();
    im.tensors[0].offset = 8;
    require_error([&] { parse(im.build()); }, {"model.gguf", "'blk.3.attn_q.weight'", "offset 8", "alignment 32"});
  }
  SECTION("dims overflow") {
    auto im = small_image();
    im.tensors[0].dims = {std::uint64_t{1} << 32, std::uint64_t{1} << 32};
    require_error([&] { parse(im.build()); },
                  {"model.gguf", "'blk.3.attn_q.weight'", "dims [4294967296,4294967296] overflow"});
  }
  SECTION("a byte count past 2^64") {
    auto im = small_image();
    im.tensors[0].dims = {std::uint64_t{1} << 62};  // 2^62 F32 elements: 2^64 bytes
    require_error([&] { parse(im.build()); },
                  {"model.gguf", "'blk.3.attn_q.weight'", "dims [4611686018427387904] of F32 overflow a 64-bit byte count"});
  }
  SECTION("too many dims") {
    auto im = small_image();
    im.tensors[0].dims = {1, 1, 1, 1, 4};
    require_error([&] { parse(im.build()); }, {"model.gguf", "'blk.3.attn_q.weight'", "n_dims 5"});
  }
  SECTION("row not a whole number of blocks") {
    auto im = small_image();
    im.tensors[0].type = static_cast<std::uint32_t>(gguf::ggml_type::q8_0);
    im.tensors[0].dims = {16, 2};
    require_error([&] { parse(im.build()); }, {"model.gguf", "'blk.3.attn_q.weight'", "dims[0] = 16", "Q8_0 block size 32"});
  }
  SECTION("overlapping data") {
    auto im = small_image();
    im.tensors.push_back({"blk.3.attn_k.weight", {2}, 0, std::vector<std::byte>(8), std::uint64_t{0}});
    require_error([&] { parse(im.build()); },
                  {"model.gguf", "data [0, 16) overlaps tensor 'blk.3.attn_k.weight', which ends at 8"});
  }
  SECTION("duplicate name") {
    auto im = small_image();
    im.tensors.push_back(im.tensors[0]);
    require_error([&] { parse(im.build()); }, {"model.gguf", "'blk.3.attn_q.weight'", "duplicate tensor name"});
  }
  SECTION("empty tensors and a file cut inside the padding before the data section") {
    image im;
    im.metadata.emplace_back("general.architecture", string_value("llama"));
    im.tensors.push_back({"empty", {0}, 0, {}, std::nullopt});
    auto bytes = im.build();
    REQUIRE(parse(bytes).tensors().size() == 1);  // the whole file: the data section starts at its end
    REQUIRE(bytes.back() == std::byte{0});        // the last byte is alignment padding
    bytes.pop_back();
    require_error([&] { parse(bytes); },
                  {"model.gguf", "the data section starts at byte " + std::to_string(bytes.size() + 1),
                   "past the end of the " + std::to_string(bytes.size()) + "-byte file"});
  }
  SECTION("a tensor count beyond the file") {
    auto bytes = small_image().build();
    bytes[15] = std::byte{0x01};  // tensor count 2^56 + 1
    require_error([&] { parse(bytes); }, {"model.gguf", "tensor count", "cannot fit"});
  }
}

TEST_CASE("gguf: the builder round trip reproduces a gguf-py file", "[hf][gguf]") {
  // Guards the malformed-file builder above: a copy rebuilt from a parsed file parses to the same.
  const auto f = gguf::file::read(data_dir / "tiny_llama.gguf");
  auto im = copy_of(f);
  const auto g = parse(im.build());
  REQUIRE(g.tensors().size() == f.tensors().size());
  CHECK(g.get_string_array("tokenizer.ggml.tokens") == f.get_string_array("tokenizer.ggml.tokens"));
  CHECK(g.dequantize("blk.0.attn_q.weight") == f.dequantize("blk.0.attn_q.weight"));
}

namespace {

// Checks a converted directory against the fixture's expectations.
void check_converted(const std::string& arch, const std::filesystem::path& dir) {
  const auto expected = read_json(data_dir / ("tiny_" + arch + ".json"));
  const auto config = read_json(dir / "config.json");
  for (const auto& m : member(expected, "config").members) {
    INFO("config.json key " << m.key);
    const auto& got = member(config, m.key);
    if (m.value.kind == json::kind::number)
      CHECK(std::strtod(got.text.c_str(), nullptr) == std::strtod(m.value.text.c_str(), nullptr));
    else if (m.value.kind == json::kind::boolean)
      CHECK(got.boolean == m.value.boolean);
    else
      CHECK(got.text == m.value.text);
  }
  CHECK(member(config, "architectures").items.at(0).text == (arch == "llama" ? "LlamaForCausalLM" : "Qwen2ForCausalLM"));
  CHECK(member(config, "hidden_act").text == "silu");
  CHECK(member(config, "torch_dtype").text == "float32");

  const auto weights = grpo::safetensors::file::read(dir / "model.safetensors");
  const auto& tensors = member(expected, "tensors");
  CHECK(weights.names().size() == tensors.members.size());
  CHECK(weights.metadata().at("format") == "pt");
  for (const auto& m : tensors.members) {
    INFO("tensor " << m.key);
    const auto t = weights.at(m.key);
    CHECK(t.type == grpo::safetensors::dtype::f32);
    std::vector<std::int64_t> shape;
    for (const auto& d : member(m.value, "shape").items) shape.push_back(std::stoll(d.text));
    CHECK(t.shape == shape);
    CHECK(hex16(fnv1a64(t.data)) == member(m.value, "fnv1a64").text);
    const auto values = grpo::safetensors::to_doubles(t);
    const auto& first = member(m.value, "first").items;
    for (std::size_t i = 0; i < first.size(); ++i) CHECK(values[i] == static_cast<double>(to_float(first[i])));
  }

  // The tokenizer: the same vocabulary, merges, added tokens and pipeline as the tokenizer.json the
  // GGUF vocabulary was made from.
  const auto tokenizer = read_json(dir / "tokenizer.json");
  const auto original = read_json(data_dir / ("tiny_" + arch + "_tokenizer.json"));
  const auto& model = member(tokenizer, "model");
  const auto& original_model = member(original, "model");
  CHECK(member(model, "type").text == "BPE");
  const auto& vocab = member(model, "vocab").members;
  const auto& original_vocab = member(original_model, "vocab").members;
  std::map<std::string, std::string> got_vocab, want_vocab;
  for (const auto& m : vocab) got_vocab[m.key] = m.value.text;
  for (const auto& m : original_vocab) want_vocab[m.key] = m.value.text;
  for (const auto& a : member(original, "added_tokens").items)  // HF keeps added tokens out of the model's vocab
    want_vocab[member(a, "content").text] = member(a, "id").text;
  CHECK(got_vocab == want_vocab);
  const auto& merges = member(model, "merges").items;
  const auto& original_merges = member(original_model, "merges").items;
  REQUIRE(merges.size() == original_merges.size());
  for (std::size_t i = 0; i < merges.size(); ++i) {
    REQUIRE(merges[i].items.size() == 2);
    CHECK(merges[i].items[0].text == original_merges[i].items[0].text);
    CHECK(merges[i].items[1].text == original_merges[i].items[1].text);
  }
  const auto& added = member(tokenizer, "added_tokens").items;
  const auto& original_added = member(original, "added_tokens").items;
  REQUIRE(added.size() == original_added.size());
  for (std::size_t i = 0; i < added.size(); ++i) {
    CHECK(member(added[i], "id").text == member(original_added[i], "id").text);
    CHECK(member(added[i], "content").text == member(original_added[i], "content").text);
    CHECK(member(added[i], "special").boolean == member(original_added[i], "special").boolean);
  }
  // The pipeline objects, compared as canonical JSON text (members in source order).
  const std::function<std::string(const json::value&)> canonical = [&](const json::value& v) -> std::string {
    switch (v.kind) {
      case json::kind::null: return "null";
      case json::kind::boolean: return v.boolean ? "true" : "false";
      case json::kind::number: return v.text;
      case json::kind::string: return json::quote(v.text);
      case json::kind::array: {
        std::string out = "[";
        for (const auto& item : v.items) out += canonical(item) + ",";
        return out + "]";
      }
      case json::kind::object: {
        std::map<std::string, std::string> sorted;
        for (const auto& m : v.members) sorted[m.key] = canonical(m.value);
        std::string out = "{";
        for (const auto& [k, s] : sorted) out += json::quote(k) + ":" + s + ",";
        return out + "}";
      }
    }
    return "";
  };
  for (const char* step : {"normalizer", "pre_tokenizer", "post_processor", "decoder"}) {
    INFO("tokenizer.json " << step);
    CHECK(canonical(member(tokenizer, step)) == canonical(member(original, step)));
  }

  const auto tokenizer_config = read_json(dir / "tokenizer_config.json");
  CHECK(member(tokenizer_config, "bos_token").text == "<|im_start|>");
  CHECK(member(tokenizer_config, "eos_token").text == "<|im_end|>");
  CHECK(member(tokenizer_config, "pad_token").text == "<|im_end|>");
  CHECK(member(tokenizer_config, "unk_token").text == "<|endoftext|>");
  CHECK(member(tokenizer_config, "model_max_length").text == "256");
  CHECK(member(tokenizer_config, "chat_template").text ==
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}");
  const auto generation = read_json(dir / "generation_config.json");
  CHECK(member(generation, "bos_token_id").text == "1");
  CHECK(member(generation, "eos_token_id").text == "2");
}

}  // namespace

TEST_CASE("gguf convert: a tiny llama (tied, q / k permuted, smollm pre-tokenizer)", "[hf][gguf]") {
  const auto dir = scratch_directory("llama");
  const auto result = grpo::hf::convert_gguf(data_dir / "tiny_llama.gguf", dir / "out");
  CHECK(result.architecture == "llama");
  CHECK(result.n_tensors == 2 + 2 * 9);
  check_converted("llama", dir / "out");
  const auto config = read_json(dir / "out" / "config.json");
  CHECK(member(config, "rms_norm_eps").text == "1e-05");  // float32 1e-5, not 9.99999974e-06
  CHECK(member(config, "rope_theta").text == "100000.0");

  // The rows of q / k: HF row r is GGUF row map[r] (transformers' reverse permutation of arange).
  const auto expected = read_json(data_dir / "tiny_llama.json");
  const auto f = gguf::file::read(data_dir / "tiny_llama.gguf");
  const auto weights = grpo::safetensors::file::read(dir / "out" / "model.safetensors");
  for (const auto& [which, name] : {std::pair{"q", "q_proj"}, std::pair{"k", "k_proj"}}) {
    INFO(which);
    const auto stored = f.dequantize(std::string("blk.1.attn_") + which + ".weight");
    const auto converted = weights.to_doubles(std::string("model.layers.1.self_attn.") + name + ".weight");
    const auto& map = member(member(expected, "row_maps"), which).items;
    const std::size_t cols = 32;
    REQUIRE(converted.size() == map.size() * cols);
    for (std::size_t r = 0; r < map.size(); ++r)
      for (std::size_t c = 0; c < cols; ++c)
        REQUIRE(converted[r * cols + c] == static_cast<double>(stored[std::stoul(map[r].text) * cols + c]));
  }
  // Converting again replaces the files.
  CHECK_NOTHROW(grpo::hf::convert_gguf(data_dir / "tiny_llama.gguf", dir / "out"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("gguf convert: a tiny qwen2 (untied, biases, qwen2 pre-tokenizer)", "[hf][gguf]") {
  const auto dir = scratch_directory("qwen2");
  const auto result = grpo::hf::convert_gguf(data_dir / "tiny_qwen2.gguf", dir);
  CHECK(result.architecture == "qwen2");
  CHECK(result.n_tensors == 3 + 2 * 12);
  check_converted("qwen2", dir);
  std::filesystem::remove_all(dir);
}

TEST_CASE("gguf convert: what is not converted is an error naming the file and the field", "[hf][gguf]") {
  const auto dir = scratch_directory("errors");
  const auto f = gguf::file::read(data_dir / "tiny_llama.gguf");
  const auto convert = [&](image im) {
    const auto path = dir / "model.gguf";
    const auto bytes = im.build();
    grpo::safetensors::write_file_atomically(path, bytes);
    grpo::hf::convert_gguf(path, dir / "out");
  };
  SECTION("architecture") {
    auto im = copy_of(f);
    im.at("general.architecture") = string_value("gemma2");
    require_error([&] { convert(im); }, {"model.gguf", "general.architecture", "gemma2", "llama, qwen2"});
  }
  SECTION("pre-tokenizer") {
    auto im = copy_of(f);
    im.at("tokenizer.ggml.pre") = string_value("tekken");
    require_error([&] { convert(im); }, {"model.gguf", "'tokenizer.ggml.pre'", "tekken", "smollm"});
  }
  SECTION("tokenizer model") {
    auto im = copy_of(f);
    im.at("tokenizer.ggml.model") = string_value("llama");
    require_error([&] { convert(im); }, {"model.gguf", "'tokenizer.ggml.model'", "\"llama\"", "gpt2"});
  }
  SECTION("a missing tensor") {
    auto im = copy_of(f);
    im.erase_tensor("blk.1.ffn_down.weight");
    require_error([&] { convert(im); }, {"model.gguf", "tensor 'blk.1.ffn_down.weight' is missing"});
  }
  SECTION("a shape that disagrees with the metadata") {
    auto im = copy_of(f);
    im.at("llama.attention.head_count_kv") = scalar_u32(4);
    require_error([&] { convert(im); }, {"model.gguf", "tensor 'blk.0.attn_k.weight'", "shape [16,32]",
                                         "llama.attention.head_count_kv", "expected [32,32]"});
  }
  SECTION("an unexpected tensor") {
    auto im = copy_of(f);
    im.tensors.push_back({"rope_freqs.weight", {4}, 0, std::vector<std::byte>(16), std::nullopt});
    require_error([&] { convert(im); }, {"model.gguf", "tensor 'rope_freqs.weight'", "not converted"});
  }
  SECTION("a missing key") {
    auto im = copy_of(f);
    std::erase_if(im.metadata, [](const auto& kv) { return kv.first == "llama.block_count"; });
    require_error([&] { convert(im); }, {"model.gguf", "'llama.block_count' is missing"});
  }
  SECTION("a tensor type without dequantization") {
    auto im = copy_of(f);
    auto& t = im.tensor("blk.0.attn_v.weight");  // [16, 32]: 16 rows of one IQ4_NL block (18 bytes)
    t.type = static_cast<std::uint32_t>(gguf::ggml_type::iq4_nl);
    t.data.assign(16 * 18, std::byte{0});
    require_error([&] { convert(im); }, {"model.gguf", "'blk.0.attn_v.weight'", "IQ4_NL cannot be dequantized"});
  }
  SECTION("a merge of tokens that are not in the vocabulary") {
    auto im = copy_of(f);
    im.at("tokenizer.ggml.merges").items[5] = string_value("zzz qqq");
    require_error([&] { convert(im); }, {"model.gguf", "'tokenizer.ggml.merges'[5]", "\"zzz\" is not in"});
  }
  SECTION("rope scaling") {
    auto im = copy_of(f);
    im.metadata.emplace_back("llama.rope.scaling.type", string_value("yarn"));
    require_error([&] { convert(im); }, {"model.gguf", "'llama.rope.scaling.type'", "yarn", "not converted"});
  }
  std::filesystem::remove_all(dir);
}
