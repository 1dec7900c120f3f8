// SPDX-License-Identifier: Apache-2.0
// grpo/train/train.hpp: everything of the trainer in one include: the generic trainer over
// grpo::trainable_policy and its rooms (rollout, batching, update, cold start, checkpoints,
// evaluation, metrics), the optimizer and schedules, the TOML config, the communicator, and the
// assembly of the built-in run (setup.hpp).
#pragma once

#include "grpo/train/batching.hpp"
#include "grpo/train/checkpoint.hpp"
#include "grpo/train/codec.hpp"
#include "grpo/train/cold_start.hpp"
#include "grpo/train/communicator.hpp"
#include "grpo/train/config.hpp"
#include "grpo/train/evaluation.hpp"
#include "grpo/train/metrics.hpp"
#include "grpo/train/optimizer.hpp"
#include "grpo/train/rollout.hpp"
#include "grpo/train/setup.hpp"
#include "grpo/train/toml.hpp"
#include "grpo/train/trainer.hpp"
#include "grpo/train/update.hpp"
