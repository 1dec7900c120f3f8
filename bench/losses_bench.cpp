// SPDX-License-Identifier: Apache-2.0
// bench/losses_bench.cpp: Google Benchmark cases for the losses of issue 3 on one backend, chosen at compile time
// (GRPO_BENCH_BACKEND_REFERENCE, _CCCL with THRUST_DEVICE_SYSTEM_OMP, or _LIBTORCH; see bench/CMakeLists.txt).
// Cases (full shapes; --quick or GRPO_BENCH_QUICK=1 shrinks them for a smoke run), each named "<case>/<backend>":
//   grpo_logprobs      policy_loss forward + analytic backward, B = 64 prompts x G = 8 sequences x T = 1024
//   grpo_logits_v32k   policy_loss_from_logits, N = 4096 tokens x V = 32768, gradient written over the logits
//   grpo_logits_v152k  the same with V = 151936
//   advantages_64x8    grpo_advantages of 64 x 8 rewards; advantages_4096x16 of 4096 x 16
//   jsd_v32k           distillation_loss with beta 0.5 (generalized JSD), N = 4096 x V = 32768
//   topk_kl_v32k       topk_distillation_loss, a teacher's top K = 64 (id, log-prob) per row, N = 4096 x V = 32768
//   sft_v32k           sft_loss (cross-entropy on the targets), N = 4096 x V = 32768
// The GRPO loss is TRL's default configuration with a KL term: clip 0.2, k3 KL with beta 0.04, token-mean (dapo).
// Run one case per process with --benchmark_filter='^<case>/' (bench/run.sh does, to read each case's peak RSS).
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "grpo/advantages.hpp"
#include "grpo/aggregation.hpp"
#include "grpo/distillation.hpp"
#include "grpo/logits.hpp"
#include "grpo/logits_policy_loss.hpp"
#include "grpo/policy_loss.hpp"
#include "grpo/reference_backend.hpp"
#include "grpo/tensor.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

#if defined(GRPO_BENCH_BACKEND_CCCL)
#include "grpo/cccl/backend.hpp"
#elif defined(GRPO_BENCH_BACKEND_LIBTORCH)
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "grpo/libtorch/backend.hpp"
#elif !defined(GRPO_BENCH_BACKEND_REFERENCE)
#error "define one of GRPO_BENCH_BACKEND_REFERENCE, GRPO_BENCH_BACKEND_CCCL, GRPO_BENCH_BACKEND_LIBTORCH"
#endif

namespace {

// ---- the backend under test ------------------------------------------------------------------------------------
// Each backend says how to make its object, how to allocate an uninitialised [rows, cols] fp32 tensor and where its
// host-visible storage is: the large logits are filled in place, never through a host std::vector<double> (an N x V
// double copy would dominate the peak RSS being measured).

#if defined(GRPO_BENCH_BACKEND_CCCL)
using backend_type = grpo::cccl::backend<float>;
const std::string backend_name = grpo::cccl::device_system_name;
backend_type make_backend() { return backend_type{}; }
grpo::tensor<backend_type> new_matrix(const backend_type& b, std::int64_t rows, std::int64_t cols) {
  return {b, grpo::cccl::device_tensor<float>{grpo::shape::matrix(rows, cols),
                                              grpo::cccl::device_buffer<float>(b.workspace(),
                                                                               static_cast<std::size_t>(rows * cols))}};
}
float* host_data(grpo::tensor<backend_type>& t) { return t.raw().data.data(); }
int thread_count() { return omp_get_max_threads(); }
#elif defined(GRPO_BENCH_BACKEND_LIBTORCH)
using backend_type = grpo::libtorch::backend;
const std::string backend_name = "libtorch";
// fp32 end to end: the row primitives' default compute dtype is double (exactness first); a user who benchmarks
// fp32 sets row_dtype to float, as here.
backend_type make_backend() { return backend_type{at::kCPU, at::kFloat, at::kFloat}; }
grpo::tensor<backend_type> new_matrix(const backend_type& b, std::int64_t rows, std::int64_t cols) {
  return {b, at::empty({rows, cols}, at::TensorOptions().dtype(at::kFloat).device(at::kCPU))};
}
float* host_data(grpo::tensor<backend_type>& t) { return t.raw().data_ptr<float>(); }
int thread_count() { return at::get_num_threads(); }
#else
using backend_type = grpo::reference_backend<float>;
const std::string backend_name = "reference";
backend_type make_backend() { return backend_type{}; }
grpo::tensor<backend_type> new_matrix(const backend_type& b, std::int64_t rows, std::int64_t cols) {
  return {b, grpo::reference_tensor<float>{grpo::shape::matrix(rows, cols),
                                           std::vector<float>(static_cast<std::size_t>(rows * cols))}};
}
float* host_data(grpo::tensor<backend_type>& t) { return t.raw().data.data(); }
int thread_count() { return 1; }
#endif

using tensor_type = grpo::tensor<backend_type>;

// ---- seeded inputs -------------------------------------------------------------------------------------------------
// A counter-based generator (splitmix64 of seed and index), so that filling is parallel and every run and backend
// sees the same values.

std::uint64_t mix(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

std::uint64_t hash(std::uint64_t seed, std::uint64_t i) { return mix(seed * 0xD1B54A32D192ED03ULL ^ mix(i)); }

/// Roughly standard normal: the Irwin-Hall sum of four 16-bit uniforms from one hash, centred and scaled to
/// variance 1 (bounded by +-2 sqrt(3), which keeps every logit ordinary).
double normalish(std::uint64_t seed, std::uint64_t i) {
  const std::uint64_t h = hash(seed, i);
  double total = 0.0;
  for (int k = 0; k < 4; ++k) total += (static_cast<double>((h >> (16 * k)) & 0xFFFFU) + 0.5) / 65536.0;
  return (total - 2.0) * std::sqrt(3.0);
}

double uniform01(std::uint64_t seed, std::uint64_t i) { return static_cast<double>(hash(seed, i) >> 11) * 0x1p-53; }

/// Logits ~ 2 N(0, 1), written in place (in parallel where OpenMP is available).
void fill_logits(tensor_type& logits, std::uint64_t seed) {
  float* data = host_data(logits);
  const std::int64_t n = logits.shape().numel();
#if defined(_OPENMP)
#pragma omp parallel for schedule(static)
#endif
  for (std::int64_t i = 0; i < n; ++i) data[i] = static_cast<float>(2.0 * normalish(seed, static_cast<std::uint64_t>(i)));
}

std::vector<double> normal_vector(std::int64_t n, std::uint64_t seed, double scale, double shift = 0.0) {
  std::vector<double> out(static_cast<std::size_t>(n));
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = shift + scale * normalish(seed, i);
  return out;
}

/// [rows, cols] completion mask: row i holds a completion of length uniform in [cols / 4, cols].
std::vector<double> completion_mask(std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
  std::vector<double> mask(static_cast<std::size_t>(rows * cols), 0.0);
  for (std::int64_t r = 0; r < rows; ++r) {
    const auto shortest = std::max<std::int64_t>(cols / 4, 1);
    const auto length =
        shortest + static_cast<std::int64_t>(uniform01(seed, static_cast<std::uint64_t>(r)) *
                                             static_cast<double>(cols - shortest + 1));
    for (std::int64_t c = 0; c < std::min(length, cols); ++c) mask[static_cast<std::size_t>(r * cols + c)] = 1.0;
  }
  return mask;
}

/// x + noise, the noise ~ sigma N(0, 1): old and reference log-probs near the current ones, as after one update.
std::vector<double> perturbed(const std::vector<double>& x, double sigma, std::uint64_t seed) {
  auto out = normal_vector(static_cast<std::int64_t>(x.size()), seed, sigma);
  for (std::size_t i = 0; i < out.size(); ++i) out[i] += x[i];
  return out;
}

grpo::policy_loss_options trl_grpo_options() {
  grpo::policy_loss_options o;
  o.epsilon_low = 0.2;
  o.epsilon_high = 0.2;
  o.beta = 0.04;
  o.kl = grpo::kl_estimator::k3;
  o.aggregation = grpo::loss_aggregation::token_mean;
  return o;
}

// ---- reporting -------------------------------------------------------------------------------------------------

double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

constexpr double mib = 1024.0 * 1024.0;

/// bytes: the minimum traffic of one iteration (each input read once, each output written once); input_bytes: the
/// size of the case's inputs, against which "peak <= logits + O(N)" is judged; tokens: tokens (or completions) per
/// iteration.
void report(benchmark::State& state, double bytes, double input_bytes, double tokens, const std::string& label) {
  const auto iterations = static_cast<double>(state.iterations());
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes * iterations));
  state.counters["tokens_per_second"] = benchmark::Counter(tokens * iterations, benchmark::Counter::kIsRate);
  state.counters["input_MiB"] = input_bytes / mib;
  state.counters["peak_rss_MiB"] = peak_rss_mib();
  state.SetLabel(label);
}

/// Set when a case threw: Google Benchmark reports SkipWithError but still exits 0, and the smoke tests must fail.
bool any_case_failed = false;

template <class F>
void guarded(benchmark::State& state, F&& body) {
  try {
    body();
  } catch (const std::exception& e) {
    any_case_failed = true;
    state.SkipWithError(e.what());
  }
}

// ---- cases ---------------------------------------------------------------------------------------------------------

/// GRPO loss and its gradient from log-probs [rows, seq_len].
void grpo_logprobs(benchmark::State& state, std::int64_t rows, std::int64_t seq_len) {
  guarded(state, [&] {
    const auto b = make_backend();
    const auto s = grpo::shape::matrix(rows, seq_len);
    const auto n = s.numel();
    const auto logp_host = normal_vector(n, 1, 0.5, -1.0);
    const auto mask = grpo::make_tensor(b, completion_mask(rows, seq_len, 2), s);
    grpo::policy_loss_inputs<backend_type> inputs{.logprobs = grpo::make_tensor(b, logp_host, s),
                                                  .advantages = grpo::make_tensor(b, normal_vector(rows, 3, 1.0),
                                                                                  grpo::shape::vector(rows)),
                                                  .mask = mask,
                                                  .old_logprobs = grpo::make_tensor(b, perturbed(logp_host, 0.05, 4), s),
                                                  .ref_logprobs = grpo::make_tensor(b, perturbed(logp_host, 0.1, 5), s)};
    const auto options = trl_grpo_options();
    const auto denominators = grpo::denominators_from_mask(mask);
    for (auto _ : state) {
      auto result = grpo::policy_loss(inputs, options, denominators);
      benchmark::DoNotOptimize(result.loss.item());
      benchmark::ClobberMemory();
    }
    const auto elements = static_cast<double>(n);
    report(state, 5.0 * 4.0 * elements, 4.0 * 4.0 * elements, elements,
           "B*G=" + std::to_string(rows) + " T=" + std::to_string(seq_len));
  });
}

/// GRPO loss from logits [batch * seq_len, vocab], the gradient overwriting the logits (the in-place path). The
/// logits are refilled before each iteration, outside the timed region, so every iteration sees fresh logits.
void grpo_logits(benchmark::State& state, std::int64_t batch, std::int64_t seq_len, std::int64_t vocab) {
  guarded(state, [&] {
    const auto b = make_backend();
    const auto s = grpo::shape::matrix(batch, seq_len);
    const auto n = s.numel();
    auto logits = new_matrix(b, n, vocab);
    fill_logits(logits, 10);
    std::vector<std::int64_t> id_host(static_cast<std::size_t>(n));
    for (std::size_t i = 0; i < id_host.size(); ++i)
      id_host[i] = static_cast<std::int64_t>(uniform01(11, i) * static_cast<double>(vocab));
    const auto ids = grpo::make_index(b, id_host, grpo::shape::vector(n));
    const auto mask = grpo::make_tensor(b, completion_mask(batch, seq_len, 12), s);
    const auto current = grpo::token_logprobs(logits, ids, 1.0).logprobs.to_host();
    const grpo::logits_policy_loss_inputs<backend_type> inputs{
        .advantages = grpo::make_tensor(b, normal_vector(batch, 13, 1.0), grpo::shape::vector(batch)),
        .mask = mask,
        .old_logprobs = grpo::make_tensor(b, perturbed(current, 0.05, 14), s),
        .ref_logprobs = grpo::make_tensor(b, perturbed(current, 0.1, 15), s)};
    const auto options = trl_grpo_options();
    const auto denominators = grpo::denominators_from_mask(mask);
    for (auto _ : state) {
      state.PauseTiming();
      fill_logits(logits, 10);
      state.ResumeTiming();
      auto result = grpo::policy_loss_from_logits(logits, ids, 1.0, inputs, options, denominators, logits.raw());
      benchmark::DoNotOptimize(result.policy.loss.item());
      benchmark::ClobberMemory();
    }
    const auto logit_bytes = 4.0 * static_cast<double>(n) * static_cast<double>(vocab);
    report(state, 2.0 * logit_bytes, logit_bytes, static_cast<double>(n),
           "N=" + std::to_string(n) + " V=" + std::to_string(vocab));
  });
}

/// GRPO group advantages of prompts x group rewards.
void advantages(benchmark::State& state, std::int64_t prompts, std::int64_t group) {
  guarded(state, [&] {
    const auto b = make_backend();
    const auto n = prompts * group;
    const auto scores = grpo::make_tensor(b, normal_vector(n, 20, 1.0), grpo::shape::vector(n));
    const auto layout = grpo::group_layout::consecutive(group);
    for (auto _ : state) {
      auto result = grpo::grpo_advantages(scores, layout);
      benchmark::DoNotOptimize(result.zero_std_fraction);
      benchmark::ClobberMemory();
    }
    const auto elements = static_cast<double>(n);
    report(state, 2.0 * 4.0 * elements, 4.0 * elements, elements,
           "prompts=" + std::to_string(prompts) + " G=" + std::to_string(group));
  });
}

/// Generalized JSD (beta 0.5) between teacher and student logits [rows, vocab], with the student gradient.
void jsd(benchmark::State& state, std::int64_t rows, std::int64_t vocab) {
  guarded(state, [&] {
    const auto b = make_backend();
    auto student = new_matrix(b, rows, vocab);
    auto teacher = new_matrix(b, rows, vocab);
    fill_logits(student, 30);
    fill_logits(teacher, 31);
    const auto mask = grpo::full(b, grpo::shape::vector(rows), 1.0);
    grpo::loss_denominators denominators;
    denominators.tokens = static_cast<double>(rows);
    const grpo::distillation_options options{.temperature = 1.0, .beta = 0.5};
    for (auto _ : state) {
      auto result = grpo::distillation_loss(student, teacher, mask, options, denominators);
      benchmark::DoNotOptimize(result.loss.item());
      benchmark::ClobberMemory();
    }
    const auto logit_bytes = 4.0 * static_cast<double>(rows) * static_cast<double>(vocab);
    report(state, 3.0 * logit_bytes, 2.0 * logit_bytes, static_cast<double>(rows),
           "N=" + std::to_string(rows) + " V=" + std::to_string(vocab));
  });
}

/// Forward KL from a sparse teacher: K distinct ids per row with their log-probs, student logits [rows, vocab].
void topk_kl(benchmark::State& state, std::int64_t rows, std::int64_t vocab, std::int64_t k) {
  guarded(state, [&] {
    const auto b = make_backend();
    auto student = new_matrix(b, rows, vocab);
    fill_logits(student, 40);
    std::vector<std::int64_t> id_host(static_cast<std::size_t>(rows * k));
    std::vector<double> logprob_host(id_host.size());
    for (std::int64_t n = 0; n < rows; ++n) {
      // An odd stride over a power-of-two vocabulary keeps the K ids of a row distinct.
      const auto first =
          static_cast<std::int64_t>(uniform01(41, static_cast<std::uint64_t>(n)) * static_cast<double>(vocab));
      double total = 0.0;
      for (std::int64_t j = 0; j < k; ++j) {
        const auto at = static_cast<std::size_t>(n * k + j);
        id_host[at] = (first + j * 509) % vocab;
        logprob_host[at] = 2.0 * normalish(42, at);
        total += std::exp(logprob_host[at]);
      }
      // The teacher's top K hold 90% of its mass: log-probs of a truncated distribution, not renormalized.
      const double shift = std::log(total / 0.9);
      for (std::int64_t j = 0; j < k; ++j) logprob_host[static_cast<std::size_t>(n * k + j)] -= shift;
    }
    const auto ids = grpo::make_index(b, id_host, grpo::shape::matrix(rows, k));
    const auto logprobs = grpo::make_tensor(b, logprob_host, grpo::shape::matrix(rows, k));
    const auto mask = grpo::full(b, grpo::shape::vector(rows), 1.0);
    grpo::loss_denominators denominators;
    denominators.tokens = static_cast<double>(rows);
    const grpo::distillation_options options{.temperature = 1.0, .beta = 0.0};
    for (auto _ : state) {
      auto result = grpo::topk_distillation_loss(student, ids, logprobs, mask, options, denominators);
      benchmark::DoNotOptimize(result.loss.item());
      benchmark::ClobberMemory();
    }
    const auto logit_bytes = 4.0 * static_cast<double>(rows) * static_cast<double>(vocab);
    report(state, 2.0 * logit_bytes, logit_bytes, static_cast<double>(rows),
           "N=" + std::to_string(rows) + " V=" + std::to_string(vocab) + " K=" + std::to_string(k));
  });
}

/// SFT cross-entropy of logits [rows, vocab] on uniform target ids, with the gradient.
void sft(benchmark::State& state, std::int64_t rows, std::int64_t vocab) {
  guarded(state, [&] {
    const auto b = make_backend();
    auto logits = new_matrix(b, rows, vocab);
    fill_logits(logits, 50);
    std::vector<std::int64_t> id_host(static_cast<std::size_t>(rows));
    for (std::size_t i = 0; i < id_host.size(); ++i)
      id_host[i] = static_cast<std::int64_t>(uniform01(51, i) * static_cast<double>(vocab));
    const auto targets = grpo::make_index(b, id_host, grpo::shape::vector(rows));
    const auto mask = grpo::full(b, grpo::shape::vector(rows), 1.0);
    grpo::loss_denominators denominators;
    denominators.tokens = static_cast<double>(rows);
    for (auto _ : state) {
      auto result = grpo::sft_loss(logits, targets, mask, denominators);
      benchmark::DoNotOptimize(result.loss.item());
      benchmark::ClobberMemory();
    }
    const auto logit_bytes = 4.0 * static_cast<double>(rows) * static_cast<double>(vocab);
    report(state, 2.0 * logit_bytes, logit_bytes, static_cast<double>(rows),
           "N=" + std::to_string(rows) + " V=" + std::to_string(vocab));
  });
}

void register_cases(bool quick) {
  const auto add = [](const std::string& name, std::function<void(benchmark::State&)> run) {
    benchmark::RegisterBenchmark((name + "/" + backend_name).c_str(),
                                 [run = std::move(run)](benchmark::State& state) { run(state); })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  };
  // Quick shapes keep every case under about a second on the reference backend.
  const std::int64_t prompts = quick ? 8 : 64, seq = quick ? 256 : 1024;
  const std::int64_t logit_batch = quick ? 2 : 4, logit_seq = quick ? 128 : 1024;
  const std::int64_t v32 = quick ? 8192 : 32768, v152 = quick ? 32768 : 151936;
  add("grpo_logprobs", [=](benchmark::State& s) { grpo_logprobs(s, prompts * 8, seq); });
  add("grpo_logits_v32k", [=](benchmark::State& s) { grpo_logits(s, logit_batch, logit_seq, v32); });
  add("grpo_logits_v152k", [=](benchmark::State& s) { grpo_logits(s, logit_batch, logit_seq, v152); });
  add("advantages_64x8", [](benchmark::State& s) { advantages(s, 64, 8); });
  add("advantages_4096x16", [=](benchmark::State& s) { advantages(s, quick ? 512 : 4096, 16); });
  add("jsd_v32k", [=](benchmark::State& s) { jsd(s, logit_batch * logit_seq, v32); });
  add("topk_kl_v32k", [=](benchmark::State& s) { topk_kl(s, logit_batch * logit_seq, v32, 64); });
  add("sft_v32k", [=](benchmark::State& s) { sft(s, logit_batch * logit_seq, v32); });
}

}  // namespace

int main(int argc, char** argv) {
  const char* env = std::getenv("GRPO_BENCH_QUICK");
  bool quick = env != nullptr && std::strcmp(env, "") != 0 && std::strcmp(env, "0") != 0;
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  register_cases(quick);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("grpo_backend", backend_name);
  benchmark::AddCustomContext("grpo_threads", std::to_string(thread_count()));
  benchmark::AddCustomContext("grpo_shapes", quick ? "quick" : "full");
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return any_case_failed ? 1 : 0;
}
