// SPDX-License-Identifier: Apache-2.0
// tests/fuzz/hf_model_config.cpp: libFuzzer target for the Hugging Face config.json and
// generation_config.json readers (grpo/hf/model_config.hpp). The input is either file. A config.json
// that parses is valid (validate() again does not throw) and comes back equal through to_json, the
// config.json grpo writes beside converted weights; a generation_config.json's ids come back through
// generation_json.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "fuzz_support.hpp"
#include "grpo/error.hpp"
#include "grpo/hf/model_config.hpp"

namespace hf = grpo::hf;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = grpo::fuzz::as_text(data, size);

  try {
    const hf::generation_config g = hf::parse_generation_config(text, "fuzz_generation_config.json");
    hf::model_config ids;
    ids.bos_token_id = g.bos_token_id;
    ids.eos_token_ids = g.eos_token_ids;
    const hf::generation_config again = hf::parse_generation_config(hf::generation_json(ids), "written.json");
    FUZZ_REQUIRE(again.bos_token_id == g.bos_token_id && again.eos_token_ids == g.eos_token_ids);
    FUZZ_REQUIRE(!again.pad_token_id.has_value());
  } catch (const grpo::error&) {
  }

  std::optional<hf::model_config> parsed;
  try {
    parsed = hf::parse_model_config(text, "fuzz_config.json");
  } catch (const grpo::error&) {
    return 0;
  }
  const hf::model_config& c = *parsed;
  c.validate("fuzz_config.json");
  FUZZ_REQUIRE(c.head_dim * c.num_attention_heads == c.q_dim() && c.group_size() >= 1);
  // to_json records the dtype it is given; an absent dtype is written as float32.
  const std::string written = hf::to_json(c, c.dtype.empty() ? "float32" : c.dtype);
  hf::model_config again = hf::parse_model_config(written, "written_config.json");
  if (c.dtype.empty()) {
    FUZZ_REQUIRE(again.dtype == "float32");
    again.dtype.clear();
  }
  FUZZ_REQUIRE(again == c);
  return 0;
}
