// SPDX-License-Identifier: Apache-2.0
// causal_lm_policy::all_reduce_gradients with the communicators of data parallelism, on the tiny fixture models.
// On the CPU (CI): the gradients go in buckets of at most bucket_bytes, in parameter order, each summed by one host
// collective (a recording communicator that doubles: every gradient must come back exactly doubled, the buckets
// must be the greedy split of the parameter sizes). With a GPU ([gpu]): float CUDA gradients go to
// all_reduce_sum_device on LibTorch's current stream, never through the host; and one GRPO-style step through a real
// one-rank NCCL communicator (presented as two ranks, so that the policy does not skip the sum) trains to the same
// bits as the step without it.
#include <ATen/ATen.h>
#include <cuda_runtime_api.h>
#include <torch/cuda.h>

#include <catch2/catch.hpp>
#ifdef GRPO_TORCH_CUDA
#include <c10/cuda/CUDAStream.h>
#endif

#include <cstdint>
#include <filesystem>
#include <vector>

#include "causal_lm_support.hpp"
#include "grpo/libtorch/causal_lm_policy.hpp"
#include "grpo/nccl/communicator.hpp"

using namespace grpo;
using namespace grpo::testing;

namespace {

// Two ranks that double every host sum, recording each collective's size.
struct recording_doubler : train::communicator {
  std::vector<std::size_t> sizes;
  std::size_t rank() const override { return 0; }
  std::size_t world_size() const override { return 2; }
  void all_reduce_sum(std::span<float> values) override {
    sizes.push_back(values.size());
    for (auto& x : values) x *= 2;
  }
  void all_reduce_sum(std::span<double> values) override {
    sizes.push_back(values.size());
    for (auto& x : values) x *= 2;
  }
};

std::vector<std::vector<double>> gradients_of(const causal_lm_policy& policy) {
  std::vector<std::vector<double>> out;
  for (const auto& [name, t] : policy.model().named_parameters()) out.push_back(host(t.grad()));
  return out;
}

void backward_once(causal_lm_policy& policy) {
  const auto batch = random_batch(5, {{3, 4}, {2, 6}});
  policy.zero_grad();
  policy.backward(wrap(policy.backend(), sft(policy, batch, policy.forward(batch)).grad_logits));
}

// The greedy split all_reduce_gradients documents: a new bucket when the next gradient would overflow this one.
std::vector<std::size_t> expected_buckets(const causal_lm_policy& policy, std::size_t bucket_bytes,
                                          std::size_t element) {
  std::vector<std::size_t> sizes;
  std::size_t bytes = 0;
  for (const auto& [name, t] : policy.model().named_parameters()) {
    const auto n = static_cast<std::size_t>(t.numel());
    if (!sizes.empty() && bytes + n * element > bucket_bytes) {
      sizes.push_back(0);
      bytes = 0;
    }
    if (sizes.empty()) sizes.push_back(0);
    sizes.back() += n;
    bytes += n * element;
  }
  return sizes;
}

}  // namespace

TEST_CASE("nccl+torch: gradients are summed in buckets of at most bucket_bytes, in parameter order") {
  for (const auto master : {at::kFloat, at::kDouble}) {
    auto policy = load("tiny-qwen3", master);
    const std::size_t element = master == at::kFloat ? 4 : 8;
    backward_once(policy);
    const auto before = gradients_of(policy);
    for (const std::size_t bucket_bytes : {std::size_t{1}, std::size_t{4096}, std::size_t{25} << 20}) {
      INFO("bucket_bytes " << bucket_bytes << ", element size " << element);
      recording_doubler comm;
      policy.all_reduce_gradients(comm, bucket_bytes);
      CHECK(comm.sizes == expected_buckets(policy, bucket_bytes, element));
      const auto after = gradients_of(policy);
      REQUIRE(after.size() == before.size());
      for (std::size_t i = 0; i < after.size(); ++i) {
        std::vector<double> doubled = before[i];
        for (auto& x : doubled) x *= 2;
        CHECK(after[i] == doubled);
      }
      for (auto& [name, t] : policy.model().named_parameters()) t.mutable_grad().mul_(0.5);
    }
    CHECK(expected_buckets(policy, 1, element).size() == policy.model().named_parameters().size());
    CHECK(expected_buckets(policy, std::size_t{25} << 20, element).size() == 1);
    train::single_process one;
    policy.all_reduce_gradients(one);  // nothing to sum
    CHECK(gradients_of(policy) == before);
  }
}

#ifdef GRPO_TORCH_CUDA

namespace {

// Two ranks whose device sum doubles through the host, recording the streams it was handed.
struct device_doubler : recording_doubler {
  std::vector<void*> streams;
  bool on_device() const override { return true; }
  void all_reduce_sum_device(float* data, std::size_t count, void* stream) override {
    streams.push_back(stream);
    sizes.push_back(count);
    std::vector<float> x(count);
    auto s = static_cast<cudaStream_t>(stream);
    REQUIRE(cudaMemcpyAsync(x.data(), data, count * sizeof(float), cudaMemcpyDeviceToHost, s) == cudaSuccess);
    REQUIRE(cudaStreamSynchronize(s) == cudaSuccess);
    for (auto& v : x) v *= 2;
    REQUIRE(cudaMemcpyAsync(data, x.data(), count * sizeof(float), cudaMemcpyHostToDevice, s) == cudaSuccess);
    REQUIRE(cudaStreamSynchronize(s) == cudaSuccess);
  }
};

// A one-rank NCCL communicator presented as two ranks: all_reduce_gradients then sums through it, which for one
// rank leaves every value as it was.
struct as_two_ranks : train::communicator {
  nccl::communicator& inner;
  explicit as_two_ranks(nccl::communicator& c) : inner(c) {}
  std::size_t rank() const override { return 0; }
  std::size_t world_size() const override { return 2; }
  void all_reduce_sum(std::span<float> values) override { inner.all_reduce_sum(values); }
  void all_reduce_sum(std::span<double> values) override { inner.all_reduce_sum(values); }
  bool on_device() const override { return true; }
  void all_reduce_sum_device(float* data, std::size_t count, void* stream) override {
    ++device_calls;
    inner.all_reduce_sum_device(data, count, stream);
  }
  int device_calls = 0;
};

causal_lm_policy load_on_cuda(const std::string& name) {
  causal_lm_options options;
  options.device = at::Device(at::kCUDA, 0);
  options.compute_dtype = at::kFloat;
  return causal_lm_policy::load(models / name, options);
}

}  // namespace

TEST_CASE("nccl+torch: CUDA gradients go to the device sum on LibTorch's current stream", "[gpu]") {
  auto policy = load_on_cuda("tiny-qwen3");
  backward_once(policy);
  const auto before = gradients_of(policy);
  device_doubler comm;
  policy.all_reduce_gradients(comm, 4096);
  CHECK(comm.sizes == expected_buckets(policy, 4096, 4));
  const void* current = c10::cuda::getCurrentCUDAStream(0).stream();
  for (const void* s : comm.streams) CHECK(s == current);
  const auto after = gradients_of(policy);
  for (std::size_t i = 0; i < after.size(); ++i) {
    std::vector<double> doubled = before[i];
    for (auto& x : doubled) x *= 2;
    CHECK(after[i] == doubled);
  }
}

TEST_CASE("nccl+torch: a step through a one-rank NCCL communicator trains to the same bits", "[gpu]") {
  const auto path = grpo::testing::scratch_path("grpo_nccl_torch_rendezvous");
  nccl::communicator comm(path, 0, 1, nccl::communicator_options{0, std::chrono::seconds(30)});
  as_two_ranks through_nccl(comm);
  auto with = load_on_cuda("tiny-llama");
  auto without = load_on_cuda("tiny-llama");
  for (int step = 0; step < 2; ++step) {
    backward_once(with);
    backward_once(without);
    const auto before = gradients_of(with);
    with.all_reduce_gradients(through_nccl);
    CHECK(gradients_of(with) == before);
    CHECK(with.clip_grad_norm(1.0) == without.clip_grad_norm(1.0));
    with.optimizer_step(1e-3);
    without.optimizer_step(1e-3);
  }
  CHECK(through_nccl.device_calls == 2);  // the tiny model's gradients fit one 25 MiB bucket
  CHECK(weights_of(with) == weights_of(without));
}

#endif
