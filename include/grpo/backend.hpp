// SPDX-License-Identifier: Apache-2.0
// grpo/backend.hpp: the tensor-backend concept every algorithm of grpo is written against.
//
// concept tensor_backend<B> {
//   B is a small copyable object (a stream handle, a device, or nothing) passed first to every call.
//   B::tensor_type   dense row-major floating-point tensor of rank 0, 1 or 2 (its dtype is the
//                    backend's business: the reference backend stores T, LibTorch keeps the
//                    torch::Tensor's dtype, the CUDA backend device memory of fp32 or fp64).
//   B::index_type    dense row-major int64 tensor of rank 1 or 2 (token ids, group ids).
//   Operations are free functions found by argument-dependent lookup in B's namespace, B first:
//     shape_of(b, t) -> shape                      upload(b, span<const double>, shape) -> tensor
//     download(b, t) -> vector<double>             fill(b, shape, double) -> tensor
//     upload_index(b, span<const int64>, shape)    index_shape_of(b, idx) -> shape
//     download_index(b, idx) -> vector<int64>
//     unary(b, unary_op, t)                        elementwise f(t)
//     binary(b, binary_op, t, u)                   elementwise t op u, equal shapes
//     binary(b, binary_op, t, double) / (b, op, double, t)   with a scalar on one side
//     select(b, cond, t, u)                        cond != 0 ? t : u, equal shapes
//     sum(b, t) -> rank-0                          sum_rows(b, [R,C]) -> [R]
//     sum_segments(b, [N], ids [N], S) -> [S]      gather(b, [S], ids [N]) -> [N]
//     expand_rows(b, [R], C) -> [R,C]              reshape(b, t, shape)
//     shift_left(b, [R,C]) -> [R,C]                out[r][c] = t[r][c+1], last column 0
//     reverse_scan_rows(b, x [R,C], decay [R,C])   y[c] = x[c] + decay[c] * y[c+1], y[C] = 0
//   Reductions accumulate in double whatever the storage type.
//   Optional: stop_gradient(b, t) -> tensor, the values of t as a constant of differentiation, for
//   backends whose operations are differentiated (LibTorch: detach); algorithms use it where a
//   formula holds a differentiable input constant, and the identity when a backend lacks it.
//   Optional: count_not_finite(b, t) and count_not_binary(b, t) -> std::int64_t, the number of
//   elements that are NaN or +-Inf, and that are neither 0 nor 1, counted where t lives; the
//   input checks (validate.hpp) use them to skip downloading a valid tensor to the host.
//   Optional fused paths: a backend may compute the whole of an algorithm in one pass, with the algorithm's
//   semantics (the conformance suite holds it to the reference like any other path); the algorithm calls it
//   after its own input checks, where it exists:
//     fused_policy_loss(b, inputs, options, denominators) -> optional<policy_loss_result>  (policy_loss.hpp;
//       nullopt when a value check fails, so that the generic checks name the input)
//     fused_grpo_advantages(b, scores, group ids, groups, options) -> optional<advantage_result> (advantages.hpp;
//       nullopt where the backend leaves the scores to the generic path)
//   grpo::cccl's host systems define both (host_fused.hpp), as does grpo::libtorch for CPU fp32 and fp64 tensors
//   (libtorch/fused_losses.hpp); both run the core's host row kernels (grpo/host/policy_rows.hpp, group_stats.hpp).
// }
//
// concept logits_backend<B> refines it with the row-wise softmax primitives that need one pass
// over a [N, V] logits row (see logits_op below). Those are the places where a backend fuses;
// everything else is composed from the elementwise operations above by the generic algorithms,
// so a backend whose operations are differentiable (LibTorch) yields differentiable losses and a
// backend that runs plain C++ functors (Thrust on CPP, OMP or CUDA) models each operation with
// one transform or reduction.
//
// A minimal conforming backend is grpo::reference_backend<T> (reference_backend.hpp); its
// definition ends with static_assert(logits_backend<reference_backend<double>>).
#pragma once

#include <array>
#include <concepts>
#include <cstdint>
#include <span>
#include <sstream>
#include <string>
#include <vector>

namespace grpo {

/// Shape of a rank-0, rank-1 or rank-2 tensor. Unused trailing extents are 1.
struct shape {
  int rank = 0;
  std::array<std::int64_t, 2> dims{1, 1};

  static constexpr shape scalar() { return {0, {1, 1}}; }
  static constexpr shape vector(std::int64_t n) { return {1, {n, 1}}; }
  static constexpr shape matrix(std::int64_t rows, std::int64_t cols) { return {2, {rows, cols}}; }

  constexpr std::int64_t numel() const { return dims[0] * dims[1]; }
  constexpr std::int64_t rows() const { return rank == 0 ? 1 : dims[0]; }
  constexpr std::int64_t cols() const { return rank == 2 ? dims[1] : 1; }
  friend constexpr bool operator==(const shape&, const shape&) = default;
};

inline std::string to_string(const shape& s) {
  std::ostringstream out;
  out << '[';
  for (int d = 0; d < s.rank; ++d) out << (d ? "," : "") << s.dims[static_cast<std::size_t>(d)];
  out << ']';
  return out.str();
}

/// Elementwise unary operations. Their exact definitions (the reference backend implements them):
/// is_nan and is_finite return 1 or 0; sign returns -1, 0 or +1; sigmoid is 1 / (1 + e^-x).
enum class unary_op { neg, exp, expm1, log, log1p, abs, square, sqrt, sign, reciprocal, is_nan, is_finite, sigmoid };

/// Elementwise binary operations. Comparisons return 1 or 0. minimum(a, b) is (b < a ? b : a)
/// and maximum(a, b) is (a < b ? b : a); inputs are validated finite before they reach them.
enum class binary_op { add, sub, mul, div, minimum, maximum, less, less_equal, greater, greater_equal, equal };

template <class B>
concept tensor_backend =
    std::copy_constructible<B> &&
    requires(const B& b, const typename B::tensor_type& t, const typename B::index_type& idx,
             std::span<const double> host, std::span<const std::int64_t> host_idx, shape s, unary_op u,
             binary_op op, double x, std::int64_t n) {
      { shape_of(b, t) } -> std::same_as<shape>;
      { upload(b, host, s) } -> std::same_as<typename B::tensor_type>;
      { download(b, t) } -> std::same_as<std::vector<double>>;
      { fill(b, s, x) } -> std::same_as<typename B::tensor_type>;
      { upload_index(b, host_idx, s) } -> std::same_as<typename B::index_type>;
      { index_shape_of(b, idx) } -> std::same_as<shape>;
      { download_index(b, idx) } -> std::same_as<std::vector<std::int64_t>>;
      { unary(b, u, t) } -> std::same_as<typename B::tensor_type>;
      { binary(b, op, t, t) } -> std::same_as<typename B::tensor_type>;
      { binary(b, op, t, x) } -> std::same_as<typename B::tensor_type>;
      { binary(b, op, x, t) } -> std::same_as<typename B::tensor_type>;
      { select(b, t, t, t) } -> std::same_as<typename B::tensor_type>;
      { sum(b, t) } -> std::same_as<typename B::tensor_type>;
      { sum_rows(b, t) } -> std::same_as<typename B::tensor_type>;
      { sum_segments(b, t, idx, n) } -> std::same_as<typename B::tensor_type>;
      { gather(b, t, idx) } -> std::same_as<typename B::tensor_type>;
      { expand_rows(b, t, n) } -> std::same_as<typename B::tensor_type>;
      { reshape(b, t, s) } -> std::same_as<typename B::tensor_type>;
      { shift_left(b, t) } -> std::same_as<typename B::tensor_type>;
      { reverse_scan_rows(b, t, t) } -> std::same_as<typename B::tensor_type>;
    };

/// Per-row statistics of softmax(s z) for a [N, V] logits tensor z at inverse temperature s and
/// target ids [N]: lse = log sum_v exp(s z_v), log p_v = s z_v - lse, entropy = -sum_v p_v log p_v.
template <class Tensor>
struct softmax_row_stats {
  Tensor lse;       ///< [N] log-sum-exp of the scaled row
  Tensor entropy;   ///< [N] -sum p log p
  Tensor logprob;   ///< [N] log p[target]
};

/// row_divergence computes, between teacher P = softmax(s zt) and student
/// Q = softmax(s zs): the generalized Jensen-Shannon divergence with mixture M = beta P + (1-beta) Q,
/// JSD_beta = beta KL(P||M) + (1-beta) KL(Q||M) for 0 < beta < 1, and by definition beta = 0:
/// KL(P||Q) (forward) and beta = 1: KL(Q||P) (reverse), as TRL's GKD does (Agarwal et al. 2024,
/// "On-policy distillation of language models", Eq. 1). The interior formula itself vanishes at
/// both ends (JSD_beta ~ beta KL(P||Q) as beta -> 0), so the end points are not its limits.
/// The gradient is taken with respect to the student logits zs.
template <class B>
concept logits_backend =
    tensor_backend<B> &&
    requires(const B& b, const typename B::tensor_type& t, typename B::tensor_type& out,
             const typename B::index_type& idx, double x) {
      // {lse, entropy, logprob} per row of softmax(x * t) with targets idx. A row holding NaN or
      // +-Inf must give a non-finite lse at x = 0 (0 * Inf = NaN must propagate, so no NaN-skipping
      // max): that is how the algorithms validate logits with O(N) memory. -inf entries have
      // probability 0; a row that is -inf everywhere is unspecified.
      { row_softmax_stats(b, t, idx, x) } -> std::same_as<softmax_row_stats<typename B::tensor_type>>;
      // Every primitive below writing `out` [N,V]: out is written in place when it already has the
      // logits' shape (otherwise the backend allocates it), and it may be the (student) logits
      // tensor itself, the gradient then overwriting the logits with no N x V temporary.
      // Writes d/dz of sum_n (g_logprob[n] logprob[n] + g_entropy[n] entropy[n]) into out [N,V].
      // Arguments: logits, ids, inverse temperature, lse, entropy, g_logprob, g_entropy, out.
      { row_softmax_backward(b, t, idx, x, t, t, t, t, out) } -> std::same_as<void>;
      // Per-row divergence of (student, teacher, inverse temperature, beta) and its gradient with
      // respect to the student logits scaled by the per-row weights w [N]:
      // returns loss [N]; writes out[n, v] = w[n] d loss[n] / d zs[n, v].
      { row_divergence(b, t, t, x, x, t, out) } -> std::same_as<typename B::tensor_type>;
      // Forward KL restricted to a sparse teacher: for each row, K (id, teacher log-prob) pairs.
      // Arguments: student logits [N,V], teacher ids [N,K], teacher log-probs [N,K], inverse
      // temperature, weights w [N], out [N,V]. Returns loss [N]; out = w d loss / d zs.
      { row_sparse_forward_kl(b, t, idx, t, x, t, out) } -> std::same_as<typename B::tensor_type>;
    };

}  // namespace grpo
