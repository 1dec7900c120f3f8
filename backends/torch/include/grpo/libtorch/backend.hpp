// SPDX-License-Identifier: Apache-2.0
// grpo/libtorch/backend.hpp: grpo::libtorch::backend, the LibTorch model of grpo::logits_backend: its tensor
// operations (grpo/libtorch/tensor_ops.hpp) and row primitives (grpo/libtorch/row_primitives.hpp), so the generic
// algorithms of include/grpo run on torch tensors and torch autograd differentiates them (the "composite paths").
// Exactness and autograd come before speed here: the fused Functions are in grpo/libtorch/autograd.hpp. Where
// autograd records nothing, CPU fp32 and fp64 tensors take the fused policy loss and GRPO advantages of
// grpo/libtorch/fused_losses.hpp (included at the end, after the concept can see every operation).
#pragma once

#include <ATen/ATen.h>

#include "grpo/backend.hpp"
#include "grpo/libtorch/config.hpp"
#include "grpo/libtorch/row_primitives.hpp"
#include "grpo/libtorch/tensor_ops.hpp"
#include "grpo/tensor.hpp"

namespace grpo::libtorch {
inline namespace GRPO_LIBTORCH_NAMESPACE {

static_assert(logits_backend<backend>);

/// t as a grpo::tensor of backend b, for calling the generic algorithms of include/grpo on torch tensors (the
/// composite paths: torch autograd then differentiates every elementwise step). Defined after the operations
/// because naming tensor<backend> checks the concept, which must see all of them.
inline tensor<backend> wrap(const backend& b, const at::Tensor& t) { return {b, t}; }
inline index_tensor<backend> wrap_index(const backend& b, const at::Tensor& ids) { return {b, ids}; }

}  // namespace GRPO_LIBTORCH_NAMESPACE
}  // namespace grpo::libtorch

// The fused algorithm paths, built on the operations above and on wrap.
#include "grpo/libtorch/fused_losses.hpp"
