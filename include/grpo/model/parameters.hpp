// SPDX-License-Identifier: Apache-2.0
// grpo/model/parameters.hpp: the weights of the native transformer as one flat buffer with named
// views (Hugging Face names, "model.layers.0.self_attn.q_proj.weight"), so an optimizer, gradient
// clipping or an all-reduce sees a single span, and a gradient buffer has the same layout. The
// flat order keeps q/k/v and gate/up adjacent, so each pair or triple is one [out, in] matrix.
// Initialization: N(0, 0.02) with the output projections (o_proj, down_proj) scaled by
// 1/sqrt(2 L) as in GPT-2 (Radford et al. 2019, Sec. 2.3); norms 1, biases 0. Files: a Hugging
// Face model directory (config.json, one model.safetensors or shards), read through the shared
// readers of grpo/hf (model_config.hpp, checkpoint.hpp) that the LibTorch backend also uses.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <numbers>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "grpo/detail/random.hpp"
#include "grpo/error.hpp"
#include "grpo/hf/checkpoint.hpp"
#include "grpo/model/config.hpp"
#include "grpo/safetensors.hpp"

namespace grpo::model {

/// One named tensor of the flat buffer: values [offset, offset + size), row-major `shape`.
struct parameter_info {
  std::string name;
  std::vector<std::int64_t> shape;
  std::size_t offset = 0;
  std::size_t size = 0;
};

/// Offsets of one decoder layer's tensors in the flat buffer. qkv_proj is q_proj, k_proj and
/// v_proj stacked ([q_dim + 2 kv_dim, hidden]); gate_up_proj is gate_proj then up_proj
/// ([2 intermediate, hidden]). qkv_bias is npos without attention_bias.
struct layer_offsets {
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);
  std::size_t input_layernorm = 0;
  std::size_t qkv_proj = 0;
  std::size_t qkv_bias = npos;
  std::size_t o_proj = 0;
  std::size_t post_attention_layernorm = 0;
  std::size_t gate_up_proj = 0;
  std::size_t down_proj = 0;
};

/// Where every tensor of a config lives in the flat buffer.
class parameter_layout {
 public:
  /// Validates the config (config_error).
  explicit parameter_layout(const transformer_config& config) : config_(config) {
    config.validate();
    const auto d = config.hidden_size, f = config.intermediate_size, v = config.vocab_size;
    const auto q = config.q_dim(), kv = config.kv_dim();
    embed_tokens_ = add("model.embed_tokens.weight", {v, d});
    for (std::int64_t l = 0; l < config.num_hidden_layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      layer_offsets o;
      o.input_layernorm = add(p + "input_layernorm.weight", {d});
      o.qkv_proj = add(p + "self_attn.q_proj.weight", {q, d});
      add(p + "self_attn.k_proj.weight", {kv, d});
      add(p + "self_attn.v_proj.weight", {kv, d});
      if (config.attention_bias) {
        o.qkv_bias = add(p + "self_attn.q_proj.bias", {q});
        add(p + "self_attn.k_proj.bias", {kv});
        add(p + "self_attn.v_proj.bias", {kv});
      }
      o.o_proj = add(p + "self_attn.o_proj.weight", {d, q});
      o.post_attention_layernorm = add(p + "post_attention_layernorm.weight", {d});
      o.gate_up_proj = add(p + "mlp.gate_proj.weight", {f, d});
      add(p + "mlp.up_proj.weight", {f, d});
      o.down_proj = add(p + "mlp.down_proj.weight", {d, f});
      layers_.push_back(o);
    }
    norm_ = add("model.norm.weight", {d});
    lm_head_ = config.tie_word_embeddings ? embed_tokens_ : add("lm_head.weight", {v, d});
  }

  const transformer_config& config() const { return config_; }
  /// Total number of scalars.
  std::size_t size() const { return size_; }
  /// Every tensor in flat-buffer order (lm_head.weight only when not tied).
  const std::vector<parameter_info>& entries() const { return entries_; }
  /// The tensor called `name`, or nullptr.
  const parameter_info* find(std::string_view name) const {
    for (const auto& e : entries_)
      if (e.name == name) return &e;
    return nullptr;
  }
  std::size_t embed_tokens() const { return embed_tokens_; }
  std::size_t norm() const { return norm_; }
  /// The embedding's offset when the embeddings are tied.
  std::size_t lm_head() const { return lm_head_; }
  const layer_offsets& layer(std::int64_t index) const { return layers_[static_cast<std::size_t>(index)]; }

 private:
  transformer_config config_;
  std::vector<parameter_info> entries_;
  std::vector<layer_offsets> layers_;
  std::size_t size_ = 0, embed_tokens_ = 0, norm_ = 0, lm_head_ = 0;

  std::size_t add(std::string name, std::vector<std::int64_t> shape) {
    std::size_t n = 1;
    for (const auto extent : shape) n *= static_cast<std::size_t>(extent);
    entries_.push_back({std::move(name), std::move(shape), size_, n});
    size_ += n;
    return size_ - n;
  }
};

/// The weights (or gradients, or optimizer moments) of a transformer: a config, its layout and one
/// contiguous std::vector<T> (T = float or double). Copies are deep.
template <class T>
class parameters {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "parameters<T>: T must be float or double");

 public:
  using value_type = T;

  /// All zeros (call initialize() for random weights). Validates the config (config_error).
  explicit parameters(const transformer_config& config) : layout_(config), values_(layout_.size(), T(0)) {}

  const transformer_config& config() const { return layout_.config(); }
  const parameter_layout& layout() const { return layout_; }
  std::size_t size() const { return values_.size(); }
  std::span<T> values() { return values_; }
  std::span<const T> values() const { return values_; }
  T* data() { return values_.data(); }
  const T* data() const { return values_.data(); }

  /// The named tensor's values; config_error naming it when the layout has no such tensor.
  std::span<T> operator[](std::string_view name) {
    const parameter_info& e = entry(name);
    return values().subspan(e.offset, e.size);
  }
  std::span<const T> operator[](std::string_view name) const {
    const parameter_info& e = entry(name);
    return values().subspan(e.offset, e.size);
  }

  void set_zero() { std::fill(values_.begin(), values_.end(), T(0)); }

  friend bool operator==(const parameters& a, const parameters& b) {
    return a.config() == b.config() && a.values_ == b.values_;
  }

 private:
  parameter_layout layout_;
  std::vector<T> values_;

  const parameter_info& entry(std::string_view name) const {
    const parameter_info* e = layout_.find(name);
    GRPO_CHECK(e != nullptr, config_error, "name: no parameter called '", name, "' in this model");
    return *e;
  }
};

/// The same weights in another scalar type (each value rounded once).
template <class To, class From>
parameters<To> convert(const parameters<From>& from) {
  parameters<To> to(from.config());
  for (std::size_t i = 0; i < from.size(); ++i) to.data()[i] = static_cast<To>(from.data()[i]);
  return to;
}

namespace detail {

/// A standard normal by Box-Muller, from two uniforms of `gen`.
inline double standard_normal(std::mt19937_64& gen) {
  const double u1 = 1.0 - grpo::detail::uniform01(gen);  // in (0, 1], so the log is finite
  const double u2 = grpo::detail::uniform01(gen);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

}  // namespace detail

/// Fills `weights` for training from scratch, reproducibly for a seed: every weight matrix and the
/// embedding ~ N(0, std^2), o_proj and down_proj ~ N(0, std^2 / (2 num_hidden_layers)) so the
/// residual stream's variance does not grow with depth; RMSNorm weights 1; biases 0.
/// \throws config_error naming "std" unless it is finite and > 0.
template <class T>
void initialize(parameters<T>& weights, std::uint64_t seed, double std = 0.02) {
  GRPO_CHECK(std::isfinite(std) && std > 0.0, config_error, "std: must be a finite value > 0, got ", std);
  std::mt19937_64 gen(seed);
  const double residual_std = std / std::sqrt(2.0 * static_cast<double>(weights.config().num_hidden_layers));
  for (const auto& e : weights.layout().entries()) {
    const auto span = weights.values().subspan(e.offset, e.size);
    const bool is_norm = e.name.ends_with("norm.weight");
    const bool is_bias = e.name.ends_with(".bias");
    const bool is_residual = e.name.ends_with("o_proj.weight") || e.name.ends_with("down_proj.weight");
    for (auto& value : span) {
      if (is_norm)
        value = T(1);
      else if (is_bias)
        value = T(0);
      else
        value = static_cast<T>((is_residual ? residual_std : std) * detail::standard_normal(gen));
    }
  }
}

/// Adds every tensor of `weights` to a safetensors writer under prefix + name (F32 for float, F64
/// for double), e.g. prefix "exp_avg." for an optimizer moment in a checkpoint.
template <class T>
void add_tensors(safetensors::writer& out, const parameters<T>& weights, std::string_view prefix = "") {
  for (const auto& e : weights.layout().entries()) {
    const auto span = weights.values().subspan(e.offset, e.size);
    if constexpr (std::is_same_v<T, float>) {
      out.add(std::string(prefix) + e.name, std::span<const float>(span), e.shape);
    } else {
      out.add(std::string(prefix) + e.name, std::span<const double>(span), e.shape, safetensors::dtype::f64);
    }
  }
}

/// Reads every tensor of `weights`' layout from `file` (under prefix + name), converting any
/// floating-point dtype. Tensors of the file that the layout does not name are left alone.
/// \throws io_error naming the tensor and the file when one is missing, has another shape or is
///         not floating point; value_error naming it when an element is NaN or Inf.
template <class T>
void read_tensors(const safetensors::file& file, parameters<T>& weights, std::string_view prefix = "") {
  for (const auto& e : weights.layout().entries()) {
    const std::string name = std::string(prefix) + e.name;
    GRPO_CHECK(file.contains(name), io_error, name, ": missing from ", file.source());
    const auto view = file.at(name);
    GRPO_CHECK(view.shape == e.shape, io_error, name, ": expected shape ", safetensors::to_string(e.shape), ", got ",
               safetensors::to_string(view.shape), " in ", file.source());
    GRPO_CHECK(safetensors::is_floating_point(view.type), io_error, name, ": expected a floating-point dtype, got ",
               safetensors::name_of(view.type), " in ", file.source());
    const auto values = safetensors::to_doubles(view);
    for (std::size_t i = 0; i < values.size(); ++i) {
      GRPO_CHECK(std::isfinite(values[i]), value_error, name, ": element ", i, " is ", values[i],
                 " (NaN or Inf is not allowed) in ", file.source());
      weights.data()[e.offset + i] = static_cast<T>(values[i]);
    }
  }
}

/// Writes a Hugging Face model directory: `directory`/config.json (to_json) and
/// `directory`/model.safetensors in F32 (the "torch_dtype" of that config.json, as transformers
/// and the LibTorch backend save; a tied lm_head is not stored), each atomically; the directory
/// is created when missing. parameters<double> are rounded to float once.
/// \throws io_error when the directory cannot be created or a file cannot be written;
///         value_error naming the tensor when a double is beyond float's range.
template <class T>
void save_pretrained(const parameters<T>& weights, const std::filesystem::path& directory) {
  std::error_code ec;
  std::filesystem::create_directories(directory, ec);
  GRPO_CHECK(!ec, io_error, directory.string(), ": cannot create the directory (", ec.message(), ")");
  safetensors::writer out;
  out.add_metadata("format", "pt");  // transformers refuses a checkpoint without it
  if constexpr (std::is_same_v<T, float>) {
    add_tensors(out, weights);
  } else {
    std::vector<float> narrow;
    for (const auto& e : weights.layout().entries()) {
      const auto span = weights.values().subspan(e.offset, e.size);
      narrow.assign(span.begin(), span.end());
      for (std::size_t i = 0; i < narrow.size(); ++i)
        GRPO_CHECK(std::isfinite(narrow[i]), value_error, e.name, ": element ", i, " is ", span[i],
                   ", beyond the range of float (", directory.string(), " stores F32)");
      out.add(e.name, std::span<const float>(narrow), e.shape);
    }
  }
  out.write(directory / "model.safetensors");
  write_config(weights.config(), directory / "config.json");
}

/// Reads a Hugging Face model directory (what save_pretrained writes, or a Llama / Qwen2
/// checkpoint saved by transformers): config.json through read_config, the weights through
/// hf::checkpoint (one model.safetensors, or the shards of model.safetensors.index.json; F32, BF16
/// or F16, each value converted exactly to double, then rounded once to T). Strict, as the LibTorch
/// loader: a tensor the architecture does not have is an io_error naming it and its file, so a
/// config that does not match its weights cannot load silently; transformers' tied lm_head.weight
/// and rotary_emb.inv_freq buffers are accepted and ignored, as transformers does.
/// \throws what read_config and hf::checkpoint::open throw; io_error naming the tensor for one
///         that is missing, unexpected or of another shape; config_error naming the file and
///         tensor for a dtype other than F32, BF16 or F16; value_error naming the tensor and
///         element for a NaN or Inf.
template <class T>
parameters<T> load_pretrained(const std::filesystem::path& directory) {
  parameters<T> weights(read_config(directory / "config.json"));
  const auto checkpoint = hf::checkpoint::open(directory);
  for (const auto& name : checkpoint.names()) {
    const bool ignored = (weights.config().tie_word_embeddings && name == "lm_head.weight") ||
                         name.ends_with(".rotary_emb.inv_freq");
    GRPO_CHECK(weights.layout().find(name) != nullptr || ignored, io_error, name, ": unexpected tensor in ",
               checkpoint.file_of(name), " (not part of the architecture in ", (directory / "config.json").string(),
               ")");
  }
  for (const auto& e : weights.layout().entries()) {
    GRPO_CHECK(checkpoint.contains(e.name), io_error, e.name, ": missing from the checkpoint in ", directory.string(),
               " (", (directory / "config.json").string(), " describes an architecture with it)");
    const auto view = checkpoint.tensor(e.name);
    const auto& file = checkpoint.file_of(e.name);
    GRPO_CHECK(view.shape == e.shape, io_error, e.name, ": expected shape ", safetensors::to_string(e.shape),
               ", got ", safetensors::to_string(view.shape), " in ", file);
    const auto values = safetensors::to_doubles(view);
    for (std::size_t i = 0; i < values.size(); ++i) {
      GRPO_CHECK(std::isfinite(values[i]), value_error, e.name, ": element ", i, " is ", values[i],
                 " (NaN or Inf is not allowed) in ", file);
      weights.data()[e.offset + i] = static_cast<T>(values[i]);
    }
  }
  return weights;
}

}  // namespace grpo::model
