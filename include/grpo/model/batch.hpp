// SPDX-License-Identifier: Apache-2.0
// grpo/model/batch.hpp: how a batch of (prompt, completion) rows becomes the model's input. Row r
// feeds prompt ++ completion[0 .. c-2] (the last completion token is predicted, never fed) at
// positions 0, 1, ...; the output at position p - 1 + i predicts completion[i]. Rows are packed
// back to back with no padding tokens, and logits come out in the [R * T, V] layout of the
// logits_policy concept (T = longest completion, padding rows zero).
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "grpo/concepts.hpp"
#include "grpo/error.hpp"
#include "grpo/model/config.hpp"

namespace grpo::model {

/// The packed layout of a sequence_batch.
struct batch_plan {
  std::int64_t rows = 0;
  std::int64_t max_completion = 0;              ///< T
  std::int64_t tokens = 0;                      ///< fed tokens, all rows together
  std::vector<std::int64_t> offset;             ///< first fed token of each row
  std::vector<std::int64_t> length;             ///< fed tokens of each row: p + c - 1, or 0 when c = 0
  std::vector<std::int64_t> prompt_length;      ///< p
  std::vector<std::int64_t> completion_length;  ///< c
  std::vector<token_id> input;                  ///< the fed tokens, packed
};

namespace detail {

inline void check_tokens(const std::vector<token_id>& tokens, std::int64_t vocab, std::string_view name,
                         std::size_t row) {
  for (std::size_t i = 0; i < tokens.size(); ++i)
    GRPO_CHECK(tokens[i] >= 0 && tokens[i] < vocab, shape_error, name, ": row ", row, ", element ", i, " is ",
               tokens[i], ", out of range [0, ", vocab, ")");
}

}  // namespace detail

/// Validates `batch` against the config and lays it out.
/// \throws shape_error naming "batch" when prompts and completions differ in number or a row is
///         longer than max_position_embeddings (p + c tokens), "batch.prompts" for an empty prompt
///         (the first prediction needs one token of context) and "batch.prompts" /
///         "batch.completions" for a token id outside [0, vocab_size).
inline batch_plan plan_batch(const transformer_config& config, const sequence_batch& batch) {
  GRPO_CHECK(batch.prompts.size() == batch.completions.size(), shape_error, "batch: ", batch.prompts.size(),
             " prompts for ", batch.completions.size(), " completions");
  batch_plan plan;
  plan.rows = static_cast<std::int64_t>(batch.rows());
  plan.max_completion = batch.max_completion_length();
  for (std::size_t r = 0; r < batch.rows(); ++r) {
    const auto& prompt = batch.prompts[r];
    const auto& completion = batch.completions[r];
    GRPO_CHECK(!prompt.empty(), shape_error, "batch.prompts: row ", r, " is empty (a prompt needs at least one token)");
    detail::check_tokens(prompt, config.vocab_size, "batch.prompts", r);
    detail::check_tokens(completion, config.vocab_size, "batch.completions", r);
    const auto p = static_cast<std::int64_t>(prompt.size()), c = static_cast<std::int64_t>(completion.size());
    GRPO_CHECK(p + c <= config.max_position_embeddings, shape_error, "batch: row ", r, " has ", p + c,
               " tokens (prompt ", p, " + completion ", c, "), more than max_position_embeddings ",
               config.max_position_embeddings);
    const std::int64_t fed = c == 0 ? 0 : p + c - 1;
    plan.offset.push_back(plan.tokens);
    plan.length.push_back(fed);
    plan.prompt_length.push_back(p);
    plan.completion_length.push_back(c);
    plan.tokens += fed;
    if (fed > 0) {
      plan.input.insert(plan.input.end(), prompt.begin(), prompt.end());
      plan.input.insert(plan.input.end(), completion.begin(), completion.end() - 1);
    }
  }
  return plan;
}

}  // namespace grpo::model
