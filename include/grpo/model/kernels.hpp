// SPDX-License-Identifier: Apache-2.0
// grpo/model/kernels.hpp: the CPU kernels of the native transformer, in four headers:
//   instruction_sets.hpp  the instruction sets (generic, AVX2 + FMA, AVX-512) and their run-time choice
//   gemm.hpp              the blocked matrix product and its register tiles
//   attention_kernels.hpp causal attention for training and for cached decoding, on the same tile
//   layer_rows.hpp        RMSNorm, rotary embedding and SwiGLU, one token at a time
// Reproducibility: every output element is computed by one task with a reduction order that depends only on the
// inner dimension, so results do not depend on the thread count, the tiling or the other rows of the batch; that
// is what makes sampled log-probs equal training log-probs.
#pragma once

#include "grpo/model/attention_kernels.hpp"
#include "grpo/model/gemm.hpp"
#include "grpo/model/instruction_sets.hpp"
#include "grpo/model/layer_rows.hpp"
