// SPDX-License-Identifier: Apache-2.0
// grpo/hf/gguf_convert.hpp: turns a llama.cpp GGUF model (architectures llama and qwen2, byte-level
// BPE vocabulary) into a Hugging Face model directory: config.json, model.safetensors (F32, HF
// names), tokenizer.json, tokenizer_config.json and generation_config.json, each written atomically.
// llama.cpp's HF -> GGUF converter (convert_hf_to_gguf.py, LlamaModel.permute) reorders the rows of
// every llama q_proj / k_proj head from HF's rotary halves [h, half, i] to interleaved pairs
// [h, i, half] (k with the key-value head count); this undoes it, as transformers' GGUF loader does
// (modeling_gguf_pytorch_utils.py). qwen2 is stored unpermuted (llama.cpp ropes it NEOX-style).
// The pre-tokenizer is the model's own, from tokenizer.ggml.pre and the regexes llama.cpp uses for
// it (src/llama-vocab.cpp), written in the tokenizers library's JSON form.
#pragma once

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <vector>

#include "grpo/detail/json.hpp"
#include "grpo/error.hpp"
#include "grpo/hf/gguf.hpp"
#include "grpo/safetensors.hpp"

namespace grpo::hf {

/// What convert_gguf wrote.
struct gguf_conversion {
  std::string architecture;       ///< general.architecture
  std::size_t n_tensors = 0;      ///< tensors in model.safetensors
  std::int64_t n_parameters = 0;  ///< elements in model.safetensors
};

namespace detail::gguf_convert {

using grpo::detail::concat;
namespace json = grpo::detail::json;

/// GGUF token types (llama.h llama_token_type / gguf-py TokenType).
enum token_type : std::int64_t { normal = 1, unknown = 2, control = 3, user_defined = 4, unused = 5, byte = 6 };

/// A float metadata value as the shortest decimal that reads back to the stored float32 / float64
/// (so 1e-5 stored as float32 is written 1e-05, not 9.999999747378752e-06), in fixed notation with a
/// fractional part from 1e-4 to 1e16 (rope_theta 1e5 is written 100000.0, a float to Python too).
inline std::string shortest(const gguf::value& v) {
  char buffer[64];
  const bool fixed = std::fabs(v.real) >= 1e-4 && std::fabs(v.real) < 1e16;
  const auto format = fixed ? std::chars_format::fixed : std::chars_format::general;
  const auto result = v.type == gguf::value_type::float32
                          ? std::to_chars(buffer, buffer + sizeof buffer, static_cast<float>(v.real), format)
                          : std::to_chars(buffer, buffer + sizeof buffer, v.real, format);
  std::string text(buffer, result.ptr);
  if (text.find_first_of(".eEn") == std::string::npos) text += ".0";  // not for inf / nan ('n')
  return text;
}

inline void write_text(const std::filesystem::path& path, std::string_view text) {
  safetensors::write_file_atomically(path, std::as_bytes(std::span<const char>(text.data(), text.size())));
}

/// The hyperparameters of a llama-family GGUF, read from its "<architecture>.*" keys.
struct hyperparameters {
  std::string architecture;
  std::uint64_t n_layers = 0, hidden = 0, ffn = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, context = 0;
  std::string rms_eps, rope_theta = "10000.0";
};

inline hyperparameters read_hyperparameters(const gguf::file& f) {
  hyperparameters h;
  h.architecture = f.get_string("general.architecture");
  GRPO_CHECK(h.architecture == "llama" || h.architecture == "qwen2", config_error, f.source(),
             ": general.architecture \"", h.architecture, "\" is not converted (supported: llama, qwen2)");
  const std::string prefix = h.architecture + ".";
  const auto key = [&](std::string_view name) { return prefix + std::string(name); };
  const auto positive = [&](std::string_view name) {
    const std::uint64_t v = f.get_uint(key(name));
    GRPO_CHECK(v > 0, io_error, f.source(), ": metadata key '", key(name), "' must be positive");
    return v;
  };
  h.n_layers = positive("block_count");
  h.hidden = positive("embedding_length");
  h.ffn = positive("feed_forward_length");
  h.n_heads = positive("attention.head_count");
  h.n_kv_heads = f.contains(key("attention.head_count_kv")) ? positive("attention.head_count_kv") : h.n_heads;
  h.context = positive("context_length");
  GRPO_CHECK(h.n_heads % h.n_kv_heads == 0, io_error, f.source(), ": metadata key '", key("attention.head_count"),
             "' = ", h.n_heads, " is not a multiple of '", key("attention.head_count_kv"), "' = ", h.n_kv_heads);
  if (f.contains(key("attention.key_length"))) {
    h.head_dim = positive("attention.key_length");
  } else {
    GRPO_CHECK(h.hidden % h.n_heads == 0, io_error, f.source(), ": metadata key '", key("embedding_length"), "' = ",
               h.hidden, " is not a multiple of '", key("attention.head_count"), "' = ", h.n_heads,
               " (and there is no '", key("attention.key_length"), "')");
    h.head_dim = h.hidden / h.n_heads;
  }
  if (f.contains(key("attention.value_length")))
    GRPO_CHECK(f.get_uint(key("attention.value_length")) == h.head_dim, config_error, f.source(), ": metadata key '",
               key("attention.value_length"), "' differs from the key length ", h.head_dim, ": not converted");
  GRPO_CHECK(h.head_dim % 2 == 0, io_error, f.source(), ": head dimension ", h.head_dim, " is odd");
  if (f.contains(key("rope.dimension_count")))
    GRPO_CHECK(f.get_uint(key("rope.dimension_count")) == h.head_dim, config_error, f.source(), ": metadata key '",
               key("rope.dimension_count"), "' = ", f.get_uint(key("rope.dimension_count")),
               " (partial rotary embedding) is not converted; expected the head dimension ", h.head_dim);
  if (f.contains(key("rope.scaling.type")))
    GRPO_CHECK(f.get_string(key("rope.scaling.type")) == "none", config_error, f.source(), ": metadata key '",
               key("rope.scaling.type"), "' = \"", f.get_string(key("rope.scaling.type")), "\" is not converted");
  const auto* eps = f.find(key("attention.layer_norm_rms_epsilon"));
  GRPO_CHECK(eps != nullptr, io_error, f.source(), ": metadata key '", key("attention.layer_norm_rms_epsilon"),
             "' is missing");
  const auto positive_float = [&](std::string_view name) {
    const double v = f.get_float(key(name));
    GRPO_CHECK(std::isfinite(v) && v > 0, io_error, f.source(), ": metadata key '", key(name),
               "' must be positive and finite, got ", v);
  };
  positive_float("attention.layer_norm_rms_epsilon");
  h.rms_eps = shortest(*eps);
  if (const auto* theta = f.find(key("rope.freq_base"))) {
    positive_float("rope.freq_base");
    h.rope_theta = shortest(*theta);
  }
  return h;
}

/// One GGUF tensor and where it goes.
struct tensor_plan {
  std::string gguf_name, hf_name;
  std::vector<std::int64_t> shape;  ///< expected row-major shape
  std::string derivation;           ///< how the expected shape follows from the metadata
  std::uint64_t permute_heads = 0;  ///< llama q / k: undo the rotary row permutation over this many heads
  bool required = true;
};

inline std::vector<tensor_plan> plan_tensors(const hyperparameters& h, std::int64_t vocab) {
  const auto i64 = [](std::uint64_t v) { return static_cast<std::int64_t>(v); };
  const std::string& a = h.architecture;
  const std::int64_t hidden = i64(h.hidden), ffn = i64(h.ffn), q_rows = i64(h.n_heads * h.head_dim),
                     kv_rows = i64(h.n_kv_heads * h.head_dim);
  const bool llama = a == "llama";
  const std::string q_rows_from = concat(a, ".attention.head_count x head dimension"),
                    kv_rows_from = concat(a, ".attention.head_count_kv x head dimension"),
                    hidden_from = concat(a, ".embedding_length"), ffn_from = concat(a, ".feed_forward_length");
  std::vector<tensor_plan> plan{
      {"token_embd.weight", "model.embed_tokens.weight", {vocab, hidden}, "tokens, " + hidden_from, 0, true},
      {"output_norm.weight", "model.norm.weight", {hidden}, hidden_from, 0, true},
      {"output.weight", "lm_head.weight", {vocab, hidden}, "tokens, " + hidden_from, 0, false}};
  for (std::uint64_t layer = 0; layer < h.n_layers; ++layer) {
    const std::string blk = concat("blk.", layer, "."), hf = concat("model.layers.", layer, ".");
    const auto add = [&](std::string_view gguf_suffix, std::string_view hf_suffix, std::vector<std::int64_t> shape,
                         std::string from, std::uint64_t heads = 0) {
      plan.push_back({blk + std::string(gguf_suffix), hf + std::string(hf_suffix), std::move(shape), std::move(from),
                      heads, true});
    };
    add("attn_norm.weight", "input_layernorm.weight", {hidden}, hidden_from);
    add("ffn_norm.weight", "post_attention_layernorm.weight", {hidden}, hidden_from);
    add("attn_q.weight", "self_attn.q_proj.weight", {q_rows, hidden}, q_rows_from + ", " + hidden_from,
        llama ? h.n_heads : 0);
    add("attn_k.weight", "self_attn.k_proj.weight", {kv_rows, hidden}, kv_rows_from + ", " + hidden_from,
        llama ? h.n_kv_heads : 0);
    add("attn_v.weight", "self_attn.v_proj.weight", {kv_rows, hidden}, kv_rows_from + ", " + hidden_from);
    add("attn_output.weight", "self_attn.o_proj.weight", {hidden, q_rows}, hidden_from + ", " + q_rows_from);
    add("ffn_gate.weight", "mlp.gate_proj.weight", {ffn, hidden}, ffn_from + ", " + hidden_from);
    add("ffn_up.weight", "mlp.up_proj.weight", {ffn, hidden}, ffn_from + ", " + hidden_from);
    add("ffn_down.weight", "mlp.down_proj.weight", {hidden, ffn}, hidden_from + ", " + ffn_from);
    if (!llama) {  // qwen2's attention has biases on q, k and v
      add("attn_q.bias", "self_attn.q_proj.bias", {q_rows}, q_rows_from);
      add("attn_k.bias", "self_attn.k_proj.bias", {kv_rows}, kv_rows_from);
      add("attn_v.bias", "self_attn.v_proj.bias", {kv_rows}, kv_rows_from);
    }
  }
  return plan;
}

/// Undoes LlamaModel.permute on the rows of a [heads * head_dim, cols] matrix: GGUF row
/// h*head_dim + 2i + s holds HF row h*head_dim + s*head_dim/2 + i (s = 0, 1 the rotary half).
inline std::vector<float> unpermute_rows(const std::vector<float>& in, std::int64_t rows, std::int64_t cols,
                                         std::int64_t heads) {
  const std::int64_t head_dim = rows / heads, half = head_dim / 2;
  std::vector<float> out(in.size());
  for (std::int64_t h = 0; h < heads; ++h)
    for (std::int64_t i = 0; i < half; ++i)
      for (std::int64_t s = 0; s < 2; ++s) {
        const std::int64_t from = h * head_dim + 2 * i + s, to = h * head_dim + s * half + i;
        std::copy_n(in.begin() + from * cols, cols, out.begin() + to * cols);
      }
  return out;
}

/// The normalizer, pre-tokenizer, post-processor and decoder of tokenizer.json for a
/// tokenizer.ggml.pre value, following the regexes llama.cpp applies for it (llama-vocab.cpp).
struct pipeline {
  std::string normalizer, pre_tokenizer, post_processor, decoder;
};

inline std::string byte_level(bool add_prefix_space, bool trim_offsets, bool use_regex) {
  const auto flag = [](bool v) { return v ? "true" : "false"; };
  return concat(R"({"type":"ByteLevel","add_prefix_space":)", flag(add_prefix_space), R"(,"trim_offsets":)",
                flag(trim_offsets), R"(,"use_regex":)", flag(use_regex), "}");
}

inline pipeline pipeline_for(const gguf::file& f, const std::string& pre) {
  // GPT-2's byte-level steps as the tokenizers library writes them (its regex split in the
  // pre-tokenizer; the other flags only shape offsets).
  const std::string gpt2_pre = byte_level(false, true, true), gpt2_post = byte_level(true, false, true),
                    gpt2_decoder = byte_level(true, true, true);
  // smollm / starcoder: "\p{N}" split off one at a time, then the GPT-2 regex. The tokenizers
  // library's Digits(individual_digits) isolates each numeric character the same way.
  if (pre == "smollm" || pre == "starcoder")
    return {"null",
            concat(R"({"type":"Sequence","pretokenizers":[{"type":"Digits","individual_digits":true},)", gpt2_pre,
                   "]}"),
            gpt2_post, gpt2_decoder};
  if (pre == "gpt-2") return {"null", gpt2_pre, gpt2_post, gpt2_decoder};
  // Qwen2: its own regex (single digits, letters with one leading non-letter), then bytes mapped
  // without a second split; text NFC-normalized first.
  if (pre == "qwen2" || pre == "deepseek-r1-qwen") {
    const std::string regex = R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*)"
                              R"(|\s*[\r\n]+|\s+(?!\S)|\s+)";
    const std::string qwen_byte_level = byte_level(false, false, false);
    return {R"({"type":"NFC"})",
            concat(R"({"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":)", json::quote(regex),
                   R"(},"behavior":"Isolated","invert":false},)", qwen_byte_level, "]}"),
            qwen_byte_level, qwen_byte_level};
  }
  grpo::detail::fail<config_error>(f.source(), ": metadata key 'tokenizer.ggml.pre': \"", pre, "\" is not converted ",
                                   "(supported: smollm, starcoder, gpt-2, qwen2, deepseek-r1-qwen)");
}

/// The special token ids a GGUF names (absent ones are -1).
struct special_ids {
  std::int64_t bos = -1, eos = -1, pad = -1, unk = -1;
};

inline special_ids read_special_ids(const gguf::file& f, std::size_t n_tokens) {
  special_ids ids;
  const auto read = [&](std::string_view key, std::int64_t& out) {
    if (!f.contains(key)) return;
    const std::uint64_t id = f.get_uint(key);
    GRPO_CHECK(id < n_tokens, io_error, f.source(), ": metadata key '", key, "' = ", id, " is not a token id (",
               n_tokens, " tokens)");
    out = static_cast<std::int64_t>(id);
  };
  read("tokenizer.ggml.bos_token_id", ids.bos);
  read("tokenizer.ggml.eos_token_id", ids.eos);
  read("tokenizer.ggml.padding_token_id", ids.pad);
  read("tokenizer.ggml.unknown_token_id", ids.unk);
  return ids;
}

/// tokenizer.json: byte-level BPE from tokenizer.ggml.{tokens, token_type, merges, pre}. CONTROL and
/// USER_DEFINED tokens become added_tokens (special for CONTROL), as llama.cpp's converter made
/// them from HF's added tokens; merges are written as pairs.
inline std::string tokenizer_json(const gguf::file& f, const std::vector<std::string>& tokens) {
  const std::string& model = f.get_string("tokenizer.ggml.model");
  GRPO_CHECK(model == "gpt2", config_error, f.source(), ": metadata key 'tokenizer.ggml.model': \"", model,
             "\" is not converted (only byte-level BPE, \"gpt2\")");
  for (const char* key : {"tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token"})
    GRPO_CHECK(!f.contains(key) || !f.get_bool(key), config_error, f.source(), ": metadata key '", key,
               "' is true: adding special tokens around every text is not converted");
  const pipeline steps = pipeline_for(f, f.get_string("tokenizer.ggml.pre"));
  std::vector<std::int64_t> types(tokens.size(), token_type::normal);
  if (f.contains("tokenizer.ggml.token_type")) {
    types = f.get_int_array("tokenizer.ggml.token_type");
    GRPO_CHECK(types.size() == tokens.size(), io_error, f.source(), ": metadata key 'tokenizer.ggml.token_type' has ",
               types.size(), " entries for ", tokens.size(), " tokens");
  }
  std::unordered_map<std::string_view, std::size_t> ids;
  ids.reserve(tokens.size());
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    GRPO_CHECK(json::is_valid_utf8(tokens[i]), io_error, f.source(), ": metadata key 'tokenizer.ggml.tokens'[", i,
               "] is not valid UTF-8");
    const auto [it, inserted] = ids.emplace(tokens[i], i);
    GRPO_CHECK(inserted, io_error, f.source(), ": metadata key 'tokenizer.ggml.tokens'[", i, "] \"", tokens[i],
               "\" repeats entry ", it->second);
  }

  std::string out = "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"added_tokens\":[";
  bool first = true;
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    if (types[i] != token_type::control && types[i] != token_type::user_defined) continue;
    const bool special = types[i] == token_type::control;
    out += concat(first ? "" : ",", "{\"id\":", i, ",\"content\":", json::quote(tokens[i]),
                  ",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":",
                  special ? "true" : "false", "}");
    first = false;
  }
  out += "],\"normalizer\":" + steps.normalizer + ",\"pre_tokenizer\":" + steps.pre_tokenizer +
         ",\"post_processor\":" + steps.post_processor + ",\"decoder\":" + steps.decoder +
         ",\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,\"continuing_subword_prefix\":null,"
         "\"end_of_word_suffix\":null,\"fuse_unk\":false,\"byte_fallback\":false,\"ignore_merges\":false,\"vocab\":{";
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    if (i) out += ',';
    out += json::quote(tokens[i]);
    out += ':';
    out += std::to_string(i);
  }
  out += "},\"merges\":[";
  const auto merges = f.get_string_array("tokenizer.ggml.merges");
  for (std::size_t i = 0; i < merges.size(); ++i) {
    const std::string& merge = merges[i];
    const std::size_t space = merge.find(' ');
    GRPO_CHECK(space != std::string::npos && space > 0 && space + 1 < merge.size() &&
                   merge.find(' ', space + 1) == std::string::npos,
               io_error, f.source(), ": metadata key 'tokenizer.ggml.merges'[", i, "] \"", merge,
               "\" is not two tokens separated by one space");
    const std::string_view left(merge.data(), space), right(merge.data() + space + 1, merge.size() - space - 1);
    for (const std::string& part : {std::string(left), std::string(right), std::string(left) + std::string(right)})
      GRPO_CHECK(ids.count(part) != 0, io_error, f.source(), ": metadata key 'tokenizer.ggml.merges'[", i, "] \"",
                 merge, "\": \"", part, "\" is not in tokenizer.ggml.tokens");
    out += concat(i ? "," : "", '[', json::quote(left), ',', json::quote(right), ']');
  }
  out += "]}}\n";
  return out;
}

inline std::string token_field(std::string_view field, std::int64_t id, const std::vector<std::string>& tokens) {
  if (id < 0) return std::string();
  return concat(",\n  ", json::quote(field), ": ", json::quote(tokens[static_cast<std::size_t>(id)]));
}

inline std::string id_field(std::string_view field, std::int64_t id) {
  return id < 0 ? std::string() : concat(",\n  ", json::quote(field), ": ", id);
}

}  // namespace detail::gguf_convert

/// Converts the GGUF model at `gguf_path` into a Hugging Face model directory `out_dir` (created if
/// needed; files already there are replaced). Throws config_error naming the file and the key for
/// what is not converted (another architecture, tokenizer model or pre-tokenizer, rope scaling, a
/// tensor type without dequantization, an unexpected tensor), io_error for a malformed file,
/// missing keys or tensors and shapes that disagree with the metadata.
inline gguf_conversion convert_gguf(const std::filesystem::path& gguf_path, const std::filesystem::path& out_dir) {
  using namespace detail::gguf_convert;
  const auto f = gguf::file::read(gguf_path);
  const hyperparameters h = read_hyperparameters(f);
  const auto tokens = f.get_string_array("tokenizer.ggml.tokens");
  const auto vocab = static_cast<std::int64_t>(tokens.size());
  if (f.contains(h.architecture + ".vocab_size"))
    GRPO_CHECK(f.get_uint(h.architecture + ".vocab_size") == tokens.size(), io_error, f.source(), ": metadata key '",
               h.architecture, ".vocab_size' = ", f.get_uint(h.architecture + ".vocab_size"), " but there are ",
               tokens.size(), " tokens");
  const special_ids special = read_special_ids(f, tokens.size());
  const std::string tokenizer = tokenizer_json(f, tokens);

  const auto plan = plan_tensors(h, vocab);
  for (const auto& t : f.tensors()) {
    const bool known =
        std::any_of(plan.begin(), plan.end(), [&](const tensor_plan& p) { return p.gguf_name == t.name; });
    GRPO_CHECK(known, config_error, f.source(), ": tensor '", t.name, "' is not converted for architecture ",
               h.architecture);
  }
  safetensors::writer weights;
  weights.add_metadata("format", "pt");
  gguf_conversion result{h.architecture, 0, 0};
  bool tied = true;
  for (const auto& p : plan) {
    const gguf::tensor_info* t = p.required ? &f.tensor(p.gguf_name) : f.find_tensor(p.gguf_name);
    if (t == nullptr) continue;
    GRPO_CHECK(t->shape() == p.shape, io_error, f.source(), ": tensor '", p.gguf_name, "': shape ",
               safetensors::to_string(t->shape()), " disagrees with the metadata (", p.derivation, "): expected ",
               safetensors::to_string(p.shape));
    std::vector<float> values = f.dequantize(*t);
    if (p.permute_heads != 0)
      values = unpermute_rows(values, p.shape[0], p.shape[1], static_cast<std::int64_t>(p.permute_heads));
    weights.add(p.hf_name, std::span<const float>(values), p.shape);
    if (p.gguf_name == "output.weight") tied = false;
    ++result.n_tensors;
    result.n_parameters += static_cast<std::int64_t>(values.size());
  }

  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  GRPO_CHECK(!ec, io_error, out_dir.string(), ": cannot create the output directory (", ec.message(), ")");
  weights.write(out_dir / "model.safetensors");

  const bool llama = h.architecture == "llama";
  write_text(out_dir / "config.json",
             concat("{\n  \"architectures\": [\"", llama ? "LlamaForCausalLM" : "Qwen2ForCausalLM",
                    "\"],\n  \"model_type\": \"", h.architecture, "\",\n  \"vocab_size\": ", vocab,
                    ",\n  \"hidden_size\": ", h.hidden, ",\n  \"intermediate_size\": ", h.ffn,
                    ",\n  \"num_hidden_layers\": ", h.n_layers, ",\n  \"num_attention_heads\": ", h.n_heads,
                    ",\n  \"num_key_value_heads\": ", h.n_kv_heads, ",\n  \"head_dim\": ", h.head_dim,
                    ",\n  \"max_position_embeddings\": ", h.context, ",\n  \"rms_norm_eps\": ", h.rms_eps,
                    ",\n  \"rope_theta\": ", h.rope_theta, ",\n  \"rope_scaling\": null",
                    ",\n  \"tie_word_embeddings\": ", tied ? "true" : "false",
                    ",\n  \"hidden_act\": \"silu\"",
                    llama ? ",\n  \"attention_bias\": false,\n  \"mlp_bias\": false"
                          : ",\n  \"use_sliding_window\": false",
                    id_field("bos_token_id", special.bos), id_field("eos_token_id", special.eos),
                    id_field("pad_token_id", special.pad), ",\n  \"torch_dtype\": \"float32\"\n}\n"));
  write_text(out_dir / "generation_config.json",
             concat("{\n  \"_from_model_config\": true", id_field("bos_token_id", special.bos),
                    id_field("eos_token_id", special.eos), id_field("pad_token_id", special.pad), "\n}\n"));
  write_text(out_dir / "tokenizer.json", tokenizer);
  std::string chat_template;
  if (f.contains("tokenizer.chat_template")) {
    const std::string& text = f.get_string("tokenizer.chat_template");
    GRPO_CHECK(json::is_valid_utf8(text), io_error, f.source(),
               ": metadata key 'tokenizer.chat_template' is not valid UTF-8");
    chat_template = concat(",\n  \"chat_template\": ", json::quote(text));
  }
  write_text(out_dir / "tokenizer_config.json",
             concat("{\n  \"tokenizer_class\": \"PreTrainedTokenizerFast\",\n  \"model_max_length\": ", h.context,
                    ",\n  \"clean_up_tokenization_spaces\": false", token_field("bos_token", special.bos, tokens),
                    token_field("eos_token", special.eos, tokens), token_field("pad_token", special.pad, tokens),
                    token_field("unk_token", special.unk, tokens),
                    chat_template,
                    "\n}\n"));
  return result;
}

}  // namespace grpo::hf
