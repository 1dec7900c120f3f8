// SPDX-License-Identifier: Apache-2.0
// The training side of grpo/libtorch/causal_lm_policy.hpp on the tiny fixture models: the AdamW update to the bit
// against grpo::train::adamw's formula, save_state / load_state resuming bit-identically, clipping, zero_grad and
// all-reduce, SFT steps that lower the loss, forward + backward against finite differences in fp64, and bf16
// compute with fp32 master weights, gradients and moments (the CUDA configuration, run on the CPU), and on a CUDA
// device when there is one (fp32 against the fixtures, bf16 training, the host-copy all-reduce, state round trip).
#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <torch/cuda.h>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "causal_lm_support.hpp"
#include "grpo/libtorch/causal_lm_policy.hpp"
#include "test_support.hpp"
#include "torch_support.hpp"

using namespace grpo;
using namespace grpo::libtorch;
using namespace grpo::testing;

TEST_CASE("causal_lm: AdamW equals the host formula to the bit, save_state resumes bit-identically") {
  auto policy = load("tiny-llama");
  policy.reset_optimizer({0.9, 0.95, 1e-6, 0.1});
  const auto batch = random_batch(9, {{3, 5}, {4, 2}, {2, 3}});
  const auto step = [&](causal_lm_policy& p) {
    p.zero_grad();
    const auto logits = p.forward(batch);
    p.backward(wrap(p.backend(), sft(p, batch, logits).grad_logits));
    p.clip_grad_norm(1.0);
    p.optimizer_step(3e-3);
  };
  step(policy);
  step(policy);

  // One more step by hand on the host, in double, with grpo::train::adamw's expression order.
  const auto before = weights_of(policy);
  std::vector<std::vector<double>> m, v, g;
  {
    const auto dir = scratch("moments");
    policy.save_state(dir);
    const auto m_file = safetensors::file::read(dir / "exp_avg.safetensors");
    const auto v_file = safetensors::file::read(dir / "exp_avg_sq.safetensors");
    for (const auto& [name, t] : policy.model().named_parameters()) {
      m.push_back(m_file.to_doubles(name));
      v.push_back(v_file.to_doubles(name));
    }
  }
  policy.zero_grad();
  const auto logits = policy.forward(batch);
  policy.backward(wrap(policy.backend(), sft(policy, batch, logits).grad_logits));
  for (const auto& [name, t] : policy.model().named_parameters()) g.push_back(host(t.grad()));
  policy.optimizer_step(2e-3);
  const auto after = weights_of(policy);
  const double b1 = 0.9, b2 = 0.95, c1 = 1.0 - std::pow(b1, 3.0), c2 = 1.0 - std::pow(b2, 3.0);
  const double decay = 1.0 - 2e-3 * 0.1;
  std::size_t mismatches = 0;
  for (std::size_t t = 0; t < before.size(); ++t)
    for (std::size_t i = 0; i < before[t].size(); ++i) {
      const double mi = b1 * m[t][i] + (1.0 - b1) * g[t][i];
      const double vi = b2 * v[t][i] + (1.0 - b2) * g[t][i] * g[t][i];
      const double update = (mi / c1) / (std::sqrt(vi / c2) + 1e-6);
      const auto p = static_cast<float>(before[t][i] * decay - 2e-3 * update);
      mismatches += static_cast<double>(p) != after[t][i];
    }
  CHECK(mismatches == 0);
  CHECK(policy.optimizer_steps() == 3);

  // Resume: a fresh policy loading the state takes the next step exactly as the original.
  policy.freeze_reference();
  const auto dir = scratch("state");
  policy.save_state(dir);
  auto resumed = load("tiny-llama");
  resumed.load_state(dir, {0.9, 0.95, 1e-6, 0.1});
  CHECK(resumed.optimizer_steps() == 3);
  REQUIRE(resumed.has_reference());
  CHECK(host(resumed.reference_logprobs(batch, 1.0).raw()) == host(policy.reference_logprobs(batch, 1.0).raw()));
  step(policy);
  step(resumed);
  CHECK(weights_of(resumed) == weights_of(policy));
  CHECK(host(resumed.reference_logprobs(batch, 1.0).raw()) != host(resumed.logprobs(batch, 1.0).raw()));

  auto other = load("tiny-qwen2");
  require_error([&] { other.load_state(dir, {}); }, {"policy_state.json", "field \"architecture\""});
  require_error([&] { resumed.load_state(scratch("nothing"), {}); }, {"policy_state.json", "cannot open"});
  require_error([&] { resumed.load_state(dir, {0.9, 1.0, 1e-6, 0.0}); }, {"adam_beta2"});
  require_error([&] { resumed.optimizer_step(-1.0); }, {"lr"});
}

TEST_CASE("causal_lm: clip_grad_norm, zero_grad and all_reduce_gradients") {
  auto policy = load("tiny-qwen3");
  const auto batch = random_batch(2, {{3, 4}, {2, 6}});
  policy.backward(wrap(policy.backend(), sft(policy, batch, policy.forward(batch)).grad_logits));
  double squares = 0.0;
  for (const auto& [name, t] : policy.model().named_parameters())
    for (const double x : host(t.grad())) squares += x * x;
  const double norm = policy.clip_grad_norm(0.0);  // measures only
  CHECK(norm == Approx(std::sqrt(squares)).epsilon(1e-12));
  CHECK(policy.clip_grad_norm(norm / 4) == Approx(norm).epsilon(1e-12));
  CHECK(policy.clip_grad_norm(0.0) == Approx(norm / 4 * norm / (norm + 1e-6)).epsilon(1e-6));

  struct doubling : train::communicator {
    std::size_t rank() const override { return 0; }
    std::size_t world_size() const override { return 2; }
    void all_reduce_sum(std::span<float> values) override {
      for (auto& x : values) x *= 2;
    }
    void all_reduce_sum(std::span<double> values) override {
      for (auto& x : values) x *= 2;
    }
  } comm;
  const double clipped = policy.clip_grad_norm(0.0);
  policy.all_reduce_gradients(comm);
  CHECK(policy.clip_grad_norm(0.0) == Approx(2 * clipped).epsilon(1e-12));
  policy.zero_grad();
  CHECK(policy.clip_grad_norm(0.0) == 0.0);
  for (auto& [name, t] : policy.model().named_parameters()) t.mutable_grad().fill_(NAN);
  require_error([&] { policy.clip_grad_norm(1.0); }, {"grads", "norm"});
}

TEST_CASE("causal_lm: a few SFT steps lower the loss") {
  auto policy = load("tiny-qwen2");
  const auto batch = random_batch(4, {{3, 6}, {5, 4}, {2, 5}});
  std::vector<double> losses;
  for (int i = 0; i < 6; ++i) {
    policy.zero_grad();
    const auto result = sft(policy, batch, policy.forward(batch));
    losses.push_back(host(result.loss.raw())[0]);
    policy.backward(wrap(policy.backend(), result.grad_logits));
    policy.clip_grad_norm(1.0);
    policy.optimizer_step(1e-2);
  }
  INFO("losses " << losses[0] << " ... " << losses.back());
  CHECK(losses.back() < losses.front() - 0.5);
}

TEST_CASE("causal_lm: forward + backward against finite differences in fp64") {
  for (const char* name : {"tiny-llama", "tiny-qwen2", "tiny-qwen3"}) {
    INFO(name);
    auto policy = load(name, at::kDouble);
    REQUIRE(policy.model().compute_dtype() == at::kDouble);
    const auto batch = random_batch(11, {{3, 3}, {1, 2}, {4, 0}, {2, 4}});
    const auto vocab = policy.vocab_size();
    const auto t = batch.max_completion_length();
    const auto d =
        at::randn({static_cast<std::int64_t>(batch.rows()) * t, vocab}, at::TensorOptions().dtype(at::kDouble)) *
        at::tensor(batch.completion_mask(), at::kDouble).unsqueeze(1);
    const auto objective = [&] { return (policy.forward(batch).raw() * d).sum().item<double>(); };
    policy.zero_grad();
    policy.forward(batch);
    policy.backward(wrap(policy.backend(), d));
    std::mt19937 gen(3);
    for (auto& [tensor_name, w] : policy.model().named_parameters()) {
      const auto flat = w.detach().view({-1});
      const auto grad = w.grad().view({-1});
      for (int probe = 0; probe < 2; ++probe) {
        const auto i = static_cast<std::int64_t>(gen() % static_cast<std::uint32_t>(flat.numel()));
        const double x = flat[i].item<double>(), h = 1e-5;
        flat[i] = x + h;
        const double up = objective();
        flat[i] = x - h;
        const double down = objective();
        flat[i] = x;
        INFO(tensor_name << "[" << i << "]");
        CHECK(grad[i].item<double>() == Approx((up - down) / (2 * h)).epsilon(1e-6).margin(1e-8));
      }
    }
  }
}

TEST_CASE("causal_lm: bf16 compute keeps fp32 master weights, gradients and moments") {
  auto policy = load("tiny-llama", at::kFloat, at::kBFloat16);
  const auto fixture = pairs_of(read_fixture("tiny-llama"));
  const auto lp = host(policy.logprobs(fixture.batch, 1.0).raw());
  double worst = 0.0;
  for (std::size_t i = 0; i < lp.size(); ++i) worst = std::max(worst, std::fabs(lp[i] - fixture.logprobs[i]));
  CHECK(worst < 0.5);  // bf16 rounding of every activation; the fp32 path is checked to 1e-4 above
  CHECK(worst > 0.0);
  const auto logits = policy.forward(fixture.batch);
  CHECK(logits.raw().scalar_type() == at::kBFloat16);
  policy.backward(wrap(policy.backend(), sft(policy, fixture.batch, logits).grad_logits));
  for (const auto& [name, t] : policy.model().named_parameters()) {
    CHECK(t.scalar_type() == at::kFloat);
    CHECK(t.grad().scalar_type() == at::kFloat);
  }
  const auto before = host(policy.logprobs(fixture.batch, 1.0).raw());
  policy.optimizer_step(1e-2);
  CHECK(host(policy.logprobs(fixture.batch, 1.0).raw()) != before);  // the bf16 copy follows the update
  sampling_options options;
  options.max_new_tokens = 4;
  const std::vector<std::vector<token_id>> prompts = {{5, 6, 7}, {9}};
  CHECK(policy.generate(prompts, options, 1, 2).size() == 4);
}

TEST_CASE("causal_lm: on CUDA, fp32 matches the fixtures and bf16 training runs with fp32 state", "[cuda]") {
  if (!torch::cuda::is_available()) {
    WARN("skipped: no CUDA device");
    return;
  }
  const auto fixture = read_fixture("tiny-llama");
  const auto pairs = pairs_of(fixture);
  causal_lm_options fp32;
  fp32.device = at::Device(at::kCUDA, 0);
  fp32.compute_dtype = at::kFloat;
  auto exact = causal_lm_policy::load(models / "tiny-llama", fp32);
  CHECK(exact.logprobs(pairs.batch, 1.0).raw().is_cuda());
  grpo::testing::require_same(host(exact.logprobs(pairs.batch, 1.0).raw()), pairs.logprobs, 1e-4, 0.0);
  sampling_options options;
  options.temperature = 0.7;
  options.max_new_tokens = 6;
  const std::vector<std::vector<token_id>> prompts = {{5, 9, 33}, {7}, {100, 200, 31, 44}};
  auto on_cpu = load("tiny-llama");
  const auto a = exact.generate(prompts, options, 3, 2), b = on_cpu.generate(prompts, options, 3, 2);
  for (std::size_t r = 0; r < a.size(); ++r) CHECK(a[r].tokens == b[r].tokens);

  causal_lm_options mixed;
  mixed.device = at::Device(at::kCUDA, 0);  // compute defaults to bf16
  auto policy = causal_lm_policy::load(models / "tiny-llama", mixed);
  CHECK(policy.model().compute_dtype() == at::kBFloat16);
  const auto logits = policy.forward(pairs.batch);
  CHECK(logits.raw().is_cuda());
  policy.backward(wrap(policy.backend(), sft(policy, pairs.batch, logits).grad_logits));
  struct doubling : train::communicator {
    std::size_t rank() const override { return 0; }
    std::size_t world_size() const override { return 2; }
    void all_reduce_sum(std::span<float> values) override {
      for (auto& x : values) x *= 2;
    }
    void all_reduce_sum(std::span<double> values) override {
      for (auto& x : values) x *= 2;
    }
  } comm;
  const double norm = policy.clip_grad_norm(0.0);
  policy.all_reduce_gradients(comm);
  CHECK(policy.clip_grad_norm(1.0) == Approx(2 * norm).epsilon(1e-9));
  policy.optimizer_step(1e-3);
  for (const auto& [name, t] : policy.model().named_parameters()) {
    CHECK(t.is_cuda());
    CHECK(t.scalar_type() == at::kFloat);
    CHECK(t.grad().scalar_type() == at::kFloat);
  }
  policy.freeze_reference();
  const auto dir = scratch("cuda_state");
  policy.save_state(dir);
  auto resumed = causal_lm_policy::load(models / "tiny-llama", mixed);
  resumed.load_state(dir, {});
  CHECK(weights_of(resumed) == weights_of(policy));
  CHECK(host(resumed.reference_logprobs(pairs.batch, 1.0).raw()) ==
        host(policy.reference_logprobs(pairs.batch, 1.0).raw()));
  const auto saved = scratch("cuda_saved");
  policy.save_pretrained(saved);
  auto reloaded = causal_lm_policy::load(saved, mixed);
  grpo::testing::require_same(host(reloaded.logprobs(pairs.batch, 1.0).raw()),
                              host(policy.logprobs(pairs.batch, 1.0).raw()), 1e-6, 0.0);
}
