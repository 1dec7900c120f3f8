// SPDX-License-Identifier: Apache-2.0
// grpo/grpo.hpp: the umbrella header: the whole header-only core (standard library only).
#pragma once

#include "grpo/advantages.hpp"
#include "grpo/aggregation.hpp"
#include "grpo/backend.hpp"
#include "grpo/concepts.hpp"
#include "grpo/config.hpp"
#include "grpo/distillation.hpp"
#include "grpo/error.hpp"
#include "grpo/kl_controller.hpp"
#include "grpo/logits.hpp"
#include "grpo/logits_policy_loss.hpp"
#include "grpo/policy_loss.hpp"
#include "grpo/reference_backend.hpp"
#include "grpo/safetensors.hpp"
#include "grpo/tensor.hpp"
#include "grpo/validate.hpp"
#include "grpo/value_loss.hpp"
#include "grpo/version.hpp"
