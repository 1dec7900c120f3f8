// SPDX-License-Identifier: Apache-2.0
// grpo: the command-line tool. This file only parses the command line into the arguments of the
// commands (commands.hpp): loss and example (loss_commands.cpp), train, sft, eval and sample
// (train_commands.cpp), tokenize, score and convert-gguf (model_commands.cpp), prompts and grad
// (batch_commands.cpp), distill (distill_commands.cpp, which declares its own flags). Options are named
// after TRL's GRPOConfig (and veRL's loss_agg_mode). Every failure, from the library or from
// parsing the command line, ends as "grpo <command>: <message>" on stderr with exit status 1; the
// library itself never exits.
#include <CLI/CLI.hpp>

#include <cstdint>
#include <iostream>
#include <string>
#include <vector>

#include "commands.hpp"
#include "grpo/train/limits.hpp"
#include "grpo/version.hpp"
#include "options.hpp"

using namespace grpo::cli;


int main(int argc, char** argv) {
  CLI::App app{"grpo: GRPO, PPO-clip and distillation losses from the command line"};
  app.set_version_flag("--version", grpo::version_string);
  app.require_subcommand(1);

  auto* loss = app.add_subcommand(
      "loss", "Policy loss, gradient and diagnostics of a batch in safetensors (inputs: logprobs [B,T]; optional "
              "old_logprobs, ref_logprobs, rollout_logprobs, mask, entropy [B,T]; exactly one of rewards [B] or "
              "advantages [B] or [B,T]; all F32 or all F64)");
  std::string input, output;
  loss_settings s;
  double epsilon_high = 0, delta = 0, dual_clip = 0;
  std::int64_t max_completion_length = 0;
  std::string loss_agg_mode, is_level;
  loss->add_option("--input", input, "Batch to read (safetensors)")->required();
  loss->add_option("--output", output, "Result to write (safetensors, written atomically)")->required();
  loss->add_option("--loss-type", s.loss_type, "grpo | bnpo | dr_grpo | dapo (TRL loss_type)")->capture_default_str();
  auto* agg_option = loss->add_option(
      "--loss-agg-mode", loss_agg_mode,
      "token-mean | seq-mean-token-mean | seq-mean-token-sum | seq-mean-token-sum-norm (veRL; overrides the loss "
      "type's aggregation)");
  loss->add_option("--num-generations", s.num_generations, "Group size G of consecutive rows, for rewards")
      ->check(integer_in<std::int64_t>(1, grpo::train::limits::loss_elements))
      ->capture_default_str();
  loss->add_option("--scale-rewards", s.scale_rewards, "group | batch | none")->capture_default_str();
  loss->add_option("--adv-epsilon", s.adv_epsilon, "A = (r - mean) / (std + adv-epsilon)")->capture_default_str();
  loss->add_option("--epsilon", s.epsilon, "Lower clip: ratio >= 1 - epsilon")->capture_default_str();
  auto* epsilon_high_option = loss->add_option("--epsilon-high", epsilon_high, "Upper clip (default: epsilon)");
  auto* delta_option = loss->add_option("--delta", delta, "Two-sided cap of the unclipped ratio (> 1)");
  auto* dual_clip_option = loss->add_option("--dual-clip", dual_clip, "Dual-clip constant c > 1 (for A < 0)");
  loss->add_option("--beta", s.beta, "KL coefficient (needs ref_logprobs when > 0)")->capture_default_str();
  loss->add_option("--kl-estimator", s.kl_estimator, "k1 | k2 | k3")->capture_default_str();
  loss->add_option("--importance-sampling-level", s.importance_sampling_level, "token | sequence (GSPO)")
      ->capture_default_str();
  auto* mcl_option = loss->add_option("--max-completion-length", max_completion_length,
                                      "Dr. GRPO's constant C (default: T of the batch)")
                         ->check(integer_in<std::int64_t>(1, grpo::train::limits::completion_length));
  loss->add_option("--is-mode,--vllm-importance-sampling-mode", s.is_mode,
                   "Rollout IS correction (with rollout_logprobs): truncate | mask, or TRL's token_truncate | "
                   "token_mask | sequence_truncate | sequence_mask")
      ->capture_default_str();
  auto* is_level_option = loss->add_option("--is-level", is_level, "token | sequence (default token)");
  loss->add_option("--is-cap", s.is_cap, "Cap C of the IS weight")->capture_default_str();
  loss->add_option("--log-ratio-bound", s.log_ratio_bound, "Log-ratios are clamped to +-bound")->capture_default_str();
  loss->add_option("--entropy-coef", s.entropy_coef, "Entropy bonus coefficient (needs entropy)")
      ->capture_default_str();

  auto* example = app.add_subcommand(
      "example", "Run the loss on a seeded synthetic GRPO batch (4 prompts x 4 completions x 12 tokens) for each "
                 "loss type with and without KL; writes batch.safetensors and result.safetensors");
  std::string directory = "grpo-example";
  std::uint64_t seed = 1;
  example->add_option("--dir", directory, "Output directory")->capture_default_str();
  example->add_option("--seed", seed, "Random seed")->check(any_seed())->capture_default_str();

  run_flags flags;
  std::uint64_t seed_flag = 0;
  std::int64_t stop_after = -1, sample_count = 4;
  bool overwrite = false;
  std::vector<std::string> sample_prompts;
  double score_temperature = 1.0;
  const auto add_run_flags = [&](CLI::App* cmd, bool model_required) {
    cmd->add_option("--config", flags.config_path, "TOML config (default: the built-in main job)");
    cmd->add_option("--set", flags.overrides, "key=value overriding the config (repeatable), e.g. --set max_steps=10");
    cmd->add_option("--seed", seed_flag, "Random seed (same as --set seed=N)")->check(any_seed());
    cmd->add_option("--output-dir", flags.output_dir, "Output directory (same as --set output_dir=DIR)");
    auto* model = cmd->add_option("--model", flags.model,
                                  "Model directory: grpo's own, or a Hugging Face Llama / Qwen2 checkpoint with its "
                                  "tokenizer.json (same as --set model.init=DIR)");
    if (model_required) model->required();
    cmd->add_option("--policy", flags.policy, "native (grpo's CPU transformer) or torch (LibTorch causal LM)");
    cmd->add_option("--device", flags.device, "torch policy: cpu, cuda or cuda:N");
  };
  auto* train_cmd =
      app.add_subcommand("train", "The R1 recipe: cold-start SFT, GRPO, held-out evaluation before and after");
  add_run_flags(train_cmd, false);
  train_cmd->add_option("--resume", flags.resume, "Resume from a checkpoint directory (its config.toml, then --config's entries over it, then --set)");
  train_cmd->add_option("--stop-after", stop_after, "Stop (with a checkpoint) after this many optimizer steps in all")
      ->check(integer_in<std::int64_t>(0, grpo::train::limits::steps));
  const char* overwrite_help =
      "Replace the run the output directory holds (its model/, checkpoint/ and metrics.jsonl are removed first)";
  train_cmd->add_flag("--overwrite", overwrite, overwrite_help);
  auto* sft_cmd = app.add_subcommand("sft", "Cold-start SFT only on worked demonstrations; saves OUTPUT_DIR/model");
  add_run_flags(sft_cmd, false);
  sft_cmd->add_flag("--overwrite", overwrite, overwrite_help);
  auto* eval_cmd = app.add_subcommand("eval", "Held-out greedy accuracy, format rate and pass@k of a saved model");
  add_run_flags(eval_cmd, true);
  auto* sample_cmd = app.add_subcommand(
      "sample", "Print a model's completions of the given prompts (chat-formatted for a Hugging Face directory) or of "
                "a few held-out problems; sampling follows the config (temperature, top_p, max_completion_length)");
  add_run_flags(sample_cmd, true);
  sample_cmd->add_option("-n,--count", sample_count, "Number of held-out problems (without --prompt)")
      ->check(integer_in<std::int64_t>(0, grpo::train::limits::problems))
      ->capture_default_str();
  sample_cmd->add_option("--prompt", sample_prompts, "A prompt to complete (repeatable)");
  bool sample_greedy = false;
  sample_cmd->add_flag("--greedy", sample_greedy, "Greedy decoding instead of the config's sampling");
  auto* tokenize_cmd = app.add_subcommand(
      "tokenize", "Token ids of standard input's UTF-8 text as one JSON array, as the tokenizers library's "
                  "encode(text, add_special_tokens=False) gives them");
  tokenize_cmd->add_option("--model", flags.model, "Hugging Face model directory (tokenizer.json)")->required();
  auto* score_cmd = app.add_subcommand(
      "score", "Per-token log-probs of completions: each input line {\"prompt\": ..., \"completion\": ...} "
               "(tokenized separately, no chat template, concatenated) gives an output line "
               "{\"completion_ids\": [...], \"logprobs\": [...]}");
  add_run_flags(score_cmd, true);
  std::string score_input, score_output;
  score_cmd->add_option("--input", score_input, "JSONL file of {\"prompt\", \"completion\"}")->required();
  score_cmd->add_option("--output", score_output, "JSONL file to write (atomically)")->required();
  score_cmd->add_option("--temperature", score_temperature, "log softmax(z / T)")->capture_default_str();
  auto* convert_cmd = app.add_subcommand(
      "convert-gguf", "Turn a llama.cpp GGUF file (llama or qwen2) into a Hugging Face model directory: config.json, "
                      "dequantized F32 model.safetensors, tokenizer.json, tokenizer_config.json");
  std::string gguf_input, gguf_output;
  convert_cmd->add_option("--input", gguf_input, "The .gguf file")->required();
  convert_cmd->add_option("--output", gguf_output, "The directory to write")->required();
  auto* prompts_cmd = app.add_subcommand(
      "prompts", "Write the task's prompts as JSONL {\"prompt\", \"answer\", \"prompt_ids\"}: the training prompts in the "
                 "order `grpo train` draws them with this config and seed, or the held-out ones");
  add_run_flags(prompts_cmd, false);
  std::string prompts_split = "train", prompts_output;
  std::int64_t prompts_count = 64;
  prompts_cmd->add_option("--split", prompts_split, "train or heldout")->capture_default_str();
  prompts_cmd->add_option("-n,--count", prompts_count, "Number of prompts")
      ->check(integer_in<std::int64_t>(0, grpo::train::limits::problems))
      ->capture_default_str();
  prompts_cmd->add_option("--output", prompts_output, "JSONL file to write (atomically)")->required();
  auto* grad_cmd = app.add_subcommand(
      "grad", "Loss and gradient norm (before clipping) of one GRPO update on given rows, through the trainer's own "
              "update with learning rate 0: input JSONL {\"prompt_ids\", \"completion_ids\", \"reward\", optional "
              "\"stopped\", \"advantage\"}, groups of num_generations consecutive rows; output one JSON object");
  add_run_flags(grad_cmd, true);
  std::string grad_input, grad_output;
  grad_cmd->add_option("--input", grad_input, "JSONL file of rows")->required();
  grad_cmd->add_option("--output", grad_output, "JSON file to write (atomically)")->required();
  const auto run_distill = add_distill_command(app);

  std::string command = "grpo", commands;
  const auto subcommands = app.get_subcommands([](const CLI::App*) { return true; });
  const auto subcommand_named = [&](const std::string& word) -> const CLI::App* {
    for (const auto* sub : subcommands)
      if (sub->check_name(word)) return sub;
    return nullptr;
  };
  for (const auto* sub : subcommands) commands += (commands.empty() ? "" : ", ") + sub->get_name();
  for (int i = 1; i < argc; ++i)
    if (const auto* sub = subcommand_named(argv[i])) {
      command += " " + sub->get_name();
      break;
    }
  // The first word names the command; CLI11 alone only says "A subcommand is required".
  if (argc == 1 || (argv[1][0] != '-' && subcommand_named(argv[1]) == nullptr)) {
    std::cerr << "grpo: " << (argc == 1 ? "a command is required" : "unknown command '" + std::string(argv[1]) + "'")
              << " (one of: " << commands << "; see grpo --help)\n";
    return 1;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::cerr << command << ": " << e.what() << '\n';
    return 1;
  }
  try {
    if (*loss) {
      if (*agg_option) s.loss_agg_mode = loss_agg_mode;
      if (*epsilon_high_option) s.epsilon_high = epsilon_high;
      if (*delta_option) s.delta = delta;
      if (*dual_clip_option) s.dual_clip = dual_clip;
      if (*mcl_option) s.max_completion_length = max_completion_length;
      if (*is_level_option) s.is_level = is_level;
      return loss_command(input, output, s);
    }
    if (*example) return example_command(directory, seed);
    if (*tokenize_cmd) return tokenize_command(flags.model);
    if (*convert_cmd) return convert_gguf_command(gguf_input, gguf_output);
    if (app.got_subcommand("distill")) return run_distill();
    for (auto* cmd : {train_cmd, sft_cmd, eval_cmd, sample_cmd, score_cmd, prompts_cmd, grad_cmd})
      if (cmd->get_option("--seed")->count() > 0) flags.seed = seed_flag;
    if (!*train_cmd) flags.resume.clear();
    const auto c = make_config(flags);
    if (*train_cmd) return train_command(c, flags.resume, stop_after, false, overwrite);
    if (*sft_cmd) return train_command(c, "", -1, true, overwrite);
    if (*eval_cmd) return eval_command(c);
    if (*score_cmd) return score_command(c, score_input, score_output, score_temperature);
    if (*prompts_cmd) return prompts_command(c, prompts_split, prompts_count, prompts_output);
    if (*grad_cmd) return grad_command(c, grad_input, grad_output);
    return sample_command(c, sample_count, sample_prompts, sample_greedy);
  } catch (const std::exception& e) {
    std::cerr << command << ": " << e.what() << '\n';
    return 1;
  }
}
