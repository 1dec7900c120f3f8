// SPDX-License-Identifier: Apache-2.0
// grpo/hf/model_config.hpp and grpo/hf/checkpoint.hpp: the config.json files transformers wrote for
// the tiny fixture models (tests/fixtures/make_model_fixtures.py; 4.x and 5.x layouts), hand-written
// variants of every rejected field, generation_config.json, the config writer's round trip, and the
// single-file and sharded checkpoints with their error cases (missing, truncated, bad index,
// unsupported dtype), each message naming the file and the field or tensor.
#include <catch2/catch.hpp>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "grpo/hf/checkpoint.hpp"
#include "grpo/hf/model_config.hpp"
#include "grpo/safetensors.hpp"
#include "test_support.hpp"

using namespace grpo;
using grpo::testing::require_error;

namespace {

const std::filesystem::path models = std::filesystem::path(GRPO_TEST_DATA_DIR) / "hf" / "models";

// A Llama config.json in the 4.x layout with fields replaced, added, or removed (an empty value).
std::string llama_json(const std::vector<std::pair<std::string, std::string>>& changes) {
  std::vector<std::pair<std::string, std::string>> fields = {{"architectures", "[\"LlamaForCausalLM\"]"},
                                                             {"model_type", "\"llama\""},
                                                             {"vocab_size", "320"},
                                                             {"hidden_size", "32"},
                                                             {"intermediate_size", "64"},
                                                             {"num_hidden_layers", "2"},
                                                             {"num_attention_heads", "4"},
                                                             {"num_key_value_heads", "2"},
                                                             {"max_position_embeddings", "128"},
                                                             {"rms_norm_eps", "1e-05"},
                                                             {"rope_theta", "500.0"},
                                                             {"hidden_act", "\"silu\""}};
  for (const auto& [field, value] : changes) {
    bool replaced = false;
    for (auto& entry : fields)
      if (entry.first == field) {
        entry.second = value;
        replaced = true;
      }
    if (!replaced) fields.emplace_back(field, value);
  }
  std::string out = "{";
  for (const auto& [name, text] : fields)
    if (!text.empty()) out += (out.size() > 1 ? ", \"" : "\"") + name + "\": " + text;
  return out + "}";
}

std::string llama_json(const std::string& field = "", const std::string& value = "") {
  if (field.empty()) return llama_json(std::vector<std::pair<std::string, std::string>>{});
  return llama_json({{field, value}});
}

std::filesystem::path scratch(const std::string& name) {
  const auto dir = grpo::testing::scratch_path("grpo_hf_model_config_test_" + name);
  std::filesystem::create_directories(dir);
  return dir;
}

void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

}  // namespace

TEST_CASE("hf config: the fixture configs as transformers wrote them (4.x and 5.x layouts)") {
  const auto llama = hf::read_model_config(models / "tiny-llama" / "config.json");  // 4.x layout
  CHECK(llama.architecture == hf::architecture::llama);
  CHECK(llama.vocab_size == 320);
  CHECK(llama.hidden_size == 32);
  CHECK(llama.intermediate_size == 64);
  CHECK(llama.num_hidden_layers == 2);
  CHECK(llama.num_attention_heads == 4);
  CHECK(llama.num_key_value_heads == 2);
  CHECK(llama.head_dim == 8);
  CHECK(llama.max_position_embeddings == 128);
  CHECK(llama.rms_norm_eps == 1e-5);
  CHECK(llama.rope_theta == 500.0);
  CHECK_FALSE(llama.tie_word_embeddings);
  CHECK_FALSE(llama.attention_bias);
  CHECK_FALSE(llama.o_proj_bias);
  CHECK_FALSE(llama.qk_norm);
  CHECK(llama.dtype == "float32");
  CHECK(llama.bos_token_id == 0);
  CHECK(llama.eos_token_ids == std::vector<std::int64_t>{2});
  CHECK(llama.group_size() == 2);

  const auto qwen2 = hf::read_model_config(models / "tiny-qwen2" / "config.json");
  CHECK(qwen2.architecture == hf::architecture::qwen2);
  CHECK(qwen2.tie_word_embeddings);
  CHECK(qwen2.attention_bias);  // implied by the architecture: Qwen2's config has no such field
  CHECK_FALSE(qwen2.o_proj_bias);
  CHECK(qwen2.num_key_value_heads == 1);
  CHECK(qwen2.rope_theta == 10000.0);
  CHECK(hf::read_model_config(models / "tiny-qwen2-bf16" / "config.json").dtype == "bfloat16");

  const auto qwen3 = hf::read_model_config(models / "tiny-qwen3" / "config.json");  // 5.x layout
  CHECK(qwen3.architecture == hf::architecture::qwen3);
  CHECK(qwen3.head_dim == 16);  // != hidden_size / num_attention_heads = 8
  CHECK(qwen3.q_dim() == 64);
  CHECK(qwen3.kv_dim() == 32);
  CHECK(qwen3.qk_norm);
  CHECK_FALSE(qwen3.attention_bias);
  CHECK(qwen3.rope_theta == 1000000.0);
  CHECK(qwen3.dtype == "float32");

  const auto generation = hf::read_generation_config(models / "tiny-llama");
  REQUIRE(generation.has_value());
  CHECK(generation->eos_token_ids == std::vector<std::int64_t>{2, 0});  // a list
  CHECK(hf::stop_token_ids(llama, generation) == std::vector<std::int64_t>{2, 0});
  CHECK(hf::read_generation_config(models / "tiny-qwen2")->eos_token_ids == std::vector<std::int64_t>{2});  // an int
  CHECK_FALSE(hf::read_generation_config(models).has_value());
  CHECK(hf::stop_token_ids(llama, std::nullopt) == std::vector<std::int64_t>{2});
}

TEST_CASE("hf config: optional fields, both RoPE layouts and the architecture rules") {
  const auto base = hf::parse_model_config(llama_json());
  CHECK(base.rope_theta == 500.0);
  CHECK(base.dtype.empty());
  CHECK_FALSE(base.bos_token_id.has_value());
  CHECK(base.eos_token_ids.empty());
  CHECK(hf::parse_model_config(llama_json("num_key_value_heads", "")).num_key_value_heads == 4);
  CHECK(hf::parse_model_config(llama_json("num_key_value_heads", "null")).num_key_value_heads == 4);
  CHECK(hf::parse_model_config(llama_json("head_dim", "16")).head_dim == 16);
  CHECK(hf::parse_model_config(llama_json("rope_scaling", "null")).rope_theta == 500.0);
  CHECK(hf::parse_model_config(llama_json("rope_scaling", R"({"rope_type": "default"})")).rope_theta == 500.0);
  CHECK(hf::parse_model_config(llama_json("architectures", "")).architecture == hf::architecture::llama);
  CHECK(hf::parse_model_config(llama_json("model_type", "")).architecture == hf::architecture::llama);

  // The 5.x layout: rope_parameters instead of rope_theta; dtype instead of torch_dtype.
  const auto v5 =
      hf::parse_model_config(llama_json({{"rope_theta", ""},
                                         {"rope_parameters", R"({"rope_type": "default", "rope_theta": 250000.0})"},
                                         {"dtype", "\"bfloat16\""}}));
  CHECK(v5.rope_theta == 250000.0);
  CHECK(v5.dtype == "bfloat16");

  // attention_bias: q/k/v and o_proj biases for Llama; Qwen2 always has q/k/v biases and no o_proj bias.
  const auto biased = hf::parse_model_config(llama_json("attention_bias", "true"));
  CHECK(biased.attention_bias);
  CHECK(biased.o_proj_bias);
  const auto qwen2 =
      hf::parse_model_config(llama_json({{"architectures", "[\"Qwen2ForCausalLM\"]"}, {"model_type", "\"qwen2\""}}));
  CHECK(qwen2.attention_bias);
  CHECK_FALSE(qwen2.o_proj_bias);

  CHECK(hf::parse_model_config(llama_json("eos_token_id", "[2, 7]")).eos_token_ids == std::vector<std::int64_t>{2, 7});
  CHECK(hf::parse_model_config(llama_json("eos_token_id", "null")).eos_token_ids.empty());
  CHECK(hf::parse_model_config(llama_json("bos_token_id", "1")).bos_token_id == 1);
}

TEST_CASE("hf config: every unsupported or malformed field is named with the file") {
  const auto fails = [](const std::string& text, std::vector<std::string> fragments) {
    fragments.insert(fragments.begin(), "my/config.json");
    require_error([&] { hf::parse_model_config(text, "my/config.json"); }, fragments);
  };
  fails(llama_json("architectures", "[\"MistralForCausalLM\"]"),
        {"field \"architectures\"", "MistralForCausalLM", "LlamaForCausalLM"});
  fails(llama_json("architectures", "\"LlamaForCausalLM\""), {"field \"architectures\"", "list"});
  fails(llama_json("model_type", "\"qwen2\""), {"field \"model_type\"", "does not match"});
  fails(llama_json("model_type", "\"gemma\""), {"field \"model_type\"", "gemma"});
  for (const char* field : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                            "num_attention_heads", "max_position_embeddings", "rms_norm_eps"})
    fails(llama_json(field, ""), {std::string("field \"") + field + "\"", "missing"});
  fails(llama_json("rope_theta", ""), {"field \"rope_theta\"", "missing"});
  fails(llama_json("vocab_size", "\"320\""), {"field \"vocab_size\"", "integer", "\"320\""});
  fails(llama_json("hidden_size", "32.5"), {"field \"hidden_size\"", "32.5"});
  fails(llama_json("num_hidden_layers", "-2"), {"field \"num_hidden_layers\"", "-2"});
  // Each size in range, together past 2^40 parameters: refused, so that parameter_count() cannot overflow.
  fails(llama_json({{"vocab_size", "1073741824"}, {"hidden_size", "1073741824"}}), {"parameters", "2^40"});
  fails(llama_json("vocab_size", "0"), {"field \"vocab_size\"", "[1, "});
  fails(llama_json("rms_norm_eps", "\"small\""), {"field \"rms_norm_eps\"", "finite number"});
  fails(llama_json("rms_norm_eps", "0"), {"field \"rms_norm_eps\"", "> 0"});
  fails(llama_json("num_key_value_heads", "3"), {"field \"num_key_value_heads\"", "divide"});
  fails(llama_json("head_dim", "7"), {"field \"head_dim\"", "even"});
  fails(llama_json("tie_word_embeddings", "1"), {"field \"tie_word_embeddings\"", "true or false"});
  fails(llama_json("hidden_act", "\"gelu\""), {"field \"hidden_act\"", "gelu"});
  fails(llama_json("mlp_bias", "true"), {"field \"mlp_bias\""});
  fails(llama_json("use_sliding_window", "true"), {"field \"use_sliding_window\""});
  fails(llama_json("layer_types", "[\"full_attention\", \"sliding_attention\"]"),
        {"field \"layer_types\"", "sliding_attention"});
  fails(llama_json("torch_dtype", "\"float64\""), {"field \"torch_dtype\"", "float64"});
  fails(llama_json("rope_scaling", R"({"rope_type": "llama3", "factor": 8.0})"),
        {"field \"rope_scaling\"", "llama3", "not supported"});
  fails(llama_json("rope_scaling", R"({"type": "yarn"})"), {"field \"rope_scaling\"", "yarn"});
  fails(llama_json("rope_parameters", R"({"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0})"),
        {"field \"rope_parameters\"", "yarn"});
  fails(llama_json("rope_parameters", R"({"rope_type": "default", "rope_theta": 10000.0})"),
        {"field \"rope_theta\"", "differs"});
  fails(llama_json("rope_parameters", R"({"rope_type": "default", "rope_theta": 500.0, "factor": 2.0})"),
        {"field \"rope_parameters.factor\""});
  fails(llama_json("eos_token_id", "[2, \"x\"]"), {"field \"eos_token_id\""});
  fails("[1, 2]", {"JSON object"});
  REQUIRE_THROWS_AS(hf::parse_model_config(llama_json("rope_scaling", R"({"rope_type": "llama3"})")), config_error);
  REQUIRE_THROWS_AS(hf::parse_model_config("{", "x.json"), io_error);

  fails(llama_json({{"architectures", "[\"Qwen3ForCausalLM\"]"}, {"model_type", "\"qwen3\""}}),
        {"field \"head_dim\"", "missing"});

  require_error([] { hf::read_model_config("/nonexistent/model/config.json"); },
                {"/nonexistent/model/config.json", "cannot open"});
  require_error([] { hf::parse_generation_config(R"({"eos_token_id": 1.5})", "g.json"); },
                {"g.json", "field \"eos_token_id\""});
}

TEST_CASE("hf config: to_json reads back as the same config, in the 4.x layout") {
  for (const char* name : {"tiny-llama", "tiny-qwen2", "tiny-qwen3"}) {
    INFO(name);
    const auto config = hf::read_model_config(models / name / "config.json");
    const auto text = hf::to_json(config, config.dtype);
    CHECK(text.find("\"rope_theta\"") != std::string::npos);
    CHECK(hf::parse_model_config(text) == config);
  }
  auto config = hf::read_model_config(models / "tiny-llama" / "config.json");
  config.eos_token_ids = {2, 5};
  const auto generation = hf::parse_generation_config(hf::generation_json(config));
  CHECK(generation.eos_token_ids == std::vector<std::int64_t>{2, 5});
  CHECK(generation.bos_token_id == 0);
}

TEST_CASE("hf checkpoint: single file and shards hold the same tensors") {
  const auto single = hf::checkpoint::open(models / "tiny-llama");
  const auto sharded = hf::checkpoint::open(models / "tiny-llama-sharded");
  REQUIRE(single.names() == sharded.names());
  CHECK(single.names().size() == 21);  // embed, 2 x 9 per layer, norm, lm_head
  for (const auto& name : single.names()) {
    const auto a = single.tensor(name), b = sharded.tensor(name);
    CHECK(a.type == safetensors::dtype::f32);
    CHECK(a.shape == b.shape);
    CHECK(std::equal(a.data.begin(), a.data.end(), b.data.begin(), b.data.end()));
  }
  CHECK(single.tensor("model.layers.1.self_attn.k_proj.weight").shape == std::vector<std::int64_t>{16, 32});
  CHECK(sharded.file_of("lm_head.weight").find("model-0000") != std::string::npos);
  CHECK(hf::checkpoint::open(models / "tiny-qwen2-bf16").tensor("model.norm.weight").type == safetensors::dtype::bf16);
  require_error([&] { single.tensor("model.layers.2.mlp.up_proj.weight"); },
                {"tiny-llama", "\"model.layers.2.mlp.up_proj.weight\"", "not found"});
}

TEST_CASE("hf checkpoint: missing, truncated and inconsistent files are named") {
  require_error([] { hf::checkpoint::open(scratch("empty")); },
                {"grpo_hf_model_config_test_empty", "model.safetensors"});

  const auto truncated = scratch("truncated");
  std::filesystem::copy_file(models / "tiny-llama" / "model.safetensors", truncated / "model.safetensors");
  std::filesystem::resize_file(truncated / "model.safetensors", 1000);
  REQUIRE_THROWS_AS(hf::checkpoint::open(truncated), io_error);
  require_error([&] { hf::checkpoint::open(truncated); }, {(truncated / "model.safetensors").string()});

  const auto shards = scratch("shards");
  const auto source = models / "tiny-llama-sharded";
  for (const auto& entry : std::filesystem::directory_iterator(source))
    if (entry.path().extension() == ".safetensors" || entry.path().extension() == ".json")
      std::filesystem::copy_file(entry.path(), shards / entry.path().filename());
  std::filesystem::remove(shards / "model-00002-of-00004.safetensors");
  require_error([&] { hf::checkpoint::open(shards); }, {"model-00002-of-00004.safetensors", "cannot read"});

  const auto index = [&](const std::string& weight_map) {
    write_text(shards / "model.safetensors.index.json", "{\"metadata\": {}, \"weight_map\": " + weight_map + "}");
  };
  index(R"({"model.norm.weight": "../tiny-llama/model.safetensors"})");
  require_error([&] { hf::checkpoint::open(shards); },
                {"model.safetensors.index.json", "field \"weight_map\"", "not a file name"});
  index(R"({"model.norm.weight": "model-00001-of-00004.safetensors"})");
  require_error([&] { hf::checkpoint::open(shards); },
                {"model.safetensors.index.json", "field \"weight_map\"", "model.norm.weight", "does not contain"});
  index("[]");
  require_error([&] { hf::checkpoint::open(shards); }, {"model.safetensors.index.json", "field \"weight_map\""});
  index(R"({"model.norm.weight": "model-00004-of-00004.safetensors"})");  // the shard holds more than the map lists
  require_error([&] { hf::checkpoint::open(shards); }, {"field \"weight_map\"", "which the map does not assign"});

  const auto f64 = scratch("f64");
  safetensors::writer w;
  const std::vector<double> values = {1.0, 2.0};
  w.add("model.norm.weight", values, {2}, safetensors::dtype::f64);
  w.write(f64 / "model.safetensors");
  const auto checkpoint = hf::checkpoint::open(f64);
  REQUIRE_THROWS_AS(checkpoint.tensor("model.norm.weight"), config_error);
  require_error([&] { checkpoint.tensor("model.norm.weight"); },
                {(f64 / "model.safetensors").string(), "\"model.norm.weight\"", "F64"});
}
