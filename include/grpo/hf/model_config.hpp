// SPDX-License-Identifier: Apache-2.0
// grpo/hf/model_config.hpp: the config.json and generation_config.json of a Hugging Face causal-LM
// directory, for the architectures grpo runs (LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM;
// field meanings from transformers' LlamaConfig / Qwen2Config / Qwen3Config). Both config layouts
// are read: transformers 4.x (top-level "rope_theta", "rope_scaling", "torch_dtype") and 5.x
// ("rope_parameters": {"rope_type", "rope_theta"}, "dtype"). What the model does not implement
// (RoPE scaling, sliding windows, MLP biases, other activations) is a config_error naming the file
// and field, never silently ignored.
#pragma once

#include <charconv>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "grpo/detail/json.hpp"
#include "grpo/error.hpp"

namespace grpo::hf {

enum class architecture { llama, qwen2, qwen3 };

/// "LlamaForCausalLM", "Qwen2ForCausalLM" or "Qwen3ForCausalLM".
inline std::string_view architecture_name(architecture a) {
  return a == architecture::llama   ? "LlamaForCausalLM"
         : a == architecture::qwen2 ? "Qwen2ForCausalLM"
                                    : "Qwen3ForCausalLM";
}

/// The config.json "model_type": "llama", "qwen2" or "qwen3".
inline std::string_view model_type_name(architecture a) {
  return a == architecture::llama ? "llama" : a == architecture::qwen2 ? "qwen2" : "qwen3";
}

/// What a causal LM of one of the supported architectures is made of (HF config.json names).
struct model_config {
  hf::architecture architecture = architecture::llama;
  std::int64_t vocab_size = 0;
  std::int64_t hidden_size = 0;
  std::int64_t intermediate_size = 0;
  std::int64_t num_hidden_layers = 0;
  std::int64_t num_attention_heads = 0;
  std::int64_t num_key_value_heads = 0;
  std::int64_t head_dim = 0;  ///< explicit: Qwen3 has head_dim != hidden_size / num_attention_heads
  std::int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  ///< biases on q_proj, k_proj, v_proj (always for Qwen2)
  bool o_proj_bias = false;     ///< a bias on o_proj (Llama and Qwen3 with attention_bias; never Qwen2)
  bool qk_norm = false;         ///< RMSNorm over head_dim on each query and key head before RoPE (Qwen3)
  std::string dtype;            ///< "torch_dtype" / "dtype": "float32", "bfloat16", "float16", or "" (absent)
  std::optional<std::int64_t> bos_token_id;
  std::vector<std::int64_t> eos_token_ids;  ///< config.json "eos_token_id" (an int or a list)

  std::int64_t q_dim() const { return num_attention_heads * head_dim; }
  std::int64_t kv_dim() const { return num_key_value_heads * head_dim; }
  /// Query heads sharing one key/value head.
  std::int64_t group_size() const { return num_attention_heads / num_key_value_heads; }

  /// Scalar parameters (lm_head counted only when untied).
  /// In N: validate() evaluates it in long double and bounds it, so that the int64 count of a
  /// validated config never overflows.
  template <class N = std::int64_t>
  N parameter_count() const {
    const N d = static_cast<N>(hidden_size), q = static_cast<N>(q_dim()), kv = static_cast<N>(kv_dim());
    N layer = 2 * d + d * (q + 2 * kv) + q * d + 3 * d * static_cast<N>(intermediate_size);
    if (attention_bias) layer += q + 2 * kv;
    if (o_proj_bias) layer += d;
    if (qk_norm) layer += 2 * static_cast<N>(head_dim);
    return static_cast<N>(vocab_size) * d * (tie_word_embeddings ? 1 : 2) + static_cast<N>(num_hidden_layers) * layer +
           d;
  }

  /// Throws config_error naming `source` and the first bad field: every size in [1, 2^31 - 1],
  /// an even head_dim (RoPE rotates halves), num_attention_heads divisible by num_key_value_heads,
  /// rms_norm_eps and rope_theta finite and > 0, at most 2^40 parameters.
  void validate(std::string_view source = "config.json") const {
    constexpr std::int64_t limit = std::numeric_limits<std::int32_t>::max();
    const auto size = [&](std::int64_t value, std::string_view name) {
      GRPO_CHECK(value >= 1 && value <= limit, config_error, source, ": field \"", name,
                 "\": must be an integer in [1, ", limit, "], got ", value);
    };
    size(vocab_size, "vocab_size");
    size(hidden_size, "hidden_size");
    size(intermediate_size, "intermediate_size");
    size(num_hidden_layers, "num_hidden_layers");
    size(num_attention_heads, "num_attention_heads");
    size(num_key_value_heads, "num_key_value_heads");
    size(head_dim, "head_dim");
    size(max_position_embeddings, "max_position_embeddings");
    GRPO_CHECK(head_dim % 2 == 0, config_error, source,
               ": field \"head_dim\": must be even for rotary embeddings, got ", head_dim);
    GRPO_CHECK(num_attention_heads % num_key_value_heads == 0, config_error, source,
               ": field \"num_key_value_heads\": must divide num_attention_heads (", num_attention_heads, "), got ",
               num_key_value_heads);
    GRPO_CHECK(std::isfinite(rms_norm_eps) && rms_norm_eps > 0.0, config_error, source,
               ": field \"rms_norm_eps\": must be a finite value > 0, got ", rms_norm_eps);
    GRPO_CHECK(std::isfinite(rope_theta) && rope_theta > 0.0, config_error, source,
               ": field \"rope_theta\": must be a finite value > 0, got ", rope_theta);
    // 2^40 parameters (4 TiB in fp32) is far above any checkpoint one process loads, and keeps the
    // int64 parameter count exact.
    const long double parameters = parameter_count<long double>();
    GRPO_CHECK(parameters <= 0x1p40L, config_error, source, ": the sizes give ", static_cast<double>(parameters),
               " parameters, more than the 2^40 a model may have");
  }

  friend bool operator==(const model_config&, const model_config&) = default;
};

/// The fields of generation_config.json that decoding needs.
struct generation_config {
  std::optional<std::int64_t> bos_token_id;
  std::vector<std::int64_t> eos_token_ids;  ///< "eos_token_id": an int or a list (empty when null or absent)
  std::optional<std::int64_t> pad_token_id;
};

namespace detail {

namespace json = grpo::detail::json;

/// Field access on a parsed JSON object with errors "<source>: field \"<name>\": ...".
class fields {
 public:
  fields(const json::value& object, std::string_view source, std::string prefix = "")
      : object_(&object), source_(source), prefix_(std::move(prefix)) {}

  const json::value* find(std::string_view name) const {
    for (const auto& m : object_->members)
      if (m.key == name) return &m.value;
    return nullptr;
  }
  /// The member, or nullptr when absent or null.
  const json::value* find_set(std::string_view name) const {
    const json::value* v = find(name);
    return v == nullptr || v->kind == json::kind::null ? nullptr : v;
  }

  [[noreturn]] void fail(std::string_view name, std::string_view what) const {
    grpo::detail::fail<config_error>(source_, ": field \"", prefix_, name, "\": ", what);
  }

  static std::string describe(const json::value& v) {
    if (v.kind == json::kind::number) return v.text;
    if (v.kind == json::kind::string) return json::quote(v.text);
    return std::string(json::kind_name(v.kind));
  }

  std::int64_t integer(std::string_view name, const json::value& v) const {
    std::uint64_t out = 0;
    if (!json::to_uint64(v, out, static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())))
      fail(name, grpo::detail::concat("expected a non-negative integer, got ", describe(v)));
    return static_cast<std::int64_t>(out);
  }
  std::int64_t integer(std::string_view name) const {
    const json::value* v = find_set(name);
    if (v == nullptr) fail(name, "missing");
    return integer(name, *v);
  }
  std::optional<std::int64_t> optional_integer(std::string_view name) const {
    const json::value* v = find_set(name);
    if (v == nullptr) return std::nullopt;
    return integer(name, *v);
  }

  double real(std::string_view name, const json::value& v) const {
    double out = 0.0;
    const bool number = v.kind == json::kind::number;
    const auto parsed = number ? std::from_chars(v.text.data(), v.text.data() + v.text.size(), out)
                               : std::from_chars_result{nullptr, std::errc::invalid_argument};
    if (!number || parsed.ec != std::errc() || parsed.ptr != v.text.data() + v.text.size() || !std::isfinite(out))
      fail(name, grpo::detail::concat("expected a finite number, got ", describe(v)));
    return out;
  }
  double real(std::string_view name) const {
    const json::value* v = find_set(name);
    if (v == nullptr) fail(name, "missing");
    return real(name, *v);
  }

  bool boolean(std::string_view name, bool fallback) const {
    const json::value* v = find_set(name);
    if (v == nullptr) return fallback;
    if (v->kind != json::kind::boolean) fail(name, grpo::detail::concat("expected true or false, got ", describe(*v)));
    return v->boolean;
  }

  std::optional<std::string> string(std::string_view name) const {
    const json::value* v = find_set(name);
    if (v == nullptr) return std::nullopt;
    if (v->kind != json::kind::string) fail(name, grpo::detail::concat("expected a string, got ", describe(*v)));
    return v->text;
  }

  /// An int, a list of ints, or null / absent (empty).
  std::vector<std::int64_t> integer_list(std::string_view name) const {
    const json::value* v = find_set(name);
    if (v == nullptr) return {};
    if (v->kind != json::kind::array) return {integer(name, *v)};
    std::vector<std::int64_t> out;
    for (const auto& item : v->items) out.push_back(integer(name, item));
    return out;
  }

 private:
  const json::value* object_;
  std::string_view source_;
  std::string prefix_;
};

inline json::value parse_object(std::string_view text, std::string_view source) {
  json::value root = json::parse(text, source);
  GRPO_CHECK(root.kind == json::kind::object, config_error, source, ": expected a JSON object, got ",
             json::kind_name(root.kind));
  return root;
}

inline std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  GRPO_CHECK(in.good(), io_error, path.string(), ": cannot open for reading");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  GRPO_CHECK(!in.bad(), io_error, path.string(), ": read failed");
  return text;
}

inline architecture architecture_from(const fields& f) {
  constexpr architecture all[] = {architecture::llama, architecture::qwen2, architecture::qwen3};
  std::optional<architecture> from_list;
  if (const json::value* list = f.find_set("architectures")) {
    if (list->kind != json::kind::array || list->items.size() != 1 || list->items[0].kind != json::kind::string)
      f.fail("architectures", "expected a list of one string, e.g. [\"LlamaForCausalLM\"]");
    for (const auto a : all)
      if (list->items[0].text == architecture_name(a)) from_list = a;
    if (!from_list)
      f.fail("architectures", grpo::detail::concat("unsupported architecture ", json::quote(list->items[0].text),
                                                   " (supported: LlamaForCausalLM, Qwen2ForCausalLM, "
                                                   "Qwen3ForCausalLM)"));
  }
  const auto type = f.string("model_type");
  if (!type) {
    if (!from_list) f.fail("architectures", "missing (and no \"model_type\")");
    return *from_list;
  }
  for (const auto a : all)
    if (*type == model_type_name(a)) {
      if (from_list && *from_list != a)
        f.fail("model_type", grpo::detail::concat(json::quote(*type), " does not match architectures ",
                                                  json::quote(architecture_name(*from_list))));
      return a;
    }
  f.fail("model_type",
         grpo::detail::concat("unsupported model type ", json::quote(*type), " (supported: llama, qwen2, qwen3)"));
}

/// Plain RoPE only: 4.x "rope_scaling" null or {"rope_type"/"type": "default"}; 5.x
/// "rope_parameters" {"rope_type": "default", "rope_theta": x}. Returns theta.
inline double rope_theta_from(const fields& f, std::string_view source) {
  const auto expect_default = [&](const fields& scaling, std::string_view field) {
    auto type = scaling.string("rope_type");
    if (!type) type = scaling.string("type");
    if (type && *type != "default")
      f.fail(field, grpo::detail::concat("rope type ", json::quote(*type),
                                         " is not supported (only plain RoPE, \"default\": llama3, yarn, linear, "
                                         "dynamic and longrope scaling are not implemented)"));
  };
  if (const json::value* scaling = f.find_set("rope_scaling")) {
    if (scaling->kind != json::kind::object) f.fail("rope_scaling", "expected null or an object");
    expect_default(fields(*scaling, source, "rope_scaling."), "rope_scaling");
  }
  std::optional<double> theta;
  if (const json::value* top = f.find_set("rope_theta")) theta = f.real("rope_theta", *top);
  if (const json::value* parameters = f.find_set("rope_parameters")) {
    if (parameters->kind != json::kind::object) f.fail("rope_parameters", "expected an object");
    const fields p(*parameters, source, "rope_parameters.");
    expect_default(p, "rope_parameters");
    for (const auto& m : parameters->members)
      if (m.key != "rope_type" && m.key != "rope_theta" && m.key != "partial_rotary_factor")
        p.fail(m.key, "not supported (only rope_type \"default\" and rope_theta)");
    if (p.find_set("partial_rotary_factor") && p.real("partial_rotary_factor") != 1.0)
      p.fail("partial_rotary_factor", "only 1.0 (RoPE on the whole head) is supported");
    const double nested = p.real("rope_theta");
    if (theta && *theta != nested)
      f.fail("rope_theta", grpo::detail::concat(*theta, " differs from rope_parameters.rope_theta ", nested));
    theta = nested;
  }
  if (!theta) f.fail("rope_theta", "missing (neither \"rope_theta\" nor \"rope_parameters\": {\"rope_theta\"})");
  return *theta;
}

}  // namespace detail

/// Parses a config.json. Required: architectures or model_type (one of the supported ones; both
/// must agree when both are given), vocab_size, hidden_size, intermediate_size,
/// num_hidden_layers, num_attention_heads, max_position_embeddings, rms_norm_eps and the RoPE
/// theta (either layout). Optional: num_key_value_heads (= num_attention_heads), head_dim
/// (= hidden_size / num_attention_heads; required for Qwen3, whose transformers default is not
/// that), tie_word_embeddings (false), attention_bias (false; Qwen2 always has q/k/v biases and
/// no o_proj bias), torch_dtype / dtype, bos_token_id, eos_token_id. Rejected: hidden_act other
/// than "silu", mlp_bias true, RoPE scaling, use_sliding_window true, layer_types other than
/// "full_attention". Other fields are ignored.
/// \throws io_error for malformed JSON, config_error "<source>: field \"<name>\": ..." otherwise;
///         the result is validate()d.
inline model_config parse_model_config(std::string_view text, std::string_view source = "config.json") {
  namespace json = grpo::detail::json;
  const json::value root = detail::parse_object(text, source);
  const detail::fields f(root, source);
  model_config c;
  c.architecture = detail::architecture_from(f);
  c.vocab_size = f.integer("vocab_size");
  c.hidden_size = f.integer("hidden_size");
  c.intermediate_size = f.integer("intermediate_size");
  c.num_hidden_layers = f.integer("num_hidden_layers");
  c.num_attention_heads = f.integer("num_attention_heads");
  c.num_key_value_heads = f.optional_integer("num_key_value_heads").value_or(c.num_attention_heads);
  c.max_position_embeddings = f.integer("max_position_embeddings");
  c.rms_norm_eps = f.real("rms_norm_eps");
  c.rope_theta = detail::rope_theta_from(f, source);
  c.tie_word_embeddings = f.boolean("tie_word_embeddings", false);
  if (c.architecture == architecture::qwen3) {
    c.head_dim = f.integer("head_dim");
  } else {
    GRPO_CHECK(c.num_attention_heads > 0, config_error, source,
               ": field \"num_attention_heads\": must be an integer >= 1, got 0");
    c.head_dim = f.optional_integer("head_dim").value_or(c.hidden_size / c.num_attention_heads);
  }
  const bool bias = f.boolean("attention_bias", false);
  c.attention_bias = c.architecture == architecture::qwen2 || bias;
  c.o_proj_bias = c.architecture != architecture::qwen2 && bias;
  c.qk_norm = c.architecture == architecture::qwen3;

  if (const auto act = f.string("hidden_act"); act && *act != "silu")
    f.fail("hidden_act", grpo::detail::concat("only \"silu\" is supported, got ", json::quote(*act)));
  if (f.boolean("mlp_bias", false)) f.fail("mlp_bias", "true is not supported (the MLP has no biases)");
  if (f.boolean("use_sliding_window", false))
    f.fail("use_sliding_window", "true is not supported (only full attention)");
  if (const json::value* layers = f.find_set("layer_types")) {
    if (layers->kind != json::kind::array) f.fail("layer_types", "expected a list of strings");
    for (const auto& item : layers->items)
      if (item.kind != json::kind::string || item.text != "full_attention")
        f.fail("layer_types",
               grpo::detail::concat("only \"full_attention\" is supported, got ", detail::fields::describe(item)));
  }
  auto dtype = f.string("dtype");
  if (!dtype) dtype = f.string("torch_dtype");
  if (dtype) {
    if (*dtype != "float32" && *dtype != "bfloat16" && *dtype != "float16")
      f.fail(f.find_set("dtype") ? "dtype" : "torch_dtype",
             grpo::detail::concat("expected \"float32\", \"bfloat16\" or \"float16\", got ", json::quote(*dtype)));
    c.dtype = *dtype;
  }
  c.bos_token_id = f.optional_integer("bos_token_id");
  c.eos_token_ids = f.integer_list("eos_token_id");
  c.validate(source);
  return c;
}

/// Reads and parses a config.json (io_error naming the path when it cannot be read).
inline model_config read_model_config(const std::filesystem::path& path) {
  return parse_model_config(detail::read_text(path), path.string());
}

/// Parses a generation_config.json: bos_token_id, eos_token_id (an int or a list) and pad_token_id,
/// each optional; other fields are ignored.
/// \throws io_error for malformed JSON, config_error naming `source` and the field otherwise.
inline generation_config parse_generation_config(std::string_view text,
                                                 std::string_view source = "generation_config.json") {
  const auto root = detail::parse_object(text, source);
  const detail::fields f(root, source);
  return {f.optional_integer("bos_token_id"), f.integer_list("eos_token_id"), f.optional_integer("pad_token_id")};
}

/// The generation_config.json of a model directory, or nullopt when it has none.
inline std::optional<generation_config> read_generation_config(const std::filesystem::path& directory) {
  const auto path = directory / "generation_config.json";
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::nullopt;
  return parse_generation_config(detail::read_text(path), path.string());
}

/// The tokens that end a completion: generation_config.json's eos_token_id when it names any,
/// otherwise config.json's (what transformers' generate stops on).
inline std::vector<std::int64_t> stop_token_ids(const model_config& config,
                                                const std::optional<generation_config>& generation) {
  if (generation && !generation->eos_token_ids.empty()) return generation->eos_token_ids;
  return config.eos_token_ids;
}

namespace detail {

inline std::string json_int_or_list(const std::vector<std::int64_t>& ids) {
  if (ids.size() == 1) return std::to_string(ids[0]);
  std::string out = "[";
  for (std::size_t i = 0; i < ids.size(); ++i) out += (i ? ", " : "") + std::to_string(ids[i]);
  return out + "]";
}

}  // namespace detail

/// The config as a config.json in the transformers 4.x layout (top-level rope_theta, torch_dtype),
/// which transformers 4.x and 5.x both read, with `dtype` as "torch_dtype" (the dtype of the
/// tensors saved beside it). Deterministic, one field per line.
inline std::string to_json(const model_config& c, std::string_view dtype = "float32") {
  using grpo::detail::json::number;
  std::ostringstream out;
  out << "{\n"
      << "  \"architectures\": [\"" << architecture_name(c.architecture) << "\"],\n"
      << "  \"model_type\": \"" << model_type_name(c.architecture) << "\",\n"
      << "  \"vocab_size\": " << c.vocab_size << ",\n"
      << "  \"hidden_size\": " << c.hidden_size << ",\n"
      << "  \"intermediate_size\": " << c.intermediate_size << ",\n"
      << "  \"num_hidden_layers\": " << c.num_hidden_layers << ",\n"
      << "  \"num_attention_heads\": " << c.num_attention_heads << ",\n"
      << "  \"num_key_value_heads\": " << c.num_key_value_heads << ",\n"
      << "  \"head_dim\": " << c.head_dim << ",\n"
      << "  \"max_position_embeddings\": " << c.max_position_embeddings << ",\n"
      << "  \"rms_norm_eps\": " << number(c.rms_norm_eps) << ",\n"
      << "  \"rope_theta\": " << number(c.rope_theta) << ",\n"
      << "  \"rope_scaling\": null,\n"
      << "  \"tie_word_embeddings\": " << (c.tie_word_embeddings ? "true" : "false") << ",\n";
  if (c.architecture != architecture::qwen2)
    out << "  \"attention_bias\": " << (c.o_proj_bias ? "true" : "false") << ",\n";
  if (c.architecture == architecture::llama) out << "  \"mlp_bias\": false,\n";
  if (c.architecture != architecture::llama) out << "  \"use_sliding_window\": false,\n";
  if (c.bos_token_id) out << "  \"bos_token_id\": " << *c.bos_token_id << ",\n";
  if (!c.eos_token_ids.empty()) out << "  \"eos_token_id\": " << detail::json_int_or_list(c.eos_token_ids) << ",\n";
  out << "  \"hidden_act\": \"silu\",\n"
      << "  \"torch_dtype\": " << grpo::detail::json::quote(dtype) << "\n"
      << "}\n";
  return out.str();
}

/// A generation_config.json with the config's bos / eos ids (for a directory that had none).
inline std::string generation_json(const model_config& c) {
  std::ostringstream out;
  out << "{\n";
  if (c.bos_token_id) out << "  \"bos_token_id\": " << *c.bos_token_id << (c.eos_token_ids.empty() ? "\n" : ",\n");
  if (!c.eos_token_ids.empty()) out << "  \"eos_token_id\": " << detail::json_int_or_list(c.eos_token_ids) << "\n";
  out << "}\n";
  return out.str();
}

}  // namespace grpo::hf
