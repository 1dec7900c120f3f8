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
#include "grpo/train/adamw_options.hpp"
#include "grpo/validate.hpp"

namespace grpo::train {

/// One AdamW update of flat buffers (weights, their gradients and the two moments, all of one
/// size), the `step`-th of the run (1-based: the bias corrections use it), at learning rate `lr`.
/// Every value is updated in double and rounded once, sequentially, so the result does not
/// depend on the thread count.
/// \throws shape_error naming "grads" when the sizes differ, config_error naming "lr" or "step".
template <class T>
void adamw_update(const adamw_options& options, std::int64_t step, std::span<T> weights, std::span<const T> grads,
                  std::span<T> exp_avg, std::span<T> exp_avg_sq, double lr) {
  GRPO_CHECK(grads.size() == weights.size() && exp_avg.size() == weights.size() && exp_avg_sq.size() == weights.size(),
             shape_error, "grads: expected ", weights.size(), " values (and moments of that size), got ", grads.size());
  GRPO_CHECK(std::isfinite(lr) && lr >= 0, config_error, "lr: must be a finite value >= 0, got ", lr);
  GRPO_CHECK(step >= 1, config_error, "step: must be >= 1, got ", step);
  const double b1 = options.adam_beta1, b2 = options.adam_beta2;
  const double c1 = 1.0 - std::pow(b1, static_cast<double>(step));
  const double c2 = 1.0 - std::pow(b2, static_cast<double>(step));
  const double decay = 1.0 - lr * options.weight_decay;
  for (std::size_t i = 0; i < weights.size(); ++i) {
    const double gi = static_cast<double>(grads[i]);
    const double mi = b1 * static_cast<double>(exp_avg[i]) + (1.0 - b1) * gi;
    const double vi = b2 * static_cast<double>(exp_avg_sq[i]) + (1.0 - b2) * gi * gi;
    exp_avg[i] = static_cast<T>(mi);
    exp_avg_sq[i] = static_cast<T>(vi);
    const double update = (mi / c1) / (std::sqrt(vi / c2) + options.adam_epsilon);
    weights[i] = static_cast<T>(static_cast<double>(weights[i]) * decay - lr * update);
  }
}

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
