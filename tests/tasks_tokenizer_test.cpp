// SPDX-License-Identifier: Apache-2.0
// The character tokenizer of the built-in tasks: frozen ids, encode/decode, the tag and control
// tokens, JSON round trip, and the errors for unknown characters and malformed vocabularies.
#include "test_support.hpp"

#include <optional>
#include <random>
#include <string>
#include <vector>

#include "grpo/tasks/tokenizer.hpp"

using grpo::token_id;
using grpo::tasks::builtin_tokenizer;
using grpo::tasks::char_tokenizer;
using grpo::testing::require_error;

TEST_CASE("builtin vocabulary ids are frozen", "[tasks][tokenizer]") {
  const char_tokenizer& tok = builtin_tokenizer();
  // Written out in full: a checkpoint's ids must never move, so any change here is a format break.
  const std::vector<std::string> expected = {
      "<pad>", "<bos>", "<eos>", "<think>", "</think>", "<answer>", "</answer>", "\n", " ", "0", "1", "2", "3",
      "4",     "5",     "6",     "7",       "8",        "9",        "+",         "-",  "*", "/", "(", ")", "=",
      ",",     ".",     ":",     "?",       "a",        "b",        "c",         "d",  "e", "f", "g", "h", "i",
      "j",     "k",     "l",     "m",       "n",        "o",        "p",         "q",  "r", "s", "t", "u", "v",
      "w",     "x",     "y",     "z",       "<",        ">",        "!",         ";",  "'", "\"", "%", "_"};
  CHECK(tok.tokens() == expected);
  CHECK(tok.vocab_size() == 64);
  CHECK(tok.pad_id() == 0);
  CHECK(tok.bos_id() == 1);
  CHECK(tok.eos_id() == 2);
  CHECK(tok.find("<think>") == 3);
  CHECK(tok.find("</answer>") == 6);
  CHECK(tok.find("a") == 30);
  CHECK(tok.find("_") == 63);
  CHECK_FALSE(tok.find("A").has_value());
  CHECK(tok.token_text(4) == "</think>");
  CHECK(tok.token_text(2) == "<eos>");
}

TEST_CASE("encode maps characters and whole tags", "[tasks][tokenizer]") {
  const char_tokenizer& tok = builtin_tokenizer();
  // '1'=10 '2'=11 '+'=19 '3'=12 '='=25
  CHECK(tok.encode("12+3=") == std::vector<token_id>{10, 11, 19, 12, 25});
  // <think>=3, '1'=10, </think>=4, <answer>=5, '1'=10, </answer>=6
  CHECK(tok.encode("<think>1</think><answer>1</answer>") == std::vector<token_id>{3, 10, 4, 5, 10, 6});
  // An incomplete tag is characters: '<'=56 't'=30+19=49 'h'=37 'i'=38 'n'=43
  CHECK(tok.encode("<thin") == std::vector<token_id>{56, 49, 37, 38, 43});
  // "<<think>>": '<' then the tag then '>'=57
  CHECK(tok.encode("<<think>>") == std::vector<token_id>{56, 3, 57});
  // 'u'=50 's'=48 'e'=34 ' '=8 '\n'=7
  CHECK(tok.encode("use \n") == std::vector<token_id>{50, 48, 34, 8, 7});
  CHECK(tok.encode("").empty());
  CHECK(tok.encode_prompt("1+1=") == std::vector<token_id>{1, 10, 19, 10, 25});
  CHECK(tok.encode_completion("<answer>2</answer>") == std::vector<token_id>{5, 11, 6, 2});
  // Control tokens have no text: their names encode as plain characters.
  CHECK(tok.encode("<eos>").size() == 5);
}

TEST_CASE("decode skips control tokens and round-trips text", "[tasks][tokenizer]") {
  const char_tokenizer& tok = builtin_tokenizer();
  const std::vector<token_id> ids = {1, 10, 19, 10, 25, 3, 4, 2, 0, 0};
  CHECK(tok.decode(ids) == "1+1=<think></think>");
  // Spelled-out tag characters decode to the tag's text, and re-encode as the single tag token.
  std::vector<token_id> with_close = tok.encode("<think");  // six character tokens
  with_close.push_back(57);                                // '>'
  REQUIRE(with_close.size() == 7);
  CHECK(tok.decode(with_close) == "<think>");
  CHECK(tok.encode(tok.decode(with_close)) == std::vector<token_id>{3});

  std::vector<std::string> texts = {"", "57+68=", "<think>7+8=15\n5+6+1=12</think><answer>125</answer>",
                                    "use 3 5 7 to make 22.", "</answer><answer><think>", "a_b%c\"d'e;f!g"};
  // Random strings over every character of the vocabulary, tags and partial tags included.
  std::mt19937 gen(7);
  const std::string alphabet = "\n 0123456789+-*/()=,.:?abcdefghijklmnopqrstuvwxyz<>!;'\"%_";
  for (int n = 0; n < 200; ++n) {
    std::string s;
    const int len = static_cast<int>(gen() % 40);
    for (int i = 0; i < len; ++i) {
      if (gen() % 10 == 0) s += std::vector<std::string>{"<think>", "</think>", "<answer>", "</answer>"}[gen() % 4];
      else s += alphabet[gen() % alphabet.size()];
    }
    texts.push_back(s);
  }
  for (const auto& s : texts) {
    INFO(s);
    CHECK(tok.decode(tok.encode(s)) == s);
  }
}

TEST_CASE("unknown characters and ids are errors naming them", "[tasks][tokenizer]") {
  const char_tokenizer& tok = builtin_tokenizer();
  require_error([&] { tok.encode("1A"); }, {"text: character 'A' (0x41) at byte 1 is not in the vocabulary"});
  require_error([&] { tok.encode("1+1\t"); }, {"text: character byte 0x09 at byte 3"});
  require_error([&] { tok.encode("\xC3\xA9"); }, {"text: character byte 0xc3 at byte 0"});
  require_error([&] { tok.encode_prompt("X"); }, {"text: character 'X'"});
  CHECK(tok.first_unknown("abc") == std::nullopt);
  CHECK(tok.first_unknown("<think>Q") == std::optional<std::size_t>(7));
  require_error([&] { tok.decode(std::vector<token_id>{3, 64}); }, {"ids: element 1 is 64, outside [0, 64)"});
  require_error([&] { tok.decode(std::vector<token_id>{-1}); }, {"ids: element 0 is -1"});
  require_error([&] { tok.token_text(64); }, {"id: 64 is outside [0, 64)"});
}

TEST_CASE("custom vocabularies: longest special first, validation", "[tasks][tokenizer]") {
  const char_tokenizer tok({"<pad>", "<bos>", "<eos>", "ab", "abc", "a", "b", "c"});
  // "abcab": "abc" (4) wins over "ab" (3), then "ab" (3).
  CHECK(tok.encode("abcab") == std::vector<token_id>{4, 3});
  CHECK(tok.encode("ba") == std::vector<token_id>{6, 5});
  CHECK(tok.decode(tok.encode("cabcb")) == "cabcb");

  using grpo::config_error;
  require_error([] { char_tokenizer({"<pad>", "<bos>", "<eos>", "a", "a"}); }, {"tokens: entry 4 duplicates entry 3"});
  require_error([] { char_tokenizer({"<pad>", "<bos>", "a"}); }, {"tokens: the control token \"<eos>\" is missing"});
  require_error([] { char_tokenizer({"<pad>", "<bos>", "<eos>", ""}); }, {"tokens: entry 3 is empty"});
  require_error([] { char_tokenizer({"<pad>", "<bos>", "<eos>", "\x01"}); },
                {"tokens: entry 3 is byte 0x01, not a printable ASCII character"});
  CHECK_THROWS_AS(char_tokenizer({"<pad>", "<eos>"}), config_error);
}

TEST_CASE("tokenizer JSON round trip and errors", "[tasks][tokenizer]") {
  const char_tokenizer& tok = builtin_tokenizer();
  const std::string json = tok.to_json();
  CHECK(json.find("\"format\": \"grpo.char_tokenizer\"") != std::string::npos);
  CHECK(json.find("\"\\n\"") != std::string::npos);
  CHECK(char_tokenizer::from_json(json, "tokenizer.json") == tok);

  // A saved vocabulary keeps its ids even if it differs from the builtin one.
  const char_tokenizer custom({"<eos>", "x", "<pad>", "<bos>", "<think>"});
  const char_tokenizer loaded = char_tokenizer::from_json(custom.to_json(), "ckpt/tokenizer.json");
  CHECK(loaded == custom);
  CHECK(loaded.eos_id() == 0);
  CHECK(loaded.encode("x<think>") == std::vector<token_id>{1, 4});

  require_error([] { char_tokenizer::from_json("{\"tokens\": [", "tok.json"); }, {"tok.json: invalid JSON"});
  require_error([] { char_tokenizer::from_json("[]", "tok.json"); }, {"tok.json: expected a JSON object, got an array"});
  require_error([] { char_tokenizer::from_json(R"({"format": "bpe", "version": 1, "tokens": []})", "tok.json"); },
                {"tok.json: \"format\" must be \"grpo.char_tokenizer\""});
  require_error(
      [] { char_tokenizer::from_json(R"({"format": "grpo.char_tokenizer", "version": 2, "tokens": []})", "tok.json"); },
      {"tok.json: \"version\" must be 1"});
  require_error([] { char_tokenizer::from_json(R"({"format": "grpo.char_tokenizer", "version": 1})", "tok.json"); },
                {"tok.json: \"tokens\" must be an array"});
  require_error(
      [] {
        char_tokenizer::from_json(R"({"format": "grpo.char_tokenizer", "version": 1, "tokens": ["<pad>", 3]})",
                                  "tok.json");
      },
      {"tok.json: tokens[1] must be a string, got a number"});
  require_error(
      [] {
        char_tokenizer::from_json(R"({"format": "grpo.char_tokenizer", "version": 1, "tokens": ["<pad>", "<bos>"]})",
                                  "tok.json");
      },
      {"tokens: the control token \"<eos>\" is missing"});
}
