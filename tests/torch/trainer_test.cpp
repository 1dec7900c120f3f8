// SPDX-License-Identifier: Apache-2.0
// The generic trainer (grpo/train/trainer.hpp) driving the LibTorch causal-LM policy on a Hugging Face
// checkpoint with its own tokenizer: the same R1 recipe the native policy runs (cold start, GRPO with the
// KL reference and mu = 2, evaluation, checkpoints), and a run stopped and resumed from its checkpoint
// ends with the same weights, bit for bit (CPU).
#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>

#include "grpo/hf/chat_codec.hpp"
#include "grpo/libtorch/causal_lm_policy.hpp"
#include "grpo/train/train.hpp"
#include "scratch_path.hpp"

namespace {

using grpo::libtorch::causal_lm_policy;
using grpo::train::train_config;

const std::filesystem::path tiny_qwen2 = std::filesystem::path(GRPO_TEST_DATA_DIR) / "hf" / "models" / "tiny-qwen2";

train_config tiny_run(const std::filesystem::path& output) {
  train_config c;
  c.output_dir = output.string();
  c.seed = 5;
  c.init = tiny_qwen2.string();
  c.policy = "torch";
  c.chat_template = "plain";
  c.operations = "+";
  c.min_digits = 1;
  c.max_digits = 1;
  c.heldout_size = 4;
  c.sft_steps = 2;
  c.sft_batch_size = 4;
  c.max_steps = 3;
  c.num_generations = 4;
  c.per_device_train_batch_size = 4;
  c.gradient_accumulation_steps = 2;
  c.max_completion_length = 10;
  c.mask_truncated_completions = false;
  c.loss.beta = 0.04;
  c.num_iterations = 2;
  c.eval_size = 2;
  c.eval_num_samples = 0;
  return c;
}

grpo::train::trainer<causal_lm_policy> make_trainer(train_config c) {
  auto task = grpo::train::make_task(c);
  auto codec = std::make_unique<grpo::hf::chat_codec>(
      grpo::hf::chat_codec::from_pretrained(c.init, c.chat_template, c.system_prompt));
  auto policy = causal_lm_policy::load(c.init);
  return grpo::train::trainer<causal_lm_policy>(std::move(c), std::move(policy), std::move(task), std::move(codec));
}

std::filesystem::path fresh(const std::string& name) {
  return grpo::testing::scratch_path("grpo_torch_trainer_" + name);
}

}  // namespace

TEST_CASE("trainer<causal_lm_policy>: the R1 recipe on a Hugging Face checkpoint, resumed bit-identically",
          "[torch][train]") {
  const auto full_dir = fresh("full"), split_dir = fresh("split");
  auto full = make_trainer(tiny_run(full_dir));
  grpo::train::metrics_writer metrics(full_dir / "metrics.jsonl");
  REQUIRE(full.run(&metrics).has_value());
  REQUIRE(full.policy().has_reference());
  REQUIRE(std::filesystem::exists(full_dir / "model" / "tokenizer.json"));
  REQUIRE(std::filesystem::exists(full_dir / "model" / "config.json"));
  for (const std::int64_t stop : {1, 4}) {  // in the cold start, and in GRPO after its first update
    std::filesystem::remove_all(split_dir);
    {
      auto first = make_trainer(tiny_run(split_dir));
      REQUIRE(!first.run(nullptr, stop).has_value());
    }
    auto second = make_trainer(grpo::train::load_config(split_dir / "checkpoint" / "config.toml"));
    second.load_checkpoint(split_dir / "checkpoint");
    REQUIRE(second.global_step() == stop);
    REQUIRE(second.run().has_value());
    const auto a = full.policy().model().named_parameters(), b = second.policy().model().named_parameters();
    REQUIRE(a.size() == b.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
      INFO(a[i].first << " after resuming at step " << stop);
      REQUIRE(at::equal(a[i].second, b[i].second));
    }
  }
  std::filesystem::remove_all(full_dir);
  std::filesystem::remove_all(split_dir);
}
