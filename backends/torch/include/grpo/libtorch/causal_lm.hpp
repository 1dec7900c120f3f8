// SPDX-License-Identifier: Apache-2.0
// grpo/libtorch/causal_lm.hpp: a Llama / Qwen2 / Qwen3 causal language model as plain at::Tensors,
// loaded from and saved to a Hugging Face model directory. The computation follows transformers'
// modeling_llama / modeling_qwen2 / modeling_qwen3 (eager attention): RMSNorm in fp32 (Zhang &
// Sennrich 2019), rotary embeddings with the rotate-half convention (Su et al. 2021, RoFormer),
// grouped-query attention (Ainslie et al. 2023) with causal and padding masks and the softmax in
// fp32, SwiGLU MLP (Shazeer 2020), q/k/v biases (Qwen2), per-head q/k RMSNorm before RoPE (Qwen3),
// tied or untied lm_head. Weights are kept in a master dtype (fp32, or fp64 for tests) and cast to
// the compute dtype (bf16 on CUDA, the master dtype on CPU) where used, so autograd hands fp32
// gradients to the fp32 master weights (mixed precision as in Micikevicius et al. 2018).
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <optional>
#include <set>
#include <span>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "grpo/error.hpp"
#include "grpo/hf/checkpoint.hpp"
#include "grpo/hf/model_config.hpp"
#include "grpo/libtorch/config.hpp"
#include "grpo/safetensors.hpp"

namespace grpo::libtorch {
inline namespace GRPO_LIBTORCH_NAMESPACE {

/// Where a causal_lm lives and in which precision.
struct causal_lm_options {
  at::Device device = at::kCPU;
  at::ScalarType master_dtype = at::kFloat;  ///< the weights kept (and trained): kFloat or kDouble
  /// The dtype the forward computes in; nullopt: kBFloat16 on CUDA, the master dtype elsewhere.
  std::optional<at::ScalarType> compute_dtype;
};

/// One decoder layer's tensors; biases and q/k norms are undefined where the architecture has none.
struct layer_weights {
  at::Tensor input_layernorm, q_proj, q_bias, k_proj, k_bias, v_proj, v_bias, o_proj, o_bias, q_norm, k_norm;
  at::Tensor post_attention_layernorm, gate_proj, up_proj, down_proj;
};

/// Every tensor of the model; lm_head is undefined when tied to embed_tokens.
struct causal_lm_weights {
  at::Tensor embed_tokens;
  std::vector<layer_weights> layers;
  at::Tensor norm;
  at::Tensor lm_head;
};

/// Calls f(hf_name, expected_sizes, tensor&) for every tensor the config implies, in a fixed order
/// (the order of parameters(), checkpoints and optimizer state). `w.layers` is resized to fit.
template <class F>
void visit_weights(const hf::model_config& c, causal_lm_weights& w, F&& f) {
  const std::int64_t d = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), ff = c.intermediate_size;
  w.layers.resize(static_cast<std::size_t>(c.num_hidden_layers));
  f(std::string("model.embed_tokens.weight"), std::vector<std::int64_t>{c.vocab_size, d}, w.embed_tokens);
  for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
    auto& layer = w.layers[static_cast<std::size_t>(l)];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    f(p + "input_layernorm.weight", std::vector<std::int64_t>{d}, layer.input_layernorm);
    f(p + "self_attn.q_proj.weight", std::vector<std::int64_t>{q, d}, layer.q_proj);
    if (c.attention_bias) f(p + "self_attn.q_proj.bias", std::vector<std::int64_t>{q}, layer.q_bias);
    f(p + "self_attn.k_proj.weight", std::vector<std::int64_t>{kv, d}, layer.k_proj);
    if (c.attention_bias) f(p + "self_attn.k_proj.bias", std::vector<std::int64_t>{kv}, layer.k_bias);
    f(p + "self_attn.v_proj.weight", std::vector<std::int64_t>{kv, d}, layer.v_proj);
    if (c.attention_bias) f(p + "self_attn.v_proj.bias", std::vector<std::int64_t>{kv}, layer.v_bias);
    f(p + "self_attn.o_proj.weight", std::vector<std::int64_t>{d, q}, layer.o_proj);
    if (c.o_proj_bias) f(p + "self_attn.o_proj.bias", std::vector<std::int64_t>{d}, layer.o_bias);
    if (c.qk_norm) {
      f(p + "self_attn.q_norm.weight", std::vector<std::int64_t>{c.head_dim}, layer.q_norm);
      f(p + "self_attn.k_norm.weight", std::vector<std::int64_t>{c.head_dim}, layer.k_norm);
    }
    f(p + "post_attention_layernorm.weight", std::vector<std::int64_t>{d}, layer.post_attention_layernorm);
    f(p + "mlp.gate_proj.weight", std::vector<std::int64_t>{ff, d}, layer.gate_proj);
    f(p + "mlp.up_proj.weight", std::vector<std::int64_t>{ff, d}, layer.up_proj);
    f(p + "mlp.down_proj.weight", std::vector<std::int64_t>{d, ff}, layer.down_proj);
  }
  f(std::string("model.norm.weight"), std::vector<std::int64_t>{d}, w.norm);
  if (!c.tie_word_embeddings) f(std::string("lm_head.weight"), std::vector<std::int64_t>{c.vocab_size, d}, w.lm_head);
}

/// The weights in `dtype` (autograd-connected casts; the same tensors when the dtype already matches).
inline causal_lm_weights cast_weights(const hf::model_config& c, const causal_lm_weights& w, at::ScalarType dtype) {
  causal_lm_weights source = w, out;
  std::vector<at::Tensor> cast;
  visit_weights(c, source, [&](const std::string&, const std::vector<std::int64_t>&, at::Tensor& t) {
    cast.push_back(t.scalar_type() == dtype ? t : t.to(dtype));
  });
  std::size_t i = 0;
  visit_weights(c, out, [&](const std::string&, const std::vector<std::int64_t>&, at::Tensor& t) { t = cast[i++]; });
  return out;
}

/// Keys and values of every layer for decoding, [batch, kv_heads, capacity, head_dim] each; the
/// first `length` positions are filled.
struct kv_cache {
  std::vector<at::Tensor> keys, values;
  std::int64_t length = 0;
};

namespace detail {

/// HF's RMSNorm: x / sqrt(mean(x^2) + eps) in fp32 (fp64 for fp64 inputs), back to x's dtype, times w.
inline at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const auto type = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const auto h = x.to(type);
  const auto normalized = h * at::rsqrt(h.pow(2).mean({-1}, /*keepdim=*/true) + eps);
  return weight * normalized.to(x.scalar_type());
}

/// q * cos + rotate_half(q) * sin, rotate_half(x) = cat(-x2, x1) over the halves of the head.
inline at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const auto half = x.size(-1) / 2;
  const auto rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos + rotated * sin;
}

inline at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  return b.defined() ? at::linear(x, w, b) : at::linear(x, w);
}

}  // namespace detail

/// The model: its config, its master weights, and the forward computation.
class causal_lm {
 public:
  /// Takes weights already in options.master_dtype on options.device (see visit_weights for the set).
  /// \throws config_error naming "master_dtype" / "compute_dtype" for an unsupported dtype,
  ///         shape_error naming the tensor when one is missing or misshapen.
  causal_lm(hf::model_config config, causal_lm_weights weights, causal_lm_options options,
            std::optional<hf::generation_config> generation = std::nullopt,
            std::optional<std::filesystem::path> source = std::nullopt)
      : config_(std::move(config)),
        weights_(std::move(weights)),
        options_(resolve(options)),
        generation_(std::move(generation)),
        source_(std::move(source)) {
    config_.validate();
    visit_weights(config_, weights_,
                  [&](const std::string& name, const std::vector<std::int64_t>& sizes, at::Tensor& t) {
                    GRPO_CHECK(t.defined() && t.sizes() == at::IntArrayRef(sizes), shape_error, "weights: tensor \"",
                               name, "\" must have shape ", safetensors::to_string(sizes));
                  });
  }

  /// Loads a Hugging Face model directory: config.json, model.safetensors (or the shards of
  /// model.safetensors.index.json), generation_config.json when present. Tensors may be F32, BF16
  /// or F16 and are converted to the master dtype.
  /// \throws what hf::read_model_config and hf::checkpoint::open throw; io_error naming the file
  ///         and tensor for a missing tensor or an unexpected one (a tied model's lm_head.weight
  ///         and rotary_emb.inv_freq buffers are accepted and ignored, as transformers does);
  ///         shape_error naming the file, tensor and config for a shape that differs from the
  ///         config's.
  static causal_lm load(const std::filesystem::path& directory, const causal_lm_options& options = {}) {
    const auto config_path = directory / "config.json";
    auto config = hf::read_model_config(config_path);
    const auto checkpoint = hf::checkpoint::open(directory);
    const auto resolved = resolve(options);
    causal_lm_weights weights;
    std::set<std::string> used;
    visit_weights(config, weights, [&](const std::string& name, const std::vector<std::int64_t>& sizes, at::Tensor& t) {
      GRPO_CHECK(checkpoint.contains(name), io_error, directory.string(), ": tensor \"", name,
                 "\" is missing from the checkpoint (", config_path.string(), " describes a ",
                 hf::architecture_name(config.architecture), " with it)");
      const auto view = checkpoint.tensor(name);
      GRPO_CHECK(view.shape == sizes, shape_error, checkpoint.file_of(name), ": tensor \"", name, "\" has shape ",
                 safetensors::to_string(view.shape), ", but ", config_path.string(), " implies ",
                 safetensors::to_string(sizes), " (hidden_size ", config.hidden_size, ", intermediate_size ",
                 config.intermediate_size, ", vocab_size ", config.vocab_size, ", heads ", config.num_attention_heads,
                 "/", config.num_key_value_heads, " of head_dim ", config.head_dim, ")");
      t = from_view(view).to(resolved.device, resolved.master_dtype);
      used.insert(name);
    });
    for (const auto& name : checkpoint.names()) {
      const bool ignored =
          (config.tie_word_embeddings && name == "lm_head.weight") || name.ends_with(".rotary_emb.inv_freq");
      GRPO_CHECK(used.count(name) != 0 || ignored, io_error, checkpoint.file_of(name), ": unexpected tensor \"", name,
                 "\" (not part of a ", hf::architecture_name(config.architecture), " with ", config_path.string(), ")");
    }
    return causal_lm(std::move(config), std::move(weights), resolved, hf::read_generation_config(directory), directory);
  }

  const hf::model_config& config() const { return config_; }
  const causal_lm_options& options() const { return options_; }
  at::ScalarType compute_dtype() const { return *options_.compute_dtype; }
  causal_lm_weights& weights() { return weights_; }
  const causal_lm_weights& weights() const { return weights_; }
  const std::optional<hf::generation_config>& generation() const { return generation_; }
  /// The directory the model was loaded from (tokenizer files are copied from it on save).
  const std::optional<std::filesystem::path>& source() const { return source_; }

  /// The tokens generation stops on by default (generation_config.json's eos ids, else config.json's).
  std::vector<std::int64_t> stop_token_ids() const { return hf::stop_token_ids(config_, generation_); }

  /// Every master tensor with its Hugging Face name (handles sharing storage with the model).
  std::vector<std::pair<std::string, at::Tensor>> named_parameters() const {
    std::vector<std::pair<std::string, at::Tensor>> out;
    auto copy = weights_;
    visit_weights(config_, copy, [&](const std::string& name, const std::vector<std::int64_t>&, at::Tensor& t) {
      out.emplace_back(name, t);
    });
    return out;
  }

  /// The final hidden states [B, L, D] (after the last norm) of ids [B, L] at positions [B, L] (both
  /// int64 on the model's device), computed with `w` (compute-dtype weights, cast_weights). A query
  /// at step i attends to keys j <= cache->length + i where key_valid [B, S] is true (S = cached +
  /// new positions; undefined: every key valid). With a cache, the new keys and values are written
  /// at cache->length and the length advances.
  at::Tensor hidden_states(const causal_lm_weights& w, const at::Tensor& ids, const at::Tensor& positions,
                           const at::Tensor& key_valid = {}, kv_cache* cache = nullptr) const {
    const auto& c = config_;
    const std::int64_t batch = ids.size(0), length = ids.size(1), offset = cache ? cache->length : 0;
    const std::int64_t keys = offset + length, hd = c.head_dim, kvh = c.num_key_value_heads, group = c.group_size();
    const auto device = ids.device();
    const auto index = at::TensorOptions().dtype(at::kLong).device(device);
    auto allowed = at::arange(keys, index).unsqueeze(0) <= (at::arange(length, index) + offset).unsqueeze(1);
    allowed =
        key_valid.defined() ? at::logical_and(allowed.unsqueeze(0), key_valid.unsqueeze(1)) : allowed.unsqueeze(0);
    allowed = allowed.view({allowed.size(0), 1, 1, length, keys});  // broadcast over kv heads and groups
    const auto [cos, sin] = rope_tables(positions);
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
    const auto score_type = compute_dtype() == at::kDouble ? at::kDouble : at::kFloat;
    const double lowest = score_type == at::kDouble ? std::numeric_limits<double>::lowest()
                                                    : static_cast<double>(std::numeric_limits<float>::lowest());

    auto x = at::embedding(w.embed_tokens, ids);
    for (std::size_t l = 0; l < w.layers.size(); ++l) {
      const auto& layer = w.layers[l];
      const auto h = detail::rms_norm(x, layer.input_layernorm, c.rms_norm_eps);
      auto q = detail::linear(h, layer.q_proj, layer.q_bias).view({batch, length, c.num_attention_heads, hd});
      auto k = detail::linear(h, layer.k_proj, layer.k_bias).view({batch, length, kvh, hd});
      auto v = detail::linear(h, layer.v_proj, layer.v_bias).view({batch, length, kvh, hd}).transpose(1, 2);
      if (c.qk_norm) {
        q = detail::rms_norm(q, layer.q_norm, c.rms_norm_eps);
        k = detail::rms_norm(k, layer.k_norm, c.rms_norm_eps);
      }
      q = detail::apply_rope(q, cos, sin).view({batch, length, kvh, group, hd}).permute({0, 2, 3, 1, 4});
      k = detail::apply_rope(k, cos, sin).transpose(1, 2);  // [B, kv heads, L, hd]
      if (cache != nullptr) {
        cache->keys[l].narrow(2, offset, length).copy_(k);
        cache->values[l].narrow(2, offset, length).copy_(v);
        k = cache->keys[l].narrow(2, 0, keys);
        v = cache->values[l].narrow(2, 0, keys);
      }
      // Query head h = kv * group + g reads key/value head kv (transformers' repeat_kv).
      const auto scores = (at::matmul(q, k.unsqueeze(2).transpose(-1, -2)) * scale).to(score_type);
      // A finite fill, not -inf: a padding query with every key masked gets a uniform row, not NaN.
      const auto probs = at::softmax(scores.masked_fill(at::logical_not(allowed), lowest), -1).to(q.scalar_type());
      const auto attended = at::matmul(probs, v.unsqueeze(2)).permute({0, 3, 1, 2, 4}).reshape({batch, length, -1});
      x = x + detail::linear(attended, layer.o_proj, layer.o_bias);
      const auto m = detail::rms_norm(x, layer.post_attention_layernorm, c.rms_norm_eps);
      x = x + at::linear(at::silu(at::linear(m, layer.gate_proj)) * at::linear(m, layer.up_proj), layer.down_proj);
    }
    if (cache != nullptr) cache->length = keys;
    return detail::rms_norm(x, w.norm, c.rms_norm_eps);
  }

  /// Logits [N, V] of hidden states [N, D].
  at::Tensor logits(const causal_lm_weights& w, const at::Tensor& hidden) const {
    return at::linear(hidden, config_.tie_word_embeddings ? w.embed_tokens : w.lm_head);
  }

  /// An empty cache for `batch` rows of up to `capacity` positions, in the compute dtype.
  kv_cache make_cache(std::int64_t batch, std::int64_t capacity) const {
    kv_cache cache;
    const auto options = at::TensorOptions().dtype(compute_dtype()).device(options_.device);
    for (std::int64_t l = 0; l < config_.num_hidden_layers; ++l) {
      cache.keys.push_back(at::zeros({batch, config_.num_key_value_heads, capacity, config_.head_dim}, options));
      cache.values.push_back(at::zeros({batch, config_.num_key_value_heads, capacity, config_.head_dim}, options));
    }
    return cache;
  }

  /// Writes a Hugging Face model directory with `w` (the master weights by default): config.json
  /// (transformers 4.x layout, torch_dtype float32), model.safetensors (F32; a tied lm_head is not
  /// stored, as transformers does), generation_config.json (copied from the source directory, or
  /// made from config.json's token ids), and copies of the source's tokenizer and chat-template
  /// files. \throws io_error naming the path that cannot be written.
  void save_pretrained(const std::filesystem::path& directory, const causal_lm_weights* w = nullptr) const {
    std::error_code ec;
    std::filesystem::create_directories(directory, ec);
    GRPO_CHECK(!ec, io_error, directory.string(), ": cannot create the directory (", ec.message(), ")");
    write_text(directory / "config.json", hf::to_json(config_, "float32"));
    safetensors::writer writer;
    writer.add_metadata("format", "pt");  // transformers refuses a checkpoint without it
    auto weights = w != nullptr ? *w : weights_;
    visit_weights(config_, weights, [&](const std::string& name, const std::vector<std::int64_t>&, at::Tensor& t) {
      add_tensor(writer, name, t.detach().to(at::kFloat));
    });
    writer.write(directory / "model.safetensors");
    const bool copied = copy_from_source("generation_config.json", directory);
    if (!copied) write_text(directory / "generation_config.json", hf::generation_json(config_));
    for (const char* name :
         {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
          "merges.txt", "tokenizer.model", "chat_template.jinja", "chat_template.json"})
      copy_from_source(name, directory);
  }

  /// Adds `t` (any device; F32, F64, BF16 or F16) to a safetensors writer under `name`.
  static void add_tensor(safetensors::writer& writer, const std::string& name, const at::Tensor& t) {
    const auto host = t.detach().to(at::kCPU).contiguous();
    const auto type = host.scalar_type();
    const auto dtype =
        type == at::kFloat      ? safetensors::dtype::f32
        : type == at::kDouble   ? safetensors::dtype::f64
        : type == at::kBFloat16 ? safetensors::dtype::bf16
        : type == at::kHalf
            ? safetensors::dtype::f16
            : throw config_error(grpo::detail::concat(name, ": cannot store dtype ", at::toString(type)));
    const auto bytes = std::span<const std::byte>(static_cast<const std::byte*>(host.data_ptr()),
                                                  static_cast<std::size_t>(host.numel()) * host.element_size());
    writer.add(name, dtype, host.sizes().vec(), bytes);
  }

  /// A CPU tensor holding a copy of a safetensors view (F32, F64, BF16 or F16).
  static at::Tensor from_view(const safetensors::tensor_view& view) {
    static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");
    const auto type = view.type == safetensors::dtype::f32    ? at::kFloat
                      : view.type == safetensors::dtype::f64  ? at::kDouble
                      : view.type == safetensors::dtype::bf16 ? at::kBFloat16
                      : view.type == safetensors::dtype::f16
                          ? at::kHalf
                          : throw config_error(grpo::detail::concat(view.name, ": unsupported dtype ",
                                                                    safetensors::name_of(view.type)));
    auto out = at::empty(view.shape, at::TensorOptions().dtype(type));
    if (!view.data.empty()) std::memcpy(out.data_ptr(), view.data.data(), view.data.size());
    return out;
  }

  /// "float32", "float64", "bfloat16" or "float16" (Hugging Face's torch_dtype names).
  static std::string dtype_name(at::ScalarType t) {
    return t == at::kDouble ? "float64" : t == at::kBFloat16 ? "bfloat16" : t == at::kHalf ? "float16" : "float32";
  }

  /// One line: architecture, sizes, parameters, device and dtypes.
  std::string describe() const {
    const auto& c = config_;
    std::ostringstream out;
    out << hf::architecture_name(c.architecture) << " (" << c.num_hidden_layers << " layers, hidden " << c.hidden_size
        << ", " << c.num_attention_heads << "/" << c.num_key_value_heads << " heads of " << c.head_dim << ", vocab "
        << c.vocab_size << (c.tie_word_embeddings ? ", tied" : "") << "), " << c.parameter_count() << " parameters on "
        << options_.device << ", compute " << dtype_name(compute_dtype()) << ", master "
        << dtype_name(options_.master_dtype);
    return out.str();
  }

 private:
  hf::model_config config_;
  causal_lm_weights weights_;
  causal_lm_options options_;
  std::optional<hf::generation_config> generation_;
  std::optional<std::filesystem::path> source_;

  static causal_lm_options resolve(causal_lm_options options) {
    GRPO_CHECK(options.master_dtype == at::kFloat || options.master_dtype == at::kDouble, config_error,
               "master_dtype: must be float32 or float64, got ", at::toString(options.master_dtype));
    if (!options.compute_dtype) options.compute_dtype = options.device.is_cuda() ? at::kBFloat16 : options.master_dtype;
    const auto c = *options.compute_dtype;
    GRPO_CHECK(c == at::kFloat || c == at::kDouble || c == at::kBFloat16 || c == at::kHalf, config_error,
               "compute_dtype: must be float32, float64, bfloat16 or float16, got ", at::toString(c));
    return options;
  }

  /// cos and sin [B, L, 1, head_dim] of positions [B, L], as transformers' default rotary embedding:
  /// inv_freq = 1 / theta^(2i / d) and the angles in fp32 (fp64 when computing in fp64).
  std::pair<at::Tensor, at::Tensor> rope_tables(const at::Tensor& positions) const {
    const auto type = compute_dtype() == at::kDouble ? at::kDouble : at::kFloat;
    const auto options = at::TensorOptions().dtype(type).device(positions.device());
    const auto exponents = at::arange(0, config_.head_dim, 2, options) / static_cast<double>(config_.head_dim);
    const auto inv_freq = at::reciprocal(at::pow(config_.rope_theta, exponents));
    const auto angles = positions.to(type).unsqueeze(-1) * inv_freq;
    const auto both = at::cat({angles, angles}, -1).unsqueeze(2);
    return {both.cos().to(compute_dtype()), both.sin().to(compute_dtype())};
  }

  static void write_text(const std::filesystem::path& path, const std::string& text) {
    safetensors::write_file_atomically(
        path, std::span<const std::byte>(reinterpret_cast<const std::byte*>(text.data()), text.size()));
  }

  bool copy_from_source(const char* name, const std::filesystem::path& directory) const {
    if (!source_) return false;
    std::error_code ec;
    const auto from = *source_ / name, to = directory / name;
    if (!std::filesystem::is_regular_file(from, ec)) return false;
    if (std::filesystem::exists(to, ec) && std::filesystem::equivalent(from, to, ec)) return true;
    std::filesystem::copy_file(from, to, std::filesystem::copy_options::overwrite_existing, ec);
    GRPO_CHECK(!ec, io_error, to.string(), ": cannot copy from ", from.string(), " (", ec.message(), ")");
    return true;
  }
};

}  // namespace GRPO_LIBTORCH_NAMESPACE
}  // namespace grpo::libtorch
