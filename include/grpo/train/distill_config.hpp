// SPDX-License-Identifier: Apache-2.0
// grpo/train/distill_config.hpp: the [distill] section of a `grpo distill` config, read from the
// same TOML document as the student's train_config (config.hpp: [model], [task], [eval], seed,
// output_dir, ... keep their meaning), and written back with every checkpoint. Three modes:
// "traces" (R1's recipe, arXiv:2501.12948 Sec. 2.4: SFT on the teacher's verified samples),
// "on_policy" (GKD, Agarwal et al. 2024, arXiv:2306.13649) and "topk" (sparse teacher log-probs).
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "grpo/error.hpp"
#include "grpo/train/config.hpp"
#include "grpo/train/optimizer.hpp"
#include "grpo/train/toml.hpp"

namespace grpo::train {

/// The [distill] settings.
struct distill_config {
  std::string mode = "traces";        ///< traces | on_policy | topk
  std::string teacher;                ///< the teacher's model directory (required)
  std::string teacher_policy;         ///< native | torch; empty: the student's model.policy
  std::int64_t steps = 200;           ///< student optimizer steps
  /// Sequences per step (traces, topk); prompts per step for on_policy (each sampled num_samples times).
  std::int64_t batch_size = 32;
  double learning_rate = 3e-3;
  std::string lr_scheduler_type = "cosine";
  double warmup_ratio = 0.05;
  std::int64_t num_samples = 4;       ///< k: samples per prompt (the teacher's for traces, the student's for on_policy)
  std::int64_t num_prompts = 512;     ///< traces: training prompts the teacher answers
  double sample_temperature = 1.0;    ///< of the teacher's (traces) or the student's (on_policy) samples
  bool require_format = true;         ///< traces: keep only completions in the R1 format too
  std::string traces_file;            ///< traces: empty -> OUTPUT_DIR/traces.jsonl; reused when it exists
  double beta = 1.0;                  ///< on_policy: 0 forward KL, 1 reverse KL, between: JSD(beta) (GKD Eq. 1)
  double temperature = 1.0;           ///< of both softmaxes in the loss (no T^2 factor)
  std::int64_t top_k = 8;             ///< topk: teacher log-probs kept per position
  std::string topk_file;              ///< topk: empty -> OUTPUT_DIR/teacher_topk.safetensors; reused when it exists
  std::string topk_source = "demonstrations";  ///< topk: the sequences scored: demonstrations | traces
  bool renormalize = false;           ///< topk: renormalize the teacher's K probabilities (a proper KL)

  /// The traces file this run reads or writes.
  std::filesystem::path traces_path(const train_config& c) const {
    return traces_file.empty() ? std::filesystem::path(c.output_dir) / "traces.jsonl" : std::filesystem::path(traces_file);
  }
  /// The top-k file this run reads or writes.
  std::filesystem::path topk_path(const train_config& c) const {
    return topk_file.empty() ? std::filesystem::path(c.output_dir) / "teacher_topk.safetensors"
                             : std::filesystem::path(topk_file);
  }

  /// \throws config_error naming the first invalid "distill.*" setting.
  void validate() const {
    GRPO_CHECK(mode == "traces" || mode == "on_policy" || mode == "topk", config_error, "distill.mode: unknown mode \"",
               mode, "\" (expected traces, on_policy or topk)");
    GRPO_CHECK(!teacher.empty(), config_error, "distill.teacher: a teacher model directory is required");
    GRPO_CHECK(teacher_policy.empty() || teacher_policy == "native" || teacher_policy == "torch", config_error,
               "distill.teacher_policy: unknown policy \"", teacher_policy, "\" (expected native or torch)");
    const auto at_least = [](std::int64_t v, std::int64_t lo, std::string_view name) {
      GRPO_CHECK(v >= lo, config_error, "distill.", name, ": must be >= ", lo, ", got ", v);
    };
    at_least(steps, 0, "steps");
    at_least(batch_size, 1, "batch_size");
    at_least(num_samples, 1, "num_samples");
    at_least(num_prompts, 1, "num_prompts");
    at_least(top_k, 1, "top_k");
    GRPO_CHECK(std::isfinite(learning_rate) && learning_rate >= 0, config_error,
               "distill.learning_rate: must be a finite value >= 0, got ", learning_rate);
    GRPO_CHECK(std::isfinite(warmup_ratio) && warmup_ratio >= 0 && warmup_ratio <= 1, config_error,
               "distill.warmup_ratio: must be in [0, 1], got ", warmup_ratio);
    parse_lr_scheduler(lr_scheduler_type, "distill.lr_scheduler_type");
    GRPO_CHECK(std::isfinite(sample_temperature) && sample_temperature > 0, config_error,
               "distill.sample_temperature: must be a finite value > 0, got ", sample_temperature);
    GRPO_CHECK(std::isfinite(temperature) && temperature > 0 && std::isfinite(1.0 / temperature), config_error,
               "distill.temperature: must be a finite value > 0 with a finite inverse, got ", temperature);
    GRPO_CHECK(beta >= 0 && beta <= 1, config_error, "distill.beta: must be in [0, 1], got ", beta);
    GRPO_CHECK(topk_source == "demonstrations" || topk_source == "traces", config_error,
               "distill.topk_source: unknown source \"", topk_source, "\" (expected demonstrations or traces)");
  }
};

/// A whole `grpo distill` config: the student's run settings and the [distill] section.
struct distill_run_config {
  train_config train;
  distill_config distill;
};

namespace detail {

struct distill_field {
  std::string key;  ///< without the "distill." prefix
  std::function<void(distill_config&, const toml::value&)> set;
  std::function<std::string(const distill_config&)> get;
};

template <class M>
distill_field make_distill_field(std::string key, M distill_config::*member) {
  distill_field f;
  f.key = key;
  f.set = [key, member](distill_config& c, const toml::value& v) { c.*member = parse_value<M>("distill." + key, v); };
  f.get = [member](const distill_config& c) { return format_value(c.*member); };
  return f;
}

inline const std::vector<distill_field>& distill_fields() {
  using d = distill_config;
  static const std::vector<distill_field> all = {
      make_distill_field("mode", &d::mode),
      make_distill_field("teacher", &d::teacher),
      make_distill_field("teacher_policy", &d::teacher_policy),
      make_distill_field("steps", &d::steps),
      make_distill_field("batch_size", &d::batch_size),
      make_distill_field("learning_rate", &d::learning_rate),
      make_distill_field("lr_scheduler_type", &d::lr_scheduler_type),
      make_distill_field("warmup_ratio", &d::warmup_ratio),
      make_distill_field("num_samples", &d::num_samples),
      make_distill_field("num_prompts", &d::num_prompts),
      make_distill_field("sample_temperature", &d::sample_temperature),
      make_distill_field("require_format", &d::require_format),
      make_distill_field("traces_file", &d::traces_file),
      make_distill_field("beta", &d::beta),
      make_distill_field("temperature", &d::temperature),
      make_distill_field("top_k", &d::top_k),
      make_distill_field("topk_file", &d::topk_file),
      make_distill_field("topk_source", &d::topk_source),
      make_distill_field("renormalize", &d::renormalize),
  };
  return all;
}

}  // namespace detail

/// Sets one key: "distill.<name>" goes to the [distill] section, any other to the train_config.
/// \throws config_error naming the key when it is unknown or the value has the wrong type.
inline void set_value(distill_run_config& config, std::string_view key, const toml::value& v) {
  constexpr std::string_view prefix = "distill.";
  if (!key.starts_with(prefix)) return set_value(config.train, key, v);
  const auto name = key.substr(prefix.size());
  for (const auto& f : detail::distill_fields())
    if (f.key == name) return f.set(config.distill, v);
  std::string known;
  for (const auto& f : detail::distill_fields()) known += (known.empty() ? "distill." : ", distill.") + f.key;
  grpo::detail::fail<config_error>(key, ": unknown setting (known: ", known, ")");
}

/// Applies `key=value` as `--set` does, for either part.
inline void apply_override(distill_run_config& config, std::string_view assignment) {
  const std::size_t eq = assignment.find('=');
  GRPO_CHECK(eq != std::string_view::npos && eq > 0, config_error, "--set: expected key=value, got '", assignment,
             "'");
  set_value(config, assignment.substr(0, eq), toml::parse_override_value(assignment.substr(eq + 1)));
}

/// Reads a TOML file over the defaults; errors name the file and line.
inline distill_run_config load_distill_config(const std::filesystem::path& path, distill_run_config config = {}) {
  std::ifstream in(path, std::ios::binary);
  GRPO_CHECK(in.good(), io_error, path.string(), ": cannot open for reading");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (const auto& e : toml::parse(text, path.string()).entries) {
    try {
      set_value(config, e.key, e.item);
    } catch (const config_error& ex) {
      grpo::detail::fail<config_error>(path.string(), ":", e.line, ": ", ex.what());
    }
  }
  return config;
}

/// The whole config as TOML: the train_config's sections, then [distill] (reads back identically).
inline std::string to_toml(const distill_run_config& config) {
  std::ostringstream out;
  out << to_toml(config.train) << "\n[distill]\n";
  for (const auto& f : detail::distill_fields()) out << f.key << " = " << f.get(config.distill) << "\n";
  return out.str();
}

}  // namespace grpo::train
