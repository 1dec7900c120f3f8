// SPDX-License-Identifier: Apache-2.0
// grpo_torch_cuda_kernels_bench: times the LibTorch backend's fused autograd Functions on CUDA tensors, whose row
// primitives run grpo::cuda's fused kernels in this nvcc-compiled file (row_dtype float) where they apply (the table's
// "our path"), against the same loss written as PyTorch eager ops (the formulas TRL and Liger's references write,
// fp32 softmax math) on the same tensors, in the same process; also the GRPO loss from log-probs and the group
// advantages, which run torch ops on CUDA (issue 14's "no path slower than eager"). Per case: forward and backward
// per call (median of 10 after 2 warm-ups), the peak of LibTorch's CUDA allocator above the inputs, and the relative
// difference of the loss values, which must be small for the timing to mean anything. Prints one table. Run by
// cmake/gpu-check.sh; as a ctest it only checks that every case runs (it skips, 77, without a GPU). Not the benchmark
// suite of bench/ (no Google Benchmark on the device machine).
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

#include "grpo/advantages.hpp"
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

/// Runs step (forward and backward of one loss of `input`, returning the loss) 2 + 10 times, input's gradient cleared
/// before each (input may be undefined: a forward-only step).
timing measure(const at::Tensor& input, const std::function<at::Tensor()>& step) {
  const auto clear_grad = [&] {
    if (input.defined()) input.mutable_grad() = at::Tensor();
  };
  std::vector<double> times;
  timing t;
  for (int i = 0; i < 12; ++i) {
    clear_grad();
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
  clear_grad();
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

void row(const char* loss, const std::string& dtype, const std::string& shape, const char* path, const timing& ours,
         const timing& eager) {
  std::printf("| %s | %s | %s | %s | %.2f ms, %.0f MiB | %.2f ms, %.0f MiB | %.2fx | %.1e |\n", loss, dtype.c_str(),
              shape.c_str(), path, ours.ms, ours.peak_mib, eager.ms, eager.peak_mib, eager.ms / ours.ms,
              std::fabs(ours.loss - eager.loss) / std::max(std::fabs(eager.loss), 1e-30));
}

void row(const char* loss, const bench_case& c, const char* path, const timing& ours, const timing& eager) {
  row(loss, c.name, std::to_string(c.rows) + " x " + std::to_string(c.vocab), path, ours, eager);
}

/// What our side of a case runs: grpo::cuda's kernels or the torch ops, for the forward's and the backward's row
/// primitive (the fused Functions run both with autograd recording nothing).
const char* path_name(grpo::libtorch::row_path forward, grpo::libtorch::row_path backward) {
  using grpo::libtorch::row_path;
  const bool kernels_forward = forward == row_path::cuda_kernels, kernels_backward = backward == row_path::cuda_kernels;
  if (kernels_forward && kernels_backward) return "kernels";
  return kernels_forward ? "kernels, torch ops backward" : "torch ops";
}

/// The two cases without logits, on the torch ops (no kernel of grpo::cuda applies): the GRPO loss from log-probs
/// (TRL's defaults: clip 0.2, k3 KL with beta 0.04, token mean) forward and backward, and the group advantages
/// (forward only, as trainers run them; ours also downloads the batch statistics it returns).
void run_without_logits(std::int64_t rows, std::int64_t seq, std::int64_t prompts, std::int64_t group) {
  const auto options = at::TensorOptions().device(gpu).dtype(at::kFloat);
  at::manual_seed(3);
  auto logprobs = (at::randn({rows, seq}, options) * 0.5 - 1.0).requires_grad_();
  const auto old = logprobs.detach() + 0.05 * at::randn({rows, seq}, options);
  const auto ref = logprobs.detach() + 0.1 * at::randn({rows, seq}, options);
  const auto advantages = at::randn({rows}, options);
  const auto lengths = at::randint(seq / 4, seq + 1, {rows, 1}, options.dtype(at::kLong));
  const auto mask = (at::arange(seq, options.dtype(at::kLong)).unsqueeze(0) < lengths).to(at::kFloat);
  grpo::policy_loss_options loss_options;
  loss_options.epsilon_low = loss_options.epsilon_high = 0.2;
  loss_options.beta = 0.04;
  loss_options.kl = grpo::kl_estimator::k3;
  loss_options.aggregation = grpo::loss_aggregation::token_mean;
  const auto denominators =
      grpo::denominators_from_mask(grpo::libtorch::wrap(grpo::libtorch::backend_like(mask), mask));
  const auto ours = measure(logprobs, [&] {
    auto loss = grpo::libtorch::policy_loss({.logprobs = logprobs, .advantages = advantages, .mask = mask,
                                             .old_logprobs = old, .ref_logprobs = ref},
                                            loss_options, denominators)
                    .loss;
    loss.backward();
    return loss;
  });
  const auto eager = measure(logprobs, [&] {
    const auto delta = ref - logprobs;
    const auto kl = at::exp(delta) - delta - 1.0;
    const auto ratio = at::exp(logprobs - old);
    const auto a = advantages.unsqueeze(1);
    const auto per_token = -at::min(ratio * a, at::clamp(ratio, 0.8, 1.2) * a) + 0.04 * kl;
    auto loss = (per_token * mask).sum() / mask.sum().clamp_min(1.0);
    loss.backward();
    return loss;
  });
  row("GRPO loss from log-probs", "fp32", std::to_string(rows) + " x " + std::to_string(seq), "torch ops", ours,
      eager);

  const auto rewards = at::randn({prompts * group}, options);
  const auto no_grad = at::Tensor();
  const auto ours_advantages = measure(no_grad, [&] {
    const auto r = grpo::grpo_advantages(grpo::libtorch::wrap(grpo::libtorch::backend_like(rewards), rewards),
                                         grpo::group_layout::consecutive(group));
    return r.advantages.raw().abs().sum();
  });
  const auto eager_advantages = measure(no_grad, [&] {
    const auto grouped = rewards.view({-1, group});
    const auto mean = grouped.mean(1, true);
    const auto std = grouped.std(1, /*unbiased=*/true, /*keepdim=*/true);
    return ((grouped - mean) / (std + 1e-4)).view({-1}).abs().sum();
  });
  row("GRPO advantages", "fp32", std::to_string(prompts) + " prompts x " + std::to_string(group), "torch ops",
      ours_advantages, eager_advantages);
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
  // The paths the fused Functions take: every gradient buffer is in the logits' dtype (the distillation losses get
  // theirs through grad_logits).
  auto rows_b = grpo::libtorch::backend_like(student);
  rows_b.row_dtype = at::kFloat;
  const auto plain = student.detach();
  const auto logits_grad = at::empty_like(plain);
  row("token log-probs + entropy", c,
      path_name(row_softmax_stats_path(rows_b, plain), row_softmax_backward_path(rows_b, plain, logits_grad)),
      ours_logprobs, eager_logprobs);

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
  const auto jsd_path = row_divergence_path(rows_b, plain, teacher, logits_grad);
  row("JSD beta 0.5", c, path_name(jsd_path, jsd_path), ours_jsd, eager_jsd);

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
  const auto topk_path = row_sparse_forward_kl_path(rows_b, plain, top_logprobs, logits_grad);
  row("top-64 forward KL", c, path_name(topk_path, topk_path), ours_topk, eager_topk);

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
  row("SFT cross-entropy", c,
      path_name(row_softmax_stats_path(rows_b, plain), row_softmax_backward_path(rows_b, plain, logits_grad)),
      ours_sft, eager_sft);
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
  std::printf("| loss | dtype | shape | our path | libtorch backend: time, peak | eager: time, peak | speed-up | "
              "loss rel. diff |\n|---|---|---|---|---|---|---:|---:|\n");
  try {
    if (quick)
      run_without_logits(16, 64, 8, 4);
    else
      run_without_logits(512, 1024, 4096, 16);
    for (const auto& c : cases) run(c);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "grpo_torch_cuda_kernels_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
