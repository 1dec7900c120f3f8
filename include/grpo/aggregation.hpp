// SPDX-License-Identifier: Apache-2.0
// grpo/aggregation.hpp: reducing a per-token loss L [B, T] to a scalar, with every denominator an
// explicit input.
//
//   token-mean:              sum_{i,t} m L / N_tokens                          (DAPO, Yu et al. 2025, Eq. 12)
//   seq-mean-token-mean:     (1/N_seqs) sum_i sum_t m L / max(|o_i|, 1)         (GRPO, Shao et al. 2024, Eq. 3)
//   seq-mean-token-sum:      (1/N_seqs) sum_i sum_t m L
//   seq-mean-token-sum-norm: (1/N_seqs) sum_i sum_t m L / C                     (Dr. GRPO, Liu et al. 2025, Eq. 2)
//
// Why explicit: the frameworks' normalizer bugs (TRL #3021 / #5619, veRL #5625 / #7321, see
// shared/reference/algorithms.md section 5) all come from dividing each micro-batch by its own
// token count. Here N_tokens, N_seqs and C are computed once from the *final* mask of the whole
// batch (after truncation masking or rejection), and every micro-batch or data-parallel shard is
// divided by the same numbers, so the sum of the shards' losses and gradients is exactly the
// full-batch loss and gradient. |o_i| is per sequence and so needs no global knowledge.
#pragma once

#include <algorithm>

#include "grpo/config.hpp"
#include "grpo/tensor.hpp"
#include "grpo/validate.hpp"

namespace grpo {

/// The global denominators of one optimizer step's batch.
struct loss_denominators {
  double tokens = 1.0;     ///< N_tokens: valid tokens in the whole batch (token-mean)
  double sequences = 1.0;  ///< N_seqs: sequences in the whole batch (seq-mean-*)
  double constant = 1.0;   ///< C: the Dr. GRPO constant, e.g. max_completion_length (seq-mean-token-sum-norm)
};

/// Denominators of a full batch from its final mask [B, T]. N_tokens = max(sum m, 1) (an
/// all-masked batch then has loss 0, not NaN); N_seqs = B, counting fully masked rows as TRL and
/// veRL do, unless count_empty_sequences is false; C = constant.
template <tensor_backend B>
loss_denominators denominators_from_mask(const tensor<B>& mask, double constant = 1.0,
                                         bool count_empty_sequences = true) {
  detail::expect_rank(mask, 2, "mask");
  detail::expect_mask(mask, "mask");
  detail::expect_positive(constant, "constant");
  loss_denominators d;
  d.tokens = std::max(sum(mask).item(), 1.0);
  if (count_empty_sequences) {
    d.sequences = static_cast<double>(mask.shape().dims[0]);
  } else {
    d.sequences = sum(greater(sum_rows(mask), 0.0)).item();
  }
  d.sequences = std::max(d.sequences, 1.0);
  d.constant = constant;
  return d;
}

inline void validate(const loss_denominators& d) {
  detail::expect_positive(d.tokens, "denominators.tokens");
  detail::expect_positive(d.sequences, "denominators.sequences");
  detail::expect_positive(d.constant, "denominators.constant");
}

/// W [B, T] = d aggregate / d L: the weight of each token's loss in the scalar. aggregate(L) is
/// sum(W * L), and the gradient of the scalar with respect to anything flows through W.
template <tensor_backend B>
tensor<B> aggregation_weights(const tensor<B>& mask, loss_aggregation mode, const loss_denominators& d) {
  detail::expect_rank(mask, 2, "mask");
  validate(d);
  switch (mode) {
    case loss_aggregation::token_mean: return mask / d.tokens;
    case loss_aggregation::seq_mean_token_mean: {
      const auto lengths = maximum(sum_rows(mask), 1.0);
      return mask / (expand_rows(lengths, mask.shape().dims[1]) * d.sequences);
    }
    case loss_aggregation::seq_mean_token_sum: return mask / d.sequences;
    case loss_aggregation::seq_mean_token_sum_norm: return mask / (d.sequences * d.constant);
  }
  detail::fail<config_error>("loss_agg_mode: unknown value");
}

/// sum(W * L) as a rank-0 tensor.
template <tensor_backend B>
tensor<B> aggregate(const tensor<B>& per_token, const tensor<B>& weights) {
  return sum(per_token * weights);
}

}  // namespace grpo
