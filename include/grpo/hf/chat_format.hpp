// SPDX-License-Identifier: Apache-2.0
// grpo/hf/chat_format.hpp: how a prompt becomes model input text (ChatML, as SmolLM2-Instruct and
// Qwen2.5-Instruct are trained with, or the prompt as it is), and the fields of a Hugging Face
// tokenizer_config.json that matter for it (bos/eos/pad tokens, the chat template). Standard library
// only: the Jinja chat template itself is not executed, only recognised as ChatML.
#pragma once

#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>

#include "grpo/detail/json.hpp"
#include "grpo/error.hpp"

namespace grpo::hf {

/// A single-turn prompt format. ChatML renders
///   <|im_start|>system\n{system_prompt}<|im_end|>\n<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n
/// (the system block left out when system_prompt is empty), which is what transformers'
/// apply_chat_template(..., add_generation_prompt=True) gives for a ChatML template. plain is the
/// prompt as it is (base models).
struct chat_format {
  enum class kind { plain, chatml };
  kind style = kind::plain;
  std::string system_prompt;
};

/// "plain" or "chatml"; config_error naming `context` (the config key) otherwise.
inline chat_format::kind parse_chat_kind(std::string_view name, std::string_view context) {
  if (name == "plain") return chat_format::kind::plain;
  if (name == "chatml") return chat_format::kind::chatml;
  grpo::detail::fail<config_error>(context, ": unknown chat format \"", name, "\" (expected \"plain\" or \"chatml\")");
}

inline std::string_view chat_kind_name(chat_format::kind k) { return k == chat_format::kind::chatml ? "chatml" : "plain"; }

/// The model input text for one user turn followed by the assistant's generation prompt.
inline std::string render_chat_prompt(const chat_format& format, std::string_view prompt) {
  if (format.style == chat_format::kind::plain) return std::string(prompt);
  std::string out;
  if (!format.system_prompt.empty()) out += "<|im_start|>system\n" + format.system_prompt + "<|im_end|>\n";
  out += "<|im_start|>user\n";
  out += prompt;
  out += "<|im_end|>\n<|im_start|>assistant\n";
  return out;
}

/// The fields of tokenizer_config.json that grpo reads. Token fields are the token text, written in
/// the file either as a string or as an AddedToken object with a "content" member.
struct tokenizer_config {
  std::optional<std::string> bos_token;
  std::optional<std::string> eos_token;
  std::optional<std::string> pad_token;
  /// The Jinja source of the chat template ("default" one when the file lists several by name).
  std::optional<std::string> chat_template;
};

/// Whether a chat template renders ChatML turns.
inline bool is_chatml_template(std::string_view chat_template) {
  return chat_template.find("<|im_start|>") != std::string_view::npos &&
         chat_template.find("<|im_end|>") != std::string_view::npos;
}

/// The system prompt a ChatML template puts in when the conversation has none, found as the
/// literal text between "<|im_start|>system" plus a newline (a real one or the two characters \n in a
/// Jinja string) and "<|im_end|>", where that text is a plain literal (no quote or Jinja
/// delimiter in it). SmolLM2-Instruct's gives "You are a helpful AI assistant named SmolLM, trained
/// by Hugging Face", Qwen2.5's "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.".
inline std::optional<std::string> chatml_default_system_prompt(std::string_view chat_template) {
  static constexpr std::string_view open = "<|im_start|>system";
  for (std::size_t at = chat_template.find(open); at != std::string_view::npos;
       at = chat_template.find(open, at + 1)) {
    std::size_t start = at + open.size();
    if (chat_template.substr(start, 1) == "\n") start += 1;
    else if (chat_template.substr(start, 2) == "\\n") start += 2;
    else continue;
    const std::size_t end = chat_template.find("<|im_end|>", start);
    if (end == std::string_view::npos || end == start) continue;
    const std::string_view text = chat_template.substr(start, end - start);
    if (text.find_first_of("'\"{}") == std::string_view::npos) return std::string(text);
  }
  return std::nullopt;
}

/// ChatML with the template's default system prompt when the chat template is ChatML, else plain.
inline chat_format default_chat_format(const tokenizer_config& config) {
  if (!config.chat_template || !is_chatml_template(*config.chat_template)) return {};
  return {chat_format::kind::chatml, chatml_default_system_prompt(*config.chat_template).value_or("")};
}

namespace detail {

inline const grpo::detail::json::value* find_member(const grpo::detail::json::value& object, std::string_view key) {
  for (const auto& m : object.members)
    if (m.key == key) return &m.value;
  return nullptr;
}

}  // namespace detail

/// Parses the text of a tokenizer_config.json; errors are io_error naming `context` and the field.
inline tokenizer_config parse_tokenizer_config(std::string_view text, std::string_view context) {
  namespace json = grpo::detail::json;
  const json::value root = json::parse(text, context);
  GRPO_CHECK(root.kind == json::kind::object, io_error, context, ": expected a JSON object, got ", json::kind_name(root.kind));
  tokenizer_config config;
  const auto token = [&](std::string_view key) -> std::optional<std::string> {
    const json::value* v = detail::find_member(root, key);
    if (v == nullptr || v->kind == json::kind::null) return std::nullopt;
    if (v->kind == json::kind::string) return v->text;
    GRPO_CHECK(v->kind == json::kind::object, io_error, context, ": field \"", key,
               "\": expected a string, an object or null, got ", json::kind_name(v->kind));
    const json::value* content = detail::find_member(*v, "content");
    GRPO_CHECK(content != nullptr && content->kind == json::kind::string, io_error, context, ": field \"", key,
               ".content\": expected a string");
    return content->text;
  };
  config.bos_token = token("bos_token");
  config.eos_token = token("eos_token");
  config.pad_token = token("pad_token");
  if (const json::value* t = detail::find_member(root, "chat_template"); t != nullptr && t->kind != json::kind::null) {
    if (t->kind == json::kind::string) {
      config.chat_template = t->text;
    } else {
      // A list of named templates: [{"name": "default", "template": "..."}, {"name": "tool_use", ...}].
      GRPO_CHECK(t->kind == json::kind::array, io_error, context,
                 ": field \"chat_template\": expected a string, a list of named templates or null, got ",
                 json::kind_name(t->kind));
      for (const json::value& entry : t->items) {
        const json::value* name = entry.kind == json::kind::object ? detail::find_member(entry, "name") : nullptr;
        const json::value* body = entry.kind == json::kind::object ? detail::find_member(entry, "template") : nullptr;
        GRPO_CHECK(name != nullptr && name->kind == json::kind::string && body != nullptr &&
                       body->kind == json::kind::string,
                   io_error, context, ": field \"chat_template\": each entry needs string \"name\" and \"template\"");
        if (name->text == "default") config.chat_template = body->text;
      }
    }
  }
  return config;
}

/// Reads tokenizer_config.json; io_error naming the file when it cannot be read or is malformed.
inline tokenizer_config read_tokenizer_config(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  GRPO_CHECK(in.good(), io_error, path.string(), ": cannot open the file");
  std::ostringstream text;
  text << in.rdbuf();
  return parse_tokenizer_config(text.str(), path.string());
}

}  // namespace grpo::hf
