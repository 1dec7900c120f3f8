// SPDX-License-Identifier: Apache-2.0
// grpo/train/limits.hpp: every upper bound grpo puts on a size that comes from user input (a config
// key, a command-line option, a tensor shape read from a file), in one place, each with the reason
// for its number. A value past its bound is refused before anything is allocated, with a message
// that names the key and states the bound, so a typo (1e12 for 1e2) is an error instead of a run
// that allocates until the OS kills it. The bounds sit far above what a run on one machine uses.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>

namespace grpo::train::limits {

/// Completions in one micro-batch (per_device_train_batch_size) and demonstrations in one cold-start
/// step (sft.batch_size): 2^16. A micro-batch is one forward/backward pass, whose activations grow
/// with it; TRL configs use 1-64 per device, the largest published GRPO runs a few thousand.
inline constexpr std::int64_t micro_batch = std::int64_t{1} << 16;

/// Micro-batches per optimizer step (gradient_accumulation_steps): 2^16, as micro_batch.
inline constexpr std::int64_t accumulation_steps = std::int64_t{1} << 16;

/// Completions per optimizer step (per_device_train_batch_size * gradient_accumulation_steps, all
/// sampled before the update and held in memory with their log-probs): 2^16, the size of the
/// largest published GRPO batches (DeepSeek-R1: 512 prompts x 16 = 8192) with room to spare.
inline constexpr std::int64_t completions_per_step = std::int64_t{1} << 16;

/// Tokens per completion (max_completion_length): 2^17 = 131072, the longest context of current
/// open models; every position costs a row of the model's key/value cache.
inline constexpr std::int64_t completion_length = std::int64_t{1} << 17;

/// Completion tokens per optimizer step (completions_per_step * max_completion_length): 2^27. Each
/// sampled token keeps its id, log-prob, old log-prob and mask (about 32 bytes with the
/// bookkeeping), so the step's rollout alone stays under 4 GiB.
inline constexpr std::int64_t tokens_per_step = std::int64_t{1} << 27;

/// Distinct problems drawn up front (sft.examples, task.heldout_size, eval.size): 2^22. Each is a
/// prompt, an answer and a worked demonstration of a few hundred bytes, so at most about 2 GiB.
inline constexpr std::int64_t problems = std::int64_t{1} << 22;

/// Samples per held-out problem for pass@k (eval.num_samples): 2^10.
inline constexpr std::int64_t eval_samples = std::int64_t{1} << 10;

/// Completions of one evaluation (eval.size * eval.num_samples): 2^20, sampled in one pass.
inline constexpr std::int64_t eval_completions = std::int64_t{1} << 20;

/// Optimizer steps (max_steps, sft.steps, save_steps, logging_steps, --stop-after): 2^40. Not a
/// memory bound: it keeps every step counter and step * batch product far from 2^63, and 2^40 steps
/// would take longer than anyone waits.
inline constexpr std::int64_t steps = std::int64_t{1} << 40;

/// Updates per generation batch (num_iterations, TRL's mu): 2^10.
inline constexpr std::int64_t iterations = std::int64_t{1} << 10;

/// Worker threads (threads): 2^12, more cores than any single machine has.
inline constexpr std::int64_t threads = std::int64_t{1} << 12;

/// Parameters of a model initialized from [model] (no model.init): 2^30. The native policy holds
/// the weights, their gradients, two Adam moments and a reference copy in float32 (20 bytes per
/// parameter), so 2^30 parameters already need 20 GiB.
inline constexpr std::int64_t parameters = std::int64_t{1} << 30;

/// Positions of a model initialized from [model] (model.max_position_embeddings): 2^20; the rotary
/// tables and the attention of one sequence grow with it.
inline constexpr std::int64_t positions = std::int64_t{1} << 20;

/// Elements of one `grpo loss` batch (B * T, and B and T alone, of every input tensor): 2^25, e.g.
/// 1024 completions of 32768 tokens. The loss keeps about 30 working tensors of B * T doubles, so
/// the peak stays near 8 GiB; a shape like [2^62, 0] holds no bytes but would still size
/// per-row buffers by its 2^62 rows.
inline constexpr std::int64_t loss_elements = std::int64_t{1} << 25;

/// a * b, or nullopt when the product of the non-negative a and b overflows std::int64_t.
inline std::optional<std::int64_t> checked_product(std::int64_t a, std::int64_t b) {
  if (a < 0 || b < 0) return std::nullopt;
  if (b != 0 && a > std::numeric_limits<std::int64_t>::max() / b) return std::nullopt;
  return a * b;
}

}  // namespace grpo::train::limits
