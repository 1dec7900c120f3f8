// SPDX-License-Identifier: Apache-2.0
// The native transformer (include/grpo/model) against the same architecture written with LibTorch ops and
// differentiated by torch autograd, on the same weights, in double: RMSNorm, rotate-half RoPE at the same theta,
// causal grouped-query attention, SwiGLU, final norm and LM head (tied and untied, with and without q/k/v biases).
// Logits, and the gradient of a masked, weighted sum of completion-token log-probs (at temperature 0.7) with respect
// to every named parameter, must agree to 1e-12 relative (each tensor scaled by its largest entry; measured: about
// 2e-15 for logits, 5e-15 for gradients) for the reference oracle and the fast path (both instruction sets, 1 and
// 2 threads); the float fast path's logits to 5e-6 (measured 6e-7). Our side differentiates the loss with
// token_logprobs_backward, then the model's backward, exactly as the trainer does.
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "grpo/logits.hpp"
#include "grpo/model/model.hpp"
#include "test_support.hpp"
#include "torch_support.hpp"

using namespace grpo;
using namespace grpo::model;
using namespace grpo::testing;

namespace {

constexpr double temperature = 0.7;

transformer_config small_config(bool tied, bool bias) {
  transformer_config c;
  c.vocab_size = 29;
  c.hidden_size = 24;
  c.intermediate_size = 40;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 6;
  c.num_key_value_heads = 2;  // groups of 3 query heads per key/value head
  c.max_position_embeddings = 64;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 500.0;  // not the default, so a theta mix-up shows
  c.tie_word_embeddings = tied;
  c.attention_bias = bias;
  return c;
}

// Seeded weights with every tensor away from its initial value: norm weights around 1 and non-zero biases, so
// their gradients are exercised; a larger std than training's 0.02 so the softmaxes are far from uniform.
parameters<double> seeded_weights(const transformer_config& c, std::uint64_t seed) {
  parameters<double> w(c);
  initialize(w, seed, 0.25);
  std::mt19937_64 gen(seed + 1);
  std::uniform_real_distribution<double> jitter(-0.3, 0.3);
  for (const auto& e : w.layout().entries())
    if (e.name.ends_with("norm.weight") || e.name.ends_with(".bias"))
      for (auto& value : w.values().subspan(e.offset, e.size)) value += jitter(gen);
  return w;
}

// Rows of different lengths: a one-token prompt, an empty completion (a padding row), a completion of one token.
sequence_batch test_batch(std::int64_t vocab) {
  std::mt19937 gen(7);
  sequence_batch batch;
  const std::vector<std::pair<int, int>> lengths = {{4, 9}, {1, 5}, {6, 0}, {3, 1}, {7, 12}};
  for (const auto& [p, n] : lengths) {
    std::vector<token_id> prompt(static_cast<std::size_t>(p)), completion(static_cast<std::size_t>(n));
    for (auto& t : prompt) t = static_cast<token_id>(gen() % static_cast<std::uint32_t>(vocab));
    for (auto& t : completion) t = static_cast<token_id>(gen() % static_cast<std::uint32_t>(vocab));
    batch.prompts.push_back(prompt);
    batch.completions.push_back(completion);
  }
  return batch;
}

// d loss / d log-prob of every [R * T] completion slot: random coefficients times the completion mask, with one
// valid position masked out as well.
std::vector<double> loss_coefficients(const sequence_batch& batch) {
  auto coef = uniform(batch.rows() * static_cast<std::size_t>(batch.max_completion_length()), -1.0, 1.0, 11);
  const auto mask = batch.completion_mask();
  for (std::size_t i = 0; i < coef.size(); ++i) coef[i] *= mask[i];
  coef[2] = 0.0;
  return coef;
}

// ---- The architecture in LibTorch ops ------------------------------------------------------------------------

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  return x * at::rsqrt(x.pow(2).mean({-1}, true) + eps) * weight;
}

// Hugging Face's rotate-half RoPE: x cos + rotate_half(x) sin, with the angle of pair i at position p equal to
// p theta^(-2i/d), repeated over both halves of the head. x is [heads, tokens, head_dim].
at::Tensor rope(const at::Tensor& x, double theta) {
  const auto n = x.size(1), hd = x.size(2);
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  const auto inverse = at::pow(theta, -at::arange(0, hd, 2, opts) / static_cast<double>(hd));
  const auto angles = at::outer(at::arange(n, opts), inverse);
  const auto full = at::cat({angles, angles}, -1);
  const auto halves = x.chunk(2, -1);
  const auto rotated = at::cat({-halves[1], halves[0]}, -1);
  return x * full.cos() + rotated * full.sin();
}

struct torch_model {
  transformer_config c;
  std::map<std::string, at::Tensor> w;  // leaves that require grad, by Hugging Face name

  explicit torch_model(const parameters<double>& weights) : c(weights.config()) {
    for (const auto& e : weights.layout().entries()) {
      const auto span = weights.values().subspan(e.offset, e.size);
      w[e.name] = torch_tensor(std::vector<double>(span.begin(), span.end()), e.shape).requires_grad_(true);
    }
  }

  const at::Tensor& operator[](const std::string& name) const { return w.at(name); }

  at::Tensor linear(const at::Tensor& x, const std::string& name, bool bias = false) const {
    auto y = at::matmul(x, (*this)[name + ".weight"].t());
    return bias ? y + (*this)[name + ".bias"] : y;
  }

  // Logits [completion, V] of one row: the fed tokens are prompt ++ completion[0 .. c-2].
  at::Tensor row_logits(const std::vector<token_id>& prompt, const std::vector<token_id>& completion) const {
    std::vector<std::int64_t> fed(prompt.begin(), prompt.end());
    fed.insert(fed.end(), completion.begin(), completion.end() - 1);
    const auto n = static_cast<std::int64_t>(fed.size());
    const auto h = c.num_attention_heads, kv = c.num_key_value_heads, hd = c.head_dim();
    auto x = (*this)["model.embed_tokens.weight"].index_select(0, torch_ids(fed, {n}));
    const auto causal = at::ones({n, n}, at::TensorOptions().dtype(at::kBool)).triu(1);
    for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      const auto h1 = rms_norm(x, (*this)[p + "input_layernorm.weight"], c.rms_norm_eps);
      const auto q = rope(linear(h1, p + "self_attn.q_proj", c.attention_bias).view({n, h, hd}).transpose(0, 1),
                          c.rope_theta);
      const auto k = rope(linear(h1, p + "self_attn.k_proj", c.attention_bias).view({n, kv, hd}).transpose(0, 1),
                          c.rope_theta)
                         .repeat_interleave(c.group_size(), 0);
      const auto v = linear(h1, p + "self_attn.v_proj", c.attention_bias)
                         .view({n, kv, hd})
                         .transpose(0, 1)
                         .repeat_interleave(c.group_size(), 0);
      const auto scores =
          at::matmul(q, k.transpose(1, 2)).div(std::sqrt(static_cast<double>(hd))).masked_fill(causal, -INFINITY);
      const auto attn = at::matmul(at::softmax(scores, -1), v).transpose(0, 1).reshape({n, h * hd});
      x = x + linear(attn, p + "self_attn.o_proj");
      const auto h2 = rms_norm(x, (*this)[p + "post_attention_layernorm.weight"], c.rms_norm_eps);
      x = x + linear(at::silu(linear(h2, p + "mlp.gate_proj")) * linear(h2, p + "mlp.up_proj"), p + "mlp.down_proj");
    }
    const auto hn = rms_norm(x, (*this)["model.norm.weight"], c.rms_norm_eps);
    const auto& head = c.tie_word_embeddings ? (*this)["model.embed_tokens.weight"] : (*this)["lm_head.weight"];
    const auto first = static_cast<std::int64_t>(prompt.size()) - 1;
    return at::matmul(hn.slice(0, first, first + static_cast<std::int64_t>(completion.size())), head.t());
  }

  // [R * T, V] in the layout of the native forward, zero rows at padding.
  at::Tensor logits(const sequence_batch& batch) const {
    const auto t = batch.max_completion_length();
    std::vector<at::Tensor> rows;
    for (std::size_t r = 0; r < batch.rows(); ++r) {
      const auto n = static_cast<std::int64_t>(batch.completions[r].size());
      std::vector<at::Tensor> parts;
      if (n > 0) parts.push_back(row_logits(batch.prompts[r], batch.completions[r]));
      if (n < t) parts.push_back(at::zeros({t - n, c.vocab_size}, at::TensorOptions().dtype(at::kDouble)));
      rows.push_back(at::cat(parts, 0));
    }
    return at::cat(rows, 0);
  }
};

// sum over slots of coef * log softmax(z / T)[token].
at::Tensor torch_loss(const at::Tensor& logits, const sequence_batch& batch, const std::vector<double>& coef) {
  const auto ids = completion_ids(reference_backend<double>{}, batch).to_host();
  const auto n = static_cast<std::int64_t>(ids.size());
  const auto logp = at::log_softmax(logits / temperature, -1).gather(1, torch_ids(ids, {n, 1})).squeeze(1);
  return (logp * torch_tensor(coef, {n})).sum();
}

// ---- Our side ------------------------------------------------------------------------------------------------

// d loss / d logits through the library's log-prob backward, as the trainer computes it.
std::vector<double> our_d_logits(const std::vector<double>& logits, const sequence_batch& batch,
                                 const std::vector<double>& coef, std::int64_t vocab) {
  const reference_backend<double> b;
  const auto rows = static_cast<std::int64_t>(coef.size());
  const auto z = make_tensor(b, logits, shape::matrix(rows, vocab));
  const auto ids = completion_ids(b, batch);
  const auto forward = token_logprobs(z, ids, temperature);
  auto out = z.raw();
  token_logprobs_backward(z, ids, temperature, forward, make_tensor(b, coef, shape::vector(rows)),
                          full(b, shape::vector(rows), 0.0), out);
  return out.data;
}

struct our_result {
  std::vector<double> logits;
  parameters<double> grads;
};

our_result run_reference(const parameters<double>& w, const sequence_batch& batch, const std::vector<double>& coef) {
  our_result out{{}, parameters<double>(w.config())};
  reference::activations<double> saved;
  out.logits = reference::forward(w, batch, &saved);
  const auto d_logits = our_d_logits(out.logits, batch, coef, w.config().vocab_size);
  reference::backward(w, saved, std::span<const double>(d_logits), out.grads);
  return out;
}

our_result run_fast(const parameters<double>& w, const sequence_batch& batch, const std::vector<double>& coef,
                    isa kernels, std::size_t threads) {
  our_result out{{}, parameters<double>(w.config())};
  transformer<double> model(w, transformer_options(threads, kernels));
  out.logits = model.forward(batch, true).raw().data;
  const auto d_logits = our_d_logits(out.logits, batch, coef, w.config().vocab_size);
  model.backward(std::span<const double>(d_logits), out.grads);
  return out;
}

// max |got - want| / max |want|: the error of the whole tensor relative to its scale.
double scaled_error(std::span<const double> got, std::span<const double> want) {
  REQUIRE(got.size() == want.size());
  double error = 0.0, scale = 0.0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    error = std::max(error, std::fabs(got[i] - want[i]));
    scale = std::max(scale, std::fabs(want[i]));
  }
  REQUIRE(scale > 0.0);
  return error / scale;
}

// Logits and every parameter's gradient of `ours` against torch's.
void compare(const our_result& ours, const at::Tensor& logits, const torch_model& torch, double logits_tol,
             double grad_tol) {
  const auto want_logits = host(logits);
  CHECK(scaled_error(ours.logits, want_logits) <= logits_tol);
  for (const auto& e : ours.grads.layout().entries()) {
    INFO("parameter " << e.name);
    const auto& grad = torch[e.name].grad();
    REQUIRE(grad.defined());
    const auto want = host(grad);
    const auto got = ours.grads.values().subspan(e.offset, e.size);
    CHECK(scaled_error(got, want) <= grad_tol);
  }
}

std::vector<isa> instruction_sets() {
  std::vector<isa> out;
  for (const isa kernels : {isa::generic, isa::avx2, isa::avx512})
    if (supported(kernels)) out.push_back(kernels);
  return out;
}

}  // namespace

TEST_CASE("model vs LibTorch autograd: logits and every parameter's gradient in double", "[torch][model]") {
  for (const bool tied : {true, false})
    for (const bool bias : {false, true}) {
      INFO("tie_word_embeddings " << tied << ", attention_bias " << bias);
      const auto c = small_config(tied, bias);
      const auto w = seeded_weights(c, 42);
      const auto batch = test_batch(c.vocab_size);
      const auto coef = loss_coefficients(batch);

      const torch_model torch(w);
      const auto logits = torch.logits(batch);
      torch_loss(logits, batch, coef).backward();
      // The untied lm_head and the tied embedding both receive a gradient; every tensor is reached.
      for (const auto& [name, leaf] : torch.w) {
        INFO("parameter " << name);
        REQUIRE(leaf.grad().defined());
        CHECK(at::abs(leaf.grad()).max().item<double>() > 0.0);
      }

      SECTION("reference (oracle)") { compare(run_reference(w, batch, coef), logits, torch, 1e-12, 1e-12); }
      SECTION("fast path") {
        for (const isa kernels : instruction_sets())
          for (const std::size_t threads : {1u, 2u}) {
            INFO("isa " << isa_name(kernels) << ", threads " << threads);
            compare(run_fast(w, batch, coef, kernels, threads), logits, torch, 1e-12, 1e-12);
          }
      }
    }
}

TEST_CASE("model vs LibTorch: float fast path logits against the double torch model", "[torch][model]") {
  const auto c = small_config(false, true);
  const auto w = seeded_weights(c, 43);
  const auto batch = test_batch(c.vocab_size);
  const auto want = host(torch_model(w).logits(batch));
  transformer<float> model(convert<float>(w));
  const auto got = model.forward(batch, false).to_host();
  CHECK(scaled_error(got, want) <= 5e-6);
}
