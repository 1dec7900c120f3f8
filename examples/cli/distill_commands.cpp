// SPDX-License-Identifier: Apache-2.0
// grpo distill: a teacher model trains a student (grpo/train/distill.hpp) from verified traces,
// on-policy, or from the teacher's top-k log-probs, for whichever policies the config names
// (policies.hpp: the student as `grpo train` builds it, the teacher loaded from distill.teacher).
// The subcommand and its flags are declared here, so main.cpp only registers it.
#include <CLI/CLI.hpp>

#include <cstdint>
#include <exception>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "commands.hpp"
#include "grpo/error.hpp"
#include "grpo/train/distill.hpp"
#include "grpo/train/distill_config.hpp"
#include "grpo/train/limits.hpp"
#include "grpo/train/run_directory.hpp"
#include "options.hpp"
#include "policies.hpp"

namespace grpo::cli {

namespace {

struct distill_flags {
  std::string config_path, resume, output_dir, model, teacher, policy, device;
  std::vector<std::string> overrides;
  std::uint64_t seed = 0;
  bool has_seed = false;
  std::int64_t stop_after = -1;
  bool overwrite = false;
};

train::distill_run_config make_distill_config(const distill_flags& f) {
  train::distill_run_config c;
  if (!f.resume.empty()) c = train::load_distill_config(train::resolve_checkpoint(f.resume) / "config.toml");
  else if (!f.config_path.empty()) c = train::load_distill_config(f.config_path);
  for (const auto& o : f.overrides) train::apply_override(c, o);
  if (f.has_seed) c.train.seed = f.seed;
  if (!f.output_dir.empty()) c.train.output_dir = f.output_dir;
  if (!f.model.empty()) c.train.init = f.model;
  if (!f.policy.empty()) c.train.policy = f.policy;
  if (!f.device.empty()) c.train.device = f.device;
  if (!f.teacher.empty()) c.distill.teacher = f.teacher;
  c.train.validate();
  c.distill.validate();
  return c;
}

/// Calls body(teacher) with the teacher loaded from distill.teacher through the policy factory.
/// \throws io_error naming "distill.teacher" and the directory when it cannot be loaded.
template <class Body>
int with_teacher(const train::distill_run_config& c, std::int64_t vocab, Body&& body) {
  train::train_config t = c.train;
  t.init = c.distill.teacher;
  // The teacher's architecture is its config.json's; [model] describes the student.
  const train::train_config defaults;
  for (auto key : {&train::train_config::hidden_size, &train::train_config::intermediate_size,
                   &train::train_config::num_hidden_layers, &train::train_config::num_attention_heads,
                   &train::train_config::num_key_value_heads, &train::train_config::max_position_embeddings})
    t.*key = defaults.*key;
  if (!c.distill.teacher_policy.empty()) t.policy = c.distill.teacher_policy;
  GRPO_CHECK(std::filesystem::is_directory(t.init), io_error, "distill.teacher: ", t.init,
             ": not a model directory (a `grpo train` OUTPUT_DIR/model or a Hugging Face checkpoint)");
  bool loaded = false;
  try {
    return with_policy(t, vocab, [&](auto& teacher) {
      loaded = true;
      return body(teacher);
    });
  } catch (const std::exception& e) {
    if (loaded) throw;
    grpo::detail::fail<io_error>("distill.teacher: ", t.init, ": cannot load the teacher (", e.what(), ")");
  }
}

int distill_command(const train::distill_run_config& c, const std::string& resume, std::int64_t stop_after,
                    bool overwrite) {
  train::prepare_run_directory(c.train.output_dir, resume, overwrite, c.train.init);
  auto task = train::make_task(c.train);
  auto codec = make_codec(c.train, *task);
  const std::int64_t vocab = codec->vocab_size();
  std::cout << "grpo distill: mode " << c.distill.mode << ", teacher " << c.distill.teacher << ", task "
            << (c.train.data.empty() ? c.train.task : c.train.data) << ", seed " << c.train.seed << ", output "
            << c.train.output_dir << std::endl;
  return with_policy(c.train, vocab, [&](auto& student) {
    using student_type = std::remove_reference_t<decltype(student)>;
    std::cout << "student: " << student.describe() << std::endl;
    return with_teacher(c, vocab, [&](auto& teacher) {
      using teacher_type = std::remove_reference_t<decltype(teacher)>;
      std::cout << "teacher: " << teacher.describe() << std::endl;
      train::distiller<student_type, teacher_type> d(c, std::move(student), std::move(teacher), std::move(task),
                                                     std::move(codec), &std::cout);
      if (!resume.empty()) {
        d.load_checkpoint(resume);
        std::cout << "resumed from " << resume << " at step " << d.state().step << std::endl;
      }
      d.prepare();  // the traces or top-k file first, so a malformed one leaves no metrics.jsonl behind
      train::metrics_writer metrics(std::filesystem::path(c.train.output_dir) / "metrics.jsonl", !resume.empty());
      const auto after = d.run(&metrics, stop_after);
      if (!after) {
        std::cout << "stopped at step " << d.state().step << "; checkpoint in " << c.train.output_dir << "/checkpoint"
                  << std::endl;
        return 0;
      }
      if (d.state().before)
        std::cout << "held-out accuracy before distillation: " << train::describe(*d.state().before) << std::endl;
      std::cout << "held-out accuracy after distillation:  " << train::describe(*after) << std::endl;
      std::cout << "model saved to " << c.train.output_dir << "/model, metrics in " << c.train.output_dir
                << "/metrics.jsonl" << std::endl;
      return 0;
    });
  });
}

}  // namespace

std::function<int()> add_distill_command(CLI::App& app) {
  auto flags = std::make_shared<distill_flags>();
  auto* cmd = app.add_subcommand(
      "distill", "A teacher trains a student: distill.mode = traces (SFT on the teacher's verified samples, R1), "
                 "on_policy (reverse KL / JSD on the student's samples, GKD) or topk (sparse forward KL on the "
                 "teacher's top-k log-probs); held-out evaluation before and after");
  cmd->add_option("--config", flags->config_path, "TOML config: the student's run settings and a [distill] section");
  cmd->add_option("--set", flags->overrides,
                  "key=value overriding the config (repeatable), e.g. --set distill.mode=on_policy");
  cmd->add_option("--seed", flags->seed, "Random seed (same as --set seed=N)")
      ->check(any_seed())
      ->each([flags](const std::string&) { flags->has_seed = true; });
  cmd->add_option("--output-dir", flags->output_dir, "Output directory (same as --set output_dir=DIR)");
  cmd->add_option("--model", flags->model, "The student's starting model directory (same as --set model.init=DIR)");
  cmd->add_option("--teacher", flags->teacher, "The teacher's model directory (same as --set distill.teacher=DIR)");
  cmd->add_option("--policy", flags->policy, "The student's policy: native or torch");
  cmd->add_option("--device", flags->device, "torch policy: cpu, cuda or cuda:N");
  cmd->add_option("--resume", flags->resume, "Resume from a checkpoint directory (its config.toml, then --set)");
  cmd->add_option("--stop-after", flags->stop_after, "Stop (with a checkpoint) after this many optimizer steps")
      ->check(integer_in<std::int64_t>(0, train::limits::steps));
  cmd->add_flag("--overwrite", flags->overwrite,
                "Replace the run (model, checkpoint, metrics) OUTPUT_DIR holds; its traces and top-k files are kept "
                "and reused");
  return [flags] {
    return distill_command(make_distill_config(*flags), flags->resume, flags->stop_after, flags->overwrite);
  };
}

}  // namespace grpo::cli
