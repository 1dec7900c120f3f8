// SPDX-License-Identifier: Apache-2.0
// tests/fuzz/safetensors.cpp: libFuzzer target for the safetensors reader (grpo/safetensors.hpp).
// The input is a whole file image. An accepted file must give every tensor as a view of exactly
// numel * dtype-size bytes, convert to doubles (BOOL may refuse a byte other than 0 or 1), and come
// back unchanged through the writer: a file grpo reads is one it can write.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "fuzz_support.hpp"
#include "grpo/error.hpp"
#include "grpo/safetensors.hpp"

namespace st = grpo::safetensors;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::optional<st::file> parsed;
  try {
    parsed = st::file::parse(grpo::fuzz::as_bytes(data, size), "fuzz.safetensors");
  } catch (const grpo::error&) {
    return 0;
  }
  const st::file& f = *parsed;
  st::writer writer;
  for (const auto& [key, value] : f.metadata()) writer.add_metadata(key, value);
  for (const std::string& name : f.names()) {
    const st::tensor_view t = f.at(name);
    FUZZ_REQUIRE(t.numel() >= 0);
    FUZZ_REQUIRE(t.data.size() == static_cast<std::size_t>(t.numel()) * st::size_of(t.type));
    try {
      FUZZ_REQUIRE(st::to_doubles(t).size() == static_cast<std::size_t>(t.numel()));
    } catch (const grpo::io_error&) {
      FUZZ_REQUIRE(t.type == st::dtype::boolean);
    }
    writer.add(name, t.type, t.shape, t.data);
  }
  // A name the file lacks is an io_error, never a default or a crash.
  const std::string absent = "\x01 not a tensor name";
  if (std::find(f.names().begin(), f.names().end(), absent) == f.names().end()) {
    try {
      (void)f.at(absent);
      FUZZ_REQUIRE(false);
    } catch (const grpo::io_error&) {
    }
  }

  const auto image = writer.serialize();
  const st::file again = st::file::parse(std::span<const std::byte>(image), "rewritten.safetensors");
  FUZZ_REQUIRE(again.names() == f.names());
  FUZZ_REQUIRE(again.metadata() == f.metadata());
  for (const std::string& name : f.names()) {
    const st::tensor_view a = f.at(name), b = again.at(name);
    FUZZ_REQUIRE(a.type == b.type && a.shape == b.shape);
    FUZZ_REQUIRE(std::equal(a.data.begin(), a.data.end(), b.data.begin(), b.data.end()));
  }
  return 0;
}
