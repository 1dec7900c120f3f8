// SPDX-License-Identifier: Apache-2.0
// tests/fuzz/gguf.cpp: libFuzzer target for the GGUF reader (grpo/hf/gguf.hpp) and the part of the
// converter (grpo/hf/gguf_convert.hpp) that reads metadata. The input is a whole file image. An accepted
// file must index every key and tensor it lists, place every tensor inside the data section at the
// alignment with exactly n_elements / block_size * type_size bytes and no overlap, dequantize to
// n_elements floats (F32 bit for bit), and give each typed getter either its value or an io_error. When
// the vocabulary converts, the tokenizer.json written for it must load in hf::tokenizer with every
// token at its GGUF id.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "fuzz_support.hpp"
#include "grpo/error.hpp"
#include "grpo/hf/gguf.hpp"
#include "grpo/hf/gguf_convert.hpp"
#include "grpo/hf/tokenizer.hpp"

namespace gguf = grpo::hf::gguf;

namespace {

// Each getter either answers consistently with the stored value or refuses with an io_error.
void check_getters(const gguf::file& f, const std::string& key, const gguf::value& v) {
  using vt = gguf::value_type;
  const bool is_signed = v.type == vt::int8 || v.type == vt::int16 || v.type == vt::int32 || v.type == vt::int64;
  const bool is_unsigned = v.type == vt::uint8 || v.type == vt::uint16 || v.type == vt::uint32 || v.type == vt::uint64;
  try {
    const std::uint64_t u = f.get_uint(key);
    FUZZ_REQUIRE(is_unsigned ? u == v.unsigned_integer : (is_signed && v.signed_integer >= 0 &&
                                                          u == static_cast<std::uint64_t>(v.signed_integer)));
  } catch (const grpo::io_error&) {
    FUZZ_REQUIRE(!is_unsigned && !(is_signed && v.signed_integer >= 0));
  }
  try {
    const std::int64_t i = f.get_int(key);
    FUZZ_REQUIRE(is_signed ? i == v.signed_integer : (is_unsigned && static_cast<std::uint64_t>(i) == v.unsigned_integer));
  } catch (const grpo::io_error&) {
    FUZZ_REQUIRE(!is_signed);
  }
  try {
    const double x = f.get_float(key);
    FUZZ_REQUIRE(v.type == vt::float32 || v.type == vt::float64);
    FUZZ_REQUIRE(std::memcmp(&x, &v.real, sizeof x) == 0);
  } catch (const grpo::io_error&) {
    FUZZ_REQUIRE(v.type != vt::float32 && v.type != vt::float64);
  }
  try {
    FUZZ_REQUIRE(f.get_string(key) == v.text && v.type == vt::string);
  } catch (const grpo::io_error&) {
    FUZZ_REQUIRE(v.type != vt::string);
  }
  try {
    const auto items = f.get_string_array(key);
    FUZZ_REQUIRE(v.type == vt::array && v.element_type == vt::string && items.size() == v.items.size());
  } catch (const grpo::io_error&) {
    FUZZ_REQUIRE(!(v.type == vt::array && v.element_type == vt::string));
  }
  try {
    FUZZ_REQUIRE(f.get_int_array(key).size() == v.items.size());
  } catch (const grpo::io_error&) {
  }
}

// What convert_gguf does before it touches tensors or the disk; returns the tokenizer.json it would write.
std::optional<std::string> converted_tokenizer(const gguf::file& f, std::vector<std::string>& tokens) {
  namespace convert = grpo::hf::detail::gguf_convert;
  try {
    tokens = f.get_string_array("tokenizer.ggml.tokens");
    (void)convert::read_special_ids(f, tokens.size());
    return convert::tokenizer_json(f, tokens);
  } catch (const grpo::error&) {
    return std::nullopt;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::optional<gguf::file> parsed;
  try {
    const auto* bytes = reinterpret_cast<const std::byte*>(data);
    parsed = gguf::file::parse(std::vector<std::byte>(bytes, bytes + size), "fuzz.gguf");
  } catch (const grpo::io_error&) {
    return 0;
  }
  const gguf::file& f = *parsed;
  FUZZ_REQUIRE(f.version() == 2 || f.version() == 3);
  FUZZ_REQUIRE(f.alignment() > 0 && (f.alignment() & (f.alignment() - 1)) == 0);
  FUZZ_REQUIRE(f.data_offset() % f.alignment() == 0);
  for (const auto& [key, v] : f.metadata()) {
    FUZZ_REQUIRE(f.find(key) == &v);
    check_getters(f, key, v);
  }

  const auto* image_begin = reinterpret_cast<const std::byte*>(data);
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
  for (const gguf::tensor_info& t : f.tensors()) {
    FUZZ_REQUIRE(f.find_tensor(t.name) == &t);
    FUZZ_REQUIRE(!t.dims.empty() && t.dims.size() <= gguf::file::max_dims);
    std::uint64_t n = 1;
    for (const std::uint64_t d : t.dims) n *= d;
    FUZZ_REQUIRE(n == t.n_elements && t.shape().size() == t.dims.size());
    const auto& traits = gguf::traits_of(t.type);
    FUZZ_REQUIRE(t.n_elements % traits.block_size == 0);
    FUZZ_REQUIRE(t.data.size() == t.n_elements / traits.block_size * traits.type_size);
    FUZZ_REQUIRE(t.offset % f.alignment() == 0);
    // The view lies in the file image, at the data section plus its offset.
    const std::size_t begin = f.data_offset() + t.offset;
    FUZZ_REQUIRE(begin + t.data.size() <= size);
    if (!t.data.empty()) {
      FUZZ_REQUIRE(std::memcmp(t.data.data(), image_begin + begin, t.data.size()) == 0);
      ranges.emplace_back(t.offset, t.offset + t.data.size());
    }
    try {
      const std::vector<float> values = f.dequantize(t);
      FUZZ_REQUIRE(traits.dequantizable && values.size() == t.n_elements);
      if (t.type == gguf::ggml_type::f32)
        FUZZ_REQUIRE(values.empty() || std::memcmp(values.data(), t.data.data(), t.data.size()) == 0);
    } catch (const grpo::config_error&) {
      FUZZ_REQUIRE(!traits.dequantizable);
    }
  }
  std::sort(ranges.begin(), ranges.end());
  for (std::size_t i = 1; i < ranges.size(); ++i) FUZZ_REQUIRE(ranges[i - 1].second <= ranges[i].first);

  std::vector<std::string> tokens;
  if (const auto json = converted_tokenizer(f, tokens)) {
    const auto tokenizer = grpo::hf::tokenizer::from_json(*json, "converted tokenizer.json");
    FUZZ_REQUIRE(tokenizer.vocab_size() == static_cast<std::int64_t>(tokens.size()));
    for (std::size_t i = 0; i < tokens.size(); ++i)
      FUZZ_REQUIRE(tokenizer.token_to_id(tokens[i]) == static_cast<grpo::token_id>(i));
  }
  return 0;
}
