// SPDX-License-Identifier: Apache-2.0
// grpo/model/model.hpp: everything of grpo's native transformer policy: config (config.json),
// parameters (flat weights, safetensors), the reference (oracle) and fast forward/backward,
// cached batched sampling and the grpo::policy adapter. Standard library only.
#pragma once

#include "grpo/model/batch.hpp"
#include "grpo/model/config.hpp"
#include "grpo/model/kernels.hpp"
#include "grpo/model/parameters.hpp"
#include "grpo/model/policy.hpp"
#include "grpo/model/reference.hpp"
#include "grpo/model/sampling.hpp"
#include "grpo/model/thread_pool.hpp"
#include "grpo/model/transformer.hpp"
