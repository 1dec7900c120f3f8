// SPDX-License-Identifier: Apache-2.0
// grpo/model/config.hpp: the architecture of grpo's native policy, a decoder-only transformer of
// the Llama / Qwen2 family (Touvron et al. 2023, "LLaMA"; Qwen2 adds q/k/v biases), described with
// the field names of a Hugging Face config.json so a file written here reads as a LlamaConfig.
// Only what the model implements is accepted: SiLU activations, plain RoPE (no rope_scaling) and a
// head dimension of hidden_size / num_attention_heads; anything else is a config_error, never
// silently ignored. Unknown fields (architectures, torch_dtype, token ids, ...) are ignored.
#pragma once

#include <charconv>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>

#include "grpo/detail/json.hpp"
#include "grpo/error.hpp"
#include "grpo/safetensors.hpp"

namespace grpo::model {

/// Architecture hyper-parameters, HF config.json names. The defaults describe a small model of the
/// size grpo trains on two CPU cores (about 0.8M parameters); HF's defaults differ where noted.
struct transformer_config {
  std::int64_t vocab_size = 64;
  std::int64_t hidden_size = 128;
  std::int64_t intermediate_size = 352;
  std::int64_t num_hidden_layers = 4;
  std::int64_t num_attention_heads = 4;
  std::int64_t num_key_value_heads = 2;        ///< grouped-query attention; HF default: num_attention_heads
  std::int64_t max_position_embeddings = 512;  ///< longest prompt + completion
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  bool tie_word_embeddings = true;  ///< HF default: false
  bool attention_bias = false;      ///< biases on q_proj, k_proj and v_proj (true for Qwen2)

  std::int64_t head_dim() const { return hidden_size / num_attention_heads; }
  /// Query heads that share one key/value head.
  std::int64_t group_size() const { return num_attention_heads / num_key_value_heads; }
  std::int64_t q_dim() const { return num_attention_heads * head_dim(); }
  std::int64_t kv_dim() const { return num_key_value_heads * head_dim(); }

  /// Throws config_error naming the first bad field: every size must be >= 1 (the vocabulary and
  /// the sizes below 2^31, so token ids fit grpo::token_id); hidden_size divisible by
  /// num_attention_heads with an even head dimension (RoPE rotates pairs); num_attention_heads
  /// divisible by num_key_value_heads; rms_norm_eps finite and > 0; rope_theta finite and > 1.
  void validate() const {
    constexpr std::int64_t limit = std::numeric_limits<std::int32_t>::max();
    const auto positive = [&](std::int64_t value, std::string_view name) {
      GRPO_CHECK(value >= 1 && value <= limit, config_error, name, ": must be an integer in [1, ", limit, "], got ",
                 value);
    };
    positive(vocab_size, "vocab_size");
    positive(hidden_size, "hidden_size");
    positive(intermediate_size, "intermediate_size");
    positive(num_hidden_layers, "num_hidden_layers");
    positive(num_attention_heads, "num_attention_heads");
    positive(num_key_value_heads, "num_key_value_heads");
    positive(max_position_embeddings, "max_position_embeddings");
    GRPO_CHECK(hidden_size % num_attention_heads == 0, config_error,
               "hidden_size: must be divisible by num_attention_heads (", num_attention_heads, "), got ", hidden_size);
    GRPO_CHECK(head_dim() % 2 == 0, config_error,
               "hidden_size: the head dimension hidden_size / num_attention_heads must be even for rotary "
               "embeddings, got ",
               hidden_size, " / ", num_attention_heads, " = ", head_dim());
    GRPO_CHECK(num_attention_heads % num_key_value_heads == 0, config_error,
               "num_key_value_heads: must divide num_attention_heads (", num_attention_heads, "), got ",
               num_key_value_heads);
    GRPO_CHECK(std::isfinite(rms_norm_eps) && rms_norm_eps > 0.0, config_error,
               "rms_norm_eps: must be a finite value > 0, got ", rms_norm_eps);
    GRPO_CHECK(std::isfinite(rope_theta) && rope_theta > 1.0, config_error,
               "rope_theta: must be a finite value > 1, got ", rope_theta);
  }

  /// Number of scalar parameters (lm_head counted only when not tied).
  std::int64_t parameter_count() const {
    const std::int64_t d = hidden_size, f = intermediate_size;
    const std::int64_t per_layer =
        2 * d + (q_dim() + 2 * kv_dim()) * d + (attention_bias ? q_dim() + 2 * kv_dim() : 0) + d * q_dim() + 3 * d * f;
    return vocab_size * d * (tie_word_embeddings ? 1 : 2) + num_hidden_layers * per_layer + d;
  }

  friend bool operator==(const transformer_config&, const transformer_config&) = default;
};

namespace detail {

/// Shortest text that reads back as the same double, in fixed notation for moderate magnitudes
/// (1000000.0 rather than 1e+06) with a ".0" on integers so Python reads a float.
inline std::string json_number(double value) {
  char buffer[400];
  const double magnitude = std::fabs(value);
  const bool fixed = magnitude == 0.0 || (magnitude >= 1e-4 && magnitude < 1e16);
  const auto result = std::to_chars(buffer, buffer + sizeof buffer, value,
                                    fixed ? std::chars_format::fixed : std::chars_format::scientific);
  std::string text(buffer, result.ptr);
  if (text.find_first_of(".eE") == std::string::npos) text += ".0";
  return text;
}

}  // namespace detail

/// The config as a Hugging Face config.json ("model_type": "llama", plus "head_dim",
/// "hidden_act": "silu" and "torch_dtype": "float32"), one field per line, deterministic.
inline std::string to_json(const transformer_config& config) {
  std::ostringstream out;
  out << "{\n"
      << "  \"architectures\": [\"LlamaForCausalLM\"],\n"
      << "  \"model_type\": \"llama\",\n"
      << "  \"vocab_size\": " << config.vocab_size << ",\n"
      << "  \"hidden_size\": " << config.hidden_size << ",\n"
      << "  \"intermediate_size\": " << config.intermediate_size << ",\n"
      << "  \"num_hidden_layers\": " << config.num_hidden_layers << ",\n"
      << "  \"num_attention_heads\": " << config.num_attention_heads << ",\n"
      << "  \"num_key_value_heads\": " << config.num_key_value_heads << ",\n"
      << "  \"head_dim\": " << config.head_dim() << ",\n"
      << "  \"max_position_embeddings\": " << config.max_position_embeddings << ",\n"
      << "  \"rms_norm_eps\": " << detail::json_number(config.rms_norm_eps) << ",\n"
      << "  \"rope_theta\": " << detail::json_number(config.rope_theta) << ",\n"
      << "  \"tie_word_embeddings\": " << (config.tie_word_embeddings ? "true" : "false") << ",\n"
      << "  \"attention_bias\": " << (config.attention_bias ? "true" : "false") << ",\n"
      << "  \"hidden_act\": \"silu\",\n"
      << "  \"torch_dtype\": \"float32\"\n"
      << "}\n";
  return out.str();
}

/// Parses a config.json. Required: vocab_size, hidden_size, intermediate_size, num_hidden_layers,
/// num_attention_heads. Optional, with Hugging Face LlamaConfig's defaults: num_key_value_heads
/// (= num_attention_heads), max_position_embeddings (2048), rms_norm_eps (1e-6), rope_theta
/// (10000), tie_word_embeddings (false), attention_bias (false). Other fields are ignored, except
/// that hidden_act must be "silu", head_dim (when present) must equal hidden_size /
/// num_attention_heads, rope_scaling must be absent or null and mlp_bias absent or false.
/// \throws io_error for malformed JSON (naming `source`), config_error naming the field (and
///         `source`) for a missing, mistyped or invalid value; the result is validate()d.
inline transformer_config config_from_json(std::string_view text, std::string_view source = "config.json") {
  namespace json = grpo::detail::json;
  const json::value root = json::parse(text, source);
  GRPO_CHECK(root.kind == json::kind::object, config_error, source, ": expected a JSON object, got ",
             json::kind_name(root.kind));
  const auto find = [&](std::string_view name) -> const json::value* {
    for (const auto& m : root.members)
      if (m.key == name) return &m.value;
    return nullptr;
  };
  const auto integer = [&](std::string_view name, std::optional<std::int64_t> fallback) -> std::int64_t {
    const json::value* v = find(name);
    if (v == nullptr) {
      GRPO_CHECK(fallback.has_value(), config_error, name, ": missing (required in ", source, ")");
      return *fallback;
    }
    std::uint64_t out = 0;
    GRPO_CHECK(json::to_uint64(*v, out, static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())),
               config_error, name, ": expected a non-negative integer, got ",
               v->kind == json::kind::number ? v->text : std::string(json::kind_name(v->kind)), " (in ", source, ")");
    return static_cast<std::int64_t>(out);
  };
  const auto real = [&](std::string_view name, double fallback) -> double {
    const json::value* v = find(name);
    if (v == nullptr) return fallback;
    double out = 0.0;
    const bool number = v->kind == json::kind::number;
    const auto parsed = number ? std::from_chars(v->text.data(), v->text.data() + v->text.size(), out)
                               : std::from_chars_result{nullptr, std::errc::invalid_argument};
    GRPO_CHECK(number && parsed.ec == std::errc() && parsed.ptr == v->text.data() + v->text.size(), config_error, name,
               ": expected a finite number, got ", number ? v->text : std::string(json::kind_name(v->kind)), " (in ",
               source, ")");
    return out;
  };
  const auto boolean = [&](std::string_view name, bool fallback) -> bool {
    const json::value* v = find(name);
    if (v == nullptr) return fallback;
    GRPO_CHECK(v->kind == json::kind::boolean, config_error, name, ": expected true or false, got ",
               v->kind == json::kind::number || v->kind == json::kind::string ? v->text
                                                                              : std::string(json::kind_name(v->kind)),
               " (in ", source, ")");
    return v->boolean;
  };

  transformer_config config;
  config.vocab_size = integer("vocab_size", std::nullopt);
  config.hidden_size = integer("hidden_size", std::nullopt);
  config.intermediate_size = integer("intermediate_size", std::nullopt);
  config.num_hidden_layers = integer("num_hidden_layers", std::nullopt);
  config.num_attention_heads = integer("num_attention_heads", std::nullopt);
  config.num_key_value_heads = integer("num_key_value_heads", config.num_attention_heads);
  config.max_position_embeddings = integer("max_position_embeddings", 2048);
  config.rms_norm_eps = real("rms_norm_eps", 1e-6);
  config.rope_theta = real("rope_theta", 10000.0);
  config.tie_word_embeddings = boolean("tie_word_embeddings", false);
  config.attention_bias = boolean("attention_bias", false);

  if (const json::value* act = find("hidden_act"))
    GRPO_CHECK(act->kind == json::kind::string && act->text == "silu", config_error,
               "hidden_act: only \"silu\" is supported, got ",
               act->kind == json::kind::string ? json::quote(act->text) : std::string(json::kind_name(act->kind)),
               " (in ", source, ")");
  if (const json::value* scaling = find("rope_scaling"))
    GRPO_CHECK(scaling->kind == json::kind::null, config_error,
               "rope_scaling: not supported (only plain RoPE), got a value (in ", source, ")");
  GRPO_CHECK(!boolean("mlp_bias", false), config_error, "mlp_bias: true is not supported (in ", source, ")");
  config.validate();
  if (const json::value* head = find("head_dim"); head != nullptr && head->kind != json::kind::null) {
    const auto value = integer("head_dim", std::nullopt);
    GRPO_CHECK(value == config.head_dim(), config_error, "head_dim: must equal hidden_size / num_attention_heads (",
               config.head_dim(), "), got ", value, " (in ", source, ")");
  }
  return config;
}

/// Reads and parses `path` (io_error naming it when it cannot be read).
inline transformer_config read_config(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  GRPO_CHECK(in.good(), io_error, path.string(), ": cannot open for reading");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  GRPO_CHECK(!in.bad(), io_error, path.string(), ": read failed");
  return config_from_json(text, path.string());
}

/// Writes to_json(config) to `path` atomically (validated first).
inline void write_config(const transformer_config& config, const std::filesystem::path& path) {
  config.validate();
  const std::string text = to_json(config);
  safetensors::write_file_atomically(
      path, std::span<const std::byte>(reinterpret_cast<const std::byte*>(text.data()), text.size()));
}

}  // namespace grpo::model
