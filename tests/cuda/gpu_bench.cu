// SPDX-License-Identifier: Apache-2.0
// grpo_cccl_gpu_bench: times grpo::cccl's fused logits kernels on one GPU and prints one table: per kernel, dtype and
// shape, the largest error against reference_backend<double> on 8 sampled rows, the time per call, and the achieved
// bandwidth, also as a fraction of a measured device-to-device cudaMemcpy. Bytes are the operation's minimum traffic
// (each logits tensor read once, the gradient written once), so the fraction is comparable with the copy's.
// Run by cmake/gpu-check.sh. Not a test (no pass or fail) and not the benchmark suite of bench/.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <vector>

#include "grpo/cccl/backend.hpp"
#include "grpo/reference_backend.hpp"
#include "grpo/tensor.hpp"

namespace {

namespace kernels = grpo::cccl::kernels;
using ref = grpo::reference_backend<double>;

void check(cudaError_t status, const char* what) {
  if (status == cudaSuccess) return;
  std::fprintf(stderr, "gpu_bench: %s: %s\n", what, cudaGetErrorString(status));
  std::exit(1);
}

/// Logit i of a tensor: splitmix64 of (i, seed) mapped to [-spread, spread), the same on host and device, so the
/// host reproduces sampled rows without copying the whole tensor.
__host__ __device__ double logit_at(std::uint64_t i, std::uint64_t seed, double spread) {
  std::uint64_t x = i * 0x9E3779B97F4A7C15ull + seed;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  x ^= x >> 31;
  return spread * (2.0 * static_cast<double>(x >> 11) * 0x1.0p-53 - 1.0);
}

template <class In>
__host__ __device__ In to_storage(double x) {
  if constexpr (std::is_same_v<In, __nv_bfloat16>)
    return __float2bfloat16_rn(static_cast<float>(x));
  else
    return static_cast<In>(x);
}

template <class In>
double to_double(In x) {
  if constexpr (std::is_same_v<In, __nv_bfloat16>)
    return static_cast<double>(__bfloat162float(x));
  else
    return static_cast<double>(x);
}

template <class In>
__global__ void fill_logits(In* out, std::int64_t n, std::uint64_t seed, double spread) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    out[i] = to_storage<In>(logit_at(static_cast<std::uint64_t>(i), seed, spread));
}

template <class V>
V* device_alloc(std::size_t n) {
  void* p = nullptr;
  check(cudaMalloc(&p, n * sizeof(V)), "cudaMalloc");
  return static_cast<V*>(p);
}

/// Mean milliseconds per call of fn over `reps` calls, after two warm-up calls.
template <class Fn>
double time_ms(Fn&& fn, int reps = 10) {
  fn();
  fn();
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  check(cudaEventRecord(start), "cudaEventRecord");
  for (int i = 0; i < reps; ++i) fn();
  check(cudaEventRecord(stop), "cudaEventRecord");
  check(cudaEventSynchronize(stop), "cudaEventSynchronize");
  float ms = 0;
  check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
  check(cudaEventDestroy(start), "cudaEventDestroy");
  check(cudaEventDestroy(stop), "cudaEventDestroy");
  return static_cast<double>(ms) / reps;
}

double copy_gb_per_s = 0;

void print_header() {
  std::printf("| kernel | logits | N x V | time (us) | GB/s | of copy | max abs err (values) | max abs err (grad) |\n");
  std::printf("|---|---|---|---:|---:|---:|---:|---:|\n");
}

/// "-" for a value not measured (negative), else two significant digits.
std::string format_error(double e) {
  if (e < 0) return "-";
  char text[32];
  std::snprintf(text, sizeof text, "%.1e", e);
  return text;
}

void print_row(const std::string& kernel, const char* dtype, std::int64_t rows, std::int64_t vocab, double ms,
               double bytes, double err_values, double err_grad) {
  const double gb_per_s = bytes / (ms * 1e-3) / 1e9;
  std::printf("| %s | %s | %lld x %lld | %.1f | %.0f | %.0f%% | %s | %s |\n", kernel.c_str(), dtype,
              static_cast<long long>(rows), static_cast<long long>(vocab), ms * 1e3, gb_per_s,
              100.0 * gb_per_s / copy_gb_per_s, format_error(err_values).c_str(), format_error(err_grad).c_str());
}

double max_abs_diff(const std::vector<double>& got, const std::vector<double>& want) {
  double worst = 0;
  for (std::size_t i = 0; i < got.size(); ++i)
    worst = std::fmax(worst, std::isfinite(got[i] - want[i]) ? std::fabs(got[i] - want[i]) : INFINITY);
  return worst;
}

template <class V>
std::vector<double> rows_to_host(const V* device, std::int64_t cols, const std::vector<std::int64_t>& rows) {
  std::vector<V> host(rows.size() * static_cast<std::size_t>(cols));
  for (std::size_t r = 0; r < rows.size(); ++r)
    check(cudaMemcpy(host.data() + r * cols, device + rows[r] * cols, cols * sizeof(V), cudaMemcpyDeviceToHost),
          "cudaMemcpy");
  std::vector<double> out(host.size());
  for (std::size_t i = 0; i < host.size(); ++i) out[i] = to_double(host[i]);
  return out;
}

/// Every fused kernel on In logits [rows, vocab]: errors on 8 sampled rows, then timings.
template <class In>
void bench_kernels(const char* dtype, std::int64_t rows, std::int64_t vocab) {
  const std::int64_t n = rows * vocab, k = 64;
  const double spread = 8.0, inv_t = 1.0 / 0.9;
  In* student = device_alloc<In>(static_cast<std::size_t>(n));
  In* teacher = device_alloc<In>(static_cast<std::size_t>(n));
  In* grad = device_alloc<In>(static_cast<std::size_t>(n));
  fill_logits<<<4096, 256>>>(student, n, 1, spread);
  fill_logits<<<4096, 256>>>(teacher, n, 2, spread);
  check(cudaGetLastError(), "fill_logits");

  const auto r = static_cast<std::size_t>(rows);
  std::vector<std::int64_t> ids(r), teacher_ids(r * k);
  std::vector<float> ones(r, 1.0f), teacher_logp(r * k);
  for (std::size_t i = 0; i < r; ++i) ids[i] = static_cast<std::int64_t>((i * 7919) % static_cast<std::size_t>(vocab));
  for (std::size_t i = 0; i < r * k; ++i) {
    teacher_ids[i] = static_cast<std::int64_t>((i * 104729 + 13) % static_cast<std::size_t>(vocab));
    teacher_logp[i] = static_cast<float>(-1.0 - std::fabs(logit_at(i, 3, 4.0)));
  }
  auto* d_ids = device_alloc<std::int64_t>(r);
  auto* d_teacher_ids = device_alloc<std::int64_t>(r * k);
  auto* d_teacher_logp = device_alloc<float>(r * k);
  auto* d_ones = device_alloc<float>(r);
  float* lse = device_alloc<float>(r);
  float* entropy = device_alloc<float>(r);
  float* logprob = device_alloc<float>(r);
  float* loss = device_alloc<float>(r);
  check(cudaMemcpy(d_ids, ids.data(), r * sizeof(std::int64_t), cudaMemcpyHostToDevice), "cudaMemcpy");
  check(cudaMemcpy(d_teacher_ids, teacher_ids.data(), r * k * sizeof(std::int64_t), cudaMemcpyHostToDevice),
        "cudaMemcpy");
  check(cudaMemcpy(d_teacher_logp, teacher_logp.data(), r * k * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy");
  check(cudaMemcpy(d_ones, ones.data(), r * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy");

  // The reference on 8 sampled rows, from the same logits rounded to In.
  const std::vector<std::int64_t> sample{0, rows / 7, rows / 3, rows / 2, rows - 5, rows - 3, rows - 2, rows - 1};
  const auto m = static_cast<std::int64_t>(sample.size());
  std::vector<double> zs(sample.size() * vocab), zt(zs.size()), sampled_logp(sample.size() * k);
  std::vector<std::int64_t> sampled_ids(sample.size()), sampled_teacher_ids(sample.size() * k);
  for (std::size_t s = 0; s < sample.size(); ++s) {
    for (std::int64_t v = 0; v < vocab; ++v) {
      const auto i = static_cast<std::uint64_t>(sample[s] * vocab + v);
      zs[s * vocab + v] = to_double(to_storage<In>(logit_at(i, 1, spread)));
      zt[s * vocab + v] = to_double(to_storage<In>(logit_at(i, 2, spread)));
    }
    sampled_ids[s] = ids[static_cast<std::size_t>(sample[s])];
    for (std::int64_t j = 0; j < k; ++j) {
      sampled_teacher_ids[s * k + j] = teacher_ids[static_cast<std::size_t>(sample[s] * k + j)];
      sampled_logp[s * k + j] = teacher_logp[static_cast<std::size_t>(sample[s] * k + j)];
    }
  }
  const auto r_zs = grpo::make_tensor(ref{}, zs, grpo::shape::matrix(m, vocab));
  const auto r_zt = grpo::make_tensor(ref{}, zt, grpo::shape::matrix(m, vocab));
  const auto r_ids = grpo::make_index(ref{}, sampled_ids, grpo::shape::vector(m));
  const auto r_ones = grpo::full(ref{}, grpo::shape::vector(m), 1.0);
  const double bytes = static_cast<double>(n) * sizeof(In);

  auto stats = [&] {
    check(kernels::softmax_stats(student, rows, vocab, d_ids, inv_t, lse, entropy, logprob, nullptr, nullptr),
          "softmax_stats");
  };
  stats();
  const auto want = row_softmax_stats(ref{}, r_zs.raw(), r_ids.raw(), inv_t);
  const double err_stats =
      std::fmax(max_abs_diff(rows_to_host(lse, 1, sample), download(ref{}, want.lse)),
                std::fmax(max_abs_diff(rows_to_host(entropy, 1, sample), download(ref{}, want.entropy)),
                          max_abs_diff(rows_to_host(logprob, 1, sample), download(ref{}, want.logprob))));
  print_row("softmax_stats (lse, entropy, logprob)", dtype, rows, vocab, time_ms(stats), bytes, err_stats, -1);

  auto backward = [&] {
    check(kernels::softmax_backward(student, rows, vocab, d_ids, inv_t, lse, entropy, d_ones, d_ones, grad, nullptr),
          "softmax_backward");
  };
  backward();
  grpo::reference_tensor<double> want_grad;
  row_softmax_backward(ref{}, r_zs.raw(), r_ids.raw(), inv_t, want.lse, want.entropy, r_ones.raw(), r_ones.raw(),
                       want_grad);
  print_row("softmax_backward (d logprob + d entropy)", dtype, rows, vocab, time_ms(backward), 2 * bytes, -1,
            max_abs_diff(rows_to_host(grad, vocab, sample), download(ref{}, want_grad)));

  auto jsd = [&] {
    check(kernels::divergence(student, teacher, rows, vocab, inv_t, 0.5, d_ones, loss, grad, nullptr), "divergence");
  };
  jsd();
  grpo::reference_tensor<double> want_jsd_grad;
  const auto want_jsd = row_divergence(ref{}, r_zs.raw(), r_zt.raw(), inv_t, 0.5, r_ones.raw(), want_jsd_grad);
  print_row("divergence (JSD beta 0.5, loss + grad)", dtype, rows, vocab, time_ms(jsd), 3 * bytes,
            max_abs_diff(rows_to_host(loss, 1, sample), download(ref{}, want_jsd)),
            max_abs_diff(rows_to_host(grad, vocab, sample), download(ref{}, want_jsd_grad)));

  auto sparse = [&] {
    check(kernels::sparse_forward_kl(student, d_teacher_ids, d_teacher_logp, rows, vocab, k, inv_t, d_ones, loss, grad,
                                     nullptr, nullptr),
          "sparse_forward_kl");
  };
  sparse();
  grpo::reference_tensor<double> want_sparse_grad;
  const auto want_sparse = row_sparse_forward_kl(
      ref{}, r_zs.raw(), grpo::make_index(ref{}, sampled_teacher_ids, grpo::shape::matrix(m, k)).raw(),
      grpo::make_tensor(ref{}, sampled_logp, grpo::shape::matrix(m, k)).raw(), inv_t, r_ones.raw(), want_sparse_grad);
  print_row("sparse_forward_kl (K 64, loss + grad)", dtype, rows, vocab, time_ms(sparse), 2 * bytes,
            max_abs_diff(rows_to_host(loss, 1, sample), download(ref{}, want_sparse)),
            max_abs_diff(rows_to_host(grad, vocab, sample), download(ref{}, want_sparse_grad)));

  for (void* p :
       {static_cast<void*>(student), static_cast<void*>(teacher), static_cast<void*>(grad), static_cast<void*>(d_ids),
        static_cast<void*>(d_teacher_ids), static_cast<void*>(d_teacher_logp), static_cast<void*>(d_ones),
        static_cast<void*>(lse), static_cast<void*>(entropy), static_cast<void*>(logprob), static_cast<void*>(loss)})
    check(cudaFree(p), "cudaFree");
}

/// The backend's row statistics on fp32 logits, fused kernel against the Thrust functor (one thread per row).
void bench_backend_paths(std::int64_t rows, std::int64_t vocab) {
  for (const bool fused : {true, false}) {
    const grpo::cccl::backend<float> b(nullptr, fused);
    auto logits = grpo::cccl::detail::allocate(b, grpo::shape::matrix(rows, vocab));
    fill_logits<<<4096, 256>>>(logits.data.data(), rows * vocab, 1, 8.0);
    check(cudaGetLastError(), "fill_logits");
    const auto ids =
        grpo::make_index(b, std::vector<std::int64_t>(static_cast<std::size_t>(rows), 0), grpo::shape::vector(rows));
    auto run = [&] { (void)row_softmax_stats(b, logits, ids.raw(), 1.0); };
    print_row(fused ? "backend row_softmax_stats, fused kernel" : "backend row_softmax_stats, Thrust functor", "fp32",
              rows, vocab, time_ms(run, fused ? 10 : 2), static_cast<double>(rows * vocab) * sizeof(float), -1, -1);
  }
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("gpu_bench: no CUDA device\n");
    return 77;
  }
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  // The copy every fraction refers to: 2.5 GB device to device (read + write counted).
  const std::size_t copy_bytes = std::size_t{4096} * 151936 * sizeof(float);
  char* a = device_alloc<char>(copy_bytes);
  char* b = device_alloc<char>(copy_bytes);
  check(cudaMemset(a, 1, copy_bytes), "cudaMemset");
  const double copy_ms = time_ms([&] { check(cudaMemcpyAsync(b, a, copy_bytes, cudaMemcpyDeviceToDevice), "copy"); });
  copy_gb_per_s = 2.0 * static_cast<double>(copy_bytes) / (copy_ms * 1e-3) / 1e9;
  check(cudaFree(a), "cudaFree");
  check(cudaFree(b), "cudaFree");
  std::printf("device: %s (sm_%d%d), device-to-device copy: %.0f GB/s (read + write)\n\n", prop.name, prop.major,
              prop.minor, copy_gb_per_s);
  print_header();
  for (const std::int64_t vocab : {32768, 151936}) {
    bench_kernels<float>("fp32", 4096, vocab);
    bench_kernels<__nv_bfloat16>("bf16", 4096, vocab);
  }
  bench_backend_paths(4096, 32768);
  return 0;
}
