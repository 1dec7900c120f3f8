// SPDX-License-Identifier: Apache-2.0
// grpo/model/transformer.hpp: the fast CPU transformer: the architecture of reference.hpp (Llama /
// Qwen2: RMSNorm, RoPE, SwiGLU, grouped-query causal attention, optional tied embeddings and q/k/v
// biases) with a hand-written forward and backward over a packed batch of variable-length rows,
// and batched sampling with a key/value cache. Matrix products are the blocked kernels of
// kernels.hpp over a thread pool; weights are packed once per call; buffers are reused.
// Sampled and trained log-probs agree bit for bit: a cached decoding step runs the same kernels on
// the same operands as the training forward, and every kernel's result for a row is independent
// of the other rows (unlike vLLM-vs-trainer setups, where they differ; see TRL issue #6789).
//
// A training step:
//   auto logits = model.forward(batch);                        // [R*T, V], activations kept
//   auto ids = completion_ids(model.backend(), batch);         // policy.hpp
//   auto lp = token_logprobs(logits, ids, temperature);        // logits.hpp: log-probs, entropy
//   ... loss -> d_logprobs, d_entropy (zero at padding) ...
//   token_logprobs_backward(logits, ids, temperature, lp, d_logprobs, d_entropy, logits.raw());
//   model.backward(logits, grads);                              // logits now hold d loss / d logits
// One call at a time per model (the workspaces are members); two models may share a pool.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include "grpo/concepts.hpp"
#include "grpo/error.hpp"
#include "grpo/model/batch.hpp"
#include "grpo/model/kernels.hpp"
#include "grpo/model/parameters.hpp"
#include "grpo/model/sampling.hpp"
#include "grpo/model/thread_pool.hpp"
#include "grpo/reference_backend.hpp"
#include "grpo/tensor.hpp"

namespace grpo::model {

/// A sampled completion with its behaviour and full-softmax log-probs (grpo::sampled_completion):
/// full_logprobs are exactly what token_logprobs() computes from forward()'s logits of the same
/// tokens with reference_backend<double>, and, rounded to float, with reference_backend<float>.
using grpo::sampled_completion;

struct transformer_options {
  std::size_t threads = 0;            ///< threads in all (0: the hardware's); ignored when `pool` is given
  isa kernels = best_isa();           ///< instruction set of the kernels
  std::shared_ptr<thread_pool> pool;  ///< a pool to share (a policy and its frozen reference model,
                                      ///< which then must not run at the same time)

  // Constructors rather than an aggregate: GCC 12's -Wextra flags brace initializers that leave
  // out trailing members, and {2} or {2, isa::generic} should read cleanly.
  transformer_options() = default;
  transformer_options(std::size_t thread_count, isa instruction_set = best_isa(),
                      std::shared_ptr<thread_pool> shared_pool = {})
      : threads(thread_count), kernels(instruction_set), pool(std::move(shared_pool)) {}
};

template <class T = float>
class transformer {
 public:
  using backend_type = reference_backend<T>;

  /// Takes the weights (their config is validated by parameters<T>).
  explicit transformer(parameters<T> weights, transformer_options options = {})
      : weights_(std::move(weights)),
        kernels_(options.kernels),
        pool_(options.pool ? std::move(options.pool) : std::make_shared<thread_pool>(options.threads)) {
    GRPO_CHECK(supported(kernels_), config_error, "options.kernels: ", isa_name(kernels_),
               " is not available on this CPU or build (best: ", isa_name(best_isa()), ")");
    const auto& c = config();
    const std::int64_t half = c.head_dim() / 2;
    cos_.resize(static_cast<std::size_t>(c.max_position_embeddings * half));
    sin_.resize(cos_.size());
    for (std::int64_t pos = 0; pos < c.max_position_embeddings; ++pos)
      for (std::int64_t i = 0; i < half; ++i) {
        const double angle = static_cast<double>(pos) *
                             std::pow(c.rope_theta, -2.0 * static_cast<double>(i) / static_cast<double>(c.head_dim()));
        cos_[static_cast<std::size_t>(pos * half + i)] = static_cast<T>(std::cos(angle));
        sin_[static_cast<std::size_t>(pos * half + i)] = static_cast<T>(std::sin(angle));
      }
  }

  const transformer_config& config() const { return weights_.config(); }
  /// The weights; change them freely between calls (each call repacks them).
  parameters<T>& weights() { return weights_; }
  const parameters<T>& weights() const { return weights_; }
  /// The pool the model runs on (share it with another model through transformer_options::pool).
  const std::shared_ptr<thread_pool>& pool() const { return pool_; }
  isa kernels() const { return kernels_; }
  const backend_type& backend() const { return backend_; }

  /// Logits [R * T, V] of every completion position (row r * T + i predicts completion[r][i]);
  /// padding rows are zero. With keep_activations, remembers what backward() needs (the last
  /// forward's); without, uses a fraction of the memory (for a frozen reference model).
  /// \throws shape_error from plan_batch (naming "batch", "batch.prompts" or "batch.completions").
  tensor<backend_type> forward(const sequence_batch& batch, bool keep_activations = true) {
    run_forward(train_, batch, keep_activations);
    const auto& plan = train_.plan;
    const std::int64_t vocab = config().vocab_size;
    reference_tensor<T> out{shape::matrix(plan.rows * plan.max_completion, vocab),
                            std::vector<T>(static_cast<std::size_t>(plan.rows * plan.max_completion * vocab), T(0))};
    for (std::size_t j = 0; j < train_.output_slot.size(); ++j)
      std::copy_n(train_.logits.data() + static_cast<std::ptrdiff_t>(j) * vocab, vocab,
                  out.data.data() + train_.output_slot[j] * vocab);
    return {backend_, std::move(out)};
  }

  /// Adds to `grads` the gradient of sum(d_logits * logits) with respect to the weights, for the
  /// logits of the last forward(batch, true). d_logits is [R * T, V] like those logits (padding
  /// rows are ignored). Deterministic: no result depends on the thread count.
  /// \throws error when there is no such forward; shape_error naming "d_logits" or "grads".
  void backward(std::span<const T> d_logits, parameters<T>& grads) {
    GRPO_CHECK(train_.kept, error, "backward: needs a preceding forward(batch, keep_activations = true)");
    GRPO_CHECK(grads.config() == config(), shape_error, "grads: the config differs from the model's");
    const auto& plan = train_.plan;
    const std::int64_t vocab = config().vocab_size;
    GRPO_CHECK(static_cast<std::int64_t>(d_logits.size()) == plan.rows * plan.max_completion * vocab, shape_error,
               "d_logits: expected ", plan.rows * plan.max_completion * vocab, " values ([",
               plan.rows * plan.max_completion, ", ", vocab, "]), got ", d_logits.size());
    run_backward(d_logits, grads);
  }

  /// As above, from a [R * T, V] tensor.
  void backward(const tensor<backend_type>& d_logits, parameters<T>& grads) {
    const auto& plan = train_.plan;
    const auto expected = shape::matrix(plan.rows * plan.max_completion, config().vocab_size);
    GRPO_CHECK(d_logits.shape() == expected, shape_error, "d_logits: expected shape ", to_string(expected), ", got ",
               to_string(d_logits.shape()));
    backward(std::span<const T>(d_logits.raw().data), grads);
  }

  /// Samples group_size completions of each prompt with a key/value cache; rows [k G, (k+1) G)
  /// answer prompts[k]. Row r draws from std::mt19937_64(row_seed(seed, options.first_row + r)), and its result does
  /// not depend on the other rows, the batch size or the thread count. A completion ends after a
  /// stop token (included, stopped = true) or max_new_tokens tokens (stopped = false).
  /// With step_logits, also returns the logits each token was drawn from: [rows * max_new_tokens,
  /// V], row r's i-th token at row r * max_new_tokens + i, zero after a row's end.
  /// \throws config_error naming "options.*" or "group_size"; shape_error naming "prompts" for an
  ///         empty prompt, a token id out of range, or prompt + max_new_tokens beyond
  ///         max_position_embeddings.
  std::vector<sampled_completion> generate(std::span<const std::vector<token_id>> prompts,
                                           const sampling_options& options, std::uint64_t seed,
                                           std::int64_t group_size = 1, std::vector<T>* step_logits = nullptr) {
    const auto& c = config();
    validate(options, c.vocab_size);
    GRPO_CHECK(group_size >= 1, config_error, "group_size: must be >= 1, got ", group_size);
    for (std::size_t k = 0; k < prompts.size(); ++k) {
      GRPO_CHECK(!prompts[k].empty(), shape_error, "prompts: row ", k, " is empty (a prompt needs at least one token)");
      detail::check_tokens(prompts[k], c.vocab_size, "prompts", k);
      const auto p = static_cast<std::int64_t>(prompts[k].size());
      GRPO_CHECK(p + options.max_new_tokens <= c.max_position_embeddings, shape_error, "prompts: row ", k, " has ", p,
                 " tokens; with options.max_new_tokens ", options.max_new_tokens,
                 " that exceeds max_position_embeddings ", c.max_position_embeddings);
    }
    const auto rows = static_cast<std::int64_t>(prompts.size()) * group_size;
    std::vector<sampled_completion> out(static_cast<std::size_t>(rows));
    if (step_logits != nullptr)
      step_logits->assign(static_cast<std::size_t>(rows * options.max_new_tokens * c.vocab_size), T(0));
    if (rows == 0 || options.max_new_tokens == 0) return out;
    run_generate(prompts, options, seed, group_size, out, step_logits);
    return out;
  }

 private:
  struct layer_buffers {
    std::vector<T> x, h1, qkv, probs, attn, x_mid, h2, gate_up, m;
    std::vector<double> r1, r2;
  };

  struct workspace {
    batch_plan plan;
    std::vector<std::int64_t> position;      // of every fed token
    std::vector<std::int64_t> probs_offset;  // of every row in layer_buffers::probs
    std::vector<std::int64_t> output_token;  // fed-token index of every output
    std::vector<std::int64_t> output_slot;   // row of every output in [R * T, V]
    std::vector<layer_buffers> layers;
    std::vector<T> x_final, x_out, h_out, logits;
    std::vector<double> r_out;
    bool kept = false;
  };

  struct packed_weights {
    std::vector<packed_matrix<T>> qkv, o, gate_up, down;
    packed_matrix<T> lm_head;
  };

  struct decode_buffers {
    gemm_scratch<T> scratch;
    std::vector<T> x, h, qkv, attn, gate_up, m, logits, probs;
    std::vector<std::pair<double, token_id>> sort;
  };

  struct row_state {
    std::int64_t row = 0;
    std::int64_t position = 0;  // of `last`, the next token to feed
    token_id last = 0;
    bool done = false;
    std::mt19937_64 gen;
  };

  parameters<T> weights_;
  isa kernels_;
  std::shared_ptr<thread_pool> pool_;
  backend_type backend_;
  std::vector<T> cos_, sin_;
  packed_weights packed_;
  gemm_scratch<T> scratch_;
  workspace train_, prefill_;
  // Backward buffers.
  std::vector<T> d_out_, dh_out_, dx_, dh_, dm_, dgu_, dattn_, dqkv_;
  std::vector<std::vector<T>> thread_scratch_;
  // Generation buffers.
  std::vector<decode_buffers> decode_;
  std::vector<T> kv_cache_;

  static constexpr std::ptrdiff_t row_chunk = 32;

  std::ptrdiff_t d() const { return static_cast<std::ptrdiff_t>(config().hidden_size); }
  std::ptrdiff_t f() const { return static_cast<std::ptrdiff_t>(config().intermediate_size); }
  std::ptrdiff_t qkv_width() const { return static_cast<std::ptrdiff_t>(config().q_dim() + 2 * config().kv_dim()); }
  const T* w(std::size_t offset) const { return weights_.data() + offset; }
  T scale() const { return static_cast<T>(1.0 / std::sqrt(static_cast<double>(config().head_dim()))); }

  template <class T2>
  static void grow(std::vector<T2>& v, std::ptrdiff_t n) {
    if (v.size() < static_cast<std::size_t>(n)) v.resize(static_cast<std::size_t>(n));
  }

  /// fn(begin, end) over [0, n) in chunks, in parallel.
  template <class F>
  void parallel_rows(std::ptrdiff_t n, F&& fn) {
    const auto chunks = static_cast<std::size_t>((n + row_chunk - 1) / row_chunk);
    pool_->parallel_for(chunks, [&](std::size_t chunk, std::size_t) {
      const auto begin = static_cast<std::ptrdiff_t>(chunk) * row_chunk;
      fn(begin, std::min(n, begin + row_chunk));
    });
  }

  /// out[i] += sum over rows t of value(t, i), each column summed in double in row order by one
  /// task (so the result does not depend on the thread count).
  template <class F>
  void add_column_sums(std::ptrdiff_t rows, std::ptrdiff_t cols, F&& value, T* out) {
    constexpr std::ptrdiff_t width = 16;
    pool_->parallel_for(static_cast<std::size_t>((cols + width - 1) / width), [&](std::size_t task, std::size_t) {
      const std::ptrdiff_t c0 = static_cast<std::ptrdiff_t>(task) * width, c1 = std::min(cols, c0 + width);
      double total[width] = {};
      for (std::ptrdiff_t t = 0; t < rows; ++t)
        for (std::ptrdiff_t i = c0; i < c1; ++i) total[i - c0] += value(t, i);
      for (std::ptrdiff_t i = c0; i < c1; ++i) out[i] = static_cast<T>(static_cast<double>(out[i]) + total[i - c0]);
    });
  }

  static matrix_view<T> rows_of(const T* data, std::ptrdiff_t width) { return {data, width, 1}; }
  static matrix_view<T> transposed(const T* data, std::ptrdiff_t width) { return {data, 1, width}; }

  void pack_weights() {
    const auto& c = config();
    const auto layers = static_cast<std::size_t>(c.num_hidden_layers);
    packed_.qkv.resize(layers);
    packed_.o.resize(layers);
    packed_.gate_up.resize(layers);
    packed_.down.resize(layers);
    thread_pool* pool = pool_.get();
    // An [out, in] weight W is the operand B(k, j) = W[j, k] of y = x W^T.
    for (std::size_t l = 0; l < layers; ++l) {
      const auto& o = weights_.layout().layer(static_cast<std::int64_t>(l));
      pack(pool, kernels_, transposed(w(o.qkv_proj), d()), d(), qkv_width(), packed_.qkv[l]);
      pack(pool, kernels_, transposed(w(o.o_proj), c.q_dim()), c.q_dim(), d(), packed_.o[l]);
      pack(pool, kernels_, transposed(w(o.gate_up_proj), d()), d(), 2 * f(), packed_.gate_up[l]);
      pack(pool, kernels_, transposed(w(o.down_proj), f()), f(), d(), packed_.down[l]);
    }
    pack(pool, kernels_, transposed(w(weights_.layout().lm_head()), d()), d(), c.vocab_size, packed_.lm_head);
  }

  /// Bias, then RoPE on the q and k parts of one row of the q/k/v product.
  void qkv_finish(T* row, std::int64_t position, const layer_offsets& o) const {
    const auto& c = config();
    if (o.qkv_bias != layer_offsets::npos) {
      const T* bias = w(o.qkv_bias);
      for (std::ptrdiff_t i = 0; i < qkv_width(); ++i) row[i] += bias[i];
    }
    const std::int64_t half = c.head_dim() / 2;
    const T* cs = cos_.data() + position * half;
    const T* sn = sin_.data() + position * half;
    detail::rope_row(row, c.num_attention_heads, c.head_dim(), cs, sn, false);
    detail::rope_row(row + c.q_dim(), c.num_key_value_heads, c.head_dim(), cs, sn, false);
  }

  void run_forward(workspace& ws, const sequence_batch& batch, bool keep) {
    const auto& c = config();
    ws.plan = plan_batch(c, batch);
    ws.kept = false;
    const auto& plan = ws.plan;
    const std::ptrdiff_t n = plan.tokens, dm = d(), width = qkv_width();
    ws.position.resize(static_cast<std::size_t>(n));
    ws.probs_offset.assign(static_cast<std::size_t>(plan.rows), 0);
    ws.output_token.clear();
    ws.output_slot.clear();
    std::ptrdiff_t probs = 0;
    for (std::int64_t r = 0; r < plan.rows; ++r) {
      const auto ru = static_cast<std::size_t>(r);
      const std::int64_t length = plan.length[ru], offset = plan.offset[ru];
      for (std::int64_t t = 0; t < length; ++t) ws.position[static_cast<std::size_t>(offset + t)] = t;
      ws.probs_offset[ru] = probs;
      probs += c.num_attention_heads * length * (length + 1) / 2;
      for (std::int64_t i = 0; i < plan.completion_length[ru]; ++i) {
        ws.output_token.push_back(offset + plan.prompt_length[ru] - 1 + i);
        ws.output_slot.push_back(r * plan.max_completion + i);
      }
    }
    pack_weights();
    const std::size_t stored = keep ? static_cast<std::size_t>(c.num_hidden_layers) : 1;
    if (ws.layers.size() < stored) ws.layers.resize(stored);
    for (std::size_t l = 0; l < stored; ++l) {
      auto& b = ws.layers[l];
      grow(b.x, n * dm);
      grow(b.h1, n * dm);
      grow(b.qkv, n * width);
      grow(b.probs, probs);
      grow(b.attn, n * c.q_dim());
      grow(b.x_mid, n * dm);
      grow(b.h2, n * dm);
      grow(b.gate_up, n * 2 * f());
      grow(b.m, n * f());
      grow(b.r1, n);
      grow(b.r2, n);
    }
    grow(ws.x_final, n * dm);

    const T* embed = w(weights_.layout().embed_tokens());
    T* x0 = ws.layers[0].x.data();
    parallel_rows(n, [&](std::ptrdiff_t begin, std::ptrdiff_t end) {
      for (std::ptrdiff_t t = begin; t < end; ++t)
        std::copy_n(embed + plan.input[static_cast<std::size_t>(t)] * dm, dm, x0 + t * dm);
    });
    for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) layer_forward(ws, l, keep);

    const auto outputs = static_cast<std::ptrdiff_t>(ws.output_token.size());
    grow(ws.x_out, outputs * dm);
    grow(ws.h_out, outputs * dm);
    grow(ws.r_out, outputs);
    grow(ws.logits, outputs * c.vocab_size);
    const T* norm = w(weights_.layout().norm());
    parallel_rows(outputs, [&](std::ptrdiff_t begin, std::ptrdiff_t end) {
      for (std::ptrdiff_t j = begin; j < end; ++j) {
        std::copy_n(ws.x_final.data() + ws.output_token[static_cast<std::size_t>(j)] * dm, dm,
                    ws.x_out.data() + j * dm);
        ws.r_out[static_cast<std::size_t>(j)] =
            detail::rms_norm_row(ws.x_out.data() + j * dm, norm, ws.h_out.data() + j * dm, dm, c.rms_norm_eps);
      }
    });
    gemm(pool_.get(), scratch_, outputs, rows_of(ws.h_out.data(), dm), packed_.lm_head, ws.logits.data(), c.vocab_size,
         false);
    ws.kept = keep;
  }

  void layer_forward(workspace& ws, std::int64_t l, bool keep) {
    const auto& c = config();
    const auto& plan = ws.plan;
    const auto& o = weights_.layout().layer(l);
    const auto lu = static_cast<std::size_t>(l);
    layer_buffers& b = ws.layers[keep ? lu : 0];
    const std::ptrdiff_t n = plan.tokens, dm = d(), width = qkv_width(), q_dim = c.q_dim();
    thread_pool* pool = pool_.get();

    parallel_rows(n, [&](std::ptrdiff_t begin, std::ptrdiff_t end) {
      for (std::ptrdiff_t t = begin; t < end; ++t)
        b.r1[static_cast<std::size_t>(t)] =
            detail::rms_norm_row(b.x.data() + t * dm, w(o.input_layernorm), b.h1.data() + t * dm, dm, c.rms_norm_eps);
    });
    gemm(pool, scratch_, n, rows_of(b.h1.data(), dm), packed_.qkv[lu], b.qkv.data(), width, false);
    parallel_rows(n, [&](std::ptrdiff_t begin, std::ptrdiff_t end) {
      for (std::ptrdiff_t t = begin; t < end; ++t)
        qkv_finish(b.qkv.data() + t * width, ws.position[static_cast<std::size_t>(t)], o);
    });
    const auto tasks = attention_tasks(plan, false);
    pool->parallel_for(tasks.size(), [&](std::size_t i, std::size_t thread) {
      auto a = attention_task(ws, b, tasks[i].first, tasks[i].second);
      a.scratch = thread_scratch_[thread].data();
      detail::attention_forward(kernels_, a);
    });
    std::copy_n(b.x.data(), n * dm, b.x_mid.data());
    gemm(pool, scratch_, n, rows_of(b.attn.data(), q_dim), packed_.o[lu], b.x_mid.data(), dm, true);
    parallel_rows(n, [&](std::ptrdiff_t begin, std::ptrdiff_t end) {
      for (std::ptrdiff_t t = begin; t < end; ++t) {
        b.r2[static_cast<std::size_t>(t)] = detail::rms_norm_row(b.x_mid.data() + t * dm, w(o.post_attention_layernorm),
                                                                 b.h2.data() + t * dm, dm, c.rms_norm_eps);
      }
    });
    gemm(pool, scratch_, n, rows_of(b.h2.data(), dm), packed_.gate_up[lu], b.gate_up.data(), 2 * f(), false);
    parallel_rows(n, [&](std::ptrdiff_t begin, std::ptrdiff_t end) {
      for (std::ptrdiff_t t = begin; t < end; ++t)
        detail::swiglu_row(b.gate_up.data() + t * 2 * f(), b.gate_up.data() + t * 2 * f() + f(), b.m.data() + t * f(),
                           f());
    });
    const bool last = l + 1 == c.num_hidden_layers;
    T* next = last ? ws.x_final.data() : ws.layers[keep ? lu + 1 : 0].x.data();
    std::copy_n(b.x_mid.data(), n * dm, next);
    gemm(pool, scratch_, n, rows_of(b.m.data(), f()), packed_.down[lu], next, dm, true);
  }

  /// The (row, kv head) pairs of a batch, with every thread's scratch grown for the longest row.
  std::vector<std::pair<std::int64_t, std::int64_t>> attention_tasks(const batch_plan& plan, bool backward) {
    std::int64_t longest = 0;
    std::vector<std::pair<std::int64_t, std::int64_t>> tasks;
    for (std::int64_t r = 0; r < plan.rows; ++r)
      if (plan.length[static_cast<std::size_t>(r)] > 0) {
        longest = std::max(longest, plan.length[static_cast<std::size_t>(r)]);
        for (std::int64_t kv = 0; kv < config().num_key_value_heads; ++kv) tasks.emplace_back(r, kv);
      }
    if (thread_scratch_.size() < pool_->size()) thread_scratch_.resize(pool_->size());
    for (auto& scratch : thread_scratch_)
      grow(scratch, detail::attention_scratch(longest, config().head_dim(), backward));
    return tasks;
  }

  detail::attention_args<T> attention_task(workspace& ws, layer_buffers& b, std::int64_t r, std::int64_t g) {
    const auto& c = config();
    const auto ru = static_cast<std::size_t>(r);
    const std::int64_t offset = ws.plan.offset[ru], length = ws.plan.length[ru];
    detail::attention_args<T> a;
    a.qkv = b.qkv.data() + offset * qkv_width();
    a.tokens = length;
    a.qkv_stride = qkv_width();
    a.q_dim = c.q_dim();
    a.kv_dim = c.kv_dim();
    a.head_dim = c.head_dim();
    a.group = c.group_size();
    a.kv_head = g;
    a.scale = scale();
    a.probs = b.probs.data() + ws.probs_offset[ru] + g * c.group_size() * length * (length + 1) / 2;
    a.out = b.attn.data() + offset * c.q_dim();
    return a;
  }

  void run_backward(std::span<const T> d_logits, parameters<T>& grads) {
    const auto& c = config();
    workspace& ws = train_;
    const auto& plan = ws.plan;
    const std::ptrdiff_t n = plan.tokens, dm = d(), vocab = c.vocab_size;
    const auto outputs = static_cast<std::ptrdiff_t>(ws.output_token.size());
    thread_pool* pool = pool_.get();
    T* g = grads.data();
    const auto& layout = weights_.layout();

    grow(d_out_, outputs * vocab);
    for (std::ptrdiff_t j = 0; j < outputs; ++j)
      std::copy_n(d_logits.data() + ws.output_slot[static_cast<std::size_t>(j)] * vocab, vocab,
                  d_out_.data() + j * vocab);
    // lm_head: dW += dz^T h_out; dh_out = dz W.
    gemm(pool, kernels_, scratch_, vocab, dm, outputs, transposed(d_out_.data(), vocab), rows_of(ws.h_out.data(), dm),
         g + layout.lm_head(), dm, true);
    grow(dh_out_, outputs * dm);
    gemm(pool, kernels_, scratch_, outputs, dm, vocab, rows_of(d_out_.data(), vocab), rows_of(w(layout.lm_head()), dm),
         dh_out_.data(), dm, false);
    grow(dx_, n * dm);
    std::fill_n(dx_.data(), n * dm, T(0));
    const T* norm = w(layout.norm());
    parallel_rows(outputs, [&](std::ptrdiff_t begin, std::ptrdiff_t end) {
      for (std::ptrdiff_t j = begin; j < end; ++j)
        detail::rms_norm_backward_row(ws.x_out.data() + j * dm, norm, dh_out_.data() + j * dm,
                                      ws.r_out[static_cast<std::size_t>(j)],
                                      dx_.data() + ws.output_token[static_cast<std::size_t>(j)] * dm, dm);
    });
    add_column_sums(
        outputs, dm,
        [&](std::ptrdiff_t j, std::ptrdiff_t i) {
          return static_cast<double>(dh_out_[static_cast<std::size_t>(j * dm + i)]) *
                 normalized(ws.x_out[static_cast<std::size_t>(j * dm + i)], ws.r_out[static_cast<std::size_t>(j)]);
        },
        g + layout.norm());

    for (std::int64_t l = c.num_hidden_layers - 1; l >= 0; --l) layer_backward(l, g);

    const T* tokens_dx = dx_.data();
    add_embedding_gradient(tokens_dx, g + layout.embed_tokens());
  }

  /// The forward's rounded x r, as the RMSNorm weight saw it.
  static double normalized(T x, double inverse_rms) {
    return static_cast<double>(static_cast<T>(static_cast<double>(x) * inverse_rms));
  }

  void add_embedding_gradient(const T* dx, T* d_embed) {
    const auto& plan = train_.plan;
    const std::ptrdiff_t dm = d();
    constexpr std::ptrdiff_t width = 16;
    pool_->parallel_for(static_cast<std::size_t>((dm + width - 1) / width), [&](std::size_t task, std::size_t) {
      const std::ptrdiff_t c0 = static_cast<std::ptrdiff_t>(task) * width, c1 = std::min(dm, c0 + width);
      for (std::ptrdiff_t t = 0; t < plan.tokens; ++t) {
        T* row = d_embed + plan.input[static_cast<std::size_t>(t)] * dm;
        for (std::ptrdiff_t i = c0; i < c1; ++i) row[i] += dx[t * dm + i];
      }
    });
  }

  void layer_backward(std::int64_t l, T* g) {
    const auto& c = config();
    workspace& ws = train_;
    const auto& plan = ws.plan;
    const auto& o = weights_.layout().layer(l);
    layer_buffers& b = ws.layers[static_cast<std::size_t>(l)];
    const std::ptrdiff_t n = plan.tokens, dm = d(), ff = f(), width = qkv_width(), q_dim = c.q_dim();
    thread_pool* pool = pool_.get();

    // MLP. dx_ holds d loss / d (layer output).
    grow(dm_, n * ff);
    gemm(pool, kernels_, scratch_, n, ff, dm, rows_of(dx_.data(), dm), rows_of(w(o.down_proj), ff), dm_.data(), ff,
         false);
    gemm(pool, kernels_, scratch_, dm, ff, n, transposed(dx_.data(), dm), rows_of(b.m.data(), ff), g + o.down_proj, ff,
         true);
    grow(dgu_, n * 2 * ff);
    parallel_rows(n, [&](std::ptrdiff_t begin, std::ptrdiff_t end) {
      for (std::ptrdiff_t t = begin; t < end; ++t)
        detail::swiglu_backward_row(b.gate_up.data() + t * 2 * ff, b.gate_up.data() + t * 2 * ff + ff,
                                    dm_.data() + t * ff, dgu_.data() + t * 2 * ff, dgu_.data() + t * 2 * ff + ff, ff);
    });
    grow(dh_, n * dm);
    gemm(pool, kernels_, scratch_, n, dm, 2 * ff, rows_of(dgu_.data(), 2 * ff), rows_of(w(o.gate_up_proj), dm),
         dh_.data(), dm, false);
    gemm(pool, kernels_, scratch_, 2 * ff, dm, n, transposed(dgu_.data(), 2 * ff), rows_of(b.h2.data(), dm),
         g + o.gate_up_proj, dm, true);
    norm_backward(b.x_mid.data(), b.r2.data(), w(o.post_attention_layernorm), g + o.post_attention_layernorm);

    // Attention. dx_ now holds d loss / d x_mid.
    grow(dattn_, n * q_dim);
    gemm(pool, kernels_, scratch_, n, q_dim, dm, rows_of(dx_.data(), dm), rows_of(w(o.o_proj), q_dim), dattn_.data(),
         q_dim, false);
    gemm(pool, kernels_, scratch_, dm, q_dim, n, transposed(dx_.data(), dm), rows_of(b.attn.data(), q_dim),
         g + o.o_proj, q_dim, true);
    grow(dqkv_, n * width);
    std::fill_n(dqkv_.data(), n * width, T(0));
    const auto tasks = attention_tasks(plan, true);
    pool->parallel_for(tasks.size(), [&](std::size_t i, std::size_t thread) {
      auto a = attention_task(ws, b, tasks[i].first, tasks[i].second);
      const std::int64_t offset = plan.offset[static_cast<std::size_t>(tasks[i].first)];
      a.dout = dattn_.data() + offset * q_dim;
      a.dqkv = dqkv_.data() + offset * width;
      a.scratch = thread_scratch_[thread].data();
      detail::attention_backward(kernels_, a);
    });
    const std::int64_t half = c.head_dim() / 2;
    parallel_rows(n, [&](std::ptrdiff_t begin, std::ptrdiff_t end) {
      for (std::ptrdiff_t t = begin; t < end; ++t) {
        const std::int64_t pos = ws.position[static_cast<std::size_t>(t)];
        T* row = dqkv_.data() + t * width;
        detail::rope_row(row, c.num_attention_heads, c.head_dim(), cos_.data() + pos * half, sin_.data() + pos * half,
                         true);
        detail::rope_row(row + q_dim, c.num_key_value_heads, c.head_dim(), cos_.data() + pos * half,
                         sin_.data() + pos * half, true);
      }
    });
    if (o.qkv_bias != layer_offsets::npos)
      add_column_sums(
          n, width,
          [&](std::ptrdiff_t t, std::ptrdiff_t i) {
            return static_cast<double>(dqkv_[static_cast<std::size_t>(t * width + i)]);
          },
          g + o.qkv_bias);
    gemm(pool, kernels_, scratch_, n, dm, width, rows_of(dqkv_.data(), width), rows_of(w(o.qkv_proj), dm), dh_.data(),
         dm, false);
    gemm(pool, kernels_, scratch_, width, dm, n, transposed(dqkv_.data(), width), rows_of(b.h1.data(), dm),
         g + o.qkv_proj, dm, true);
    norm_backward(b.x.data(), b.r1.data(), w(o.input_layernorm), g + o.input_layernorm);
  }

  /// dx_ += RMSNorm backward of dh_ (the norm's input x, its inverse rms r); d weight += column sums.
  void norm_backward(const T* x, const double* r, const T* weight, T* d_weight) {
    const std::ptrdiff_t n = train_.plan.tokens, dm = d();
    parallel_rows(n, [&](std::ptrdiff_t begin, std::ptrdiff_t end) {
      for (std::ptrdiff_t t = begin; t < end; ++t)
        detail::rms_norm_backward_row(x + t * dm, weight, dh_.data() + t * dm, r[t], dx_.data() + t * dm, dm);
    });
    add_column_sums(
        n, dm,
        [&](std::ptrdiff_t t, std::ptrdiff_t i) {
          return static_cast<double>(dh_[static_cast<std::size_t>(t * dm + i)]) * normalized(x[t * dm + i], r[t]);
        },
        d_weight);
  }

  // ---- Generation ----------------------------------------------------------------------------

  sampled_token draw(std::span<const T> logits, const sampling_options& options, row_state& state,
                     std::vector<std::pair<double, token_id>>& sort) const {
    // The log-sum-exp exactly as token_logprobs() computes it (in double, whatever T), so
    // full_logprobs are what the trainer recomputes from forward()'s logits.
    const double inverse = options.temperature == 0.0 ? 1.0 : 1.0 / options.temperature;
    const reference_tensor<double> row{shape::matrix(1, static_cast<std::int64_t>(logits.size())),
                                       std::vector<double>(logits.begin(), logits.end())};
    const reference_index id{shape::vector(1), {0}};
    const double lse = row_softmax_stats(reference_backend<double>{}, row, id, inverse).lse.data[0];
    GRPO_CHECK(std::isfinite(lse), value_error, "generate: the logits of row ", state.row, " at position ",
               state.position, " are not finite (NaN or Inf in the weights?)");
    return sample_token(logits, lse, options, state.gen, sort);
  }

  void record(sampled_completion& out, row_state& state, std::span<const T> logits, const sampling_options& options,
              std::vector<std::pair<double, token_id>>& sort, std::vector<T>* step_logits) {
    if (step_logits != nullptr)
      std::copy(
          logits.begin(), logits.end(),
          step_logits->begin() + (state.row * options.max_new_tokens + static_cast<std::int64_t>(out.tokens.size())) *
                                     static_cast<std::int64_t>(logits.size()));
    const sampled_token token = draw(logits, options, state, sort);
    out.tokens.push_back(token.id);
    out.logprobs.push_back(token.logprob);
    out.full_logprobs.push_back(token.full_logprob);
    out.stopped =
        std::find(options.stop_tokens.begin(), options.stop_tokens.end(), token.id) != options.stop_tokens.end();
    state.done = out.stopped || static_cast<std::int64_t>(out.tokens.size()) >= options.max_new_tokens;
    state.last = token.id;
  }

  void run_generate(std::span<const std::vector<token_id>> prompts, const sampling_options& options, std::uint64_t seed,
                    std::int64_t group_size, std::vector<sampled_completion>& out, std::vector<T>* step_logits) {
    const auto& c = config();
    const auto rows = static_cast<std::int64_t>(out.size());
    // Prefill each distinct run of equal prompts once, with the training forward (same kernels).
    sequence_batch prefill;
    std::vector<std::int64_t> prefill_row(static_cast<std::size_t>(rows));
    for (std::int64_t r = 0; r < rows; ++r) {
      const auto& prompt = prompts[static_cast<std::size_t>(r / group_size)];
      if (prefill.prompts.empty() || prefill.prompts.back() != prompt) {
        prefill.prompts.push_back(prompt);
        prefill.completions.push_back({0});
      }
      prefill_row[static_cast<std::size_t>(r)] = static_cast<std::int64_t>(prefill.prompts.size()) - 1;
    }
    run_forward(prefill_, prefill, true);

    std::int64_t capacity = 0;
    for (const auto& prompt : prompts) capacity = std::max(capacity, static_cast<std::int64_t>(prompt.size()));
    capacity = detail::padded_tokens(capacity + options.max_new_tokens);  // attend reads keys 16 at a time
    const std::ptrdiff_t kv = c.kv_dim(), layers = c.num_hidden_layers, width = qkv_width();
    const std::ptrdiff_t row_cache = layers * 2 * capacity * kv;
    grow(kv_cache_, rows * row_cache);

    std::vector<row_state> states(static_cast<std::size_t>(rows));
    // Each thread decodes its share of the rows with serial products; with fewer rows than threads
    // (batch 1) one decoder runs them all and its products use the whole pool, split by columns.
    // Either way every product sums in the same order, so the tokens do not depend on the choice.
    const bool pooled_products = static_cast<std::size_t>(rows) < pool_->size();
    const std::size_t decoders =
        pooled_products ? 1 : std::min<std::size_t>(pool_->size(), static_cast<std::size_t>(rows));
    if (decode_.size() < decoders) decode_.resize(decoders);
    const auto run_decoder = [&](std::size_t task) {
      decode_buffers& buffers = decode_[task];
      std::vector<row_state*> mine;
      for (std::int64_t r = static_cast<std::int64_t>(task); r < rows; r += static_cast<std::int64_t>(decoders)) {
        row_state& s = states[static_cast<std::size_t>(r)];
        const auto ru = static_cast<std::size_t>(r);
        const auto k = static_cast<std::size_t>(prefill_row[ru]);
        const std::int64_t p = prefill_.plan.prompt_length[k], offset = prefill_.plan.offset[k];
        for (std::ptrdiff_t l = 0; l < layers; ++l) {
          const T* qkv = prefill_.layers[static_cast<std::size_t>(l)].qkv.data();
          for (std::int64_t t = 0; t < p; ++t) store_kv(qkv + (offset + t) * width + c.q_dim(), r, l, t, capacity);
        }
        s.row = r;
        s.position = p;
        s.gen.seed(row_seed(seed, options.first_row + static_cast<std::uint64_t>(r)));
        const std::span<const T> logits(prefill_.logits.data() + static_cast<std::ptrdiff_t>(k) * c.vocab_size,
                                        static_cast<std::size_t>(c.vocab_size));
        record(out[ru], s, logits, options, buffers.sort, step_logits);
        mine.push_back(&s);
      }
      decode(mine, buffers, pooled_products ? pool_.get() : nullptr, options, capacity, out, step_logits);
    };
    if (pooled_products)
      run_decoder(0);
    else
      pool_->parallel_for(decoders, [&](std::size_t task, std::size_t) { run_decoder(task); });
  }

  /// The cache of one row and layer: keys transposed, [kv_heads][head_dim][capacity] (the layout
  /// attend reads), then values [capacity][kv_dim].
  T* cache(std::int64_t row, std::ptrdiff_t layer, std::int64_t capacity) {
    const std::ptrdiff_t kv = config().kv_dim(), layers = config().num_hidden_layers;
    return kv_cache_.data() + ((row * layers + layer) * 2) * capacity * kv;
  }

  /// Stores the key and value parts (kv_dim each, adjacent) of one token at `position`.
  void store_kv(const T* key_value, std::int64_t row, std::ptrdiff_t layer, std::int64_t position,
                std::int64_t capacity) {
    const std::ptrdiff_t kv = config().kv_dim();
    T* keys = cache(row, layer, capacity);
    for (std::ptrdiff_t i = 0; i < kv; ++i) keys[i * capacity + position] = key_value[i];
    std::copy_n(key_value + kv, kv, keys + capacity * kv + position * kv);
  }

  /// One decoder's rows, one token per row per step until every row is done. Each step is the
  /// training forward of one token per row, reading earlier keys and values from the cache; its
  /// products run on `pool` (nullptr: on the calling thread).
  void decode(std::vector<row_state*>& rows, decode_buffers& b, thread_pool* pool, const sampling_options& options,
              std::int64_t capacity, std::vector<sampled_completion>& out, std::vector<T>* step_logits) {
    const auto& c = config();
    const auto& layout = weights_.layout();
    const std::ptrdiff_t dm = d(), ff = f(), width = qkv_width(), q_dim = c.q_dim(), kv = c.kv_dim();
    const std::ptrdiff_t hd = c.head_dim(), vocab = c.vocab_size;
    std::vector<row_state*> active;
    while (true) {
      active.clear();
      for (row_state* s : rows)
        if (!s->done) active.push_back(s);
      if (active.empty()) return;
      const auto m = static_cast<std::ptrdiff_t>(active.size());
      grow(b.x, m * dm);
      grow(b.h, m * dm);
      grow(b.qkv, m * width);
      grow(b.attn, m * q_dim);
      grow(b.gate_up, m * 2 * ff);
      grow(b.m, m * ff);
      grow(b.logits, m * vocab);
      grow(b.probs, capacity);
      const T* embed = w(layout.embed_tokens());
      for (std::ptrdiff_t i = 0; i < m; ++i)
        std::copy_n(embed + active[static_cast<std::size_t>(i)]->last * dm, dm, b.x.data() + i * dm);
      for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
        const auto& o = layout.layer(l);
        const auto lu = static_cast<std::size_t>(l);
        for (std::ptrdiff_t i = 0; i < m; ++i)
          detail::rms_norm_row(b.x.data() + i * dm, w(o.input_layernorm), b.h.data() + i * dm, dm, c.rms_norm_eps);
        gemm(pool, b.scratch, m, rows_of(b.h.data(), dm), packed_.qkv[lu], b.qkv.data(), width, false);
        for (std::ptrdiff_t i = 0; i < m; ++i) {
          const row_state& s = *active[static_cast<std::size_t>(i)];
          T* row = b.qkv.data() + i * width;
          qkv_finish(row, s.position, o);
          store_kv(row + q_dim, s.row, l, s.position, capacity);
          const T* keys = cache(s.row, l, capacity);
          const T* values = keys + capacity * kv;
          for (std::int64_t h = 0; h < c.num_attention_heads; ++h) {
            const std::int64_t g = h / c.group_size();
            detail::attend(kernels_, row + h * hd, keys + g * hd * capacity, capacity, values + g * hd, kv,
                           s.position + 1, hd, scale(), b.probs.data(), b.attn.data() + i * q_dim + h * hd);
          }
        }
        gemm(pool, b.scratch, m, rows_of(b.attn.data(), q_dim), packed_.o[lu], b.x.data(), dm, true);
        for (std::ptrdiff_t i = 0; i < m; ++i)
          detail::rms_norm_row(b.x.data() + i * dm, w(o.post_attention_layernorm), b.h.data() + i * dm, dm,
                               c.rms_norm_eps);
        gemm(pool, b.scratch, m, rows_of(b.h.data(), dm), packed_.gate_up[lu], b.gate_up.data(), 2 * ff, false);
        for (std::ptrdiff_t i = 0; i < m; ++i)
          detail::swiglu_row(b.gate_up.data() + i * 2 * ff, b.gate_up.data() + i * 2 * ff + ff, b.m.data() + i * ff,
                             ff);
        gemm(pool, b.scratch, m, rows_of(b.m.data(), ff), packed_.down[lu], b.x.data(), dm, true);
      }
      for (std::ptrdiff_t i = 0; i < m; ++i)
        detail::rms_norm_row(b.x.data() + i * dm, w(layout.norm()), b.h.data() + i * dm, dm, c.rms_norm_eps);
      gemm(pool, b.scratch, m, rows_of(b.h.data(), dm), packed_.lm_head, b.logits.data(), vocab, false);
      for (std::ptrdiff_t i = 0; i < m; ++i) {
        row_state& s = *active[static_cast<std::size_t>(i)];
        const std::span<const T> logits(b.logits.data() + i * vocab, static_cast<std::size_t>(vocab));
        ++s.position;
        record(out[static_cast<std::size_t>(s.row)], s, logits, options, b.sort, step_logits);
      }
    }
  }
};

}  // namespace grpo::model
