// SPDX-License-Identifier: Apache-2.0
// The commands of the grpo tool, one function each; main.cpp parses the command line into these
// arguments. Every command returns the process's exit status and reports failures by throwing
// (main prints "grpo <command>: <message>" and exits 1).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "grpo/loss_settings.hpp"
#include "grpo/train/config.hpp"

namespace CLI {
class App;
}

namespace grpo::cli {

// loss_commands.cpp

/// What `grpo loss` takes besides the tensors: the shared loss settings (resolved by the same
/// grpo::resolve as the trainer's) and the group size of the rewards.
struct loss_settings : grpo::loss_settings {
  std::int64_t num_generations = 8;
};

int loss_command(const std::string& input, const std::string& output, const loss_settings& s);
int example_command(const std::string& directory, std::uint64_t seed);

// train_commands.cpp

/// The run settings every training command shares: a TOML config (or a checkpoint's), --set
/// overrides, then the flags that stand for single keys.
struct run_flags {
  std::string config_path;
  std::string resume;                    ///< a checkpoint directory (train only): its config.toml first
  std::vector<std::string> overrides;    ///< key=value
  std::optional<std::uint64_t> seed;     ///< seed
  std::string output_dir;                ///< output_dir
  std::string model;                     ///< model.init
  std::string policy;                    ///< model.policy
  std::string device;                    ///< model.device
};

/// The config the flags describe, validated.
train::train_config make_config(const run_flags& flags);

/// Under an MPI launcher every rank runs these with its share of the work; rank 0 prints and writes.
/// train_command refuses an output directory that holds a run (train::prepare_run_directory)
/// unless it resumes that run's checkpoint or `overwrite` replaces it.
int train_command(train::train_config c, const std::string& resume, std::int64_t stop_after, bool sft_only,
                  bool overwrite);
int eval_command(train::train_config c);
/// Completions of `prompts` (chat-formatted for a Hugging Face tokenizer), or of the first `count`
/// held-out problems of the task when there are none; greedy, or sampled as the config's rollouts are.
int sample_command(const train::train_config& c, std::int64_t count, const std::vector<std::string>& prompts,
                   bool greedy);

// model_commands.cpp

/// Token ids of standard input's UTF-8 text as one JSON array (no BOS/EOS added; special tokens
/// written in the text recognised).
int tokenize_command(const std::string& model_dir);
/// Per-token log-probs of each {"prompt", "completion"} line of `input`, written to `output` as
/// {"completion_ids", "logprobs"} lines.
int score_command(const train::train_config& c, const std::string& input, const std::string& output, double temperature);
int convert_gguf_command(const std::string& input, const std::string& output);

// batch_commands.cpp

/// The first `count` prompts of the config's task on `split` ("train": in the order `grpo train`
/// draws them with this seed; "heldout": the evaluation's), written to `output` as JSONL lines
/// {"prompt", "answer", "prompt_ids"} (prompt_ids: as the codec encodes them, chat template included).
int prompts_command(const train::train_config& c, const std::string& split, std::int64_t count,
                    const std::string& output);
/// The loss and the gradient norm (before clipping) of one GRPO update of model.init on the rows of
/// `input` (JSONL {"prompt_ids", "completion_ids", "reward", optional "stopped" (default true) and
/// "advantage"}; groups of num_generations consecutive rows share a prompt), computed by the trainer's
/// grpo_update with learning rate 0; writes {"loss", "grad_norm", "rows", "kept_rows", "loss_tokens",
/// "micro_batches", "advantages", "policy"} to `output`.
int grad_command(const train::train_config& c, const std::string& input, const std::string& output);

// distill_commands.cpp

/// Adds `grpo distill` (and its flags) to `app`; the function returned runs it once parsed.
std::function<int()> add_distill_command(CLI::App& app);

}  // namespace grpo::cli
