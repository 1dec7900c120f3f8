// SPDX-License-Identifier: Apache-2.0
// grpo/train/optimizer.hpp: what turns a gradient into a weight update: AdamW (Loshchilov & Hutter
// 2019, "Decoupled Weight Decay Regularization", Algorithm 2, in PyTorch's form: p *= 1 - lr wd,
// then p -= lr m_hat / (sqrt(v_hat) + eps)), gradient clipping by the global L2 norm (PyTorch's
// clip_grad_norm_: scale by max_norm / (norm + 1e-6) when norm > max_norm) and the learning-rate
// schedules of Hugging Face's get_scheduler (linear warmup, then cosine, linear or constant).
// Every sum runs sequentially in double, so the update is the same on any thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numbers>
#include <span>
#include <string>
#include <string_view>

#include "grpo/error.hpp"
#include "grpo/model/parameters.hpp"
#include "grpo/validate.hpp"

namespace grpo::train {

/// AdamW hyper-parameters (TRL / transformers TrainingArguments names and defaults).
struct adamw_options {
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.999;
  double adam_epsilon = 1e-8;
  double weight_decay = 0.0;
};

/// Throws config_error naming the field: betas in [0, 1), epsilon > 0, weight_decay >= 0.
inline void validate(const adamw_options& o) {
  GRPO_CHECK(std::isfinite(o.adam_beta1) && o.adam_beta1 >= 0 && o.adam_beta1 < 1, config_error,
             "adam_beta1: must be in [0, 1), got ", o.adam_beta1);
  GRPO_CHECK(std::isfinite(o.adam_beta2) && o.adam_beta2 >= 0 && o.adam_beta2 < 1, config_error,
             "adam_beta2: must be in [0, 1), got ", o.adam_beta2);
  grpo::detail::expect_positive(o.adam_epsilon, "adam_epsilon");
  grpo::detail::expect_non_negative(o.weight_decay, "weight_decay");
}

/// AdamW over a flat parameter buffer. The moments have the parameters' layout, so a checkpoint
/// stores them under the weights' names.
template <class T>
class adamw {
 public:
  /// Zero moments for `config`'s layout; validates the options.
  adamw(const model::transformer_config& config, adamw_options options)
      : options_(options), exp_avg_(config), exp_avg_sq_(config) {
    validate(options_);
  }

  /// One update of `weights` with `grads` at learning rate `lr` (>= 0, finite).
  /// \throws shape_error naming "grads" when the layouts differ, config_error naming "lr".
  void step(model::parameters<T>& weights, const model::parameters<T>& grads, double lr) {
    GRPO_CHECK(grads.size() == weights.size() && weights.size() == exp_avg_.size(), shape_error,
               "grads: expected ", exp_avg_.size(), " values, got ", grads.size());
    GRPO_CHECK(std::isfinite(lr) && lr >= 0, config_error, "lr: must be a finite value >= 0, got ", lr);
    ++steps_;
    const double b1 = options_.adam_beta1, b2 = options_.adam_beta2;
    const double c1 = 1.0 - std::pow(b1, static_cast<double>(steps_));
    const double c2 = 1.0 - std::pow(b2, static_cast<double>(steps_));
    const double decay = 1.0 - lr * options_.weight_decay;
    T* p = weights.data();
    const T* g = grads.data();
    T* m = exp_avg_.data();
    T* v = exp_avg_sq_.data();
    for (std::size_t i = 0; i < weights.size(); ++i) {
      const double gi = static_cast<double>(g[i]);
      const double mi = b1 * static_cast<double>(m[i]) + (1.0 - b1) * gi;
      const double vi = b2 * static_cast<double>(v[i]) + (1.0 - b2) * gi * gi;
      m[i] = static_cast<T>(mi);
      v[i] = static_cast<T>(vi);
      const double update = (mi / c1) / (std::sqrt(vi / c2) + options_.adam_epsilon);
      p[i] = static_cast<T>(static_cast<double>(p[i]) * decay - lr * update);
    }
  }

  const adamw_options& options() const { return options_; }
  std::int64_t steps() const { return steps_; }
  void set_steps(std::int64_t steps) { steps_ = steps; }
  model::parameters<T>& exp_avg() { return exp_avg_; }
  model::parameters<T>& exp_avg_sq() { return exp_avg_sq_; }
  const model::parameters<T>& exp_avg() const { return exp_avg_; }
  const model::parameters<T>& exp_avg_sq() const { return exp_avg_sq_; }

 private:
  adamw_options options_;
  model::parameters<T> exp_avg_;
  model::parameters<T> exp_avg_sq_;
  std::int64_t steps_ = 0;
};

/// The global L2 norm of `grads` (summed in double, in order) and, when it exceeds max_norm,
/// `grads` scaled by max_norm / (norm + 1e-6) as PyTorch's clip_grad_norm_. max_norm <= 0 only
/// measures. Returns the norm before clipping.
/// \throws value_error naming "grads" when the norm is not finite (a NaN or Inf gradient).
template <class T>
double clip_grad_norm(std::span<T> grads, double max_norm) {
  double squares = 0.0;
  for (const T g : grads) squares += static_cast<double>(g) * static_cast<double>(g);
  const double norm = std::sqrt(squares);
  GRPO_CHECK(std::isfinite(norm), value_error, "grads: the global norm is ", norm, " (a NaN or Inf gradient)");
  if (max_norm > 0 && norm > max_norm) {
    const double scale = max_norm / (norm + 1e-6);
    for (T& g : grads) g = static_cast<T>(static_cast<double>(g) * scale);
  }
  return norm;
}

/// The learning-rate schedules of transformers' get_scheduler.
enum class lr_scheduler { linear, cosine, constant };

/// "linear", "cosine" or "constant" (which keeps the warmup, as constant_with_warmup).
inline lr_scheduler parse_lr_scheduler(std::string_view name, std::string_view argument = "lr_scheduler_type") {
  if (name == "linear") return lr_scheduler::linear;
  if (name == "cosine") return lr_scheduler::cosine;
  if (name == "constant" || name == "constant_with_warmup") return lr_scheduler::constant;
  grpo::detail::fail<config_error>(argument, ": unknown scheduler \"", name, "\" (expected linear, cosine or constant)");
}

inline std::string_view to_string(lr_scheduler s) {
  return s == lr_scheduler::linear ? "linear" : s == lr_scheduler::cosine ? "cosine" : "constant";
}

/// Warmup steps of a run: ceil(warmup_ratio * total_steps), as transformers.
inline std::int64_t warmup_steps(double warmup_ratio, std::int64_t total_steps) {
  return static_cast<std::int64_t>(std::ceil(warmup_ratio * static_cast<double>(total_steps)));
}

/// The learning rate of optimizer step `step` (0-based) of `total_steps`: base * step / warmup
/// during the warmup, then for cosine base * 0.5 (1 + cos(pi progress)), for linear
/// base * (1 - progress), for constant base, with progress = (step - warmup) / (total - warmup).
/// \throws config_error naming "warmup_ratio" (outside [0, 1]) or "total_steps" (< 1).
inline double learning_rate_at(lr_scheduler kind, double base, double warmup_ratio, std::int64_t total_steps,
                               std::int64_t step) {
  GRPO_CHECK(std::isfinite(warmup_ratio) && warmup_ratio >= 0 && warmup_ratio <= 1, config_error,
             "warmup_ratio: must be in [0, 1], got ", warmup_ratio);
  GRPO_CHECK(total_steps >= 1, config_error, "total_steps: must be >= 1, got ", total_steps);
  const std::int64_t warmup = warmup_steps(warmup_ratio, total_steps);
  if (step < warmup) return base * static_cast<double>(step) / static_cast<double>(std::max<std::int64_t>(1, warmup));
  if (kind == lr_scheduler::constant) return base;
  const double progress =
      static_cast<double>(step - warmup) / static_cast<double>(std::max<std::int64_t>(1, total_steps - warmup));
  if (kind == lr_scheduler::linear) return base * std::max(0.0, 1.0 - progress);
  return base * 0.5 * (1.0 + std::cos(std::numbers::pi * std::min(progress, 1.0)));
}

}  // namespace grpo::train
