// SPDX-License-Identifier: Apache-2.0
// The smallest grpo::trainable_policy: a bigram model, logits z = W[previous token] with W a
// V x V table on the reference backend. It shows what the concept asks of a policy and nothing
// more, and lets the tests drive grpo::train::trainer with a policy that is not the native
// transformer. Sampling reuses grpo::model::sample_token, seeded per row with row_seed.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "grpo/concepts.hpp"
#include "grpo/logits.hpp"
#include "grpo/model/sampling.hpp"
#include "grpo/reference_backend.hpp"
#include "grpo/safetensors.hpp"
#include "grpo/tensor.hpp"
#include "grpo/train/optimizer.hpp"

namespace grpo::testing {

class bigram_policy {
 public:
  using backend_type = reference_backend<double>;

  explicit bigram_policy(std::int64_t vocab) : vocab_(vocab), w_(static_cast<std::size_t>(vocab * vocab), 0.0) {
    grad_ = m_ = v_ = w_;
  }

  const backend_type& backend() const { return backend_; }
  std::int64_t vocab_size() const { return vocab_; }
  std::vector<double>& weights() { return w_; }

  tensor<backend_type> forward(const sequence_batch& batch) {
    contexts_ = contexts(batch);
    return logits(w_, contexts_);
  }

  void backward(const tensor<backend_type>& d_logits) {
    const auto d = d_logits.to_host();
    for (std::size_t n = 0; n < contexts_.size(); ++n)
      if (contexts_[n] >= 0)
        for (std::int64_t j = 0; j < vocab_; ++j) grad_[row(contexts_[n]) + static_cast<std::size_t>(j)] += d[n * static_cast<std::size_t>(vocab_) + static_cast<std::size_t>(j)];
  }

  tensor<backend_type> logprobs(const sequence_batch& batch, double temperature) { return scores(w_, batch, temperature); }
  void freeze_reference() { reference_ = w_; }
  bool has_reference() const { return reference_.has_value(); }
  tensor<backend_type> reference_logprobs(const sequence_batch& batch, double temperature) {
    return scores(reference_.value(), batch, temperature);
  }

  std::vector<sampled_completion> generate(std::span<const std::vector<token_id>> prompts,
                                           const sampling_options& options, std::uint64_t seed,
                                           std::int64_t group_size) {
    std::vector<sampled_completion> out;
    std::vector<std::pair<double, token_id>> scratch;
    for (std::size_t k = 0; k < prompts.size(); ++k)
      for (std::int64_t g = 0; g < group_size; ++g) {
        std::mt19937_64 gen(model::row_seed(seed, options.first_row + out.size()));
        sampled_completion c;
        token_id previous = prompts[k].back();
        while (static_cast<std::int64_t>(c.tokens.size()) < options.max_new_tokens && !c.stopped) {
          const std::span<const double> z(w_.data() + row(previous), static_cast<std::size_t>(vocab_));
          const double t = options.temperature == 0.0 ? 1.0 : options.temperature;
          double top = z[0];
          for (const double x : z) top = std::max(top, x / t);
          double s = 0;
          for (const double x : z) s += std::exp(x / t - top);
          const auto token = model::sample_token(z, top + std::log(s), options, gen, scratch);
          c.tokens.push_back(token.id);
          c.logprobs.push_back(token.logprob);
          c.full_logprobs.push_back(token.full_logprob);
          for (const token_id stop : options.stop_tokens) c.stopped = c.stopped || token.id == stop;
          previous = token.id;
        }
        out.push_back(std::move(c));
      }
    return out;
  }

  void zero_grad() { std::fill(grad_.begin(), grad_.end(), 0.0); }
  void all_reduce_gradients(train::communicator& comm) { comm.all_reduce_sum(std::span<double>(grad_)); }
  double clip_grad_norm(double max_norm) { return train::clip_grad_norm(std::span<double>(grad_), max_norm); }
  void reset_optimizer(const train::adamw_options& options) {
    train::validate(options);
    options_ = options;
    std::fill(m_.begin(), m_.end(), 0.0);
    std::fill(v_.begin(), v_.end(), 0.0);
    steps_ = 0;
  }
  void optimizer_step(double lr) {
    train::adamw_update<double>(options_, ++steps_, w_, grad_, m_, v_, lr);
  }

  void save_pretrained(const std::filesystem::path& dir) const {
    std::filesystem::create_directories(dir);
    safetensors::writer out;
    out.add("bigram.weight", std::span<const double>(w_), {vocab_, vocab_}, safetensors::dtype::f64);
    out.write(dir / "model.safetensors");
  }
  void save_state(const std::filesystem::path& dir) const {
    safetensors::writer out;
    for (const auto& [name, values] : {std::pair{"w", &w_}, std::pair{"m", &m_}, std::pair{"v", &v_}})
      out.add(name, std::span<const double>(*values), {vocab_, vocab_}, safetensors::dtype::f64);
    if (reference_) out.add("reference", std::span<const double>(*reference_), {vocab_, vocab_}, safetensors::dtype::f64);
    out.add_metadata("step", std::to_string(steps_));
    out.write(dir / "bigram_state.safetensors");
  }
  void load_state(const std::filesystem::path& dir, const train::adamw_options& options) {
    reset_optimizer(options);
    const auto f = safetensors::file::read(dir / "bigram_state.safetensors");
    w_ = safetensors::to_doubles(f.at("w"));
    m_ = safetensors::to_doubles(f.at("m"));
    v_ = safetensors::to_doubles(f.at("v"));
    reference_.reset();
    if (f.contains("reference")) reference_ = safetensors::to_doubles(f.at("reference"));
    steps_ = std::stoll(f.metadata().at("step"));
  }
  std::string describe() const { return "bigram table " + std::to_string(vocab_) + " x " + std::to_string(vocab_); }

 private:
  backend_type backend_;
  std::int64_t vocab_;
  std::vector<double> w_, grad_, m_, v_;
  std::optional<std::vector<double>> reference_;
  std::vector<std::int64_t> contexts_;
  train::adamw_options options_{};
  std::int64_t steps_ = 0;

  std::size_t row(std::int64_t token) const { return static_cast<std::size_t>(token * vocab_); }

  /// The token each [R*T] logits row conditions on: the one before the predicted one, -1 at padding.
  static std::vector<std::int64_t> contexts(const sequence_batch& batch) {
    const auto t = static_cast<std::size_t>(batch.max_completion_length());
    std::vector<std::int64_t> out(batch.rows() * t, -1);
    for (std::size_t r = 0; r < batch.rows(); ++r)
      for (std::size_t i = 0; i < batch.completions[r].size(); ++i)
        out[r * t + i] = i == 0 ? batch.prompts[r].back() : batch.completions[r][i - 1];
    return out;
  }

  tensor<backend_type> logits(const std::vector<double>& w, const std::vector<std::int64_t>& ctx) const {
    std::vector<double> z(ctx.size() * static_cast<std::size_t>(vocab_), 0.0);
    for (std::size_t n = 0; n < ctx.size(); ++n)
      if (ctx[n] >= 0)
        for (std::int64_t j = 0; j < vocab_; ++j)
          z[n * static_cast<std::size_t>(vocab_) + static_cast<std::size_t>(j)] = w[row(ctx[n]) + static_cast<std::size_t>(j)];
    return make_tensor(backend_, z, shape::matrix(static_cast<std::int64_t>(ctx.size()), vocab_));
  }

  tensor<backend_type> scores(const std::vector<double>& w, const sequence_batch& batch, double temperature) const {
    const auto ctx = contexts(batch);
    const auto z = logits(w, ctx);
    const auto t = batch.max_completion_length();
    std::vector<std::int64_t> ids(ctx.size(), 0);
    for (std::size_t r = 0; r < batch.rows(); ++r)
      for (std::size_t i = 0; i < batch.completions[r].size(); ++i) ids[r * static_cast<std::size_t>(t) + i] = batch.completions[r][i];
    const auto lp = token_logprobs(z, make_index(backend_, ids, shape::vector(static_cast<std::int64_t>(ids.size()))),
                                   temperature);
    const auto mask = make_tensor(backend_, batch.completion_mask(), shape::vector(static_cast<std::int64_t>(ids.size())));
    return reshape(lp.logprobs * mask, shape::matrix(static_cast<std::int64_t>(batch.rows()), t));
  }
};

static_assert(trainable_policy<bigram_policy>);

}  // namespace grpo::testing
