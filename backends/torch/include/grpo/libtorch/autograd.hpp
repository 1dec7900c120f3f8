// SPDX-License-Identifier: Apache-2.0
// grpo/libtorch/autograd.hpp: the fused paths of the LibTorch backend, as torch::autograd::Functions on at::Tensor.
// token_logprobs: log p[id] and H of softmax(z / T) per row in chunks, backward (1/T)[g_logp (onehot - p) -
// g_H p (log p + H)] recomputing p (no N x V tensor is kept between forward and backward). The losses (policy,
// value, distillation, SFT) run the generic algorithm of include/grpo once with autograd off and hand its exact
// analytic gradient to autograd, instead of recording every elementwise op. Same numbers as the composite paths, but
// for the policy loss on CPU fp32 / fp64 tensors, which with autograd off takes the backend's fused host path
// (fused_losses.hpp: the same formulas, rounded in another order).
#pragma once

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cstdint>
#include <optional>
#include <utility>

#include "grpo/aggregation.hpp"
#include "grpo/distillation.hpp"
#include "grpo/libtorch/backend.hpp"
#include "grpo/libtorch/config.hpp"
#include "grpo/logits.hpp"
#include "grpo/policy_loss.hpp"
#include "grpo/tensor.hpp"
#include "grpo/value_loss.hpp"

namespace grpo::libtorch {
inline namespace GRPO_LIBTORCH_NAMESPACE {

namespace detail {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

inline std::int64_t dtype_code(at::ScalarType t) { return static_cast<std::int64_t>(t); }
inline at::ScalarType dtype_of(std::int64_t code) { return static_cast<at::ScalarType>(code); }
inline at::ScalarType dtype_of(const at::IValue& code) { return dtype_of(code.toInt()); }

/// A loss computed with autograd off, with its gradients with respect to one or two inputs.
struct analytic_loss {
  at::Tensor loss;    ///< rank 0
  at::Tensor first;   ///< d loss / d first input
  at::Tensor second;  ///< d loss / d second input (undefined when there is none)
};

/// Connects a loss computed outside autograd to its inputs: backward returns grad_output times the saved analytic
/// gradients, in each input's dtype. `second` is optional (the entropy of the policy loss); the gradients ride in
/// a non-tensor argument so that autograd does not treat them as inputs.
struct analytic_loss_function : public torch::autograd::Function<analytic_loss_function> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& first, const c10::optional<at::Tensor>& second,
                            const analytic_loss& computed) {
    const bool has_second = second.has_value() && second->defined();
    ctx->save_for_backward({computed.first, has_second ? computed.second : at::Tensor()});
    ctx->saved_data["first_dtype"] = dtype_code(first.scalar_type());
    ctx->saved_data["second_dtype"] = dtype_code(has_second ? second->scalar_type() : first.scalar_type());
    ctx->saved_data["has_second"] = has_second;
    return computed.loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const auto& g = grad_outputs[0];
    // g (rank 0) is not rounded to the saved gradient's dtype first: a bf16 gradient would be rounded twice, and an
    // fp16 one would see a loss scale of 65536 (GradScaler's default) become inf. The 0-dim g does not promote grad.
    const auto scaled = [&](const at::Tensor& grad, const char* dtype_key) {
      return (grad * g).to(dtype_of(ctx->saved_data[dtype_key]));
    };
    // Edge 0 is the first input; edge 1 exists only when the second was given.
    at::Tensor d_first, d_second;
    if (ctx->needs_input_grad(0)) d_first = scaled(saved[0], "first_dtype");
    if (ctx->saved_data["has_second"].toBool() && ctx->needs_input_grad(1)) d_second = scaled(saved[1], "second_dtype");
    return {d_first, d_second, at::Tensor()};
  }
};

inline at::Tensor attach(const at::Tensor& first, const c10::optional<at::Tensor>& second, analytic_loss computed) {
  return analytic_loss_function::apply(first, second, computed);
}

/// backend_like(t) with its row primitives computing in row_dtype (backend::row_dtype), checked to be floating.
inline backend backend_with_rows(const at::Tensor& t, at::ScalarType row_dtype) {
  check_floating(row_dtype, "row_dtype");
  auto b = backend_like(t);
  b.row_dtype = row_dtype;
  return b;
}

/// The fused token log-prob / entropy: forward through the backend's chunked row statistics, backward through its
/// analytic row_softmax_backward, from the saved logits, ids, lse and entropy. Both run without autograd recording,
/// so with row_dtype float on fp32 CPU logits they take the backend's host fp32 row path.
struct token_logprobs_function : public torch::autograd::Function<token_logprobs_function> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& ids,
                               double temperature, std::int64_t row_dtype) {
    const auto b = backend_with_rows(logits, dtype_of(row_dtype));
    auto r = grpo::token_logprobs(wrap(b, logits), wrap_index(b, ids), temperature);
    ctx->save_for_backward({logits, ids, r.lse.raw(), r.logprobs.raw(), r.entropy.raw()});
    ctx->saved_data["temperature"] = temperature;
    ctx->saved_data["row_dtype"] = row_dtype;
    return {r.logprobs.raw(), r.entropy.raw()};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    if (!ctx->needs_input_grad(0)) return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    const auto saved = ctx->get_saved_variables();
    const auto b = backend_with_rows(saved[0], dtype_of(ctx->saved_data["row_dtype"]));
    const token_logprob_result<backend> forward_result{wrap(b, saved[3]), wrap(b, saved[4]), wrap(b, saved[2])};
    auto grad = at::empty_like(saved[0]);  // the logits' dtype: bf16 logits get a bf16 gradient, written once
    grpo::token_logprobs_backward(wrap(b, saved[0]), wrap_index(b, saved[1]), ctx->saved_data["temperature"].toDouble(),
                                  forward_result, wrap(b, grad_outputs[0]), wrap(b, grad_outputs[1]), grad);
    return {grad, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

inline void require_defined(const at::Tensor& t, const char* name) {
  GRPO_CHECK(t.defined(), shape_error, name, ": the tensor is undefined (a required input)");
}

inline std::optional<tensor<backend>> optional_tensor(const backend& b, const at::Tensor& t) {
  if (!t.defined()) return std::nullopt;
  return wrap(b, t);
}

}  // namespace detail

/// What token_logprobs returns; both [N], in the logits' compute dtype (fp32 for bf16 logits).
struct token_logprobs_output {
  at::Tensor logprobs;  ///< log softmax(z / T)[id]
  at::Tensor entropy;   ///< -sum_v p_v log p_v of softmax(z / T)
};

/// Fused per-token log-prob and entropy of the sampled ids at temperature T (grpo::token_logprobs as one autograd
/// node). Differentiable with respect to logits (both outputs); ids and temperature are constants.
/// \param logits       [N, V] floating (fp32, fp64, bf16, fp16), CPU or CUDA, finite.
/// \param ids          [N] integer ids in [0, V), on the logits' device.
/// \param temperature  T > 0, finite, with 1/T finite.
/// \param row_dtype    the dtype the row primitives compute in (backend::row_dtype): double (the default) is exact to
///                     the reference; float on fp32 CPU logits runs the fp32 row kernels (backend.hpp's
///                     row_softmax_stats_path), within fp32 rounding of it.
/// \throws the errors of grpo::token_logprobs (shape_error naming "logits" or "ids", config_error naming
///         "temperature", value_error naming "logits"), config_error naming "row_dtype" when it is not floating; in
///         backward, value_error naming "d_logprobs" or "d_entropy" for a non-finite upstream gradient.
/// Memory: forward and backward work chunk by chunk (backend::chunk_elements logits at a time); between them only
/// the [N] lse, log-probs and entropies are kept (and a reference to the logits, which must not be modified in
/// place). The backward is exact once; it is not itself differentiable (no double backward).
inline token_logprobs_output token_logprobs(const at::Tensor& logits, const at::Tensor& ids, double temperature = 1.0,
                                            at::ScalarType row_dtype = at::kDouble) {
  detail::require_defined(logits, "logits");
  detail::require_defined(ids, "ids");
  auto outputs = detail::token_logprobs_function::apply(logits, ids, temperature, detail::dtype_code(row_dtype));
  return {std::move(outputs[0]), std::move(outputs[1])};
}

/// The inputs of policy_loss, as grpo::policy_loss_inputs with torch tensors; an undefined tensor is an absent
/// optional input. Gradients flow to logprobs and entropy only; every other input is a constant (a stop-gradient,
/// as in TRL), whatever its requires_grad.
struct policy_loss_tensors {
  at::Tensor logprobs;            ///< [B,T] trainer log-probs (differentiable)
  at::Tensor advantages;          ///< [B] or [B,T]
  at::Tensor mask;                ///< [B,T] of 0/1 (floating or bool)
  at::Tensor old_logprobs{};      ///< [B,T]; absent: logprobs held constant (ratio 1, gradient of the ratio 1)
  at::Tensor ref_logprobs{};      ///< [B,T]; required when options.beta > 0
  at::Tensor rollout_logprobs{};  ///< [B,T]; enables the rollout IS correction
  at::Tensor entropy{};           ///< [B,T] (differentiable); required when options.entropy_coef != 0
};

/// What policy_loss returns.
struct policy_loss_output {
  at::Tensor loss;            ///< rank 0, differentiable with respect to logprobs and entropy
  at::Tensor per_token_loss;  ///< [B,T], no gradient
  policy_loss_metrics metrics;
};

/// Fused policy loss (grpo::policy_loss as one autograd node): the loss is computed once with autograd off and
/// backward returns grad_output times the exact analytic gradient, so nothing [B,T]-sized is recorded per
/// elementwise step. Options, denominators, formulas, tie-breaking and errors are those of grpo::policy_loss;
/// the computation runs on the device of logprobs in its compute dtype (fp32 for bf16 log-probs): for CPU fp32 and
/// fp64 inputs of one dtype, the backend's fused host path (fused_losses.hpp, policy_loss_path).
/// \throws shape_error naming a required input that is undefined, then everything grpo::policy_loss throws.
inline policy_loss_output policy_loss(const policy_loss_tensors& inputs, const policy_loss_options& options,
                                      const loss_denominators& denominators) {
  detail::require_defined(inputs.logprobs, "logprobs");
  detail::require_defined(inputs.advantages, "advantages");
  detail::require_defined(inputs.mask, "mask");
  const auto b = backend_like(inputs.logprobs);
  auto result = [&] {
    const at::NoGradGuard no_grad;
    return grpo::policy_loss(
        policy_loss_inputs<backend>{.logprobs = wrap(b, inputs.logprobs),
                                    .advantages = wrap(b, inputs.advantages),
                                    .mask = wrap(b, inputs.mask),
                                    .old_logprobs = detail::optional_tensor(b, inputs.old_logprobs),
                                    .ref_logprobs = detail::optional_tensor(b, inputs.ref_logprobs),
                                    .rollout_logprobs = detail::optional_tensor(b, inputs.rollout_logprobs),
                                    .entropy = detail::optional_tensor(b, inputs.entropy)},
        options, denominators);
  }();
  const c10::optional<at::Tensor> entropy =
      inputs.entropy.defined() ? c10::optional<at::Tensor>(inputs.entropy) : c10::nullopt;
  auto loss = detail::attach(
      inputs.logprobs, entropy,
      {result.loss.raw(), result.grad_logprobs.raw(), result.grad_entropy ? result.grad_entropy->raw() : at::Tensor()});
  return {std::move(loss), std::move(result.per_token_loss).raw(), result.metrics};
}

/// What value_loss returns.
struct value_loss_output {
  at::Tensor loss;       ///< rank 0, differentiable with respect to values
  double clip_fraction;  ///< as grpo::value_loss_result::clip_fraction
};

/// Fused clipped value loss (grpo::value_loss as one autograd node; the gradient flows to values only).
/// \throws what grpo::value_loss throws (shape_error, value_error, config_error naming the argument).
inline value_loss_output value_loss(const at::Tensor& values, const at::Tensor& old_values, const at::Tensor& returns,
                                    const at::Tensor& mask, const value_loss_options& options,
                                    const loss_denominators& denominators) {
  detail::require_defined(values, "values");
  const auto b = backend_like(values);
  auto result = [&] {
    const at::NoGradGuard no_grad;
    return grpo::value_loss(wrap(b, values), wrap(b, old_values), wrap(b, returns), wrap(b, mask), options,
                            denominators);
  }();
  auto loss = detail::attach(values, c10::nullopt, {result.loss.raw(), result.grad_values.raw(), at::Tensor()});
  return {std::move(loss), result.clip_fraction};
}

/// What the distillation losses return.
struct distillation_output {
  at::Tensor loss;            ///< rank 0, differentiable with respect to the student logits
  at::Tensor per_token_loss;  ///< [N], no gradient
  double token_count;         ///< valid tokens in this call
};

namespace detail {

/// The buffer of a fused distillation loss's [N, V] gradient, computed in the forward before the upstream gradient
/// (a loss scale) is known: the logits' dtype (bf16 logits get a bf16 gradient, as autograd hands it back anyway, at
/// half the memory of fp32; on CUDA the kernels write it directly), except fp16, whose range would flush the
/// unscaled entries (about 1 / tokens each) to zero: fp32 there. Contiguous, unfilled: the row primitives write every
/// element.
inline at::Tensor gradient_like(const at::Tensor& logits) {
  const auto dtype = logits.scalar_type() == at::kHalf ? at::kFloat : logits.scalar_type();
  return at::empty(logits.sizes(), logits.options().dtype(dtype).memory_format(at::MemoryFormat::Contiguous));
}

inline distillation_output attach_distillation(const at::Tensor& student, distillation_result<backend> result) {
  auto loss = attach(student, c10::nullopt, {result.loss.raw(), result.grad_logits, at::Tensor()});
  return {std::move(loss), std::move(result.per_token_loss).raw(), result.token_count};
}

}  // namespace detail

/// Fused dense distillation (grpo::distillation_loss as one autograd node; the gradient flows to the student
/// logits only). Memory: the [N, V] gradient, in the logits' dtype (fp32 for fp16), is computed in the forward and
/// kept until the backward (as Liger's fused losses do), so peak memory is two logits-sized tensors plus the
/// backend's chunk. row_dtype: as in token_logprobs (float on fp32 CPU logits: the fp32 row kernels).
/// \throws what grpo::distillation_loss throws; config_error naming "row_dtype" when it is not floating.
inline distillation_output distillation_loss(const at::Tensor& student_logits, const at::Tensor& teacher_logits,
                                             const at::Tensor& mask, const distillation_options& options,
                                             const loss_denominators& denominators,
                                             at::ScalarType row_dtype = at::kDouble) {
  detail::require_defined(student_logits, "student_logits");
  const auto b = detail::backend_with_rows(student_logits, row_dtype);
  auto result = [&] {
    const at::NoGradGuard no_grad;
    return grpo::distillation_loss(wrap(b, student_logits), wrap(b, teacher_logits), wrap(b, mask), options,
                                   denominators, detail::gradient_like(student_logits));
  }();
  return detail::attach_distillation(student_logits, std::move(result));
}

/// Fused top-k distillation (grpo::topk_distillation_loss as one autograd node); memory and row_dtype as
/// distillation_loss.
/// \throws what grpo::topk_distillation_loss throws; config_error naming "row_dtype" when it is not floating.
inline distillation_output topk_distillation_loss(const at::Tensor& student_logits, const at::Tensor& teacher_ids,
                                                  const at::Tensor& teacher_logprobs, const at::Tensor& mask,
                                                  const distillation_options& options,
                                                  const loss_denominators& denominators, bool renormalize = false,
                                                  at::ScalarType row_dtype = at::kDouble) {
  detail::require_defined(student_logits, "student_logits");
  const auto b = detail::backend_with_rows(student_logits, row_dtype);
  auto result = [&] {
    const at::NoGradGuard no_grad;
    return grpo::topk_distillation_loss(wrap(b, student_logits), wrap_index(b, teacher_ids), wrap(b, teacher_logprobs),
                                        wrap(b, mask), options, denominators, renormalize,
                                        detail::gradient_like(student_logits));
  }();
  return detail::attach_distillation(student_logits, std::move(result));
}

/// Fused SFT cross-entropy (grpo::sft_loss as one autograd node); memory and row_dtype as distillation_loss.
/// \throws what grpo::sft_loss throws; config_error naming "row_dtype" when it is not floating.
inline distillation_output sft_loss(const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& mask,
                                    const loss_denominators& denominators, double temperature = 1.0,
                                    at::ScalarType row_dtype = at::kDouble) {
  detail::require_defined(logits, "logits");
  const auto b = detail::backend_with_rows(logits, row_dtype);
  auto result = [&] {
    const at::NoGradGuard no_grad;
    return grpo::sft_loss(wrap(b, logits), wrap_index(b, targets), wrap(b, mask), denominators, temperature,
                          detail::gradient_like(logits));
  }();
  return detail::attach_distillation(logits, std::move(result));
}

}  // namespace GRPO_LIBTORCH_NAMESPACE
}  // namespace grpo::libtorch
