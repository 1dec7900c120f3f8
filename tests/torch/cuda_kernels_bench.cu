// SPDX-License-Identifier: Apache-2.0
// grpo_torch_cuda_kernels_bench: times the LibTorch backend's fused autograd Functions on CUDA tensors, whose row
// primitives run grpo::cuda's fused kernels in this nvcc-compiled file (row_dtype float), against the same loss written
// as PyTorch eager ops (the formulas TRL and Liger's references write, fp32 softmax math) on the same tensors, in the
// same process: forward and backward per call (median of 10 after 2 warm-ups), the peak of LibTorch's CUDA allocator
// above the inputs, and |ours - eager| of the loss value, which must be small for the timing to mean anything. Prints
// one table. Run by cmake/gpu-check.sh; as a ctest it only checks that every case runs (it skips, 77, without a GPU).
// Not the benchmark suite of bench/ (no Google Benchmark on the device machine).
#include <ATen/ATen.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/cuda.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "grpo/libtorch/autograd.hpp"

static_assert(GRPO_LIBTORCH_CUDA_KERNELS == 1, "this file must see grpo::cuda's kernels (nvcc, a CUDA LibTorch)");

namespace {

const at::Device gpu{at::kCUDA, 0};

struct timing {
  double ms = 0;        ///< median time of forward + backward
  double peak_mib = 0;  ///< allocator peak above what was allocated before the call
  double loss = 0;      ///< the loss value of the last call
};

/// LibTorch's CUDA allocator's byte counts on a device, over every pool (StatType::AGGREGATE, the first entry; the
/// enum moved between namespaces across torch releases).
auto allocated(at::Device device) {
  return c10::cuda::CUDACachingAllocator::getDeviceStats(device.index()).allocated_bytes[0];
}

/// Runs step (forward and backward of one loss of `student`, returning the loss) 2 + 10 times.
timing measure(const at::Tensor& student, const std::function<at::Tensor()>& step) {
  auto& grad = student.mutable_grad();
  std::vector<double> times;
  timing t;
  for (int i = 0; i < 12; ++i) {
    grad = at::Tensor();
    c10::cuda::getCurrentCUDAStream().synchronize();
    const auto before = allocated(gpu).current;
    c10::cuda::CUDACachingAllocator::resetPeakStats(gpu.index());
    const auto start = std::chrono::steady_clock::now();
    const auto loss = step();
    c10::cuda::getCurrentCUDAStream().synchronize();
    const auto stop = std::chrono::steady_clock::now();
    const auto peak = allocated(gpu).peak;
    if (i >= 2) times.push_back(std::chrono::duration<double, std::milli>(stop - start).count());
    t.peak_mib = static_cast<double>(peak - before) / (1 << 20);
    t.loss = loss.item<double>();
  }
  grad = at::Tensor();
  std::sort(times.begin(), times.end());
  t.ms = times[times.size() / 2];
  return t;
}

struct bench_case {
  std::string name;
  std::int64_t rows, vocab;
  at::ScalarType dtype;
};

at::Tensor logits(const bench_case& c, std::uint64_t seed) {
  at::manual_seed(seed);
  return (at::randn({c.rows, c.vocab}, at::TensorOptions().device(gpu).dtype(at::kFloat)) * 2.0).to(c.dtype);
}

void row(const char* loss, const bench_case& c, const timing& ours, const timing& eager) {
  std::printf("| %s | %s | %lld x %lld | %.2f ms, %.0f MiB | %.2f ms, %.0f MiB | %.2fx | %.1e |\n", loss,
              c.name.c_str(), static_cast<long long>(c.rows), static_cast<long long>(c.vocab), ours.ms, ours.peak_mib,
              eager.ms, eager.peak_mib, eager.ms / ours.ms,
              std::fabs(ours.loss - eager.loss) / std::max(std::fabs(eager.loss), 1e-30));
}

void run(const bench_case& c) {
  const double temperature = 0.9;
  const auto n = static_cast<double>(c.rows);
  auto student = logits(c, 1).requires_grad_();
  const auto teacher = logits(c, 2);
  const auto ids = at::randint(c.vocab, {c.rows}, at::TensorOptions().device(gpu).dtype(at::kLong));
  const auto mask = at::ones({c.rows}, at::TensorOptions().device(gpu).dtype(at::kFloat));
  const grpo::loss_denominators denominators{n, n, 1.0};
  const auto scaled = [&] { return student.to(at::kFloat) / temperature; };

  // GRPO's token log-probs and entropy (the policy loss from logits up to its elementwise tail), weighted by fixed
  // upstream gradients.
  const auto g_logprob = at::rand({c.rows}, mask.options()), g_entropy = at::rand({c.rows}, mask.options()) * 0.01;
  const auto ours_logprobs = measure(student, [&] {
    const auto out = grpo::libtorch::token_logprobs(student, ids, temperature, at::kFloat);
    auto loss = (out.logprobs * g_logprob).sum() + (out.entropy * g_entropy).sum();
    loss.backward();
    return loss;
  });
  const auto eager_logprobs = measure(student, [&] {
    const auto log_p = at::log_softmax(scaled(), 1);
    const auto logprobs = log_p.gather(1, ids.unsqueeze(1)).squeeze(1);
    const auto entropy = -(log_p.exp() * log_p).sum(1);
    auto loss = (logprobs * g_logprob).sum() + (entropy * g_entropy).sum();
    loss.backward();
    return loss;
  });
  row("token log-probs + entropy", c, ours_logprobs, eager_logprobs);

  // JSD, beta 0.5 (M = (P + Q) / 2), token mean.
  grpo::distillation_options jsd;
  jsd.beta = 0.5;
  jsd.temperature = temperature;
  const auto ours_jsd = measure(student, [&] {
    auto loss = grpo::libtorch::distillation_loss(student, teacher, mask, jsd, denominators, at::kFloat).loss;
    loss.backward();
    return loss;
  });
  const auto eager_jsd = measure(student, [&] {
    const auto log_q = at::log_softmax(scaled(), 1);
    const auto log_p = at::log_softmax(teacher.to(at::kFloat) / temperature, 1);
    const auto log_m = at::logsumexp(at::stack({log_p, log_q}), 0) - std::log(2.0);
    auto loss = 0.5 * ((log_p.exp() * (log_p - log_m)).sum(1) + (log_q.exp() * (log_q - log_m)).sum(1)).mean();
    loss.backward();
    return loss;
  });
  row("JSD beta 0.5", c, ours_jsd, eager_jsd);

  // Forward KL to the teacher's top 64 log-probs.
  const auto top = at::topk(at::log_softmax(teacher.to(at::kFloat) / temperature, 1), 64, 1);
  const auto top_logprobs = std::get<0>(top), top_ids = std::get<1>(top);
  grpo::distillation_options forward_kl;
  forward_kl.temperature = temperature;
  const auto ours_topk = measure(student, [&] {
    auto loss = grpo::libtorch::topk_distillation_loss(student, top_ids, top_logprobs, mask, forward_kl, denominators,
                                                       /*renormalize=*/false, at::kFloat)
                    .loss;
    loss.backward();
    return loss;
  });
  const auto eager_topk = measure(student, [&] {
    const auto log_q = at::log_softmax(scaled(), 1).gather(1, top_ids);
    auto loss = (top_logprobs.exp() * (top_logprobs - log_q)).sum(1).mean();
    loss.backward();
    return loss;
  });
  row("top-64 forward KL", c, ours_topk, eager_topk);

  // SFT cross-entropy, token mean.
  const auto ours_sft = measure(student, [&] {
    auto loss = grpo::libtorch::sft_loss(student, ids, mask, denominators, temperature, at::kFloat).loss;
    loss.backward();
    return loss;
  });
  const auto eager_sft = measure(student, [&] {
    auto loss = at::cross_entropy_loss(scaled(), ids);
    loss.backward();
    return loss;
  });
  row("SFT cross-entropy", c, ours_sft, eager_sft);
}

}  // namespace

int main() {
  if (!torch::cuda::is_available()) {
    std::puts("grpo_torch_cuda_kernels_bench: no CUDA device visible to LibTorch; skipped");
    return 77;
  }
  const bool quick = std::getenv("GRPO_BENCH_QUICK") != nullptr;
  const std::vector<bench_case> cases =
      quick ? std::vector<bench_case>{{"fp32", 64, 1000, at::kFloat}, {"bf16", 64, 1000, at::kBFloat16}}
            : std::vector<bench_case>{{"fp32", 4096, 32768, at::kFloat},
                                      {"bf16", 4096, 32768, at::kBFloat16},
                                      {"bf16", 2048, 151936, at::kBFloat16}};
  std::printf("LibTorch backend on CUDA with grpo::cuda's kernels (row_dtype float) against PyTorch eager ops, "
              "forward + backward, median of 10\n\n");
  std::printf("| loss | dtype | rows x vocab | libtorch backend: time, peak | eager: time, peak | speed-up | "
              "loss rel. diff |\n|---|---|---|---|---|---:|---:|\n");
  try {
    for (const auto& c : cases) run(c);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "grpo_torch_cuda_kernels_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
