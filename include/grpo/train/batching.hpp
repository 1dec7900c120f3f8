// SPDX-License-Identifier: Apache-2.0
// grpo/train/batching.hpp: the second room of a GRPO step: which scored rows train, how they are
// cut into micro-batches, their final masks, and the loss denominators of the whole generation
// batch. Dynamic sampling (DAPO, arXiv:2503.14476, Sec. 3.2) drops the groups whose scores are
// all equal: their advantages are 0, so they carry no gradient but would dilute the token-mean
// denominators. The denominators are counted over every kept row of every micro-batch (and summed
// over data-parallel ranks) before the first micro-batch trains, so the micro-batches' losses and
// gradients add up exactly to the full batch's (the bug class of TRL #3021 / veRL #5625).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "grpo/aggregation.hpp"
#include "grpo/concepts.hpp"
#include "grpo/tensor.hpp"
#include "grpo/train/communicator.hpp"

namespace grpo::train {

/// The rows that train: all of them, or with dynamic sampling those of groups (G consecutive
/// rows) in which two scorable scores differ. NaN scores (unscorable) carry no signal.
inline std::vector<std::size_t> kept_rows(std::span<const double> scores, std::int64_t group_size,
                                          bool dynamic_sampling) {
  const auto g = static_cast<std::size_t>(group_size);
  std::vector<std::size_t> kept;
  for (std::size_t start = 0; start < scores.size(); start += g) {
    bool varied = false;
    std::optional<double> first;
    for (std::size_t j = start; j < start + g; ++j) {
      if (std::isnan(scores[j])) continue;
      if (!first) first = scores[j];
      varied = varied || scores[j] != *first;
    }
    for (std::size_t j = start; j < start + g; ++j)
      if (varied || !dynamic_sampling) kept.push_back(j);
  }
  return kept;
}

/// One micro-batch: the (prompt, completion) rows it trains on and where each came from.
struct micro_batch {
  sequence_batch batch;
  std::vector<std::size_t> rows;  ///< index of each row in the rollout
};

/// The kept rows in micro-batches of at most `size` rows, in order.
inline std::vector<micro_batch> make_micro_batches(std::span<const std::vector<token_id>> prompts,
                                                   std::span<const sampled_completion> completions,
                                                   std::span<const std::size_t> kept, std::int64_t group_size,
                                                   std::int64_t size) {
  std::vector<micro_batch> out;
  const auto micro = static_cast<std::size_t>(size);
  for (std::size_t start = 0; start < kept.size(); start += micro) {
    micro_batch mb;
    for (std::size_t i = start; i < std::min(kept.size(), start + micro); ++i) {
      mb.batch.prompts.push_back(prompts[kept[i] / static_cast<std::size_t>(group_size)]);
      mb.batch.completions.push_back(completions[kept[i]].tokens);
      mb.rows.push_back(kept[i]);
    }
    out.push_back(std::move(mb));
  }
  return out;
}

/// The final mask [R, T] of a micro-batch: its completion tokens, with the rows that did not stop
/// zeroed when mask_truncated_completions (DAPO's overlong filtering).
template <tensor_backend B>
tensor<B> final_mask(const B& backend, const micro_batch& mb, std::span<const sampled_completion> completions,
                     bool mask_truncated_completions) {
  auto mask = mb.batch.completion_mask();
  const auto t = static_cast<std::size_t>(mb.batch.max_completion_length());
  for (std::size_t r = 0; r < mb.batch.rows(); ++r)
    if (mask_truncated_completions && !completions[mb.rows[r]].stopped)
      std::fill_n(mask.begin() + static_cast<std::ptrdiff_t>(r * t), t, 0.0);
  return make_tensor(backend, mask, shape::matrix(static_cast<std::int64_t>(mb.batch.rows()), static_cast<std::int64_t>(t)));
}

/// The denominators of the whole generation batch from its micro-batches' final masks, summed
/// over the communicator's ranks: tokens, sequences (every row counts, as TRL's per-sequence
/// mean), and Dr. GRPO's constant.
template <tensor_backend B>
loss_denominators global_denominators(std::span<const tensor<B>> masks, double constant, communicator& comm) {
  double tokens = 0, sequences = 0;
  for (const auto& mask : masks) {
    const auto d = denominators_from_mask(mask, constant);
    tokens += sum(mask).item();
    sequences += d.sequences;
  }
  std::vector<double> totals{tokens, sequences};
  comm.all_reduce_sum(std::span<double>(totals));
  loss_denominators den;
  den.tokens = std::max(totals[0], 1.0);
  den.sequences = std::max(totals[1], 1.0);
  den.constant = constant;
  return den;
}

/// The kept rows of a rollout as they train: their micro-batches (make_micro_batches) and each
/// one's final mask (final_mask). Owns what an update_batch (update.hpp) views.
template <tensor_backend B>
struct masked_micro_batches {
  std::vector<micro_batch> micro_batches;
  std::vector<tensor<B>> masks;
};

/// The micro-batches of at most `size` kept rows and their final masks: the one assembly of the
/// trainer's GRPO step and of `grpo grad`.
template <tensor_backend B>
masked_micro_batches<B> make_masked_micro_batches(const B& backend, std::span<const std::vector<token_id>> prompts,
                                                  std::span<const sampled_completion> completions,
                                                  std::span<const std::size_t> kept, std::int64_t group_size,
                                                  std::int64_t size, bool mask_truncated_completions) {
  masked_micro_batches<B> out;
  out.micro_batches = make_micro_batches(prompts, completions, kept, group_size, size);
  for (const auto& mb : out.micro_batches)
    out.masks.push_back(final_mask(backend, mb, completions, mask_truncated_completions));
  return out;
}

}  // namespace grpo::train
