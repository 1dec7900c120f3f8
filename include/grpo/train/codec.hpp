// SPDX-License-Identifier: Apache-2.0
// grpo/train/codec.hpp: how the trainer turns a task's text into a policy's tokens and back. A
// task speaks text (a prompt, a worked completion, an answer to check); a policy speaks token ids
// of its own vocabulary, framed its own way (the built-in character vocabulary feeds <bos> and the
// prompt; a chat model wants its chat template around the prompt). A text_codec is that framing:
// the built-in one is tasks::char_codec, the Hugging Face one grpo::hf::chat_codec.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "grpo/concepts.hpp"

namespace grpo::train {

class text_codec {
 public:
  virtual ~text_codec() = default;

  /// The ids a policy continues to answer `prompt` (chat template, beginning-of-sequence, ...).
  virtual std::vector<token_id> encode_prompt(std::string_view prompt) const = 0;
  /// The ids of `completion` followed by the token that ends a turn: an SFT target.
  virtual std::vector<token_id> encode_completion(std::string_view completion) const = 0;
  /// The text of generated ids, control and special tokens left out.
  virtual std::string decode(std::span<const token_id> ids) const = 0;
  /// The tokens that end a completion (the end-of-turn token first).
  virtual std::vector<token_id> stop_tokens() const = 0;
  /// The vocabulary size the ids live in (a policy's may be larger, never smaller).
  virtual std::int64_t vocab_size() const = 0;

 protected:
  text_codec() = default;
  text_codec(const text_codec&) = default;
  text_codec& operator=(const text_codec&) = default;
};

}  // namespace grpo::train
