// SPDX-License-Identifier: Apache-2.0
// Tests of grpo::hf::tokenizer against the Hugging Face `tokenizers` library: the ids and decodes of
// tests/data/hf/tokenizers/*/expected.json and variants.json were produced by the library itself
// (tests/fixtures/make_tokenizer_fixtures.py), the chat renderings by jinja2 from the ChatML
// templates; plus hand-worked BPE merges and the errors for unsupported or malformed files.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "grpo/detail/json.hpp"
#include "grpo/hf/chat_format.hpp"
#include "grpo/hf/tokenizer.hpp"
#include "test_support.hpp"

namespace {

namespace json = grpo::detail::json;
using grpo::token_id;
using grpo::hf::tokenizer;

const std::filesystem::path fixtures = std::filesystem::path(GRPO_TEST_DATA_DIR) / "hf" / "tokenizers";

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

json::value read_json(const std::filesystem::path& path) { return json::parse(read_text(path), path.string()); }

const json::value& at(const json::value& object, std::string_view key) {
  const auto member = std::find_if(object.members.begin(), object.members.end(),
                                   [&](const json::member& m) { return m.key == key; });
  INFO("fixture key " << key);
  REQUIRE(member != object.members.end());
  return member->value;
}

std::vector<token_id> ids_of(const json::value& list) {
  std::vector<token_id> ids;
  for (const auto& item : list.items) ids.push_back(static_cast<token_id>(std::stol(item.text)));
  return ids;
}

/// Every case of an expected.json: encode, decode with and without the special tokens, and the
/// decodes of partial UTF-8.
void check_expected(const tokenizer& tok, const json::value& expected) {
  int mismatches = 0;
  for (const auto& c : at(expected, "cases").items) {
    const std::string& text = at(c, "text").text;
    INFO("text: " << json::quote(text));
    const auto want = ids_of(at(c, "ids"));
    const auto got = tok.encode(text);
    CHECK(got == want);
    mismatches += got != want;
    CHECK(tok.decode(want) == at(c, "decoded").text);
    CHECK(tok.decode(want, true) == at(c, "decoded_skip_special").text);
  }
  for (const auto& c : at(expected, "random_cases").items) {
    INFO("random text: " << json::quote(at(c, "text").text));
    const bool equal = tok.encode(at(c, "text").text) == ids_of(at(c, "ids"));
    CHECK(equal);
    mismatches += !equal;
  }
  CHECK(mismatches == 0);
  for (const auto& c : at(expected, "partial_decodes").items) {
    const auto ids = ids_of(at(c, "ids"));
    INFO("ids[0] = " << ids.at(0));
    CHECK(tok.decode(ids) == at(c, "text").text);
  }
}

/// A tokenizer.json without a ByteLevel step, for hand-worked BPE: the characters are the symbols.
struct tiny {
  std::string model_fields;
  std::string merges = R"(["b c", "a b", "a bc"])";
  std::string pre_tokenizer = "null";
  std::string normalizer = "null";
  std::string decoder = R"({"type": "ByteLevel"})";
  std::string vocab = R"({"a": 0, "b": 1, "c": 2, "ab": 3, "bc": 4, "abc": 5, " ": 6})";
  std::string added_tokens = "[]";

  std::string json() const {
    return R"({"version": "1.0", "truncation": null, "padding": null, "added_tokens": )" + added_tokens +
           R"(, "normalizer": )" + normalizer + R"(, "pre_tokenizer": )" + pre_tokenizer +
           R"(, "post_processor": null, "decoder": )" + decoder + R"(, "model": {"type": "BPE")" + model_fields +
           R"(, "vocab": )" + vocab + R"(, "merges": )" + merges + "}}";
  }
};

std::string tiny_json(const std::string& model_fields, const std::string& merges = R"(["b c", "a b", "a bc"])",
                      const std::string& pre_tokenizer = "null", const std::string& normalizer = "null",
                      const std::string& decoder = R"({"type": "ByteLevel"})") {
  return tiny{model_fields, merges, pre_tokenizer, normalizer, decoder}.json();
}

}  // namespace

TEST_CASE("hf tokenizer: ids equal the tokenizers library's on the evaluation corpus", "[hf][tokenizer]") {
  for (const char* name : {"smollm2", "qwen2", "llama3", "roberta"}) {
    INFO("tokenizer " << name);
    const auto tok = tokenizer::load(fixtures / name / "tokenizer.json");
    check_expected(tok, read_json(fixtures / name / "expected.json"));
  }
}

TEST_CASE("hf tokenizer: merges written as \"a b\" strings give the ids of [\"a\", \"b\"] pairs", "[hf][tokenizer]") {
  const auto pairs = tokenizer::load(fixtures / "smollm2" / "tokenizer.json");
  const auto legacy = tokenizer::load(fixtures / "smollm2_legacy_merges" / "tokenizer.json");
  REQUIRE(read_text(fixtures / "smollm2_legacy_merges" / "tokenizer.json").find(R"("merges": ["Ġ Ġ",)") !=
          std::string::npos);
  const auto expected = read_json(fixtures / "smollm2" / "expected.json");
  check_expected(legacy, expected);
  for (const auto& c : at(expected, "cases").items) CHECK(legacy.encode(at(c, "text").text) == pairs.encode(at(c, "text").text));
  CHECK(legacy.vocab_size() == pairs.vocab_size());
}

TEST_CASE("hf tokenizer: normalizers, pre-tokenizers, split behaviours and decoders the models do not use",
          "[hf][tokenizer]") {
  const auto fixture = read_json(fixtures / "variants.json");
  const auto& texts = at(fixture, "texts").items;
  for (const auto& variant : at(fixture, "variants").items) {
    INFO("variant " << at(variant, "name").text);
    const std::string text = R"({"version": "1.0", "added_tokens": )" + at(fixture, "added_tokens").text +
                             R"(, "normalizer": )" + at(variant, "normalizer").text + R"(, "pre_tokenizer": )" +
                             at(variant, "pre_tokenizer").text + R"(, "post_processor": null, "decoder": )" +
                             at(variant, "decoder").text + R"(, "model": )" + at(fixture, "model").text + "}";
    const auto tok = tokenizer::from_json(text);
    const auto& ids = at(variant, "ids").items;
    const auto& decoded = at(variant, "decoded").items;
    REQUIRE(ids.size() == texts.size());
    for (std::size_t i = 0; i < texts.size(); ++i) {
      INFO("text: " << json::quote(texts[i].text));
      const auto want = ids_of(ids[i]);
      CHECK(tok.encode(texts[i].text) == want);
      CHECK(tok.decode(want) == (decoded[i].kind == json::kind::null ? texts[i].text : decoded[i].text));
    }
  }
}

TEST_CASE("hf tokenizer: BPE applies the lowest-ranked merge first (hand-worked)", "[hf][tokenizer]") {
  // "abc": symbols a b c. Ranks: (b c)=0, (a b)=1, (a bc)=2. (b c) goes first, leaving a bc, then (a bc).
  const auto by_rank = tokenizer::from_json(tiny_json(""));
  CHECK(by_rank.encode("abc") == std::vector<token_id>{5});
  CHECK(by_rank.encode("ab") == std::vector<token_id>{3});
  // With (a b) first, "abc" becomes ab c, and no merge joins ab and c.
  const auto reordered = tokenizer::from_json(tiny_json("", R"([["a", "b"], ["b", "c"], ["a", "bc"]])"));
  CHECK(reordered.encode("abc") == std::vector<token_id>{3, 2});
  // Equal ranks cannot happen, but equal pairs at two places merge leftmost first: "abab" -> ab ab.
  CHECK(reordered.encode("abab") == std::vector<token_id>{3, 3});
  // ignore_merges: a piece that is a vocabulary entry is its id, whatever the merges would make.
  const auto ignoring = tokenizer::from_json(tiny_json(R"(, "ignore_merges": true)", R"([["a", "b"]])"));
  CHECK(ignoring.encode("abc") == std::vector<token_id>{5});
  const auto merging = tokenizer::from_json(tiny_json(R"(, "ignore_merges": false)", R"([["a", "b"]])"));
  CHECK(merging.encode("abc") == std::vector<token_id>{3, 2});
  // A character outside the vocabulary, with no unk_token, is dropped (as the library drops it), and
  // its neighbours then merge: "axb" -> a b -> ab.
  CHECK(by_rank.encode("axb") == std::vector<token_id>{3});
  CHECK(by_rank.decode(std::vector<token_id>{5, 6, 3}) == "abc ab");
}

TEST_CASE("hf tokenizer: added-token ids, duplicate merges, unk and affixes as the library gives them",
          "[hf][tokenizer]") {
  // Expected values printed by tokenizers 0.23.3 for these same files.
  // The library ignores the file's added-token ids: a text of the vocabulary keeps its id ("bc" -> 4),
  // any other takes the next id after the vocabulary's 7 entries, in file order.
  const std::string added = R"([
    {"id": 1000, "content": "<x>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 3, "content": "<y>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": false},
    {"id": 9, "content": "bc", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}])";
  tiny with_added;
  with_added.added_tokens = added;
  const auto tok = tokenizer::from_json(with_added.json());
  CHECK(tok.token_to_id("<x>") == 7);
  CHECK(tok.token_to_id("<y>") == 8);
  CHECK(tok.token_to_id("bc") == 4);
  CHECK(tok.vocab_size() == 9);
  const auto ids = tok.encode("a<x>bc<y>abc");
  CHECK(ids == std::vector<token_id>{0, 7, 4, 8, 0, 4});
  CHECK(tok.decode(ids, true) == "a<y>a");
  // A merge listed twice takes its later rank: (a b) ranks after (b c) and (a bc), so "abc" -> a bc -> abc.
  CHECK(tokenizer::from_json(tiny_json("", R"(["a b", "b c", "a bc", "a b"])")).encode("abc") == std::vector<token_id>{5});
  // unk_token for characters outside the vocabulary, fused into one when fuse_unk.
  const auto with_unk = [](const char* fuse) {
    tiny t{std::string(R"(, "unk_token": "<unk>", "fuse_unk": )") + fuse, R"(["a b"])"};
    t.vocab = R"({"<unk>": 0, "a": 1, "b": 2, "ab": 3})";
    return tokenizer::from_json(t.json());
  };
  CHECK(with_unk("false").encode("axyb") == std::vector<token_id>{1, 0, 0, 2});
  CHECK(with_unk("false").encode("xxabx") == std::vector<token_id>{0, 0, 3, 0});
  CHECK(with_unk("true").encode("axyb") == std::vector<token_id>{1, 0, 2});
  CHECK(with_unk("true").encode("xxabx") == std::vector<token_id>{0, 3, 0});
  // continuing_subword_prefix on every symbol but the first, end_of_word_suffix on the last; a merged
  // token drops the right part's prefix ("a" + "##b" -> "ab"). A symbol missing from the vocabulary
  // ("##b</w>", "a</w>") is dropped.
  tiny affixes{R"(, "continuing_subword_prefix": "##", "end_of_word_suffix": "</w>")", R"(["a ##b", "##b ##c</w>"])"};
  affixes.vocab = R"({"a": 0, "##b": 1, "##c": 2, "c</w>": 3, "##c</w>": 4, "a##b": 5, "ab": 6, "b": 7,
                      "##bc</w>": 8, "abc</w>": 9})";
  const auto affixed = tokenizer::from_json(affixes.json());
  CHECK(affixed.encode("abc") == std::vector<token_id>{6, 4});
  CHECK(affixed.encode("ab") == std::vector<token_id>{0});
  CHECK(affixed.encode("a").empty());
}

TEST_CASE("hf tokenizer: Oniguruma escapes rewritten for PCRE2", "[hf][tokenizer]") {
  using grpo::hf::detail::translate_oniguruma;
  CHECK(translate_oniguruma(R"(\s+(?!\S)|\s+)") == R"([\t-\r\x{85}\p{Z}]+(?![^\t-\r\x{85}\p{Z}])|[\t-\r\x{85}\p{Z}]+)");
  CHECK(translate_oniguruma(R"( ?[^\s\p{L}\p{N}]+)") == R"( ?[^\t-\r\x{85}\p{Z}\p{L}\p{N}]+)");
  CHECK(translate_oniguruma(R"(\w\h[\w][\S])") == R"([\p{L}\p{M}\p{Nd}\p{Pc}][0-9a-fA-F][\p{L}\p{M}\p{Nd}\p{Pc}][\S])");
  CHECK(translate_oniguruma(R"([]\s][[:alpha:]\s]\\s\p{N}{1,3})") == R"([]\t-\r\x{85}\p{Z}][[:alpha:]\t-\r\x{85}\p{Z}]\\s\p{N}{1,3})");
  // U+180E (MONGOLIAN VOWEL SEPARATOR) is not \s for Oniguruma, as it is for PCRE2's UCP \s.
  const grpo::hf::detail::regex space(R"(\s+)", "test");
  CHECK(space.find_all("a\u180E\u00A0\u3000b") == std::vector<std::pair<std::size_t, std::size_t>>{{4, 9}});
}

TEST_CASE("hf tokenizer: vocabulary lookups and sizes", "[hf][tokenizer]") {
  const auto qwen = tokenizer::load(fixtures / "qwen2" / "tokenizer.json");
  // 600 trained entries, then 5 specials and 3 other added tokens with ids 600..607.
  CHECK(qwen.vocab_size() == 608);
  CHECK(qwen.token_to_id("<|endoftext|>") == 600);
  CHECK(qwen.token_to_id("<|im_end|>") == 602);
  CHECK(qwen.token_to_id("</tool_call>") == 606);
  CHECK(qwen.token_to_id("not a token") == std::nullopt);
  CHECK(qwen.id_to_token(602) == "<|im_end|>");
  CHECK(qwen.id_to_token(608) == std::nullopt);
  CHECK(qwen.is_special(602));
  CHECK_FALSE(qwen.is_special(605));  // <tool_call> is added but not special
  // The normalized added token "cafe\u0301" is known by its NFC form.
  CHECK(qwen.id_to_token(607) == "caf\xC3\xA9");
  const auto added = qwen.added_tokens();
  REQUIRE(added.size() == 8);
  CHECK(added.front().content == "<|endoftext|>");
  CHECK(added.back().id == 607);
  CHECK(added.back().normalized);
  // Every byte has its character in a byte-level vocabulary: "Ġ" is the space.
  CHECK(qwen.token_to_id("\xC4\xA0").has_value());
  CHECK(qwen.encode(" ") == std::vector<token_id>{*qwen.token_to_id("\xC4\xA0")});

  const auto smol = tokenizer::load(fixtures / "smollm2" / "tokenizer.json");
  CHECK(smol.token_to_id("<|endoftext|>") == 0);  // trained specials are the first vocabulary entries
  CHECK(smol.vocab_size() == 600);
}

TEST_CASE("hf tokenizer: from_pretrained reads tokenizer_config.json", "[hf][tokenizer]") {
  const auto smol = tokenizer::from_pretrained(fixtures / "smollm2");
  CHECK(smol.eos_token_id() == smol.token_to_id("<|im_end|>"));
  CHECK(smol.bos_token_id() == smol.token_to_id("<|im_start|>"));
  REQUIRE(smol.config().chat_template.has_value());
  const auto format = grpo::hf::default_chat_format(smol.config());
  CHECK(format.style == grpo::hf::chat_format::kind::chatml);
  CHECK(format.system_prompt == "You are a helpful AI assistant named SmolLM, trained by Hugging Face");

  const auto qwen = tokenizer::from_pretrained(fixtures / "qwen2");
  CHECK(qwen.bos_token_id() == std::nullopt);
  CHECK(qwen.eos_token_id() == 602);
  CHECK(qwen.pad_token_id() == 600);
  CHECK(grpo::hf::default_chat_format(qwen.config()).system_prompt ==
        "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");

  // An eos_token written as an AddedToken object; no chat template means plain prompts.
  const auto llama = tokenizer::from_pretrained(fixtures / "llama3");
  CHECK(llama.eos_token_id() == llama.token_to_id("<|eot_id|>"));
  CHECK(grpo::hf::default_chat_format(llama.config()).style == grpo::hf::chat_format::kind::plain);

  // No tokenizer_config.json at all.
  const auto roberta = tokenizer::from_pretrained(fixtures / "roberta");
  CHECK(roberta.eos_token_id() == std::nullopt);
  CHECK_FALSE(roberta.config().chat_template.has_value());
}

TEST_CASE("hf chat format: ChatML renderings equal jinja2's rendering of the chat templates", "[hf][chat]") {
  const auto fixture = read_json(fixtures / "chat_templates.json");
  const auto smol = tokenizer::load(fixtures / "smollm2" / "tokenizer.json");
  const auto qwen = tokenizer::load(fixtures / "qwen2" / "tokenizer.json");
  int checked_ids = 0;
  for (const auto& c : at(fixture, "cases").items) {
    const std::string& name = at(c, "template").text;
    const grpo::hf::chat_format format{grpo::hf::chat_format::kind::chatml, at(c, "system_prompt").text};
    INFO(name << " system " << json::quote(format.system_prompt) << " prompt " << json::quote(at(c, "prompt").text));
    const std::string rendered = grpo::hf::render_chat_prompt(format, at(c, "prompt").text);
    CHECK(rendered == at(c, "rendered").text);
    for (const auto& m : c.members)
      if (m.key == "ids") {
        CHECK((name == "smollm2" ? smol : qwen).encode_prompt(format, at(c, "prompt").text) == ids_of(m.value));
        ++checked_ids;
      }
  }
  CHECK(checked_ids == 12);
  const auto& templates = at(fixture, "templates");
  CHECK(grpo::hf::chatml_default_system_prompt(at(templates, "smollm2").text) ==
        "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  CHECK(grpo::hf::chatml_default_system_prompt(at(templates, "qwen2").text) ==
        "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
  CHECK(grpo::hf::chatml_default_system_prompt(at(templates, "chatml").text) == std::nullopt);
  CHECK(grpo::hf::is_chatml_template(at(templates, "chatml").text));
  CHECK_FALSE(grpo::hf::is_chatml_template("{{ bos_token }}{{ messages[0]['content'] }}"));

  const grpo::hf::chat_format plain{};
  CHECK(grpo::hf::render_chat_prompt(plain, "2 + 3 =") == "2 + 3 =");
  CHECK(grpo::hf::parse_chat_kind("chatml", "prompt.chat_format") == grpo::hf::chat_format::kind::chatml);
  CHECK(grpo::hf::parse_chat_kind("plain", "prompt.chat_format") == grpo::hf::chat_format::kind::plain);
  grpo::testing::require_error([] { grpo::hf::parse_chat_kind("llama", "prompt.chat_format"); },
                               {"prompt.chat_format", "\"llama\""});
}

TEST_CASE("hf tokenizer_config: token fields and chat template forms", "[hf][chat]") {
  const auto config = grpo::hf::parse_tokenizer_config(
      R"({"eos_token": {"content": "</s>", "lstrip": false}, "bos_token": null, "pad_token": "<pad>",
          "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]})",
      "tokenizer_config.json");
  CHECK(config.eos_token == "</s>");
  CHECK(config.bos_token == std::nullopt);
  CHECK(config.pad_token == "<pad>");
  CHECK(config.chat_template == "D");
  grpo::testing::require_error(
      [] { grpo::hf::parse_tokenizer_config(R"({"eos_token": 3})", "dir/tokenizer_config.json"); },
      {"dir/tokenizer_config.json", "eos_token"});
  grpo::testing::require_error([] { grpo::hf::parse_tokenizer_config(R"({"chat_template": 1})", "tc.json"); },
                               {"tc.json", "chat_template"});
}

TEST_CASE("hf tokenizer: long text, repeated words and threads", "[hf][tokenizer]") {
  const auto tok = tokenizer::load(fixtures / "qwen2" / "tokenizer.json");
  const auto expected = read_json(fixtures / "qwen2" / "expected.json");
  std::string text;
  std::vector<token_id> want;
  for (int copy = 0; copy < 20; ++copy)
    for (const auto& c : at(expected, "cases").items) {
      // Texts without added tokens, each ending in a newline that the next text does not begin with,
      // so that the concatenation splits exactly where the texts meet.
      const std::string& piece = at(c, "text").text;
      if (piece.find('<') != std::string::npos || piece.find("caf") != std::string::npos || piece.empty() ||
          piece.back() != '\n' || piece.front() == '\n' || piece.front() == ' ' || piece.front() == '\t')
        continue;
      text += piece;
      const auto ids = ids_of(at(c, "ids"));
      want.insert(want.end(), ids.begin(), ids.end());
    }
  REQUIRE(text.size() > 1000);
  CHECK(tok.encode(text) == want);
  CHECK(tok.decode(want) == text);
  std::vector<std::vector<token_id>> results(4);
  std::vector<std::thread> threads;
  for (auto& result : results) threads.emplace_back([&] { result = tok.encode(text); });
  for (auto& t : threads) t.join();
  for (const auto& result : results) CHECK(result == want);
  // A long whitespace run and a long word stay correct (the regex's backtracking, the merge queue).
  const std::string spaces(20000, ' ');
  CHECK(tok.decode(tok.encode("a" + spaces + "b")) == "a" + spaces + "b");
  const std::string word(20000, 'x');
  CHECK(tok.decode(tok.encode(word)) == word);
}

TEST_CASE("hf tokenizer: bad input text and ids", "[hf][tokenizer]") {
  const auto tok = tokenizer::load(fixtures / "smollm2" / "tokenizer.json");
  grpo::testing::require_error([&] { tok.encode("ok \xC3\x28 no"); }, {"encode", "invalid UTF-8 at byte 3"});
  grpo::testing::require_error([&] { tok.encode(std::string("ab\xED\xA0\x80")); }, {"invalid UTF-8 at byte 2"});
  grpo::testing::require_error([&] { tok.decode(std::vector<token_id>{1, 600}); }, {"decode", "ids[1] = 600"});
  grpo::testing::require_error([&] { tok.decode(std::vector<token_id>{-1}); }, {"ids[0] = -1"});
}

TEST_CASE("hf tokenizer: unsupported or malformed tokenizer.json files are errors naming the file and field",
          "[hf][tokenizer]") {
  using grpo::testing::require_error;
  require_error([] { tokenizer::load(fixtures / "missing" / "tokenizer.json"); },
                {"missing/tokenizer.json", "cannot open"});
  require_error([] { tokenizer::from_json(R"({"model": {"type": "BPE",})", "bad/tokenizer.json"); },
                {"bad/tokenizer.json", "invalid JSON"});
  require_error([] { tokenizer::from_json("[1, 2]"); }, {"tokenizer.json", "expected a JSON object"});
  require_error([] { tokenizer::from_json(R"({"version": "1.0"})"); }, {"tokenizer.json: model: missing"});
  require_error([] { tokenizer::from_json(R"({"model": {"type": "Unigram", "vocab": []}})"); },
                {"tokenizer.json: model.type: \"Unigram\" is not supported (byte-level BPE only)"});
  require_error([] { tokenizer::from_json(R"({"model": {"type": "WordPiece", "vocab": {}}})", "wp.json"); },
                {"wp.json: model.type: \"WordPiece\""});
  require_error([] { tokenizer::from_json(R"({"version": "2.0", "model": {}})"); }, {"version", "\"2.0\""});
  require_error([] { tokenizer::from_json(tiny_json("", R"(["a b"])", R"({"type": "Metaspace", "replacement": "_"})")); },
                {"tokenizer.json: pre_tokenizer.type: \"Metaspace\" is not supported"});
  require_error(
      [] {
        tokenizer::from_json(tiny_json("", R"(["a b"])",
                                       R"({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, {"type": "Whitespace"}]})"));
      },
      {"pre_tokenizer.pretokenizers[1].type", "\"Whitespace\""});
  require_error([] { tokenizer::from_json(tiny_json("", R"(["a b", "b q"])")); },
                {"tokenizer.json: model.merges[1]", "\"q\" is not in model.vocab"});
  require_error([] { tokenizer::from_json(tiny_json("", R"([["a", "c"]])")); },
                {"model.merges[0]", "\"ac\" is not in model.vocab"});
  require_error([] { tokenizer::from_json(tiny_json("", R"(["a b c"])")); },
                {"model.merges[0]", "two tokens separated by one space"});
  require_error([] { tokenizer::from_json(tiny_json("", R"([["a"]])")); }, {"model.merges[0]"});
  require_error(
      [] {
        tokenizer::from_json(tiny_json("", R"(["a b"])",
                                       R"({"type": "Split", "pattern": {"Regex": "(?i:'s|\\p{L"}, "behavior": "Isolated", "invert": false})"));
      },
      {"tokenizer.json: pre_tokenizer.pattern", "invalid regular expression", "offset"});
  require_error(
      [] {
        tokenizer::from_json(tiny_json("", R"(["a b"])",
                                       R"({"type": "Split", "pattern": {"Regex": "a"}, "behavior": "Sideways", "invert": false})"));
      },
      {"pre_tokenizer.behavior", "Sideways"});
  require_error([] { tokenizer::from_json(tiny_json("", R"(["a b"])", "null", R"({"type": "Lowercase"})")); },
                {"normalizer.type", "\"Lowercase\""});
  require_error([] { tokenizer::from_json(tiny_json("", R"(["a b"])", "null", "null", R"({"type": "Metaspace"})")); },
                {"decoder.type", "\"Metaspace\""});
  require_error([] { tokenizer::from_json(tiny_json(R"(, "byte_fallback": true)")); }, {"model.byte_fallback"});
  require_error([] { tokenizer::from_json(tiny_json(R"(, "dropout": 0.1)")); }, {"model.dropout", "0.1"});
  require_error([] { tokenizer::from_json(tiny_json(R"(, "unk_token": "<unk>")")); }, {"model.unk_token", "<unk>"});
  require_error([] { tokenizer::from_json(R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 0}, "merges": []}})"); },
                {"model.vocab", "id 0 is given to both"});
  require_error([] { tokenizer::from_json(R"({"model": {"type": "BPE", "vocab": {"a": -1}, "merges": []}})"); },
                {"model.vocab", "\"a\""});
  require_error([] { tokenizer::from_json(R"({"model": {"type": "BPE", "vocab": {"a": 0}}})"); },
                {"model.merges: missing"});
  require_error(
      [] {
        tokenizer::from_json(R"({"added_tokens": [{"id": 1, "content": "<x>"}],
                                 "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})");
      },
      {"added_tokens[0].single_word: missing"});
}
