// SPDX-License-Identifier: Apache-2.0
// grpo::cccl on the CUDA system (nvcc, one GPU): the shared unit tests of backend_cases.hpp and the conformance
// suite with the fused kernels, then what only a GPU shows: fused kernels against the Thrust row functors on the
// same device, bf16 and fp16 logits through the raw kernel API against the reference in double, vocabularies of
// 151936 (aligned rows) and 32771 (unaligned rows), and that no operation synchronises the caller's stream.
// Exits with 77 (ctest's SKIP_RETURN_CODE) when no CUDA device is present.
#define CATCH_CONFIG_RUNNER
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "backend_cases.hpp"

#if defined(GRPO_CCCL_WITH_CONFORMANCE)
#include <tuple>

#include "conformance_fixtures.hpp"
using conformance_fixtures = std::tuple<cccl_test::double_fixture, cccl_test::float_fixture>;
#include "conformance/suite.hpp"
#endif

namespace {

using namespace cccl_test;
namespace kernels = grpo::cccl::kernels;

void check_cuda(cudaError_t status) {
  INFO("CUDA: " << cudaGetErrorString(status));
  REQUIRE(status == cudaSuccess);
}

/// Device memory for a test, freed at scope exit.
template <class V>
struct device_array {
  V* data = nullptr;
  std::size_t size = 0;
  explicit device_array(std::size_t n) : size(n) { check_cuda(cudaMalloc(&data, n * sizeof(V) + 1)); }
  device_array(const device_array&) = delete;
  device_array& operator=(const device_array&) = delete;
  ~device_array() { (void)cudaFree(data); }
  void upload(const std::vector<V>& host) {
    check_cuda(cudaMemcpy(data, host.data(), size * sizeof(V), cudaMemcpyHostToDevice));
  }
  std::vector<V> download() const {
    std::vector<V> host(size);
    check_cuda(cudaMemcpy(host.data(), data, size * sizeof(V), cudaMemcpyDeviceToHost));
    return host;
  }
};

template <class In>
In to_storage(double x) {
  if constexpr (std::is_same_v<In, __nv_bfloat16>)
    return __float2bfloat16_rn(static_cast<float>(x));
  else if constexpr (std::is_same_v<In, __half>)
    return __float2half_rn(static_cast<float>(x));
  else
    return static_cast<In>(x);
}

template <class In>
double to_double(In x) {
  if constexpr (std::is_same_v<In, __nv_bfloat16>)
    return static_cast<double>(__bfloat162float(x));
  else if constexpr (std::is_same_v<In, __half>)
    return static_cast<double>(__half2float(x));
  else
    return static_cast<double>(x);
}

template <class In>
std::vector<In> to_storage(const std::vector<double>& values) {
  std::vector<In> out(values.size());
  for (std::size_t i = 0; i < values.size(); ++i) out[i] = to_storage<In>(values[i]);
  return out;
}

template <class In>
std::vector<double> to_double(const std::vector<In>& values) {
  std::vector<double> out(values.size());
  for (std::size_t i = 0; i < values.size(); ++i) out[i] = to_double(values[i]);
  return out;
}

/// Relative precision of a storage type's round-to-nearest (half an ulp at 1).
template <class In>
double storage_epsilon() {
  if constexpr (std::is_same_v<In, __nv_bfloat16>)
    return 1.0 / 256;  // 8 significant bits
  else if constexpr (std::is_same_v<In, __half>)
    return 1.0 / 2048;  // 11
  else if constexpr (std::is_same_v<In, float>)
    return 1.0 / (1 << 24);
  else
    return 1.2e-16;
}

using ref = grpo::reference_backend<double>;

/// The raw kernels on In logits against reference_backend<double> on the same (rounded) logits: forward,
/// backward in place, dense divergence (forward KL, JSD, reverse KL) and sparse forward KL, all in place.
template <class In>
void kernels_match_reference(std::int64_t rows, std::int64_t vocab, double spread, std::uint32_t seed) {
  INFO("rows " << rows << " vocab " << vocab << " spread " << spread);
  const auto n = static_cast<std::size_t>(rows * vocab);
  const auto zs_host = to_storage<In>(grpo::testing::uniform(n, -spread, spread, seed));
  const auto zt_host = to_storage<In>(grpo::testing::uniform(n, -spread, spread, seed + 1));
  const auto zs = to_double(zs_host), zt = to_double(zt_host);
  const auto id_host = random_ids(static_cast<std::size_t>(rows), vocab, seed + 2);
  const auto gl = grpo::testing::uniform(static_cast<std::size_t>(rows), -1, 1, seed + 3);
  const auto ge = grpo::testing::uniform(static_cast<std::size_t>(rows), -1, 1, seed + 4);
  const auto w = grpo::testing::uniform(static_cast<std::size_t>(rows), -1, 1, seed + 5);
  const double inv_t = 1.0 / 0.9;
  const auto r_zs = grpo::make_tensor(ref{}, zs, shape::matrix(rows, vocab));
  const auto r_zt = grpo::make_tensor(ref{}, zt, shape::matrix(rows, vocab));
  const auto r_ids = grpo::make_index(ref{}, id_host, shape::vector(rows));
  // fp32 accumulation over the row: rtol 1e-5 on the row statistics; gradients are also rounded to In.
  const tolerance stats{1e-5, 1e-5};
  const tolerance grads{1e-6, 2 * storage_epsilon<In>() + 1e-5};

  device_array<In> logits(n), teacher(n);
  device_array<std::int64_t> ids(static_cast<std::size_t>(rows));
  device_array<float> lse(static_cast<std::size_t>(rows)), entropy(lse.size), logprob(lse.size), d_logprob(lse.size),
      d_entropy(lse.size), weight(lse.size), loss(lse.size);
  device_array<std::int64_t> slot(3);
  check_cuda(cudaMemset(slot.data, 0, 3 * sizeof(std::int64_t)));
  logits.upload(zs_host);
  teacher.upload(zt_host);
  ids.upload(id_host);
  auto as_float = [](const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); };
  d_logprob.upload(as_float(gl));
  d_entropy.upload(as_float(ge));
  weight.upload(as_float(w));

  check_cuda(kernels::softmax_stats(logits.data, rows, vocab, ids.data, inv_t, lse.data, entropy.data, logprob.data,
                                    slot.data, nullptr));
  const auto want = row_softmax_stats(ref{}, r_zs.raw(), r_ids.raw(), inv_t);
  auto floats = [](const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); };
  require_matches(floats(lse.download()), download(ref{}, want.lse), stats);
  require_matches(floats(logprob.download()), download(ref{}, want.logprob), stats);
  require_matches(floats(entropy.download()), download(ref{}, want.entropy), stats);

  check_cuda(kernels::softmax_backward(logits.data, rows, vocab, ids.data, inv_t, lse.data, entropy.data,
                                       d_logprob.data, d_entropy.data, logits.data, nullptr));
  grpo::reference_tensor<double> want_grad;
  row_softmax_backward(ref{}, r_zs.raw(), r_ids.raw(), inv_t, want.lse, want.entropy,
                       grpo::make_tensor(ref{}, gl, shape::vector(rows)).raw(),
                       grpo::make_tensor(ref{}, ge, shape::vector(rows)).raw(), want_grad);
  require_matches(to_double(logits.download()), download(ref{}, want_grad), grads);

  const auto r_w = grpo::make_tensor(ref{}, w, shape::vector(rows));
  for (const double beta : {0.0, 0.5, 1.0}) {
    INFO("beta " << beta);
    logits.upload(zs_host);
    check_cuda(kernels::divergence(logits.data, teacher.data, rows, vocab, inv_t, beta, weight.data, loss.data,
                                   logits.data, nullptr));
    grpo::reference_tensor<double> want_div_grad;
    const auto want_loss = row_divergence(ref{}, r_zs.raw(), r_zt.raw(), inv_t, beta, r_w.raw(), want_div_grad);
    require_matches(floats(loss.download()), download(ref{}, want_loss), stats);
    require_matches(to_double(logits.download()), download(ref{}, want_div_grad), grads);
  }

  const std::int64_t k = 20;
  auto teacher_ids = random_ids(static_cast<std::size_t>(rows * k), vocab, seed + 6);
  teacher_ids[1] = teacher_ids[0];
  const auto teacher_logp = grpo::testing::uniform(static_cast<std::size_t>(rows * k), -6, -1, seed + 7);
  device_array<std::int64_t> d_teacher_ids(teacher_ids.size());
  device_array<float> d_teacher_logp(teacher_logp.size());
  d_teacher_ids.upload(teacher_ids);
  d_teacher_logp.upload(as_float(teacher_logp));
  logits.upload(zs_host);
  check_cuda(kernels::sparse_forward_kl(logits.data, d_teacher_ids.data, d_teacher_logp.data, rows, vocab, k, inv_t,
                                        weight.data, loss.data, logits.data, slot.data, nullptr));
  grpo::reference_tensor<double> want_sparse_grad;
  const auto want_sparse =
      row_sparse_forward_kl(ref{}, r_zs.raw(), grpo::make_index(ref{}, teacher_ids, shape::matrix(rows, k)).raw(),
                            grpo::make_tensor(ref{}, to_double(as_float(teacher_logp)), shape::matrix(rows, k)).raw(),
                            inv_t, r_w.raw(), want_sparse_grad);
  require_matches(floats(loss.download()), download(ref{}, want_sparse), stats);
  require_matches(to_double(logits.download()), download(ref{}, want_sparse_grad), grads);
  CHECK(slot.download()[0] == 0);
}

/// Spins for about `cycles` clock cycles: a stream that is busy for a while.
__global__ void spin(long long cycles) {
  const long long start = clock64();
  while (clock64() - start < cycles) {
  }
}

}  // namespace

TEST_CASE("cccl gpu: the fused kernels match the reference in double for fp32, bf16 and fp16 logits",
          "[cccl][gpu][kernels]") {
  for (const auto& [rows, vocab] : {std::pair<std::int64_t, std::int64_t>{3, 1}, {5, 7}, {4, 1000}, {2, 32771}}) {
    kernels_match_reference<float>(rows, vocab, 4.0, 100);
    kernels_match_reference<__nv_bfloat16>(rows, vocab, 4.0, 110);
    kernels_match_reference<__half>(rows, vocab, 4.0, 120);
    kernels_match_reference<double>(rows, vocab, 4.0, 130);
  }
  // The largest vocabulary of the benchmarks (Qwen2's 151936): 16-byte aligned rows, many vectors per thread.
  kernels_match_reference<float>(2, 151936, 8.0, 140);
  kernels_match_reference<__nv_bfloat16>(2, 151936, 8.0, 150);
}

TEMPLATE_TEST_CASE("cccl gpu: fused kernels agree with the Thrust row functors on the device", "[cccl][gpu]", float,
                   double) {
  const dev<TestType> fused;
  const dev<TestType> functors(nullptr, false);
  REQUIRE(fused.fused_kernels());
  REQUIRE_FALSE(functors.fused_kernels());
  for (const auto& [rows, vocab] : {std::pair<std::int64_t, std::int64_t>{6, 5}, {3, 4097}, {2, 65536}}) {
    INFO("rows " << rows << " vocab " << vocab);
    const auto c = make_logits_case(rows, vocab, 6.0, 200, true);
    const auto s = shape::matrix(rows, vocab);
    const auto z_a = grpo::make_tensor(fused, c.z, s), z_b = grpo::make_tensor(functors, c.z, s);
    const auto t_a = grpo::make_tensor(fused, c.zt, s), t_b = grpo::make_tensor(functors, c.zt, s);
    const auto i_a = grpo::make_index(fused, c.ids, shape::vector(rows)),
               i_b = grpo::make_index(functors, c.ids, shape::vector(rows));
    const auto w = grpo::testing::uniform(static_cast<std::size_t>(rows), -1, 1, 201);
    const auto w_a = grpo::make_tensor(fused, w, shape::vector(rows)),
               w_b = grpo::make_tensor(functors, w, shape::vector(rows));
    const auto sa = row_softmax_stats(fused, z_a.raw(), i_a.raw(), 1.3);
    const auto sb = row_softmax_stats(functors, z_b.raw(), i_b.raw(), 1.3);
    require_matches(download(fused, sa.lse), download(functors, sb.lse), rows_tolerance<TestType>());
    require_matches(download(fused, sa.entropy), download(functors, sb.entropy), rows_tolerance<TestType>());
    require_matches(download(fused, sa.logprob), download(functors, sb.logprob), rows_tolerance<TestType>());
    typename dev<TestType>::tensor_type ga, gb;
    row_softmax_backward(fused, z_a.raw(), i_a.raw(), 1.3, sa.lse, sa.entropy, w_a.raw(), w_a.raw(), ga);
    row_softmax_backward(functors, z_b.raw(), i_b.raw(), 1.3, sb.lse, sb.entropy, w_b.raw(), w_b.raw(), gb);
    require_matches(download(fused, ga), download(functors, gb), rows_tolerance<TestType>());
    for (const double beta : {0.0, 0.25, 1.0}) {
      INFO("beta " << beta);
      require_matches(download(fused, row_divergence(fused, z_a.raw(), t_a.raw(), 0.8, beta, w_a.raw(), ga)),
                      download(functors, row_divergence(functors, z_b.raw(), t_b.raw(), 0.8, beta, w_b.raw(), gb)),
                      rows_tolerance<TestType>());
      require_matches(download(fused, ga), download(functors, gb), rows_tolerance<TestType>());
    }
  }
}

TEST_CASE("cccl gpu: sparse forward KL with more teacher entries than 48 KiB of shared memory (opt-in launch)",
          "[cccl][gpu][distill]") {
  // 5000 entries x 16 bytes = 80 KB per block: the launch must raise the kernel's dynamic shared memory limit.
  const dev<float> b;
  const host<double> r;
  const std::int64_t rows = 3, vocab = 6001, k = 5000;
  const auto c = make_logits_case(rows, vocab, 4.0, 500, false);
  auto ids = random_ids(static_cast<std::size_t>(rows * k), vocab, 501);
  ids[1] = ids[0];
  const auto logp = grpo::testing::uniform(static_cast<std::size_t>(rows * k), -14, -8, 502);
  const auto w = grpo::testing::uniform(static_cast<std::size_t>(rows), 0.5, 2.0, 503);
  const auto s = shape::matrix(rows, vocab);
  auto grad = grpo::make_tensor(b, c.z, s);
  const auto loss = row_sparse_forward_kl(b, grad.raw(), grpo::make_index(b, ids, shape::matrix(rows, k)).raw(),
                                          grpo::make_tensor(b, logp, shape::matrix(rows, k)).raw(), 1.0,
                                          grpo::make_tensor(b, w, shape::vector(rows)).raw(), grad.raw());
  typename host<double>::tensor_type want_grad;
  const auto want = row_sparse_forward_kl(r, grpo::make_tensor(r, c.z, s).raw(),
                                          grpo::make_index(r, ids, shape::matrix(rows, k)).raw(),
                                          grpo::make_tensor(r, logp, shape::matrix(rows, k)).raw(), 1.0,
                                          grpo::make_tensor(r, w, shape::vector(rows)).raw(), want_grad);
  require_matches(download(b, loss), download(r, want), rows_tolerance<float>());
  require_matches(download(b, grad.raw()), download(r, want_grad), rows_tolerance<float>());
}

TEST_CASE("cccl gpu: operations queue on the caller's stream without synchronising it", "[cccl][gpu][stream]") {
  cudaStream_t stream = nullptr;
  check_cuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  {
    const dev<float> b(stream);
    REQUIRE(b.stream() == stream);
    const auto c = make_logits_case(64, 4096, 4.0, 300, false);
    const auto z = grpo::make_tensor(b, c.z, shape::matrix(64, 4096));
    const auto ids = grpo::make_index(b, c.ids, shape::vector(64));
    const auto seg = grpo::make_index(b, random_ids(64, 8, 301), shape::vector(64));
    auto step = [&] {
      const auto stats = row_softmax_stats(b, z.raw(), ids.raw(), 1.0);
      const grpo::tensor<dev<float>> logp(b, stats.logprob), ent(b, stats.entropy);
      const auto per_group = sum_segments(logp, seg, 8);
      const auto returns =
          reverse_scan_rows(reshape(logp, shape::matrix(8, 8)), grpo::full(b, shape::matrix(8, 8), 0.9));
      const auto total = sum(exp(logp) * 0.5 - ent) + sum(per_group) + sum(returns) + sum(gather(per_group, seg));
      auto grad = z.raw();
      row_softmax_backward(b, z.raw(), ids.raw(), 1.0, stats.lse, stats.entropy, stats.logprob, stats.entropy, grad);
      return total + sum(grpo::tensor<dev<float>>(b, std::move(grad)));
    };
    const double warm = step().item();  // the first call fills the pool
    // A kernel keeps the stream busy for about a second; everything queued after it must still be pending when
    // the host gets control back, unless some operation waited for the stream.
    spin<<<1, 1, 0, stream>>>(2'000'000'000LL);
    check_cuda(cudaGetLastError());
    const auto pending = step();
    CHECK(cudaStreamQuery(stream) == cudaErrorNotReady);
    CHECK(pending.item() == warm);  // the download is the synchronisation point
  }
  check_cuda(cudaStreamDestroy(stream));
}

int main(int argc, char* argv[]) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    (void)cudaGetLastError();
    std::printf("grpo_tests_cccl_gpu: no CUDA device, skipped\n");
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
