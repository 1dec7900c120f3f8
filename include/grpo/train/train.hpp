// SPDX-License-Identifier: Apache-2.0
// grpo/train/train.hpp: everything of the trainer in one include: optimizer and schedules, TOML
// config, metrics, checkpoints, the communicator, evaluation and the R1-recipe trainer.
#pragma once

#include "grpo/train/checkpoint.hpp"
#include "grpo/train/communicator.hpp"
#include "grpo/train/config.hpp"
#include "grpo/train/evaluation.hpp"
#include "grpo/train/metrics.hpp"
#include "grpo/train/optimizer.hpp"
#include "grpo/train/toml.hpp"
#include "grpo/train/trainer.hpp"
