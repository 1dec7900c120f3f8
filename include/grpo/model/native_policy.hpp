// SPDX-License-Identifier: Apache-2.0
// grpo/model/native_policy.hpp: grpo's native CPU transformer as a grpo::trainable_policy, so
// grpo::train::trainer drives it like any other policy. It owns the model, a gradient buffer of
// the same flat layout, the AdamW moments (train/optimizer.hpp's update, in double, sequential)
// and, once frozen, a reference copy sharing the model's thread pool. Every result is independent
// of the thread count, and save_state / load_state round-trip bit for bit, so a resumed run ends
// identical to an uninterrupted one.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "grpo/concepts.hpp"
#include "grpo/error.hpp"
#include "grpo/logits.hpp"
#include "grpo/model/parameters.hpp"
#include "grpo/model/policy.hpp"
#include "grpo/model/transformer.hpp"
#include "grpo/safetensors.hpp"
#include "grpo/train/adamw_options.hpp"
#include "grpo/train/communicator.hpp"
#include "grpo/train/optimizer.hpp"

namespace grpo::model {

/// The files a model directory may carry besides its weights, which save_pretrained copies from
/// the directory a policy was loaded from so that the saved directory is complete.
inline constexpr const char* companion_files[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                                  "generation_config.json", "chat_template.jinja"};

/// Copies each companion file that exists in `from` into `to` (io_error naming the file that fails).
inline void copy_companion_files(const std::filesystem::path& from, const std::filesystem::path& to) {
  for (const char* name : companion_files) {
    const auto source = from / name;
    if (!std::filesystem::exists(source)) continue;
    std::error_code ec;
    std::filesystem::copy_file(source, to / name, std::filesystem::copy_options::overwrite_existing, ec);
    GRPO_CHECK(!ec, io_error, (to / name).string(), ": cannot copy from ", source.string(), " (", ec.message(), ")");
  }
}

template <class T = float>
class native_policy {
 public:
  using backend_type = reference_backend<T>;

  /// Takes the weights; `source` is the model directory they came from, if any (save_pretrained
  /// copies its tokenizer files). The optimizer starts with default AdamW settings (reset_optimizer).
  explicit native_policy(parameters<T> weights, transformer_options options = {}, std::filesystem::path source = {})
      : model_(std::move(weights), std::move(options)),
        grads_(model_.config()),
        exp_avg_(model_.config()),
        exp_avg_sq_(model_.config()),
        source_(std::move(source)) {}

  const backend_type& backend() const { return model_.backend(); }
  std::int64_t vocab_size() const { return model_.config().vocab_size; }
  transformer<T>& model() { return model_; }
  const transformer<T>& model() const { return model_; }
  const parameters<T>& gradients() const { return grads_; }
  std::int64_t optimizer_steps() const { return steps_; }
  const train::adamw_options& optimizer_options() const { return options_; }

  tensor<backend_type> forward(const sequence_batch& batch) { return model_.forward(batch, true); }

  /// Adds d sum(d_logits * logits) / d weights of the last forward to the gradients.
  void backward(const tensor<backend_type>& d_logits) { model_.backward(d_logits, grads_); }

  tensor<backend_type> logprobs(const sequence_batch& batch, double temperature) {
    return transformer_policy<T>(model_, temperature).completion_logprobs(batch);
  }

  /// The reference shares the model's thread pool (the two never run at the same time).
  void freeze_reference() {
    reference_.emplace(model_.weights(), transformer_options(0, model_.kernels(), model_.pool()));
  }
  bool has_reference() const { return reference_.has_value(); }

  /// \throws error when no reference was frozen.
  tensor<backend_type> reference_logprobs(const sequence_batch& batch, double temperature) {
    GRPO_CHECK(reference_.has_value(), error, "reference_logprobs: no reference (call freeze_reference first)");
    return transformer_policy<T>(*reference_, temperature).completion_logprobs(batch);
  }

  std::vector<sampled_completion> generate(std::span<const std::vector<token_id>> prompts,
                                           const sampling_options& options, std::uint64_t seed,
                                           std::int64_t group_size) {
    return model_.generate(prompts, options, seed, group_size);
  }

  void zero_grad() { grads_.set_zero(); }
  void all_reduce_gradients(train::communicator& comm) { comm.all_reduce_sum(grads_.values()); }
  double clip_grad_norm(double max_norm) { return train::clip_grad_norm(grads_.values(), max_norm); }

  /// \throws config_error naming the field (train::validate).
  void reset_optimizer(const train::adamw_options& options) {
    train::validate(options);
    options_ = options;
    exp_avg_.set_zero();
    exp_avg_sq_.set_zero();
    steps_ = 0;
  }

  void optimizer_step(double lr) {
    train::adamw_update<T>(options_, steps_ + 1, model_.weights().values(), grads_.values(), exp_avg_.values(),
                           exp_avg_sq_.values(), lr);
    ++steps_;
  }

  /// config.json + model.safetensors, and the tokenizer files of the source directory.
  void save_pretrained(const std::filesystem::path& directory) const {
    model::save_pretrained(model_.weights(), directory);
    if (!source_.empty()) copy_companion_files(source_, directory);
  }

  /// model.safetensors and config.json (the weights), optimizer.safetensors (the moments under
  /// "exp_avg." / "exp_avg_sq." + each weight's name, the step count in the metadata) and, once
  /// frozen, reference.safetensors.
  void save_state(const std::filesystem::path& directory) const {
    safetensors::writer weights;
    weights.add_metadata("format", "pt");
    add_tensors(weights, model_.weights());
    weights.write(directory / "model.safetensors");
    write_config(model_.config(), directory / "config.json");
    safetensors::writer moments;
    add_tensors(moments, exp_avg_, "exp_avg.");
    add_tensors(moments, exp_avg_sq_, "exp_avg_sq.");
    moments.add_metadata("step", std::to_string(steps_));
    moments.write(directory / "optimizer.safetensors");
    if (reference_) {
      safetensors::writer ref;
      add_tensors(ref, reference_->weights());
      ref.write(directory / "reference.safetensors");
    }
  }

  /// Restores what save_state wrote, with `options` as the optimizer's settings; the reference is
  /// restored when the directory has one and dropped otherwise.
  /// \throws io_error naming the file or tensor that is missing or malformed.
  void load_state(const std::filesystem::path& directory, const train::adamw_options& options) {
    reset_optimizer(options);
    read_tensors(safetensors::file::read(directory / "model.safetensors"), model_.weights());
    const auto moments = safetensors::file::read(directory / "optimizer.safetensors");
    read_tensors(moments, exp_avg_, "exp_avg.");
    read_tensors(moments, exp_avg_sq_, "exp_avg_sq.");
    const auto step = moments.metadata().find("step");
    GRPO_CHECK(step != moments.metadata().end(), io_error, moments.source(), ": the metadata lacks \"step\"");
    std::int64_t value = -1;
    std::istringstream(step->second) >> value;
    GRPO_CHECK(value >= 0, io_error, moments.source(), ": metadata \"step\" is not a step count: ", step->second);
    steps_ = value;
    reference_.reset();
    if (std::filesystem::exists(directory / "reference.safetensors")) {
      parameters<T> ref(model_.config());
      read_tensors(safetensors::file::read(directory / "reference.safetensors"), ref);
      reference_.emplace(std::move(ref), transformer_options(0, model_.kernels(), model_.pool()));
    }
  }

  std::string describe() const {
    const auto& c = model_.config();
    std::ostringstream out;
    out << "native transformer: " << c.parameter_count() << " parameters, " << c.num_hidden_layers << " layers, hidden "
        << c.hidden_size << ", vocabulary " << c.vocab_size << ", cpu";
    return out.str();
  }

 private:
  transformer<T> model_;
  std::optional<transformer<T>> reference_;
  parameters<T> grads_;
  parameters<T> exp_avg_;
  parameters<T> exp_avg_sq_;
  train::adamw_options options_{};
  std::int64_t steps_ = 0;
  std::filesystem::path source_;
};

static_assert(trainable_policy<native_policy<float>>);

}  // namespace grpo::model
