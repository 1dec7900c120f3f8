// SPDX-License-Identifier: Apache-2.0
// The LibTorch backend's row primitives on CUDA tensors through grpo::cuda's fused kernels (row_path::cuda_kernels,
// grpo/libtorch/cuda_rows.hpp), in a file compiled by nvcc: which inputs take the kernels (one condition at a time),
// the four primitives against the torch ops in double on the CPU (fp32, bf16 and fp64 logits; temperature != 1,
// masked entries, a row all -inf, in place over the logits), the kernels on LibTorch's current stream, and the fused
// autograd Functions (token log-probs, dense and top-k distillation, SFT) on CUDA against the same on the CPU. The
// shared conformance suite on this path is in conformance_cuda_kernels_test.cu. Needs a GPU (cuda_main.cpp skips).
#include <ATen/ATen.h>
#include <ATen/cuda/Sleep.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "grpo/libtorch/autograd.hpp"
#include "grpo/libtorch/backend.hpp"
#include "torch_support.hpp"

static_assert(GRPO_LIBTORCH_CUDA_KERNELS == 1, "this file must see grpo::cuda's kernels (nvcc, a CUDA LibTorch)");

namespace {

using grpo::libtorch::row_path;
using grpo::testing::host;
using grpo::testing::require_same;
using grpo::testing::torch_backend;
using grpo::testing::torch_ids;
using grpo::testing::torch_tensor;

const at::Device gpu{at::kCUDA, 0};

torch_backend backend_on(at::Device device, at::ScalarType dtype, at::ScalarType row_dtype) {
  torch_backend b;
  b.device = device;
  b.dtype = dtype;
  b.row_dtype = row_dtype;
  return b;
}

/// Which logits are -inf: none (the losses reject any), every third entry of every third row, and also all of row 1.
enum class masking { none, entries, entries_and_row };

/// Logits [rows, vocab] in [-5, 5) (host doubles), masked as asked.
std::vector<double> make_logits(std::int64_t rows, std::int64_t vocab, std::uint32_t seed,
                                masking mask = masking::entries) {
  auto z = grpo::testing::uniform(static_cast<std::size_t>(rows * vocab), -5.0, 5.0, seed);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t v = 0; v < vocab; ++v)
      if ((mask == masking::entries_and_row && r == 1) || (mask != masking::none && r % 3 == 2 && v % 3 == 0))
        z[static_cast<std::size_t>(r * vocab + v)] = -INFINITY;
  return z;
}

std::vector<double> uniform(std::int64_t n, double lo, double hi, std::uint32_t seed) {
  return grpo::testing::uniform(static_cast<std::size_t>(n), lo, hi, seed);
}

std::vector<std::int64_t> targets(std::int64_t rows, std::int64_t vocab) {
  std::vector<std::int64_t> ids;
  for (std::int64_t r = 0; r < rows; ++r) {
    auto id = (r * 613 + 1) % vocab;
    if (id % 3 == 0) id = id + 1 < vocab ? id + 1 : id - 1;  // never a masked entry (make_logits)
    ids.push_back(id);
  }
  return ids;
}

/// A logits dtype and the budget of the kernels against the torch ops in double: fp32 accumulation in tree reductions
/// (tests/cuda/conformance_fixtures.hpp: 2e-5 relative), or fp64.
struct precision {
  const char* name;
  at::ScalarType dtype, row_dtype;
  double atol, rtol;  ///< row statistics and losses
  double grad_rtol;   ///< gradients, written in the logits' dtype (bf16: rounded to 2^-8 relative)
};

const std::vector<precision> precisions = {
    {"fp32", at::kFloat, at::kFloat, 1e-5, 2e-5, 2e-5},
    {"bf16", at::kBFloat16, at::kFloat, 1e-5, 2e-5, 1.0 / 256},
    {"fp16", at::kHalf, at::kFloat, 1e-5, 2e-5, 1.0 / 2048},
    {"fp64", at::kDouble, at::kDouble, 1e-12, 1e-12, 1e-12},
};

}  // namespace

TEST_CASE("libtorch cuda kernels: taken exactly for CUDA logits whose accumulation type is row_dtype, no graph",
          "[torch][cuda][gpu]") {
  const auto z = torch_tensor(make_logits(8, 300, 1), {8, 300}, at::kFloat).to(gpu);
  const auto fast = backend_on(gpu, at::kFloat, at::kFloat);
  const auto teacher_logprobs = at::full({8, 4}, std::log(0.25), z.options());
  CHECK(row_softmax_stats_path(fast, z) == row_path::cuda_kernels);
  CHECK(row_softmax_backward_path(fast, z) == row_path::cuda_kernels);
  CHECK(row_divergence_path(fast, z, z) == row_path::cuda_kernels);
  CHECK(row_sparse_forward_kl_path(fast, z, teacher_logprobs) == row_path::cuda_kernels);
  CHECK(row_sparse_forward_kl_path(fast, z, teacher_logprobs.to(at::kDouble)) == row_path::cuda_kernels);
  {
    // fp64 teacher log-probs promote the loss to fp64 on the torch ops, so on the kernels too.
    const auto ids = at::zeros({8, 4}, z.options().dtype(at::kLong));
    at::Tensor out;
    CHECK(row_sparse_forward_kl(fast, z, ids, teacher_logprobs.to(at::kDouble), 1.0, at::ones({8}, z.options()), out)
              .scalar_type() == at::kDouble);
  }
  // fp32 logits with rows in double: the kernels would round, the torch ops do not.
  CHECK(row_softmax_stats_path(backend_on(gpu, at::kFloat, at::kDouble), z) == row_path::torch_ops);
  const auto z64 = z.to(at::kDouble);
  CHECK(row_softmax_stats_path(backend_on(gpu, at::kDouble, at::kDouble), z64) == row_path::cuda_kernels);
  CHECK(row_softmax_stats_path(backend_on(gpu, at::kDouble, at::kFloat), z64) == row_path::torch_ops);
  const auto z16 = z.to(at::kBFloat16);
  CHECK(row_softmax_stats_path(fast, z16) == row_path::cuda_kernels);
  CHECK(row_softmax_stats_path(fast, z.to(at::kHalf)) == row_path::cuda_kernels);
  // bf16 logits: the default gradient is fp32 (the kernels write bf16), a bf16 out takes the kernels.
  CHECK(row_softmax_backward_path(fast, z16) == row_path::torch_ops);
  CHECK(row_softmax_backward_path(fast, z16, at::empty_like(z16)) == row_path::cuda_kernels);
  CHECK(row_divergence_path(fast, z16, z16, at::empty_like(z16)) == row_path::cuda_kernels);
  CHECK(row_divergence_path(fast, z16, z, at::empty_like(z16)) == row_path::torch_ops);  // teacher in fp32
  CHECK(row_divergence_path(fast, z, z.cpu()) == row_path::torch_ops);
  // More teacher entries per row than a block's shared memory holds (a broadcast view: no memory).
  CHECK(row_sparse_forward_kl_path(fast, z, teacher_logprobs.narrow(1, 0, 1).expand({8, 1 << 22})) ==
        row_path::torch_ops);
  CHECK(row_softmax_stats_path(fast, z.cpu()) == row_path::host_fp32);
  const auto tracked = z.clone().requires_grad_();
  CHECK(row_softmax_stats_path(fast, tracked) == row_path::torch_ops);
  CHECK(row_divergence_path(fast, z, tracked) == row_path::torch_ops);
  const at::NoGradGuard no_grad;
  CHECK(row_softmax_stats_path(fast, tracked) == row_path::cuda_kernels);
}

TEST_CASE("libtorch cuda kernels: the four row primitives against the torch ops in double", "[torch][cuda][gpu]") {
  const std::int64_t rows = 37, vocab = 1003, k = 6;
  const double inv_t = 1.0 / 0.7;
  const auto z_host = make_logits(rows, vocab, 2), t_host = make_logits(rows, vocab, 3);
  const auto ids = torch_ids(targets(rows, vocab), {rows});
  const auto weight = torch_tensor(uniform(rows, 0.5, 2.0, 4), {rows});
  const auto g_logprob = torch_tensor(uniform(rows, -1.0, 1.0, 5), {rows});
  const auto g_entropy = torch_tensor(uniform(rows, -1.0, 1.0, 6), {rows});
  std::vector<std::int64_t> sparse_ids;
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t j = 0; j < k; ++j) sparse_ids.push_back(j == k - 1 ? (r * 7) % vocab : (r * 7 + j * 101) % vocab);
  const auto teacher_ids = torch_ids(sparse_ids, {rows, k});  // the last id repeats the first
  const auto teacher_logprobs =
      at::log_softmax(torch_tensor(uniform(rows * k, -3.0, 1.0, 7), {rows, k}), 1);
  const auto wide = backend_on(at::kCPU, at::kDouble, at::kDouble);
  for (const auto& p : precisions) {
    DYNAMIC_SECTION(p.name) {
      const auto z_cpu = torch_tensor(z_host, {rows, vocab}, p.dtype);
      const auto t_cpu = torch_tensor(t_host, {rows, vocab}, p.dtype);
      const auto z = z_cpu.to(gpu), teacher = t_cpu.to(gpu);
      const auto fast = backend_on(gpu, p.dtype, p.row_dtype);
      const auto on = [](const at::Tensor& t) { return t.to(gpu); };
      REQUIRE(row_softmax_stats_path(fast, z) == row_path::cuda_kernels);

      const auto got = row_softmax_stats(fast, z, on(ids), inv_t);
      const auto want = row_softmax_stats(wide, z_cpu, ids, inv_t);
      CHECK(got.lse.scalar_type() == (p.dtype == at::kDouble ? at::kDouble : at::kFloat));
      require_same(host(got.lse), host(want.lse), p.atol, p.rtol);
      require_same(host(got.entropy), host(want.entropy), p.atol, p.rtol);
      require_same(host(got.logprob), host(want.logprob), p.atol, p.rtol);
      // A row of only -inf: lse -inf, entropy 0, logprob NaN on both paths.
      const auto masked_cpu = torch_tensor(make_logits(3, vocab, 8, masking::entries_and_row), {3, vocab}, p.dtype);
      const auto masked_ids = ids.narrow(0, 0, 3);
      const auto masked = row_softmax_stats(fast, masked_cpu.to(gpu), on(masked_ids), inv_t);
      const auto masked_want = row_softmax_stats(wide, masked_cpu, masked_ids, inv_t);
      require_same(host(masked.lse), host(masked_want.lse), p.atol, p.rtol);
      require_same(host(masked.entropy), host(masked_want.entropy), p.atol, p.rtol);
      require_same(host(masked.logprob), host(masked_want.logprob), p.atol, p.rtol);

      // The backward from the torch ops' statistics.
      auto grad = at::empty_like(z);
      REQUIRE(row_softmax_backward_path(fast, z, grad) == row_path::cuda_kernels);
      row_softmax_backward(fast, z, on(ids), inv_t, on(want.lse), on(want.entropy), on(g_logprob), on(g_entropy),
                           grad);
      at::Tensor grad_want;
      row_softmax_backward(wide, z_cpu, ids, inv_t, want.lse, want.entropy, g_logprob, g_entropy, grad_want);
      require_same(host(grad), host(grad_want), p.atol, p.grad_rtol);
      auto in_place = z.clone();  // out may be the logits themselves
      row_softmax_backward(fast, in_place, on(ids), inv_t, on(want.lse), on(want.entropy), on(g_logprob),
                           on(g_entropy), in_place);
      require_same(host(in_place), host(grad), 0, 0);

      for (const double beta : {0.0, 0.5, 1.0}) {
        INFO("beta " << beta);
        auto d_grad = at::empty_like(z);
        REQUIRE(row_divergence_path(fast, z, teacher, d_grad) == row_path::cuda_kernels);
        const auto loss = row_divergence(fast, z, teacher, inv_t, beta, on(weight), d_grad);
        at::Tensor d_want;
        const auto loss_want = row_divergence(wide, z_cpu, t_cpu, inv_t, beta, weight, d_want);
        require_same(host(loss), host(loss_want), p.atol, p.rtol);
        require_same(host(d_grad), host(d_want), p.atol, p.grad_rtol);
      }

      auto s_grad = z.clone();  // in place over the logits
      REQUIRE(row_sparse_forward_kl_path(fast, z, on(teacher_logprobs), s_grad) == row_path::cuda_kernels);
      const auto s_loss =
          row_sparse_forward_kl(fast, s_grad, on(teacher_ids), on(teacher_logprobs), inv_t, on(weight), s_grad);
      at::Tensor s_want;
      const auto s_loss_want =
          row_sparse_forward_kl(wide, z_cpu, teacher_ids, teacher_logprobs, inv_t, weight, s_want);
      require_same(host(s_loss), host(s_loss_want), p.atol, p.rtol);
      require_same(host(s_grad), host(s_want), p.atol, p.grad_rtol);
    }
  }
}

TEST_CASE("libtorch cuda kernels: run on LibTorch's current stream", "[torch][cuda][gpu]") {
  const std::int64_t rows = 512, vocab = 32768;
  const auto fast = backend_on(gpu, at::kFloat, at::kFloat);
  const auto options = at::TensorOptions().dtype(at::kFloat).device(gpu);
  const auto source = at::randn({rows, vocab}, options) * 4.0;
  const auto teacher = at::randn({rows, vocab}, options) * 4.0;
  const auto weight = at::ones({rows}, options);
  auto z = at::zeros({rows, vocab}, options);
  c10::cuda::getCurrentCUDAStream().synchronize();
  auto side = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, gpu.index());
  at::Tensor loss_on_side, grad_on_side = at::empty_like(z);
  {
    // On the side stream (not blocking with the default one): a delay, then the logits, then the divergence, with no
    // host synchronisation in between (row_divergence makes none). Launched on any other stream, the kernel would
    // read the zeros the logits held before.
    const c10::cuda::CUDAStreamGuard guard(side);
    at::cuda::sleep(200'000'000);  // about 0.1 s
    z.copy_(source);
    loss_on_side = row_divergence(fast, z, teacher, 1.0, 0.5, weight, grad_on_side);
  }
  side.synchronize();
  auto grad = at::empty_like(z);
  const auto loss = row_divergence(fast, source, teacher, 1.0, 0.5, weight, grad);
  // The kernels' block reductions are deterministic: the same logits give the same bits.
  require_same(host(loss_on_side), host(loss), 0, 0);
  require_same(host(grad_on_side), host(grad), 0, 0);
}

TEST_CASE("libtorch cuda kernels: top-k teachers up to the shared memory a block can hold", "[torch][cuda][gpu]") {
  const std::int64_t rows = 3, vocab = 40000;
  const auto fast = backend_on(gpu, at::kFloat, at::kFloat);
  const auto wide = backend_on(at::kCPU, at::kDouble, at::kDouble);
  const auto z_cpu = torch_tensor(make_logits(rows, vocab, 21, masking::none), {rows, vocab}, at::kFloat);
  const auto weight = torch_tensor({1.0, 0.5, 2.0}, {rows});
  std::int64_t capacity = 0;
  REQUIRE(grpo::cccl::kernels::sparse_forward_kl_capacity<float, float>(gpu.index(), capacity) == cudaSuccess);
  INFO("capacity " << capacity);
  // 3072 entries take exactly 48 KiB of dynamic shared memory: with the kernel's static part, past the default.
  for (const std::int64_t k : {std::int64_t{3000}, std::int64_t{3072}, capacity}) {
    INFO("K " << k);
    const auto ids = at::randint(vocab, {rows, k}, at::TensorOptions().dtype(at::kLong));
    const auto logprobs = at::log_softmax(at::randn({rows, k}, at::TensorOptions().dtype(at::kFloat)), 1);
    auto grad = at::empty({rows, vocab}, at::TensorOptions().dtype(at::kFloat).device(gpu));
    REQUIRE(row_sparse_forward_kl_path(fast, z_cpu.to(gpu), logprobs.to(gpu), grad) == row_path::cuda_kernels);
    const auto loss = row_sparse_forward_kl(fast, z_cpu.to(gpu), ids.to(gpu), logprobs.to(gpu), 1.0, weight.to(gpu),
                                            grad);
    at::Tensor grad_want;
    const auto loss_want = row_sparse_forward_kl(wide, z_cpu, ids, logprobs, 1.0, weight, grad_want);
    require_same(host(loss), host(loss_want), 1e-5, 2e-5);
    require_same(host(grad), host(grad_want), 1e-6, 2e-5);
  }
  const auto one_more = at::zeros({rows, capacity + 1}, at::TensorOptions().dtype(at::kFloat).device(gpu));
  CHECK(row_sparse_forward_kl_path(fast, z_cpu.to(gpu), one_more) == row_path::torch_ops);
}

TEST_CASE("libtorch cuda kernels: a beta that fp32 would round to 1 keeps the torch ops", "[torch][cuda][gpu]") {
  const std::int64_t rows = 4, vocab = 300;
  const double beta = 1.0 - 1e-9;  // JSD_beta, while float(beta) = 1 would be the reverse KL
  const auto z_cpu = torch_tensor(make_logits(rows, vocab, 31, masking::none), {rows, vocab}, at::kFloat);
  const auto t_cpu = torch_tensor(make_logits(rows, vocab, 32, masking::none), {rows, vocab}, at::kFloat);
  const auto weight = at::ones({rows}, at::TensorOptions().device(gpu));
  const auto fast = backend_on(gpu, at::kFloat, at::kFloat);
  at::Tensor grad, grad_want, grad_reverse;
  const auto loss = row_divergence(fast, z_cpu.to(gpu), t_cpu.to(gpu), 1.0, beta, weight, grad);
  // The torch ops in double on the same tensors: JSD_beta is about 1e-9 here, so fp32 leaves only rounding noise.
  const auto loss_want =
      row_divergence(backend_on(gpu, at::kFloat, at::kDouble), z_cpu.to(gpu), t_cpu.to(gpu), 1.0, beta, weight,
                     grad_want);
  require_same(host(loss), host(loss_want), 1e-5, 0);
  require_same(host(grad), host(grad_want), 1e-6, 0);
  // What the kernel would have computed: the reverse KL, of order 1 for these rows.
  const auto reverse = row_divergence(fast, z_cpu.to(gpu), t_cpu.to(gpu), 1.0, 1.0, weight, grad_reverse);
  CHECK(reverse.min().item<double>() > 0.1);
}

TEST_CASE("libtorch cuda kernels: the fused autograd Functions on CUDA match the CPU", "[torch][cuda][gpu]") {
  const std::int64_t rows = 24, vocab = 517, k = 5;
  // Finite logits: the losses reject -inf (grpo/logits.hpp's check).
  const auto z_host = make_logits(rows, vocab, 11, masking::none), t_host = make_logits(rows, vocab, 12, masking::none);
  const auto ids = torch_ids(targets(rows, vocab), {rows});
  std::vector<double> mask_host(static_cast<std::size_t>(rows), 1.0);
  mask_host[1] = 0.0;
  mask_host[5] = 0.0;
  const auto mask = torch_tensor(mask_host, {rows}, at::kFloat);
  std::vector<std::int64_t> sparse_ids;
  for (std::int64_t i = 0; i < rows * k; ++i) sparse_ids.push_back((i * 37) % vocab);
  const auto teacher_ids = torch_ids(sparse_ids, {rows, k});
  const auto teacher_logprobs =
      at::log_softmax(torch_tensor(uniform(rows * k, -2.0, 1.0, 13), {rows, k}, at::kFloat), 1);
  const grpo::loss_denominators d{20.0, 1.0, 1.0};
  grpo::distillation_options options;
  options.beta = 0.5;
  options.temperature = 0.9;

  grpo::distillation_options forward_kl = options;
  forward_kl.beta = 0.0;  // the top-k loss is the forward KL only

  // The value and gradient of one loss of the student logits, on CUDA (row_dtype float: the kernels) and on the CPU
  // (row_dtype double: the torch ops in double), for fp32 logits and for bf16 and fp16 ones (the CPU then gets the
  // same values widened to fp32; the CUDA gradient is in the logits' dtype, one rounding from the double one).
  struct logits_case {
    const char* name;
    at::ScalarType dtype;
    double loss_rtol, grad_atol, grad_rtol;
  };
  for (const auto& lc : {logits_case{"fp32", at::kFloat, 2e-5, 1e-7, 2e-5},
                         logits_case{"bf16", at::kBFloat16, 2e-5, 1e-7, 1.0 / 128},
                         logits_case{"fp16", at::kHalf, 2e-5, 1e-7, 1.0 / 1024}}) {
    INFO(lc.name);
    const auto compare = [&](const char* what, auto&& loss_of) {
      INFO(what);
      const auto z_low = torch_tensor(z_host, {rows, vocab}, at::kFloat).to(lc.dtype);
      auto z_cuda = z_low.to(gpu).requires_grad_();
      auto z_wide = z_low.to(at::kFloat).requires_grad_();
      const auto got = loss_of(z_cuda, gpu, at::kFloat);
      const auto want = loss_of(z_wide, at::Device(at::kCPU), at::kDouble);
      got.backward();
      want.backward();
      CHECK(z_cuda.grad().scalar_type() == lc.dtype);
      require_same(host(got), host(want), 2e-6, lc.loss_rtol);
      require_same(host(z_cuda.grad()), host(z_wide.grad()), lc.grad_atol, lc.grad_rtol);
    };
    const auto teacher = torch_tensor(t_host, {rows, vocab}, at::kFloat).to(lc.dtype);
    const auto teacher_wide = teacher.to(at::kFloat);
    const auto teacher_on = [&](at::Device device) { return device.is_cuda() ? teacher.to(device) : teacher_wide; };
    {
      // The buffers the fused Functions hand the row primitives (detail::gradient_like): the kernels for fp32 and
      // bf16, a gradient in the logits' dtype; fp16's distillation buffer is fp32 (the gradient is computed before a
      // loss scale), which keeps the torch ops.
      const auto z = torch_tensor(z_host, {rows, vocab}, at::kFloat).to(lc.dtype).to(gpu);
      auto rows_b = grpo::libtorch::backend_like(z);
      rows_b.row_dtype = at::kFloat;
      const auto buffer = grpo::libtorch::detail::gradient_like(z);
      const auto expected = lc.dtype == at::kHalf ? row_path::torch_ops : row_path::cuda_kernels;
      CHECK(row_divergence_path(rows_b, z, teacher.to(gpu), buffer) == expected);
      CHECK(row_sparse_forward_kl_path(rows_b, z, teacher_logprobs.to(gpu), buffer) == expected);
      CHECK(row_softmax_backward_path(rows_b, z, buffer) == expected);
    }
    compare("token_logprobs", [&](const at::Tensor& z, at::Device device, at::ScalarType row_dtype) {
      const auto out = grpo::libtorch::token_logprobs(z, ids.to(device), 0.8, row_dtype);
      const auto kept = mask.to(device).to(out.logprobs.scalar_type());
      return (out.logprobs * kept).sum() + 0.1 * (out.entropy * kept).sum();
    });
    compare("distillation_loss", [&](const at::Tensor& z, at::Device device, at::ScalarType row_dtype) {
      return grpo::libtorch::distillation_loss(z, teacher_on(device), mask.to(device), options, d, row_dtype).loss;
    });
    compare("topk_distillation_loss", [&](const at::Tensor& z, at::Device device, at::ScalarType row_dtype) {
      return grpo::libtorch::topk_distillation_loss(z, teacher_ids.to(device), teacher_logprobs.to(device),
                                                    mask.to(device), forward_kl, d, /*renormalize=*/false, row_dtype)
          .loss;
    });
    compare("sft_loss", [&](const at::Tensor& z, at::Device device, at::ScalarType row_dtype) {
      return grpo::libtorch::sft_loss(z, ids.to(device), mask.to(device), d, 1.1, row_dtype).loss;
    });
  }
}
