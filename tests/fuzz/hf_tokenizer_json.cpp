// SPDX-License-Identifier: Apache-2.0
// tests/fuzz/hf_tokenizer_json.cpp: libFuzzer target for the tokenizer.json reader (grpo/hf/tokenizer.hpp,
// tokenizer_json.hpp). The input is a tokenizer.json. A file that loads must encode some fixed texts
// (and each added token's own text) to ids of its vocabulary that decode without error; every
// vocabulary id must map to its token and back; an added token must be found by its text at its id.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.hpp"
#include "grpo/error.hpp"
#include "grpo/hf/tokenizer.hpp"

namespace hf = grpo::hf;

namespace {

void check_encoding(const hf::tokenizer& t, std::string_view text) {
  const std::vector<grpo::token_id> ids = t.encode(text);
  for (const grpo::token_id id : ids) FUZZ_REQUIRE(id >= 0 && id < t.vocab_size());
  (void)t.decode(ids);
  (void)t.decode(ids, /*skip_special_tokens=*/true);
  // Encoding is deterministic and shares a word cache between calls: the second time gives the same ids.
  FUZZ_REQUIRE(t.encode(text) == ids);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::optional<hf::tokenizer> parsed;
  try {
    parsed = hf::tokenizer::from_json(grpo::fuzz::as_text(data, size), "fuzz_tokenizer.json");
  } catch (const grpo::error&) {
    return 0;
  }
  const hf::tokenizer& t = *parsed;
  FUZZ_REQUIRE(t.vocab_size() >= 0);
  // Ids may be sparse up to 2^31 - 1: the first 65536 are checked, which covers every seed's vocabulary.
  for (grpo::token_id id = 0; id < std::min<std::int64_t>(t.vocab_size(), 65536); ++id) {
    const std::optional<std::string> token = t.id_to_token(id);
    if (token) FUZZ_REQUIRE(t.token_to_id(*token).has_value());
  }
  for (const hf::added_token& added : t.added_tokens()) {
    FUZZ_REQUIRE(added.id >= 0 && added.id < t.vocab_size());
    FUZZ_REQUIRE(t.token_to_id(added.content) == added.id);
    FUZZ_REQUIRE(t.is_special(added.id) == added.special);
    check_encoding(t, added.content);
  }
  for (const std::string_view text : {"", "Hello, world! 12345 +-*/ (3 + 4) = 7", "  two  spaces\n\ttab\r\n",
                                      "caf\xc3\xa9 na\xc3\xafve \xe2\x84\xab \xef\xbc\xa1 \xf0\x9f\x98\x80 \xe4\xb8\xad\xe6\x96\x87",
                                      "<think>1+1</think><answer>2</answer>"})
    check_encoding(t, text);
  return 0;
}
