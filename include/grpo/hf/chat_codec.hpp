// SPDX-License-Identifier: Apache-2.0
// grpo/hf/chat_codec.hpp: a Hugging Face tokenizer as the trainer's text codec. A task's prompt is
// rendered in the model's chat format (ChatML: a system turn, the user turn, the assistant's
// generation prompt; or plain text for base models) and encoded with special tokens recognised;
// an SFT target is the completion followed by the token that ends the assistant's turn
// (<|im_end|> in ChatML, the end-of-sequence token otherwise); generation stops on that token and
// on the model's end-of-sequence ids (generation_config.json, config.json).
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "grpo/concepts.hpp"
#include "grpo/error.hpp"
#include "grpo/hf/chat_format.hpp"
#include "grpo/hf/model_config.hpp"
#include "grpo/hf/tokenizer.hpp"
#include "grpo/train/codec.hpp"

namespace grpo::hf {

class chat_codec final : public train::text_codec {
 public:
  /// `end_of_turn` ends every SFT target and is the first stop token; `more_stops` are the other
  /// ids that end a completion.
  chat_codec(tokenizer tok, chat_format format, token_id end_of_turn, std::vector<token_id> more_stops = {})
      : tokenizer_(std::move(tok)), format_(std::move(format)), stops_{end_of_turn} {
    for (const token_id id : more_stops)
      if (std::find(stops_.begin(), stops_.end(), id) == stops_.end()) stops_.push_back(id);
  }

  /// The codec of a model directory: its tokenizer.json (+ tokenizer_config.json), the chat format
  /// `style` names ("auto": ChatML when the vocabulary has <|im_start|> and <|im_end|>, else plain)
  /// with `system_prompt` (ChatML only; empty: no system turn), and the stop ids of the
  /// directory's generation_config.json / config.json.
  /// \throws config_error naming "chat.template" for an unknown style, or for ChatML without its
  ///         tokens, or when plain text has no end-of-sequence token; the tokenizer's errors.
  static chat_codec from_pretrained(const std::filesystem::path& directory, std::string_view style,
                                    std::string system_prompt) {
    tokenizer tok = tokenizer::from_pretrained(directory);
    const auto im_start = tok.token_to_id("<|im_start|>"), im_end = tok.token_to_id("<|im_end|>");
    chat_format format;
    if (style == "auto") format.style = im_start && im_end ? chat_format::kind::chatml : chat_format::kind::plain;
    else format.style = parse_chat_kind(style, "chat.template");
    std::vector<token_id> stops;
    if (std::filesystem::exists(directory / "config.json")) {
      const auto generation = read_generation_config(directory);
      for (const auto id : stop_token_ids(read_model_config(directory / "config.json"), generation))
        stops.push_back(static_cast<token_id>(id));
    }
    if (tok.eos_token_id()) stops.push_back(*tok.eos_token_id());
    std::optional<token_id> end_of_turn;
    if (format.style == chat_format::kind::chatml) {
      GRPO_CHECK(im_start && im_end, config_error, "chat.template: chatml needs the tokens <|im_start|> and <|im_end|>, ",
                 (directory / "tokenizer.json").string(), " lacks them");
      format.system_prompt = std::move(system_prompt);
      end_of_turn = im_end;
    } else if (!stops.empty()) {
      end_of_turn = stops.front();
    }
    GRPO_CHECK(end_of_turn.has_value(), config_error, "chat.template: plain prompts need an end-of-sequence token, ",
               directory.string(), " names none (tokenizer_config.json eos_token, generation_config.json eos_token_id)");
    return chat_codec(std::move(tok), std::move(format), *end_of_turn, std::move(stops));
  }

  std::vector<token_id> encode_prompt(std::string_view prompt) const override {
    return tokenizer_.encode(render_chat_prompt(format_, prompt));
  }
  std::vector<token_id> encode_completion(std::string_view completion) const override {
    std::vector<token_id> ids = tokenizer_.encode(completion);
    ids.push_back(stops_.front());
    return ids;
  }
  std::string decode(std::span<const token_id> ids) const override { return tokenizer_.decode(ids, true); }
  std::vector<token_id> stop_tokens() const override { return stops_; }
  std::int64_t vocab_size() const override { return tokenizer_.vocab_size(); }

  const tokenizer& text_tokenizer() const { return tokenizer_; }
  const chat_format& format() const { return format_; }

 private:
  tokenizer tokenizer_;
  chat_format format_;
  std::vector<token_id> stops_;  ///< the end-of-turn token first
};

}  // namespace grpo::hf
