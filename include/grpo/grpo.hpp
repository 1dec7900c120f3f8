// SPDX-License-Identifier: Apache-2.0
// grpo/grpo.hpp: the umbrella header: the whole header-only core (standard library only).
#pragma once

#include "grpo/aggregation.hpp"
#include "grpo/backend.hpp"
#include "grpo/concepts.hpp"
#include "grpo/config.hpp"
#include "grpo/error.hpp"
#include "grpo/reference_backend.hpp"
#include "grpo/tensor.hpp"
#include "grpo/validate.hpp"
#include "grpo/version.hpp"
