// SPDX-License-Identifier: Apache-2.0
// The native transformer's config (config.json), parameter store (names, init, safetensors), and
// its reference forward/backward: components on hand-worked numbers, the whole forward against an
// independent NumPy implementation of Hugging Face Llama, and the gradient by finite differences.
#include "grpo/model/model.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>

#include "test_support.hpp"

using namespace grpo;
using namespace grpo::model;
using namespace grpo::testing;

namespace {

transformer_config tiny_config(bool tied, bool bias) {
  transformer_config c;
  c.vocab_size = 11;
  c.hidden_size = 8;
  c.intermediate_size = 12;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.max_position_embeddings = 16;
  c.tie_word_embeddings = tied;
  c.attention_bias = bias;
  return c;
}

// Weights from a formula of each tensor's name and element index, so an independent
// implementation can rebuild them from the Hugging Face names alone:
// v = 0.3 sin(0.61 e + 0.17 c), c = (sum of the name's bytes) mod 97; norm weights 1 + v / 3.
template <class T>
void formula_weights(parameters<T>& w) {
  for (const auto& e : w.layout().entries()) {
    const int code = std::accumulate(e.name.begin(), e.name.end(), 0, [](int s, char ch) { return s + ch; }) % 97;
    const bool norm = e.name.ends_with("norm.weight");
    for (std::size_t i = 0; i < e.size; ++i) {
      const double v = 0.3 * std::sin(0.61 * static_cast<double>(i) + 0.17 * code);
      w.data()[e.offset + i] = static_cast<T>(norm ? 1.0 + v / 3.0 : v);
    }
  }
}

std::filesystem::path fresh_directory(const std::string& name) {
  return grpo::testing::scratch_path("grpo_model_test_" + name);
}

}  // namespace

TEST_CASE("model config: validation names the offending field", "[model][config]") {
  transformer_config c;
  REQUIRE_NOTHROW(c.validate());
  c.hidden_size = 130;  // 130 / 4 heads
  require_error([&] { c.validate(); }, {"hidden_size", "divisible by num_attention_heads"});
  c.hidden_size = 12;  // head_dim 3
  require_error([&] { c.validate(); }, {"hidden_size", "even"});
  c = {};
  c.num_key_value_heads = 3;
  require_error([&] { c.validate(); }, {"num_key_value_heads", "divide num_attention_heads"});
  // Each size in range, but together past 2^40 parameters (2^62 here, near int64's end): refused, so that
  // parameter_count() never overflows; just below the bound the int64 count is exact.
  c = {};
  c.vocab_size = std::int64_t{1} << 30, c.hidden_size = std::int64_t{1} << 30;
  require_error([&] { c.validate(); }, {"parameters", "2^40"});
  c = {};
  c.vocab_size = std::int64_t{1} << 24, c.hidden_size = 1 << 14, c.intermediate_size = 1 << 14;
  c.num_attention_heads = 1 << 7, c.num_key_value_heads = 1 << 7, c.num_hidden_layers = 1;
  REQUIRE_NOTHROW(c.validate());
  REQUIRE(c.parameter_count() == c.parameter_count<long double>());
  c = {};
  c.vocab_size = 0;
  require_error([&] { c.validate(); }, {"vocab_size", "got 0"});
  c = {};
  c.rms_norm_eps = 0.0;
  require_error([&] { c.validate(); }, {"rms_norm_eps"});
  c = {};
  c.rope_theta = std::nan("");
  require_error([&] { c.validate(); }, {"rope_theta"});
  c = {};
  c.num_hidden_layers = -1;
  require_error([&] { parameters<float> p(c); }, {"num_hidden_layers"});
}

TEST_CASE("model config: config.json round trip and Hugging Face defaults", "[model][config]") {
  transformer_config c = tiny_config(false, true);
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 1e6;
  const auto text = to_json(c);
  // q/k/v biases without an o_proj bias: a Qwen2 (a Llama's attention_bias would add one to o_proj).
  CHECK(text.find("\"model_type\": \"qwen2\"") != std::string::npos);
  CHECK(text.find("\"head_dim\": 4") != std::string::npos);
  CHECK(text.find("\"rope_theta\": 1000000.0") != std::string::npos);
  CHECK(config_from_json(text) == c);

  // A minimal Hugging Face config (hf::parse_model_config's required fields): num_key_value_heads
  // defaults to num_attention_heads, tie_word_embeddings to false, and a Qwen2 always has q/k/v
  // biases (Qwen2Config has no attention_bias field).
  const auto minimal = config_from_json(R"({"vocab_size": 32, "hidden_size": 16, "intermediate_size": 40,
      "num_hidden_layers": 1, "num_attention_heads": 4, "architectures": ["Qwen2ForCausalLM"],
      "max_position_embeddings": 64, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
      "torch_dtype": "bfloat16", "rope_scaling": null, "hidden_act": "silu"})");
  CHECK(minimal.num_key_value_heads == 4);
  CHECK(minimal.max_position_embeddings == 64);
  CHECK(minimal.rms_norm_eps == 1e-6);
  CHECK(minimal.rope_theta == 10000.0);
  CHECK_FALSE(minimal.tie_word_embeddings);
  CHECK(minimal.attention_bias);

  const auto dir = fresh_directory("config");
  std::filesystem::create_directories(dir);
  write_config(c, dir / "config.json");
  CHECK(read_config(dir / "config.json") == c);
  std::filesystem::remove_all(dir);
}

TEST_CASE("model config: config.json errors", "[model][config]") {
  // Every field hf::parse_model_config requires but num_attention_heads and rms_norm_eps.
  const std::string base = R"("model_type": "llama", "vocab_size": 32, "hidden_size": 16, "intermediate_size": 40,
      "num_hidden_layers": 1, "max_position_embeddings": 64, "rope_theta": 10000.0)";
  const std::string eps = R"(, "rms_norm_eps": 1e-6)";
  require_error([&] { (void)config_from_json("{" + base + "}", "my/config.json"); },
                {"num_attention_heads", "missing", "my/config.json"});
  require_error([&] { (void)config_from_json("{" + base + R"(, "num_attention_heads": "4"})"); },
                {"num_attention_heads", "non-negative integer"});
  require_error([&] { (void)config_from_json("{" + base + R"(, "num_attention_heads": 4, "rms_norm_eps": true})"); },
                {"rms_norm_eps", "finite number"});
  require_error(
      [&] { (void)config_from_json("{" + base + eps + R"(, "num_attention_heads": 4, "tie_word_embeddings": 1})"); },
      {"tie_word_embeddings", "true or false"});
  require_error(
      [&] { (void)config_from_json("{" + base + eps + R"(, "num_attention_heads": 4, "hidden_act": "gelu"})"); },
      {"hidden_act", "silu", "gelu"});
  require_error(
      [&] {
        (void)config_from_json("{" + base + eps + R"(, "num_attention_heads": 4, "rope_scaling": {"type": "linear"}})");
      },
      {"rope_scaling", "not supported"});
  require_error([&] { (void)config_from_json("{" + base + eps + R"(, "num_attention_heads": 4, "head_dim": 8})"); },
                {"head_dim", "must equal", "got 8"});
  // 20 / 3 heads: transformers would run head_dim 20 // 3 = 6; the native model has no such head_dim.
  require_error(
      [&] {
        (void)config_from_json(R"({"model_type": "llama", "vocab_size": 32, "hidden_size": 20, "intermediate_size": 40,
            "num_hidden_layers": 1, "max_position_embeddings": 64, "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
            "num_attention_heads": 3})");
      },
      {"hidden_size", "divisible by num_attention_heads (3)", "got 20"});
  // 16 / 3 heads: the head dimension transformers derives (16 // 3 = 5) cannot rotate in pairs.
  require_error([&] { (void)config_from_json("{" + base + eps + R"(, "num_attention_heads": 3})"); },
                {"head_dim", "even", "got 5"});
  require_error([&] { (void)config_from_json("{" + base + ",}", "bad.json"); }, {"bad.json", "invalid JSON"});
  require_error([&] { (void)config_from_json("[1]"); }, {"config.json", "object"});
  require_error([&] { (void)read_config("/nonexistent/grpo/config.json"); }, {"/nonexistent/grpo/config.json"});
}

TEST_CASE("model parameters: Hugging Face names, shapes and flat layout", "[model][parameters]") {
  const auto c = tiny_config(false, true);
  parameters<float> w(c);
  const auto& entries = w.layout().entries();
  // embed, 2 x (12 per layer with biases), norm, lm_head
  REQUIRE(entries.size() == 1 + 2 * 12 + 2);
  CHECK(entries[0].name == "model.embed_tokens.weight");
  CHECK(entries[0].shape == std::vector<std::int64_t>{11, 8});
  CHECK(entries[2].name == "model.layers.0.self_attn.q_proj.weight");
  CHECK(entries[2].shape == std::vector<std::int64_t>{8, 8});
  CHECK(entries[3].name == "model.layers.0.self_attn.k_proj.weight");
  CHECK(entries[3].shape == std::vector<std::int64_t>{4, 8});
  CHECK(entries[5].name == "model.layers.0.self_attn.q_proj.bias");
  CHECK(entries[11].name == "model.layers.0.mlp.up_proj.weight");
  CHECK(entries[12].shape == std::vector<std::int64_t>{8, 12});
  CHECK(entries.back().name == "lm_head.weight");
  // The flat buffer is the entries back to back; q/k/v and gate/up are adjacent.
  std::size_t offset = 0;
  for (const auto& e : entries) {
    CHECK(e.offset == offset);
    offset += e.size;
  }
  CHECK(w.size() == offset);
  CHECK(static_cast<std::int64_t>(w.size()) == c.parameter_count());
  const auto& l0 = w.layout().layer(0);
  CHECK(l0.qkv_proj == entries[2].offset);
  CHECK(w.layout().find("model.layers.0.mlp.up_proj.weight")->offset == l0.gate_up_proj + 12 * 8);
  CHECK(w.layout().lm_head() == entries.back().offset);

  w["model.norm.weight"][3] = 2.5f;
  CHECK(w.data()[w.layout().norm() + 3] == 2.5f);
  require_error([&] { (void)w["model.layers.7.mlp.up_proj.weight"]; }, {"name", "model.layers.7.mlp.up_proj.weight"});

  const parameters<float> tied(tiny_config(true, false));
  CHECK(tied.layout().find("lm_head.weight") == nullptr);
  CHECK(tied.layout().lm_head() == tied.layout().embed_tokens());
  CHECK(tied.layout().layer(1).qkv_bias == layer_offsets::npos);
  CHECK(static_cast<std::int64_t>(tied.size()) == tied.config().parameter_count());
}

TEST_CASE("model parameters: seeded initialization", "[model][parameters]") {
  transformer_config c;  // defaults: hidden 128, 4 layers
  parameters<float> a(c), b(c), other(c);
  initialize(a, 7);
  initialize(b, 7);
  initialize(other, 8);
  CHECK(a == b);
  CHECK_FALSE(a == other);
  const auto stats = [&](std::string_view name) {
    const auto v = a[name];
    double sum = 0.0, squares = 0.0;
    for (float x : v) {
      sum += x;
      squares += static_cast<double>(x) * x;
    }
    const double n = static_cast<double>(v.size());
    return std::pair{sum / n, std::sqrt(squares / n - sum * sum / n / n)};
  };
  // 128 x 128 samples: the sample std is within a few percent of the target.
  const auto [q_mean, q_std] = stats("model.layers.0.self_attn.q_proj.weight");
  CHECK(std::abs(q_mean) < 1e-3);
  CHECK(q_std == Approx(0.02).epsilon(0.05));
  // Output projections: 0.02 / sqrt(2 * 4 layers).
  CHECK(stats("model.layers.3.self_attn.o_proj.weight").second == Approx(0.02 / std::sqrt(8.0)).epsilon(0.05));
  CHECK(stats("model.layers.3.mlp.down_proj.weight").second == Approx(0.02 / std::sqrt(8.0)).epsilon(0.05));
  for (float x : a["model.layers.2.post_attention_layernorm.weight"]) CHECK(x == 1.0f);
  require_error([&] { initialize(a, 1, -0.02); }, {"std", "-0.02"});
}

TEST_CASE("model parameters: save_pretrained / load_pretrained round trip", "[model][parameters][io]") {
  const auto dir = fresh_directory("roundtrip");
  parameters<float> w(tiny_config(false, true));
  initialize(w, 3);
  save_pretrained(w, dir);
  CHECK(std::filesystem::exists(dir / "config.json"));
  CHECK(std::filesystem::exists(dir / "model.safetensors"));
  const auto loaded = load_pretrained<float>(dir);
  CHECK(loaded == w);
  // Into double, exactly (float values widen exactly).
  const auto wide = load_pretrained<double>(dir);
  for (std::size_t i = 0; i < w.size(); ++i) REQUIRE(wide.data()[i] == static_cast<double>(w.data()[i]));

  // A checkpoint-style file with prefixes (optimizer moments next to the weights).
  safetensors::writer out;
  add_tensors(out, w);
  add_tensors(out, w, "exp_avg.");
  out.write(dir / "checkpoint.safetensors");
  parameters<float> moments(w.config());
  read_tensors(safetensors::file::read(dir / "checkpoint.safetensors"), moments, "exp_avg.");
  CHECK(moments == w);
  std::filesystem::remove_all(dir);
}

TEST_CASE("model parameters: loading rejects files that do not match the config", "[model][parameters][io]") {
  const auto dir = fresh_directory("mismatch");
  parameters<float> w(tiny_config(false, false));
  initialize(w, 3);
  save_pretrained(w, dir);

  // The config says tied embeddings: lm_head.weight is then ignored, as transformers and the
  // LibTorch loader do (the output layer is the embedding).
  write_config(tiny_config(true, false), dir / "config.json");
  const auto tied = load_pretrained<float>(dir);
  CHECK(tied.layout().find("lm_head.weight") == nullptr);
  CHECK(std::equal(tied["model.embed_tokens.weight"].begin(), tied["model.embed_tokens.weight"].end(),
                   w["model.embed_tokens.weight"].begin()));
  // A tensor the architecture does not have is an error naming it: biases the config lacks.
  parameters<float> biased(tiny_config(false, true));
  save_pretrained(biased, dir / "biased");
  write_config(tiny_config(false, false), dir / "biased" / "config.json");
  require_error([&] { (void)load_pretrained<float>(dir / "biased"); },
                {"model.layers.0.self_attn.k_proj.bias", "unexpected tensor", "model.safetensors"});
  // The config says q/k/v biases, which the file lacks.
  write_config(tiny_config(false, true), dir / "config.json");
  require_error([&] { (void)load_pretrained<float>(dir); }, {"model.layers.0.self_attn.q_proj.bias", "missing"});
  // Another intermediate size: shapes differ.
  auto wider = tiny_config(false, false);
  wider.intermediate_size = 16;
  write_config(wider, dir / "config.json");
  require_error([&] { (void)load_pretrained<float>(dir); },
                {"model.layers.0.mlp.gate_proj.weight", "expected shape [16,8]", "got [12,8]"});
  // Non-finite and non-float tensors.
  std::vector<double> nan_norm(8, 1.0);
  nan_norm[2] = std::nan("");
  safetensors::writer with_nan;
  for (const auto& e : w.layout().entries()) {
    const auto span = w.values().subspan(e.offset, e.size);
    if (e.name == "model.norm.weight")
      with_nan.add(e.name, std::span<const double>(nan_norm), e.shape);
    else
      with_nan.add(e.name, std::span<const float>(span), e.shape);
  }
  with_nan.write(dir / "nan.safetensors");
  parameters<float> target(w.config());
  require_error([&] { read_tensors(safetensors::file::read(dir / "nan.safetensors"), target); },
                {"model.norm.weight", "element 2", "nan"});
  require_error([&] { (void)load_pretrained<float>(dir / "missing"); }, {"config.json"});
  std::filesystem::remove_all(dir);
}

TEST_CASE("model batch: validation", "[model][batch]") {
  const auto c = tiny_config(true, false);
  require_error([&] { (void)plan_batch(c, {{{1}}, {}}); }, {"batch", "1 prompts for 0 completions"});
  require_error([&] { (void)plan_batch(c, {{{1}, {}}, {{2}, {3}}}); }, {"batch.prompts", "row 1 is empty"});
  require_error(
      [&] {
        (void)plan_batch(c, {{{1, 11}}, {{2}}});
      },
      {"batch.prompts", "row 0, element 1 is 11", "[0, 11)"});
  require_error([&] { (void)plan_batch(c, {{{1}}, {{2, -1}}}); }, {"batch.completions", "element 1 is -1"});
  require_error(
      [&] {
        (void)plan_batch(c, {{std::vector<token_id>(10, 1)}, {std::vector<token_id>(7, 1)}});
      },
      {"batch", "row 0 has 17 tokens", "max_position_embeddings 16"});
  // Row 0 feeds prompt + completion minus its last token; an empty completion feeds nothing.
  const auto plan = plan_batch(c, {{{1, 2}, {3}, {4}}, {{5, 6, 7}, {}, {8}}});
  CHECK(plan.tokens == 4 + 0 + 1);
  CHECK(plan.max_completion == 3);
  CHECK(plan.input == std::vector<token_id>{1, 2, 5, 6, 4});
  CHECK(plan.offset == std::vector<std::int64_t>{0, 4, 4});
}

TEST_CASE("model reference: RMSNorm, RoPE and SwiGLU on hand-worked numbers", "[model][reference]") {
  // RMSNorm of [3, 4] with w = [1, 2], eps 0: r = 1 / sqrt((9 + 16) / 2) = 0.2828427125,
  // y = [3 r, 4 r 2] = [0.8485281374, 2.2627416998].
  const double x[2] = {3.0, 4.0}, w[2] = {1.0, 2.0};
  double y[2];
  const double r = reference::detail::rms_norm(x, w, y, 2, 0.0);
  require_close(r, 0.2828427124746190, 1e-15);
  require_close({y[0], y[1]}, {0.848528137423857, 2.262741699796952}, 1e-14);

  // RoPE, head_dim 4, position 1, theta 1e4: angles [1, 1e4^(-1/2) = 0.01] on the pairs (0, 2)
  // and (1, 3): (1, 3) -> (cos1 - 3 sin1, 3 cos1 + sin1), (2, 4) -> (2 cos.01 - 4 sin.01, ...).
  double v[4] = {1.0, 2.0, 3.0, 4.0};
  reference::detail::rope(v, 1, 4, 1, 1e4, 1.0);
  require_close({v[0], v[1], v[2], v[3]},
                {-1.9841106485555495, 1.959900667496664, 2.4623779024123156, 4.019799668334994}, 1e-14);
  reference::detail::rope(v, 1, 4, 1, 1e4, -1.0);  // the inverse rotation restores the input
  require_close({v[0], v[1], v[2], v[3]}, {1.0, 2.0, 3.0, 4.0}, 1e-14);

  // The fast kernels agree: silu(1) * 2 = 2 / (1 + e^-1) = 1.4621171573.
  const double gate = 1.0, up = 2.0;
  double out = 0.0;
  grpo::model::detail::swiglu_row(&gate, &up, &out, 1);
  require_close(out, 1.4621171572600098, 1e-15);
  double fast[4] = {1.0, 2.0, 3.0, 4.0};
  const double cs[2] = {std::cos(1.0), std::cos(0.01)}, sn[2] = {std::sin(1.0), std::sin(0.01)};
  grpo::model::detail::rope_row(fast, 1, 4, cs, sn, false);
  require_close({fast[0], fast[1], fast[2], fast[3]},
                {-1.9841106485555495, 1.959900667496664, 2.4623779024123156, 4.019799668334994}, 1e-14);
}

TEST_CASE("model reference: the forward matches an independent Hugging Face Llama", "[model][reference]") {
  // V 7, hidden 8, intermediate 12, 2 layers, 2 heads, 1 kv head, q/k/v biases, untied; weights
  // from formula_weights. Expected logits from a NumPy transcription of transformers'
  // LlamaForCausalLM (rotate_half RoPE, causal softmax, SiLU MLP), for prompt [1, 2, 3] and
  // completion [4, 5, 6]: the rows predicting 4, 5 and 6.
  transformer_config c = tiny_config(false, true);
  c.vocab_size = 7;
  parameters<double> w(c);
  formula_weights(w);
  const std::vector<double> expected = {
      -0.1647270204, -0.0972062426, 0.1322937054,  0.1413466528,  -0.0851327372, -0.1697515865, 0.0284943307,
      0.3731999026,  0.1736563507,  -0.3152586534, -0.2788438669, 0.2222211001,  0.3529889707,  -0.1044446881,
      -0.1690139455, 0.8815690747,  0.4631535680,  -0.7270357322, -0.7057324220, 0.4915648268,  0.8697453131};
  const sequence_batch batch{{{1, 2, 3}}, {{4, 5, 6}}};
  require_close(reference::forward(w, batch), expected, 1e-9, 0.0);

  // The fast model, in double and in float, on the same weights.
  transformer<double> fast(w, {1});
  require_close(fast.forward(batch).to_host(), expected, 1e-9, 0.0);
  transformer<float> fast_float(convert<float>(w), {2});
  require_close(fast_float.forward(batch).to_host(), expected, 1e-6, 0.0);
}

TEST_CASE("model reference: padding rows and empty completions", "[model][reference]") {
  parameters<double> w(tiny_config(true, false));
  initialize(w, 5, 0.3);
  const sequence_batch batch{{{1, 2}, {3}, {4, 5, 6}}, {{7, 8, 9}, {}, {10}}};
  const auto logits = reference::forward(w, batch);
  REQUIRE(logits.size() == 3 * 3 * 11);
  for (std::size_t i = 3 * 11; i < 6 * 11; ++i) CHECK(logits[i] == 0.0);  // row 1: no completion
  for (std::size_t i = 7 * 11; i < 9 * 11; ++i) CHECK(logits[i] == 0.0);  // row 2: T = 3 > 1
  // A row's logits do not depend on the other rows.
  const auto alone = reference::forward(w, sequence_batch{{{4, 5, 6}}, {{10}}});
  for (std::size_t v = 0; v < 11; ++v) CHECK(logits[6 * 11 + v] == alone[v]);
}

namespace {

// d/dw of sum(coefficients * logits) by the reference backward, against central differences.
void check_reference_gradient(const transformer_config& c) {
  parameters<double> w(c);
  initialize(w, 11, 0.3);
  for (auto& x : w.values()) x += 0.05;  // norms away from exactly 1, biases away from 0
  const sequence_batch batch{{{1, 2}, {3, 4, 5}}, {{6, 7, 8}, {9, 10}}};  // 5 tokens each
  const auto coefficients = uniform(2 * 3 * 11, -1.0, 1.0, 17);
  const auto loss = [&](const std::vector<double>& values) {
    parameters<double> p(c);
    std::copy(values.begin(), values.end(), p.data());
    const auto logits = reference::forward(p, batch);
    double total = 0.0;
    for (std::size_t i = 0; i < logits.size(); ++i) total += coefficients[i] * logits[i];
    return total;
  };
  reference::activations<double> saved;
  (void)reference::forward(w, batch, &saved);
  parameters<double> grads(c);
  reference::backward(w, saved, std::span<const double>(coefficients), grads);
  const std::vector<double> x(w.values().begin(), w.values().end());
  require_gradient(loss, x, std::vector<double>(grads.values().begin(), grads.values().end()), 1e-7, 1e-6);
}

}  // namespace

TEST_CASE("model reference: gradient by finite differences (untied, q/k/v biases)", "[model][reference][gradient]") {
  check_reference_gradient(tiny_config(false, true));
}

TEST_CASE("model reference: gradient by finite differences (tied embeddings)", "[model][reference][gradient]") {
  check_reference_gradient(tiny_config(true, false));
}

TEST_CASE("model reference: backward errors and accumulation", "[model][reference]") {
  parameters<double> w(tiny_config(true, false));
  initialize(w, 2);
  reference::activations<double> saved;
  const auto logits = reference::forward(w, sequence_batch{{{1, 2}}, {{3, 4}}}, &saved);
  parameters<double> grads(w.config());
  require_error([&] { reference::backward(w, saved, std::span<const double>(logits.data(), 3), grads); },
                {"d_logits", "expected 22 values", "got 3"});
  parameters<double> other(tiny_config(false, false));
  require_error([&] { reference::backward(w, saved, std::span<const double>(logits), other); }, {"grads"});
  reference::backward(w, saved, std::span<const double>(logits), grads);
  parameters<double> twice = grads;
  reference::backward(w, saved, std::span<const double>(logits), twice);
  for (std::size_t i = 0; i < grads.size(); ++i) REQUIRE(twice.data()[i] == Approx(2.0 * grads.data()[i]));
}
