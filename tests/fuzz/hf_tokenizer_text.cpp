// SPDX-License-Identifier: Apache-2.0
// tests/fuzz/hf_tokenizer_text.cpp: libFuzzer target for encode and decode (grpo/hf/tokenizer.hpp) with
// the real tokenizers of tests/data/hf/tokenizers: the first byte picks one, the rest is the text. Text
// that is not UTF-8 is a value_error; otherwise every id is in the vocabulary and decoding gives the
// text back: exactly for SmolLM2 and Llama 3 (no normalizer), NFC-normalized for Qwen2 and, with the
// ByteLevel prefix space, NFKC-normalized for RoBERTa when no added token was matched.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.hpp"
#include "grpo/error.hpp"
#include "grpo/hf/tokenizer.hpp"

#ifndef GRPO_FUZZ_TOKENIZERS_DIR
#error "GRPO_FUZZ_TOKENIZERS_DIR names tests/data/hf/tokenizers"
#endif

namespace hf = grpo::hf;

namespace {

enum class round_trip { exact, nfc, nfkc_prefix_space };

struct fixture {
  hf::tokenizer tokenizer;
  round_trip expected;
};

const std::vector<fixture>& fixtures() {
  static const std::vector<fixture> all = [] {
    const std::string dir = GRPO_FUZZ_TOKENIZERS_DIR;
    return std::vector<fixture>{{hf::tokenizer::load(dir + "/smollm2/tokenizer.json"), round_trip::exact},
                                {hf::tokenizer::load(dir + "/llama3/tokenizer.json"), round_trip::exact},
                                {hf::tokenizer::load(dir + "/qwen2/tokenizer.json"), round_trip::nfc},
                                {hf::tokenizer::load(dir + "/roberta/tokenizer.json"), round_trip::nfkc_prefix_space}};
  }();
  return all;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const fixture& f = fixtures()[data[0] % fixtures().size()];
  const std::string_view text = grpo::fuzz::as_text(data + 1, size - 1);
  std::vector<grpo::token_id> ids;
  try {
    ids = f.tokenizer.encode(text);
  } catch (const grpo::value_error&) {
    FUZZ_REQUIRE(!grpo::detail::json::is_valid_utf8(text));
    return 0;
  }
  FUZZ_REQUIRE(grpo::detail::json::is_valid_utf8(text));
  bool added = false;
  for (const grpo::token_id id : ids) {
    FUZZ_REQUIRE(id >= 0 && id < f.tokenizer.vocab_size());
    for (const hf::added_token& a : f.tokenizer.added_tokens()) added = added || a.id == id;
  }
  const std::string decoded = f.tokenizer.decode(ids);
  FUZZ_REQUIRE(grpo::detail::json::is_valid_utf8(decoded));
  switch (f.expected) {
    case round_trip::exact:
      FUZZ_REQUIRE(decoded == text);
      break;
    case round_trip::nfc:
      if (!added) FUZZ_REQUIRE(decoded == hf::detail::normalize(std::string(text), hf::detail::normalization_form::nfc));
      break;
    case round_trip::nfkc_prefix_space:
      if (!added) {
        const std::string n = hf::detail::normalize(std::string(text), hf::detail::normalization_form::nfkc);
        FUZZ_REQUIRE(decoded == (n.empty() || n[0] == ' ' ? n : " " + n));
      }
      break;
  }
  return 0;
}
