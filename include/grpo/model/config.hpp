// SPDX-License-Identifier: Apache-2.0
// grpo/model/config.hpp: the architecture of grpo's native policy, a decoder-only transformer of
// the Llama / Qwen2 family (Touvron et al. 2023, "LLaMA"; Qwen2 adds q/k/v biases), described with
// the field names of a Hugging Face config.json, and its writer: a file that transformers and
// grpo::hf::parse_model_config read as a LlamaConfig (no biases) or a Qwen2Config (q/k/v biases).
// The model has SiLU activations, plain RoPE and a head dimension of hidden_size /
// num_attention_heads. A config.json is read by the parser every grpo model shares
// (grpo/hf/model_config.hpp) and mapped onto the native architecture by from_hf, which refuses
// what the native transformer cannot run.
#pragma once

#include <charconv>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <span>
#include <sstream>
#include <string>
#include <string_view>

#include "grpo/detail/json.hpp"
#include "grpo/error.hpp"
#include "grpo/hf/model_config.hpp"
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
    // 2^40 parameters (4 TiB in fp32) is far above any model one process trains, and keeps the
    // int64 parameter count exact.
    const long double parameters = parameter_count<long double>();
    GRPO_CHECK(parameters <= 0x1p40L, config_error, "hidden_size, intermediate_size, num_hidden_layers, vocab_size: give ",
               static_cast<double>(parameters), " parameters, more than the 2^40 a model may have");
  }

  /// Number of scalar parameters (lm_head counted only when not tied), in N: validate() evaluates it
  /// in long double and bounds it, so that the int64 count of a validated config never overflows.
  template <class N = std::int64_t>
  N parameter_count() const {
    const N d = static_cast<N>(hidden_size), f = static_cast<N>(intermediate_size);
    const N q = static_cast<N>(q_dim()), kv = static_cast<N>(kv_dim());
    const N per_layer = 2 * d + (q + 2 * kv) * d + (attention_bias ? q + 2 * kv : 0) + d * q + 3 * d * f;
    return static_cast<N>(vocab_size) * d * (tie_word_embeddings ? 1 : 2) + static_cast<N>(num_hidden_layers) * per_layer +
           d;
  }

  friend bool operator==(const transformer_config&, const transformer_config&) = default;
};

/// The config as a Hugging Face config.json in the transformers 4.x layout (top-level rope_theta,
/// torch_dtype "float32"), one field per line, deterministic. Without attention_bias it is a
/// LlamaForCausalLM; with it a Qwen2ForCausalLM, because a Llama's "attention_bias" also puts a
/// bias on o_proj (transformers' LlamaAttention), which this architecture does not have, while
/// Qwen2 has biases on q_proj, k_proj and v_proj only.
inline std::string to_json(const transformer_config& config) {
  const bool qwen2 = config.attention_bias;
  std::ostringstream out;
  out << "{\n"
      << "  \"architectures\": [\"" << (qwen2 ? "Qwen2ForCausalLM" : "LlamaForCausalLM") << "\"],\n"
      << "  \"model_type\": \"" << (qwen2 ? "qwen2" : "llama") << "\",\n"
      << "  \"vocab_size\": " << config.vocab_size << ",\n"
      << "  \"hidden_size\": " << config.hidden_size << ",\n"
      << "  \"intermediate_size\": " << config.intermediate_size << ",\n"
      << "  \"num_hidden_layers\": " << config.num_hidden_layers << ",\n"
      << "  \"num_attention_heads\": " << config.num_attention_heads << ",\n"
      << "  \"num_key_value_heads\": " << config.num_key_value_heads << ",\n"
      << "  \"head_dim\": " << config.head_dim() << ",\n"
      << "  \"max_position_embeddings\": " << config.max_position_embeddings << ",\n"
      << "  \"rms_norm_eps\": " << grpo::detail::json::number(config.rms_norm_eps) << ",\n"
      << "  \"rope_theta\": " << grpo::detail::json::number(config.rope_theta) << ",\n"
      << "  \"rope_scaling\": null,\n"
      << "  \"tie_word_embeddings\": " << (config.tie_word_embeddings ? "true" : "false") << ",\n";
  if (qwen2)
    out << "  \"use_sliding_window\": false,\n";
  else
    out << "  \"attention_bias\": false,\n"
        << "  \"mlp_bias\": false,\n";
  out << "  \"hidden_act\": \"silu\",\n"
      << "  \"torch_dtype\": \"float32\"\n"
      << "}\n";
  return out.str();
}

/// Writes to_json(config) to `path` atomically (validated first).
inline void write_config(const transformer_config& config, const std::filesystem::path& path) {
  config.validate();
  const std::string text = to_json(config);
  safetensors::write_file_atomically(
      path, std::span<const std::byte>(reinterpret_cast<const std::byte*>(text.data()), text.size()));
}

/// The native architecture of a parsed Hugging Face config (hf::parse_model_config's result;
/// `source` names its file in messages). hf::model_config describes more than the native
/// transformer runs; what it cannot run is refused rather than dropped.
/// \throws config_error "<source>: field \"<name>\": ..." for a Qwen3 ("model_type": per-head q/k
///         RMSNorm), a bias on o_proj ("attention_bias" of a Llama), hidden_size not divisible by
///         num_attention_heads, a head_dim other than hidden_size / num_attention_heads, a
///         rope_theta <= 1, and what hf::model_config::validate refuses.
inline transformer_config from_hf(const hf::model_config& hf_config, std::string_view source = "config.json") {
  const auto& c = hf_config;
  c.validate(source);
  GRPO_CHECK(c.architecture != hf::architecture::qwen3 && !c.qk_norm, config_error, source,
             ": field \"model_type\": ", hf::architecture_name(c.architecture),
             " normalizes each query and key head (q_norm, k_norm), which the native transformer does not "
             "implement (the LibTorch backend, grpo::libtorch::causal_lm, runs it)");
  GRPO_CHECK(!c.o_proj_bias, config_error, source, ": field \"attention_bias\": true gives a ",
             hf::architecture_name(c.architecture),
             " a bias on o_proj as well, which the native transformer does not have (it has q/k/v biases only, "
             "as Qwen2)");
  GRPO_CHECK(c.hidden_size % c.num_attention_heads == 0, config_error, source,
             ": field \"hidden_size\": must be divisible by num_attention_heads (", c.num_attention_heads, "), got ",
             c.hidden_size);
  GRPO_CHECK(c.head_dim == c.hidden_size / c.num_attention_heads, config_error, source,
             ": field \"head_dim\": must equal hidden_size / num_attention_heads (",
             c.hidden_size / c.num_attention_heads, ") in the native transformer, got ", c.head_dim);
  GRPO_CHECK(c.rope_theta > 1.0, config_error, source, ": field \"rope_theta\": must be a finite value > 1, got ",
             c.rope_theta);
  transformer_config out;
  out.vocab_size = c.vocab_size;
  out.hidden_size = c.hidden_size;
  out.intermediate_size = c.intermediate_size;
  out.num_hidden_layers = c.num_hidden_layers;
  out.num_attention_heads = c.num_attention_heads;
  out.num_key_value_heads = c.num_key_value_heads;
  out.max_position_embeddings = c.max_position_embeddings;
  out.rms_norm_eps = c.rms_norm_eps;
  out.rope_theta = c.rope_theta;
  out.tie_word_embeddings = c.tie_word_embeddings;
  out.attention_bias = c.attention_bias;
  out.validate();
  return out;
}

/// Parses a config.json with hf::parse_model_config (both transformers layouts; see there for the
/// required fields: unlike LlamaConfig, max_position_embeddings, rms_norm_eps and the RoPE theta
/// have no default, and every file transformers or to_json writes has them) and maps it with
/// from_hf. Token ids and the dtype are not part of the architecture and are dropped.
/// \throws io_error for malformed JSON, config_error naming `source` and the field.
inline transformer_config config_from_json(std::string_view text, std::string_view source = "config.json") {
  return from_hf(hf::parse_model_config(text, source), source);
}

/// Reads and parses `path` (io_error naming it when it cannot be read).
inline transformer_config read_config(const std::filesystem::path& path) {
  return from_hf(hf::read_model_config(path), path.string());
}

}  // namespace grpo::model
