// SPDX-License-Identifier: Apache-2.0
// grpo/libtorch/device_sampling.hpp: grpo::model::sample_token (grpo/model/sampling.hpp) for every row of
// a [rows, V] logits tensor at once. On an accelerator it runs as tensor ops on the logits' device:
// temperature, top-k then top-p (stable descending sort, ties by lower id), inverse CDF, greedy and both
// log-probs, in double; only the rows' uniforms, drawn on the host from each row's generator as
// sample_token draws them, go there and only ids, log-probs and log-sum-exps come back. On the CPU the
// logits are already on the host, where sample_token itself over each row (rows in parallel) is faster
// than the tensor ops (measured on 2 cores, 16 x 49152 logits at T = 1: 4.6 ms against 18 ms).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include "grpo/concepts.hpp"
#include "grpo/detail/random.hpp"
#include "grpo/error.hpp"
#include "grpo/libtorch/config.hpp"
#include "grpo/model/sampling.hpp"
#include "grpo/reference_backend.hpp"

namespace grpo::libtorch {
inline namespace GRPO_LIBTORCH_NAMESPACE {

/// One sampling step's draws, on the host.
struct step_draws {
  std::vector<model::sampled_token> tokens;  ///< row i's token and log-probs, as model::sample_token gives them
  std::vector<double> lse;  ///< row i's log sum_v exp(z_v / T) (T = 1 when greedy); not finite for bad logits
};

namespace detail {

/// The first column of `condition` ([A, n] bool) that holds in each row, `otherwise` ([A, 1] or a
/// number) where none does; [A, 1] int64. A minimum over the column ids, so no tie rule of argmax matters.
template <class Otherwise>
at::Tensor first_true(const at::Tensor& condition, const at::Tensor& columns, const Otherwise& otherwise) {
  return at::where(condition, columns, otherwise).amin({1}, true);
}

/// sample_token's draws for the rows of `logits` ([A, V] on any device) with the uniforms `uniforms`
/// ([A] on the same device; ignored when greedy), as a [A, 4] float64 tensor there: id, logprob,
/// full_logprob, lse (see sample_tokens for how closely they agree).
inline at::Tensor sample_on_device(const at::Tensor& logits, const at::Tensor& uniforms,
                                   const sampling_options& options) {
  const auto vocab = logits.size(1);
  const auto device = logits.device();
  const auto f64 = at::TensorOptions().dtype(at::kDouble).device(device);
  const auto i64 = at::TensorOptions().dtype(at::kLong).device(device);
  // The values sample_token sees: the logits as float (exact from bf16, f16, f32) or double. From
  // here on in double, as sample_token: its log_p(v) = (1/T) * double(z_v) - lse is reproduced bit for
  // bit apart from lse, which differs from row_logsumexp's online sum by a few ulps of |lse|.
  const auto z = logits.to(logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat);
  const bool greedy = options.temperature == 0.0;
  const double inverse = greedy ? 1.0 : 1.0 / options.temperature;
  const auto x = z.to(at::kDouble).mul(inverse);  // not in place: for double logits, z is the caller's
  const auto lse = at::logsumexp(x, {1}, true);  // [A, 1]
  const auto pack = [&](const at::Tensor& id, const at::Tensor& logprob, const at::Tensor& full_logprob) {
    return at::cat({id.to(at::kDouble), logprob, full_logprob, lse}, 1);
  };
  if (greedy) {  // argmax returns the first of equal maxima (documented), as std::max_element
    const auto best = z.argmax(1, true);
    return pack(best, at::zeros_like(lse), x.gather(1, best) - lse);
  }
  const auto u = uniforms.to(f64).unsqueeze(1);  // [A, 1]
  const bool top_k = options.top_k > 0 && options.top_k < vocab;
  const bool top_p = options.top_p < 1.0;
  if (!top_k && !top_p) {
    // Inverse CDF in id order: the first token of positive probability whose running total exceeds
    // u; when rounding leaves u above the total, the last token of positive probability.
    const auto p = (x - lse).exp_();
    const auto total = p.cumsum(1);
    const auto columns = at::arange(vocab, i64);
    const auto positive = p > 0.0;
    const auto last_positive = at::where(positive, columns, -1).amax({1}, true);
    const auto crossed = first_true(at::logical_and(positive, total > u), columns, vocab);
    // Clamped: a row without positive probability (non-finite logits, reported by lse) still indexes.
    const auto chosen = at::where(crossed < vocab, crossed, last_positive).clamp_min_(0);
    const auto log_p = x.gather(1, chosen) - lse;
    return pack(chosen, log_p, log_p);
  }
  // Most probable first, ties by lower id: a stable descending sort of the logits orders as
  // sample_token's sort of the probabilities (a monotone function of them) with its id tie rule.
  const auto sorted = at::sort(z, true, 1, true);
  const auto kept_k = top_k ? options.top_k : vocab;
  const auto order = std::get<1>(sorted).narrow(1, 0, kept_k);
  const auto sorted_x = std::get<0>(sorted).narrow(1, 0, kept_k).to(at::kDouble).mul(inverse);
  const auto before = (sorted_x - lse).exp_().cumsum(1);  // before[:, j]: mass of the j + 1 most probable
  const auto columns = at::arange(kept_k, i64);
  auto kept = at::full({z.size(0), 1}, kept_k, i64);
  if (top_p)  // the shortest prefix (at least one token) whose mass reaches top_p of the top-k mass
    kept = first_true(before >= before.narrow(1, kept_k - 1, 1) * options.top_p, columns, kept_k - 1) + 1;
  const auto mass = before.gather(1, kept - 1);
  // Renormalized inverse CDF over the kept prefix: the first j < kept - 1 with u * mass < before_j,
  // else the last kept token.
  const auto pick = first_true((before > u * mass).logical_and_(columns < kept - 1), columns, kept - 1);
  const auto id = order.gather(1, pick);
  const auto full_logprob = sorted_x.gather(1, pick) - lse;
  const auto logprob = at::where(kept == vocab, full_logprob, full_logprob - mass.log());
  return pack(id, logprob, full_logprob);
}

/// sample_token over each row of `logits` (the CPU copy as float, or double), rows in parallel; a row with
/// a non-finite lse (left unsampled: its sort would see NaN) still advances its generator.
template <class T>
step_draws sample_on_host(const at::Tensor& logits, std::span<std::mt19937_64* const> generators,
                          const sampling_options& options) {
  const auto rows = logits.size(0), vocab = logits.size(1);
  const T* data = logits.data_ptr<T>();
  const bool greedy = options.temperature == 0.0;
  // The log-sum-exp at the temperature of full_logprob (1 when greedy), as row_softmax_stats computes it.
  const double inverse = greedy ? 1.0 : 1.0 / options.temperature;
  step_draws out;
  out.tokens.resize(static_cast<std::size_t>(rows));
  out.lse.resize(static_cast<std::size_t>(rows));
  at::parallel_for(0, rows, 1, [&](std::int64_t begin, std::int64_t end) {
    std::vector<std::pair<double, token_id>> scratch;
    for (auto i = begin; i < end; ++i) {
      const auto row = static_cast<std::size_t>(i);
      const T* z = data + i * vocab;
      out.lse[row] = grpo::detail::row_logsumexp(grpo::detail::scaled_row<T>{z, vocab, inverse});
      if (std::isfinite(out.lse[row]))
        out.tokens[row] = model::sample_token(std::span<const T>(z, static_cast<std::size_t>(vocab)), out.lse[row],
                                              options, *generators[row], scratch);
      else if (!greedy)
        grpo::detail::uniform01(*generators[row]);
    }
  });
  return out;
}

}  // namespace detail

/// Draws one token for each row of `logits` ([A, V], floating point, any device) as
/// model::sample_token draws it with row i's generator, *generators[i], which advances as sample_token
/// advances it (one uniform01 when options.temperature > 0, none when greedy). On the CPU that is
/// sample_token itself; elsewhere, everything but the A uniforms in and the [A, 4] results out stays on
/// the device, computed in double for all rows at once (detail::sample_on_device).
///
/// Agreement of the device path with sample_token: greedy ids equal; logprob == 0 when greedy and
/// logprob == full_logprob exactly when nothing is truncated; log-probs within ~1e-12 (a few ulps of
/// |lse|). Sampled ids, and with top-p the kept prefix (so logprob), are equal unless a comparison
/// sits within rounding of a boundary: the device's cumulative sums (a parallel scan on GPUs, over
/// probabilities whose lse differs from row_logsumexp's online one by rounding) differ from
/// sample_token's sequential ones by at most about (4 V + 4 |lse| + 8) 2^-53 of the mass compared
/// against (worst case, < 1e-10 for V = 152k and |lse| < 1e3; typically far less), so a draw can
/// differ only where u times the kept mass, or top_p times the top-k mass, lies that close to a
/// cumulative sum: about one draw in 10^10 for random u, or exactly tied probabilities whose top_p
/// boundary falls exactly on a prefix sum (all-equal logits, top_p = 1/2). A row whose logits hold
/// NaN or +Inf, or are all -Inf, comes back with a non-finite lse and a meaningless token.
/// \throws config_error naming "options.*" (model::validate); shape_error naming "logits" (not
///         [A, V] with V > 0, or not floating point) or "generators" (not one per row).
inline step_draws sample_tokens(const at::Tensor& logits, std::span<std::mt19937_64* const> generators,
                                const sampling_options& options) {
  GRPO_CHECK(logits.dim() == 2 && logits.size(1) > 0, shape_error, "logits: must be [rows, V] with V > 0, got ",
             logits.sizes());
  GRPO_CHECK(logits.is_floating_point(), shape_error, "logits: must be floating point, got ",
             at::toString(logits.scalar_type()));
  model::validate(options, logits.size(1));
  const auto rows = logits.size(0);
  GRPO_CHECK(static_cast<std::int64_t>(generators.size()) == rows, shape_error,
             "generators: must be one per logits row (", rows, "), got ", generators.size());
  const at::NoGradGuard no_grad;
  const bool wide = logits.scalar_type() == at::kDouble;
  if (logits.device().is_cpu()) {
    const auto values = logits.to(wide ? at::kDouble : at::kFloat).contiguous();
    return wide ? detail::sample_on_host<double>(values, generators, options)
                : detail::sample_on_host<float>(values, generators, options);
  }
  std::vector<double> uniforms;
  if (options.temperature != 0.0)
    for (auto* gen : generators) uniforms.push_back(grpo::detail::uniform01(*gen));
  auto host_uniforms = at::empty({static_cast<std::int64_t>(uniforms.size())}, at::TensorOptions().dtype(at::kDouble));
  std::copy(uniforms.begin(), uniforms.end(), host_uniforms.data_ptr<double>());
  const auto packed =
      detail::sample_on_device(logits, host_uniforms.to(logits.device()), options).to(at::kCPU).contiguous();
  const double* data = packed.data_ptr<double>();
  step_draws out;
  for (std::int64_t i = 0; i < rows; ++i, data += 4) {
    out.tokens.push_back({static_cast<token_id>(data[0]), data[1], data[2]});
    out.lse.push_back(data[3]);
  }
  return out;
}

}  // namespace GRPO_LIBTORCH_NAMESPACE
}  // namespace grpo::libtorch
