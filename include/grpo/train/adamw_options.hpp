// SPDX-License-Identifier: Apache-2.0
// grpo/train/adamw_options.hpp: the hyper-parameters of the AdamW update every trainable policy
// applies to its own weights (Loshchilov & Hutter 2019, Algorithm 2, in PyTorch's form), with the
// names and defaults of transformers' TrainingArguments. The update itself lives with the weights:
// train/optimizer.hpp for host buffers, the LibTorch policy for torch tensors.
#pragma once

#include <cmath>

#include "grpo/error.hpp"
#include "grpo/validate.hpp"

namespace grpo::train {

/// AdamW hyper-parameters (TRL / transformers TrainingArguments names and defaults).
struct adamw_options {
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.999;
  double adam_epsilon = 1e-8;
  double weight_decay = 0.0;

  friend bool operator==(const adamw_options&, const adamw_options&) = default;
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

}  // namespace grpo::train
