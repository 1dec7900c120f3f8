// SPDX-License-Identifier: Apache-2.0
// grpo/logits.hpp: per-token log-probabilities and entropies of sampled ids, read straight from the
// logits [N, V], and their gradient, with O(N) memory beyond the logits and the gradient buffer.
//   logprob_n = z_n[id_n] / T - lse_n,  lse_n = log sum_v exp(z_n[v] / T),  H_n = -sum_v p_nv log p_nv
// H is the entropy bonus S of PPO (Schulman et al. 2017, Eq. 9). As in TRL, veRL and OpenRLHF the
// logits are divided by the sampling temperature T first; unlike their PyTorch paths (veRL's entropy
// materializes softmax(z), TRL chunks it) nothing N x V is allocated, and one backward fuses dlogp and dH.
#pragma once

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "grpo/backend.hpp"
#include "grpo/error.hpp"
#include "grpo/tensor.hpp"
#include "grpo/validate.hpp"

namespace grpo {

/// What token_logprobs returns; every member is [N].
template <tensor_backend B>
struct token_logprob_result {
  tensor<B> logprobs;  ///< log softmax(z / T)[id]
  tensor<B> entropy;   ///< -sum_v p_v log p_v of softmax(z / T)
  tensor<B> lse;       ///< log sum_v exp(z_v / T), saved for the backward
};

namespace detail {

/// "3" for a rank-1 tensor, "[1, 2]" for a rank-2 one: how messages name an element.
inline std::string element_name(const shape& s, std::size_t flat) {
  if (s.rank < 2) return std::to_string(flat);
  const auto cols = static_cast<std::size_t>(s.dims[1]);
  return concat('[', flat / cols, ", ", flat % cols, ']');
}

/// 1 / temperature, for a temperature that is finite and > 0 and whose inverse is finite too
/// (below about 5.6e-309, 1 / temperature overflows to Inf).
inline double inverse_temperature(double temperature, std::string_view name) {
  expect_positive(temperature, name);
  const double inverse = 1.0 / temperature;
  GRPO_CHECK(std::isfinite(inverse), config_error, name, ": must be a finite value > 0 with a finite inverse, got ",
             temperature);
  return inverse;
}

/// Logits must be [N, V] with V >= 1 (N = 0 is allowed: an empty batch).
template <tensor_backend B>
void expect_logits_shape(const tensor<B>& logits, std::string_view name) {
  const auto s = logits.shape();
  GRPO_CHECK(s.rank == 2 && s.dims[1] > 0, shape_error, name,
             ": expected a rank-2 tensor [N, V] with V >= 1, got shape ", to_string(s));
}

/// Every logit finite, checked with O(N) memory. A backend with the count_not_finite hook counts
/// the bad elements in one pass without exponentials. Otherwise: at inverse temperature 0 every
/// finite logit scales to exactly 0 and every NaN or +-Inf to NaN (0 * Inf is NaN), so a row's
/// log-sum-exp is log V when the row is finite and NaN otherwise: an exact element-wise test in
/// one pass over the logits, without the N x V host copy that expect_finite makes. Only when a row
/// fails is the tensor downloaded, to name the first bad element.
template <logits_backend B>
void expect_finite_logits(const tensor<B>& logits, std::string_view name) {
  const auto& b = logits.backend();
  if constexpr (counts_not_finite<B>) {
    if (count_not_finite(b, logits.raw()) == 0) return;
  }
  const auto s = logits.shape();
  const auto rows = s.dims[0], vocab = s.dims[1];
  const auto first_ids =
      make_index(b, std::vector<std::int64_t>(static_cast<std::size_t>(rows), 0), shape::vector(rows));
  const auto lse = download(b, row_softmax_stats(b, logits.raw(), first_ids.raw(), 0.0).lse);
  for (std::size_t n = 0; n < lse.size(); ++n) {
    if (std::isfinite(lse[n])) continue;
    const auto values = logits.to_host();
    for (std::size_t i = n * static_cast<std::size_t>(vocab); i < (n + 1) * static_cast<std::size_t>(vocab); ++i)
      GRPO_CHECK(std::isfinite(values[i]), value_error, name, ": element ", element_name(s, i), " is ", values[i],
                 " (NaN or Inf is not allowed)");
    fail<value_error>(name, ": row ", n, " is not finite (NaN or Inf is not allowed)");
  }
}

/// Host copy of ids of the given shape, every id in [0, vocab); rows whose mask entry is 0 are
/// not range-checked when a host mask [rows] is given (their ids are never read).
template <tensor_backend B>
std::vector<std::int64_t> expect_ids(const index_tensor<B>& ids, const shape& expected, std::int64_t vocab,
                                     std::string_view name, const std::vector<double>* row_mask = nullptr) {
  GRPO_CHECK(ids.shape() == expected, shape_error, name, ": expected shape ", to_string(expected), ", got ",
             to_string(ids.shape()));
  auto host = ids.to_host();
  const auto per_row = static_cast<std::size_t>(expected.cols());
  for (std::size_t i = 0; i < host.size(); ++i) {
    if (row_mask != nullptr && (*row_mask)[i / per_row] == 0.0) continue;
    GRPO_CHECK(host[i] >= 0 && host[i] < vocab, shape_error, name, ": element ", element_name(expected, i), " is ",
               host[i], ", out of range [0, ", vocab, ")");
  }
  return host;
}

}  // namespace detail

/// Per-token log-prob and entropy of the sampled ids at temperature T: the logits are divided by
/// T before the log-softmax, as TRL, veRL and OpenRLHF do.
/// \param logits       [N, V] logits z, finite.
/// \param ids          [N] sampled token ids in [0, V).
/// \param temperature  T > 0, finite, with 1/T finite.
/// \return logprobs, entropy and lse, each [N]; lse is what token_logprobs_backward needs.
/// \throws shape_error naming "logits" or "ids" (bad shape, id out of range), config_error naming
///         "temperature", value_error naming "logits" (NaN or Inf, with the element's [row, column]).
/// Memory: O(N) beyond the logits. The finiteness check is one extra pass over the logits.
/// Numerics: log-sum-exp with a running maximum, so logits of any magnitude stay finite; the
/// entropy is -sum p log p, not lse - sum p z (that form loses 1e-8 absolute at |z| = 1e4).
template <logits_backend B>
token_logprob_result<B> token_logprobs(const tensor<B>& logits, const index_tensor<B>& ids, double temperature = 1.0) {
  detail::expect_logits_shape(logits, "logits");
  const auto s = logits.shape();
  (void)detail::expect_ids(ids, shape::vector(s.dims[0]), s.dims[1], "ids");
  const double inv_t = detail::inverse_temperature(temperature, "temperature");
  detail::expect_finite_logits(logits, "logits");
  const auto& b = logits.backend();
  auto stats = row_softmax_stats(b, logits.raw(), ids.raw(), inv_t);
  return {tensor<B>(b, std::move(stats.logprob)), tensor<B>(b, std::move(stats.entropy)),
          tensor<B>(b, std::move(stats.lse))};
}

/// Gradient of sum_n (d_logprobs[n] logprobs[n] + d_entropy[n] entropy[n]) with respect to the
/// logits, written into `out` [N, V]:
///   d/dz_v = (1/T) [ d_logprobs (1[v = id] - p_v) - d_entropy p_v (log p_v + H) ].
/// \param logits, ids, temperature  exactly those given to token_logprobs (the logits are not
///        scanned for NaN again: token_logprobs has done it).
/// \param forward     token_logprobs' result for them (its lse and entropy are used).
/// \param d_logprobs  [N] upstream gradient of the log-probs, finite.
/// \param d_entropy   [N] upstream gradient of the entropies, finite (zeros when unused).
/// \param out         the gradient [N, V]. It may be logits.raw() itself: the gradient then
///        overwrites the logits in place and no N x V buffer is allocated at all.
/// \throws shape_error naming "logits", "ids", "forward.lse", "forward.entropy", "d_logprobs" or
///         "d_entropy"; config_error naming "temperature"; value_error for non-finite row vectors.
template <logits_backend B>
void token_logprobs_backward(const tensor<B>& logits, const index_tensor<B>& ids, double temperature,
                             const token_logprob_result<B>& forward, const tensor<B>& d_logprobs,
                             const tensor<B>& d_entropy, typename B::tensor_type& out) {
  detail::expect_logits_shape(logits, "logits");
  const auto s = logits.shape();
  const auto row_shape = shape::vector(s.dims[0]);
  (void)detail::expect_ids(ids, row_shape, s.dims[1], "ids");
  const double inv_t = detail::inverse_temperature(temperature, "temperature");
  for (const auto& [t, name] : {std::pair{&forward.lse, "forward.lse"}, std::pair{&forward.entropy, "forward.entropy"},
                                std::pair{&d_logprobs, "d_logprobs"}, std::pair{&d_entropy, "d_entropy"}}) {
    detail::expect_shape(*t, row_shape, name);
    detail::expect_finite(*t, name);
  }
  row_softmax_backward(logits.backend(), logits.raw(), ids.raw(), inv_t, forward.lse.raw(), forward.entropy.raw(),
                       d_logprobs.raw(), d_entropy.raw(), out);
}

}  // namespace grpo
