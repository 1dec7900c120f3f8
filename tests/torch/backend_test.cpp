// SPDX-License-Identifier: Apache-2.0
// The LibTorch backend's operations against the reference backend on the same seeded inputs (special values,
// ties and edge shapes included), its row-wise softmax primitives (chunking, in-place output, -inf entries,
// logits of magnitude 1e4), bf16 inputs, and its error messages. CUDA cases run only where a device exists.
#include "grpo/libtorch/backend.hpp"

#include <torch/cuda.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "grpo/reference_backend.hpp"
#include "grpo/tensor.hpp"
#include "grpo/validate.hpp"
#include "test_support.hpp"
#include "torch_support.hpp"

using namespace grpo;
using namespace grpo::testing;

namespace {

constexpr double inf = std::numeric_limits<double>::infinity();
constexpr double nan = std::numeric_limits<double>::quiet_NaN();

// Special values, a tie pair (0.5, 0.5 in the partner list) and ordinary ones.
const std::vector<double> specials = {-2.5, -1.0,  -0.0, 0.0, 0.5,  1.0, 3.0, 1e-10, -1e-10,
                                      40.0, -40.0, nan,  inf, -inf, 0.5, 2.0, -3.0,  7.25};
const std::vector<double> partners = {1.0,  -1.0,  0.0, -0.0, 0.5, 1.0, -2.0, 1e-10, 3.0,
                                      40.0, -41.0, 1.0, inf,  inf, nan, 0.0,  -3.0,  2.0};

// Tolerances of one element-wise op against the reference of the same storage type. The reference evaluates in
// double and rounds once; torch evaluates in the storage type with its vectorized math (about 1 ulp): two ulps.
struct storage {
  at::ScalarType torch_type;
  double rtol;
};
const storage double_storage{at::kDouble, 1e-15};
const storage float_storage{at::kFloat, 4e-7};

template <class T>
reference_tensor<T> ref_values(const std::vector<double>& v, shape s) {
  return upload(reference_backend<T>{}, std::span<const double>(v), s);
}

template <class T>
void compare_elementwise(const storage& st) {
  const auto b = cpu_backend(st.torch_type);
  const reference_backend<T> r;
  const auto s = shape::matrix(3, 6);
  const auto x = upload(b, std::span<const double>(specials), s), y = upload(b, std::span<const double>(partners), s);
  const auto rx = ref_values<T>(specials, s), ry = ref_values<T>(partners, s);
  for (int k = 0; k <= static_cast<int>(unary_op::sigmoid); ++k) {
    const auto op = static_cast<unary_op>(k);
    INFO("unary op " << k);
    const auto got = unary(b, op, x);
    CHECK(got.scalar_type() == st.torch_type);
    require_same(download(b, got), download(r, unary(r, op, rx)), 1e-300, st.rtol);
  }
  for (int k = 0; k <= static_cast<int>(binary_op::equal); ++k) {
    const auto op = static_cast<binary_op>(k);
    INFO("binary op " << k);
    require_same(download(b, binary(b, op, x, y)), download(r, binary(r, op, rx, ry)), 1e-300, st.rtol);
    for (const double c : {-1.0, 0.0, 0.5, 3.0, nan}) {
      INFO("scalar " << c);
      require_same(download(b, binary(b, op, x, c)), download(r, binary(r, op, rx, c)), 1e-300, st.rtol);
      require_same(download(b, binary(b, op, c, x)), download(r, binary(r, op, c, rx)), 1e-300, st.rtol);
    }
  }
  // select: a NaN condition counts as true, as in the reference.
  require_same(download(b, select(b, y, x, unary(b, unary_op::neg, x))),
               download(r, select(r, ry, rx, unary(r, unary_op::neg, rx))), 0, 0);
}

}  // namespace

TEST_CASE("libtorch backend: every element-wise op matches the reference, special values included",
          "[torch][backend]") {
  SECTION("double storage") { compare_elementwise<double>(double_storage); }
  SECTION("float storage") { compare_elementwise<float>(float_storage); }
}

TEST_CASE("libtorch backend: minimum and maximum keep the first argument on a tie, in value and gradient",
          "[torch][backend][autograd]") {
  const auto b = cpu_backend();
  auto x = torch_tensor({1.0, 2.0, 3.0}, {3}).requires_grad_(true);
  const auto y = torch_tensor({1.0, 1.0, 4.0}, {3});
  // minimum(x, y) = (1, 1, 3): the tie at element 0 and x's own value at element 2 pass the gradient to x.
  // at::minimum would give 1/2 at the tie; the library's analytic gradients take the first argument's branch.
  binary(b, binary_op::minimum, x, y).sum().backward();
  require_close(host(x.grad()), {1.0, 0.0, 1.0}, 0, 0);
  x.mutable_grad().zero_();
  // clamp(x, 1, 3) = minimum(maximum(x, 1), 3): the closed interval [1, 3] passes the gradient.
  binary(b, binary_op::minimum, binary(b, binary_op::maximum, x, 1.0), 3.0).sum().backward();
  require_close(host(x.grad()), {1.0, 1.0, 1.0}, 0, 0);
  x.mutable_grad().zero_();
  // With the scalar first, a tie keeps the scalar: no gradient at x = 1 for maximum(1, x), at x = 3 for min(3, x).
  (binary(b, binary_op::maximum, 1.0, x) + binary(b, binary_op::minimum, 3.0, x)).sum().backward();
  require_close(host(x.grad()), {1.0, 2.0, 1.0}, 0, 0);
}

TEST_CASE("libtorch backend: reductions, segments, gathers, scans match the reference on edge shapes",
          "[torch][backend]") {
  const auto b = cpu_backend();
  const reference_backend<double> r;
  for (const auto s : {shape::matrix(0, 3), shape::matrix(3, 0), shape::matrix(1, 1), shape::matrix(4, 5),
                       shape::matrix(1, 7), shape::matrix(5, 1)}) {
    INFO("shape " << to_string(s));
    const auto values = uniform(static_cast<std::size_t>(s.numel()), -2, 2, 3);
    const auto decay = uniform(static_cast<std::size_t>(s.numel()), 0, 1.2, 4);
    const auto t = upload(b, std::span<const double>(values), s);
    const auto rt = ref_values<double>(values, s);
    require_close(download(b, sum(b, t)), download(r, sum(r, rt)), 1e-14, 1e-14);
    require_close(download(b, sum_rows(b, t)), download(r, sum_rows(r, rt)), 1e-14, 1e-14);
    require_close(download(b, shift_left(b, t)), download(r, shift_left(r, rt)), 0, 0);
    const auto d = upload(b, std::span<const double>(decay), s);
    const auto want_scan = download(r, reverse_scan_rows(r, rt, ref_values<double>(decay, s)));
    require_close(download(b, reverse_scan_rows(b, t, d)), want_scan, 1e-14, 1e-14);
    // The differentiable path (one op per column) agrees with the plain loop.
    const auto tracked = t.clone().requires_grad_(true);
    require_close(download(b, reverse_scan_rows(b, tracked, d)), want_scan, 1e-14, 1e-14);
    const auto flat = shape::vector(s.numel());
    require_close(download(b, reshape(b, t, flat)), download(r, reshape(r, rt, flat)), 0, 0);
    const auto row_values = uniform(static_cast<std::size_t>(s.dims[0]), -1, 1, 5);
    require_close(
        download(b,
                 expand_rows(b, upload(b, std::span<const double>(row_values), shape::vector(s.dims[0])), s.dims[1])),
        download(r, expand_rows(r, ref_values<double>(row_values, shape::vector(s.dims[0])), s.dims[1])), 0, 0);
  }
  // Segments and gathers, with an empty segment and repeated ids.
  const std::vector<std::int64_t> seg = {1, 0, 1, 3, 3, 3};
  const auto values = uniform(6, -1, 1, 6);
  const auto t = upload(b, std::span<const double>(values), shape::vector(6));
  const auto ids = upload_index(b, std::span<const std::int64_t>(seg), shape::vector(6));
  const auto rids = upload_index(r, std::span<const std::int64_t>(seg), shape::vector(6));
  const auto rt = ref_values<double>(values, shape::vector(6));
  require_close(download(b, sum_segments(b, t, ids, 5)), download(r, sum_segments(r, rt, rids, 5)), 1e-15, 1e-15);
  require_close(download(b, gather(b, t, ids)), download(r, gather(r, rt, rids)), 0, 0);
  CHECK(download_index(b, ids) == seg);
  CHECK(index_shape_of(b, ids) == shape::vector(6));
  // Rank 0, and empty segments.
  CHECK(shape_of(b, fill(b, shape::scalar(), 2.5)) == shape::scalar());
  require_close(download(b, fill(b, shape::scalar(), 2.5)), {2.5}, 0, 0);
  require_close(download(b, sum_segments(b, fill(b, shape::vector(0), 1.0),
                                         upload_index(b, std::span<const std::int64_t>(), shape::vector(0)), 2)),
                {0.0, 0.0}, 0, 0);
}

TEST_CASE("libtorch backend: reductions accumulate in double whatever the storage", "[torch][backend]") {
  // 1e8 + ten ones - 1e8 in float storage: a float accumulator loses every one (ulp of 1e8 is 8).
  std::vector<double> values = {1e8, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1e8};
  for (const auto type : {at::kFloat, at::kBFloat16}) {
    const auto b = cpu_backend(at::kFloat);
    const auto t = torch_tensor(values, {1, 12}, type);
    const auto exact = rounded(values, type);  // bf16 rounds 1e8 and -1e8 alike: they still cancel
    double want = 0;
    for (double v : exact) want += v;
    require_close(download(b, sum(b, t)), {want}, 0, 0);
    require_close(download(b, sum_rows(b, t)), {want}, 0, 0);
  }
}

TEST_CASE("libtorch backend: bf16 and integer inputs are promoted, bf16 to fp32", "[torch][backend][bf16]") {
  const auto b = cpu_backend(at::kFloat);
  const std::vector<double> values = {0.1, -1.7, 3.3, 25.0};
  const auto x = torch_tensor(values, {4}, at::kBFloat16);
  const auto y = unary(b, unary_op::exp, x);
  CHECK(y.scalar_type() == at::kFloat);
  // exp of the bf16 values themselves (the rounding of the input is the input), evaluated in fp32.
  std::vector<double> want;
  for (double v : rounded(values, at::kBFloat16)) want.push_back(std::exp(v));
  require_close(download(b, y), want, 0, 4e-7);
  CHECK(binary(b, binary_op::add, x, 1.0).scalar_type() == at::kFloat);
  // A bool mask times a float tensor: the mask is promoted to the backend's dtype.
  const auto mask = torch_tensor({1, 0, 1, 1}, {4}).to(at::kBool);
  const auto prod = binary(b, binary_op::mul, mask, torch_tensor(values, {4}, at::kFloat));
  CHECK(prod.scalar_type() == at::kFloat);
  require_close(download(b, prod), {static_cast<float>(0.1), 0.0, static_cast<float>(3.3), 25.0}, 0, 0);
  // A double tensor with a float one computes in double.
  CHECK(binary(b, binary_op::mul, torch_tensor(values, {4}), torch_tensor(values, {4}, at::kFloat)).scalar_type() ==
        at::kDouble);
  // A bf16 backend stores uploads in bf16 but computes, fills and promotes integers in fp32.
  const auto bf16 = cpu_backend(at::kBFloat16);
  CHECK(make_tensor(bf16, values, shape::vector(4)).raw().scalar_type() == at::kBFloat16);
  CHECK(fill(bf16, shape::vector(2), 1.0).scalar_type() == at::kFloat);
  CHECK(binary(bf16, binary_op::mul, mask, mask).scalar_type() == at::kFloat);
  // backend_like promotes as the operations do.
  CHECK(libtorch::backend_like(x).dtype == at::kFloat);
  CHECK(libtorch::backend_like(torch_tensor(values, {4})).dtype == at::kDouble);
}

namespace {

// Logits [6, 5]: random rows, one with a -inf entry, one entirely -inf but for one entry, one of magnitude 1e4.
std::vector<double> softmax_logits(double scale) {
  auto z = uniform(30, -3, 3, 17);
  for (auto& v : z) v *= scale;
  z[5] = -inf;                           // row 1, entry 0 masked out
  z[10] = z[11] = z[12] = z[13] = -inf;  // row 2: one live entry, p = (0, 0, 0, 0, 1)
  for (std::size_t v = 15; v < 20; ++v) z[v] = 1e4 * (static_cast<double>(v) - 17.0) / 3.0;  // row 3: 1e4 scale
  return z;
}

}  // namespace

TEST_CASE("libtorch backend: row softmax statistics and backward match the reference", "[torch][backend][logits]") {
  const reference_backend<double> r;
  const std::vector<std::int64_t> targets = {4, 2, 4, 0, 1, 3};
  for (const double scale : {1.0, 30.0}) {
    for (const double inv_t : {1.0, 1.0 / 0.7, 0.0}) {
      INFO("scale " << scale << ", inverse temperature " << inv_t);
      const auto z = softmax_logits(scale);
      const auto s = shape::matrix(6, 5);
      const auto rz = ref_values<double>(z, s);
      const auto rids = upload_index(r, std::span<const std::int64_t>(targets), shape::vector(6));
      const auto want = row_softmax_stats(r, rz, rids, inv_t);
      const auto g_logp = uniform(6, -1, 1, 8), g_h = uniform(6, -1, 1, 9);
      reference_tensor<double> want_grad;
      row_softmax_backward(r, rz, rids, inv_t, want.lse, want.entropy, ref_values<double>(g_logp, shape::vector(6)),
                           ref_values<double>(g_h, shape::vector(6)), want_grad);
      // Rows of magnitude 1e4: their lse carries the ulp of 1e4 (1.8e-12), which log p and p inherit.
      for (const std::int64_t chunk : {std::int64_t{1} << 20, std::int64_t{7}}) {
        auto b = cpu_backend();
        b.chunk_elements = chunk;  // 7: one row per chunk
        const auto zt = upload(b, std::span<const double>(z), s);
        const auto ids = upload_index(b, std::span<const std::int64_t>(targets), shape::vector(6));
        const auto got = row_softmax_stats(b, zt, ids, inv_t);
        require_same(download(b, got.lse), download(r, want.lse), 1e-11, 1e-14);
        require_same(download(b, got.logprob), download(r, want.logprob), 1e-11, 1e-14);
        require_same(download(b, got.entropy), download(r, want.entropy), 1e-11, 1e-14);
        at::Tensor grad;
        row_softmax_backward(b, zt, ids, inv_t, got.lse, got.entropy, torch_tensor(g_logp, {6}), torch_tensor(g_h, {6}),
                             grad);
        require_same(download(b, grad), download(r, want_grad), 1e-11, 1e-12);
        // In place: the gradient overwrites the logits, chunk by chunk, with the same numbers.
        auto inplace = zt.clone();
        row_softmax_backward(b, inplace, ids, inv_t, got.lse, got.entropy, torch_tensor(g_logp, {6}),
                             torch_tensor(g_h, {6}), inplace);
        require_same(download(b, inplace), download(b, grad), 0, 0);
      }
    }
  }
}

TEST_CASE("libtorch backend: row statistics of an all -inf row, V = 1, and an empty batch", "[torch][backend][edge]") {
  const auto b = cpu_backend();
  const reference_backend<double> r;
  const std::vector<double> z = {-inf, -inf, 0.5, 2.0};
  const std::vector<std::int64_t> targets = {1, 0};
  const auto got = row_softmax_stats(b, torch_tensor(z, {2, 2}), torch_ids(targets, {2}), 1.0);
  const auto want = row_softmax_stats(r, ref_values<double>(z, shape::matrix(2, 2)),
                                      upload_index(r, std::span<const std::int64_t>(targets), shape::vector(2)), 1.0);
  // Row 0: lse -inf, logprob NaN (-inf - -inf), entropy 0, as the reference.
  require_same(host(got.lse), download(r, want.lse), 1e-15, 1e-15);
  require_same(host(got.logprob), download(r, want.logprob), 1e-15, 1e-15);
  require_same(host(got.entropy), download(r, want.entropy), 1e-15, 1e-15);
  CHECK(std::isnan(host(got.logprob)[0]));
  // V = 1: p = 1, log p = 0, H = 0, and the gradient vanishes.
  const auto one = row_softmax_stats(b, torch_tensor({3.0, -7.0}, {2, 1}), torch_ids({0, 0}, {2}), 1.0);
  require_close(host(one.logprob), {0.0, 0.0}, 0, 0);
  require_close(host(one.entropy), {0.0, 0.0}, 0, 0);
  // N = 0.
  const auto empty = row_softmax_stats(b, at::zeros({0, 4}, at::kDouble), torch_ids({}, {0}), 1.0);
  CHECK(empty.lse.numel() == 0);
  CHECK(empty.entropy.sizes() == at::IntArrayRef{0});
  at::Tensor grad;
  row_softmax_backward(b, at::zeros({0, 4}, at::kDouble), torch_ids({}, {0}), 1.0, empty.lse, empty.entropy, empty.lse,
                       empty.lse, grad);
  CHECK(grad.sizes() == at::IntArrayRef({0, 4}));
}

TEST_CASE("libtorch backend: row statistics in float (row_dtype) stay within fp32 rounding of double",
          "[torch][backend][logits]") {
  auto b = cpu_backend(at::kFloat);
  const auto z = uniform(40, -5, 5, 23);
  const auto zt = torch_tensor(z, {8, 5}, at::kFloat);
  const auto ids = torch_ids({0, 1, 2, 3, 4, 0, 1, 2}, {8});
  const auto wide = row_softmax_stats(b, zt, ids, 1.0);
  b.row_dtype = at::kFloat;
  const auto narrow = row_softmax_stats(b, zt, ids, 1.0);
  // log-sum-exp of 5 values in fp32: a few ulps of values of order 1-10.
  require_close(host(narrow.lse), host(wide.lse), 1e-6, 1e-6);
  require_close(host(narrow.logprob), host(wide.logprob), 1e-6, 1e-6);
  require_close(host(narrow.entropy), host(wide.entropy), 1e-6, 1e-6);
}

TEST_CASE("libtorch backend: bf16 logits give fp32 statistics of the bf16 values", "[torch][backend][bf16]") {
  const auto b = cpu_backend(at::kFloat);
  const reference_backend<double> r;
  const auto z = uniform(24, -4, 4, 29);
  const std::vector<std::int64_t> targets = {0, 5, 2, 3};
  const auto zb = torch_tensor(z, {4, 6}, at::kBFloat16);
  const auto got = row_softmax_stats(b, zb, torch_ids(targets, {4}), 1.0);
  CHECK(got.lse.scalar_type() == at::kFloat);
  // The statistics are computed in double from the bf16 values: only the fp32 output rounding remains.
  const auto rz = ref_values<double>(rounded(z, at::kBFloat16), shape::matrix(4, 6));
  const auto rids = upload_index(r, std::span<const std::int64_t>(targets), shape::vector(4));
  const auto want = row_softmax_stats(r, rz, rids, 1.0);
  require_close(host(got.lse), download(r, want.lse), 1e-7, 2e-7);
  require_close(host(got.logprob), download(r, want.logprob), 1e-7, 2e-7);
  require_close(host(got.entropy), download(r, want.entropy), 1e-7, 2e-7);
  reference_tensor<double> want_grad;
  row_softmax_backward(r, rz, rids, 1.0, want.lse, want.entropy, ref_values<double>({1, 1, 1, 1}, shape::vector(4)),
                       ref_values<double>({1, 1, 1, 1}, shape::vector(4)), want_grad);
  const auto ones = torch_tensor({1, 1, 1, 1}, {4}, at::kFloat);
  // An allocated gradient is fp32, like every result of a bf16 input; the fp32 lse it starts from is off by up to
  // half an fp32 ulp of |lse| (< 4), which p inherits.
  at::Tensor grad;
  row_softmax_backward(b, zb, torch_ids(targets, {4}), 1.0, got.lse, got.entropy, ones, ones, grad);
  CHECK(grad.scalar_type() == at::kFloat);
  require_close(host(grad), download(r, want_grad), 1e-7, 1e-6);
  // A bf16 buffer is written in bf16: 8 significant bits, a relative rounding of at most 2^-8.
  auto grad_bf16 = at::empty({4, 6}, at::kBFloat16);
  row_softmax_backward(b, zb, torch_ids(targets, {4}), 1.0, got.lse, got.entropy, ones, ones, grad_bf16);
  CHECK(grad_bf16.scalar_type() == at::kBFloat16);
  require_close(host(grad_bf16), download(r, want_grad), 1e-7, 1.0 / 256);
}

TEST_CASE("libtorch backend: divergences and the sparse forward KL match the reference", "[torch][backend][distill]") {
  const reference_backend<double> r;
  // Rows: random; an entry both exclude; teacher-only zero; student-only zero; magnitude 1e3 (q underflows to 0).
  auto zs = uniform(25, -2, 2, 31), zt = uniform(25, -2, 2, 32);
  zs[5] = zt[5] = -inf;
  zt[11] = -inf;
  zs[17] = -inf;
  for (std::size_t v = 20; v < 25; ++v) {
    zs[v] *= 1e3;
    zt[v] *= 1e3;
  }
  const auto s = shape::matrix(5, 5);
  const std::vector<double> w = {0.5, -1.0, 2.0, 0.25, 1.0};
  for (const double beta : {0.0, 0.3, 0.5, 1.0}) {
    for (const double inv_t : {1.0, 1.0 / 0.7}) {
      INFO("beta " << beta << ", inverse temperature " << inv_t);
      reference_tensor<double> want_grad;
      const auto want = row_divergence(r, ref_values<double>(zs, s), ref_values<double>(zt, s), inv_t, beta,
                                       ref_values<double>(w, shape::vector(5)), want_grad);
      for (const std::int64_t chunk : {std::int64_t{1} << 20, std::int64_t{5}}) {
        auto b = cpu_backend();
        b.chunk_elements = chunk;
        at::Tensor grad;
        const auto got = row_divergence(b, torch_tensor(zs, {5, 5}), torch_tensor(zt, {5, 5}), inv_t, beta,
                                        torch_tensor(w, {5}), grad);
        // Infinite losses (beta 0 with q = 0 < p, beta 1 with p = 0 < q) and their inf - inf gradients match too.
        require_same(host(got), download(r, want), 1e-9, 1e-10);
        require_same(host(grad), download(r, want_grad), 1e-9, 1e-10);
        // In place over the student logits.
        auto inplace = torch_tensor(zs, {5, 5});
        (void)row_divergence(b, inplace, torch_tensor(zt, {5, 5}), inv_t, beta, torch_tensor(w, {5}), inplace);
        require_same(host(inplace), host(grad), 0, 0);
      }
    }
  }
  // Sparse: K = 3 ids per row with a repeated id (its two terms accumulate) and a -inf teacher log-prob.
  const std::vector<std::int64_t> tids = {0, 2, 4, 1, 1, 3, 2, 0, 4, 3, 4, 0, 1, 2, 3};
  std::vector<double> tlp = uniform(15, -4, -0.1, 33);
  tlp[4] = -inf;
  for (const double inv_t : {1.0, 2.0}) {
    reference_tensor<double> want_grad;
    const auto want = row_sparse_forward_kl(
        r, ref_values<double>(zs, s), upload_index(r, std::span<const std::int64_t>(tids), shape::matrix(5, 3)),
        ref_values<double>(tlp, shape::matrix(5, 3)), inv_t, ref_values<double>(w, shape::vector(5)), want_grad);
    for (const std::int64_t chunk : {std::int64_t{1} << 20, std::int64_t{10}}) {
      auto b = cpu_backend();
      b.chunk_elements = chunk;  // 10: two rows per chunk, the last chunk one row
      at::Tensor grad;
      const auto got = row_sparse_forward_kl(b, torch_tensor(zs, {5, 5}), torch_ids(tids, {5, 3}),
                                             torch_tensor(tlp, {5, 3}), inv_t, torch_tensor(w, {5}), grad);
      require_same(host(got), download(r, want), 1e-9, 1e-10);
      require_same(host(grad), download(r, want_grad), 1e-9, 1e-10);
    }
  }
}

TEST_CASE("libtorch backend: errors name the operation and what is wrong", "[torch][backend][errors]") {
  const auto b = cpu_backend();
  const auto v2 = torch_tensor({1, 2}, {2});
  require_error([&] { (void)binary(b, binary_op::add, v2, torch_tensor({1, 2, 3}, {3})); }, {"binary", "[2]", "[3]"});
  require_error([&] { (void)sum_rows(b, v2); }, {"sum_rows", "rank-2"});
  require_error([&] { (void)gather(b, v2, torch_ids({2}, {1})); }, {"gather", "index 2 out of range [0, 2)"});
  require_error([&] { (void)gather(b, v2, torch_ids({-1}, {1})); }, {"gather", "index -1"});
  require_error([&] { (void)gather(b, v2, torch_tensor({0}, {1})); }, {"gather", "ids must be an integer tensor"});
  require_error([&] { (void)sum_segments(b, v2, torch_ids({0, 3}, {2}), 3); }, {"sum_segments", "index 3"});
  require_error([&] { (void)sum_segments(b, v2, torch_ids({0}, {1}), 3); }, {"sum_segments", "ids [1]"});
  require_error(
      [&] {
        (void)make_tensor(b, std::vector<double>{1, 2, 3}, shape::matrix(2, 2));
      },
      {"upload", "3 values", "[2,2]"});
  require_error([&] { (void)shape_of(b, at::zeros({2, 2, 2})); }, {"shape_of", "rank 3"});
  require_error([&] { (void)unary(b, unary_op::exp, at::Tensor()); }, {"unary", "undefined"});
  require_error([&] { (void)reshape(b, v2, shape::vector(3)); }, {"reshape", "[2]", "[3]"});
  require_error([&] { (void)select(b, v2, v2, torch_tensor({1}, {1})); }, {"select", "shapes differ"});
  require_error([&] { (void)reverse_scan_rows(b, v2, v2); }, {"reverse_scan_rows", "rank-2"});
  auto bad = b;
  bad.dtype = at::kLong;
  require_error([&] { (void)fill(bad, shape::vector(2), 1.0); }, {"backend.dtype", "floating-point"});
  const auto z = torch_tensor(uniform(10, -1, 1, 1), {2, 5});
  auto bad_rows = b;
  bad_rows.row_dtype = at::kInt;
  require_error([&] { (void)row_softmax_stats(bad_rows, z, torch_ids({0, 1}, {2}), 1.0); },
                {"backend.row_dtype", "floating-point", "Int"});
  require_error(
      [&] {
        (void)row_softmax_stats(b, z, torch_ids({0, 5}, {2}), 1.0);
      },
      {"row_softmax_stats", "index 5 out of range [0, 5)"});
  require_error([&] { (void)row_softmax_stats(b, z, torch_ids({0}, {1}), 1.0); }, {"row_softmax_stats", "ids [1]"});
  require_error(
      [&] {
        (void)row_softmax_stats(b, torch_tensor({}, {2, 0}), torch_ids({0, 0}, {2}), 1.0);
      },
      {"row_softmax_stats", "V > 0", "[2,0]"});
  at::Tensor out;
  require_error(
      [&] {
        (void)row_divergence(b, z, z, 1.0, 1.5, torch_tensor({1, 1}, {2}), out);
      },
      {"row_divergence", "beta", "1.5"});
  require_error([&] { (void)row_divergence(b, z, z, 1.0, 0.5, torch_tensor({1}, {1}), out); },
                {"row_divergence", "weight [1]"});
  require_error(
      [&] {
        (void)row_sparse_forward_kl(b, z, torch_ids({0, 7}, {2, 1}), torch_tensor({-1, -1}, {2, 1}), 1.0,
                                    torch_tensor({1, 1}, {2}), out);
      },
      {"row_sparse_forward_kl", "index 7"});
}

TEST_CASE("libtorch backend: tensors stay on their CUDA device", "[torch][backend][cuda]") {
  if (!torch::cuda::is_available()) {
    WARN("skipped: no CUDA device");
    return;
  }
  torch_backend b;
  b.device = at::Device(at::kCUDA, 0);
  const auto values = uniform(12, -2, 2, 41);
  const auto t = upload(b, std::span<const double>(values), shape::matrix(3, 4));
  CHECK(t.is_cuda());
  const auto cpu = cpu_backend(at::kFloat);
  const auto tc = upload(cpu, std::span<const double>(values), shape::matrix(3, 4));
  // x / t with the CPU scalar operand, a scan, segments and a row primitive, all on the device.
  require_close(download(b, binary(b, binary_op::div, 2.0, t)), download(cpu, binary(cpu, binary_op::div, 2.0, tc)),
                1e-6, 1e-6);
  const auto scan = reverse_scan_rows(b, t, t);
  CHECK(scan.is_cuda());
  require_close(download(b, scan), download(cpu, reverse_scan_rows(cpu, tc, tc)), 1e-5, 1e-5);
  const auto ids = upload_index(b, std::vector<std::int64_t>{0, 3, 1}, shape::vector(3));
  const auto stats = row_softmax_stats(b, t, ids, 1.0);
  CHECK(stats.lse.is_cuda());
  require_close(download(b, stats.logprob),
                download(cpu, row_softmax_stats(
                                  cpu, tc, upload_index(cpu, std::vector<std::int64_t>{0, 3, 1}, shape::vector(3)), 1.0)
                                  .logprob),
                1e-6, 1e-6);
  require_error([&] { (void)gather(b, sum_rows(b, t), ids); }, {"gather", "index 3 out of range [0, 3)"});
}

TEST_CASE("libtorch backend: the counting hooks count on the device and the checks still name the element",
          "[torch][backend][validate]") {
  const libtorch::backend b{.dtype = at::kDouble};
  constexpr double not_a_number = std::numeric_limits<double>::quiet_NaN();
  constexpr double infinity = std::numeric_limits<double>::infinity();
  const auto values =
      at::tensor(std::vector<double>{0.0, 1.0, not_a_number, infinity, -infinity, 0.5, 1.0, -0.0}, at::kDouble);
  CHECK(libtorch::count_not_finite(b, values) == 3);
  CHECK(libtorch::count_not_binary(b, values) == 4);  // nan, inf, -inf, 0.5; -0.0 == 0 is binary
  CHECK(libtorch::count_not_finite(b, at::zeros({0}, at::kDouble)) == 0);
  // fp32 and fp64 CPU tensors are counted in place over the exponent bits, in parallel chunks of 65536: a large
  // tensor with specials scattered over the chunks, the largest finite values, subnormals and -0 (all finite), against
  // torch's isfinite; and a strided view (not contiguous: torch's path).
  for (const auto dtype : {at::kFloat, at::kDouble}) {
    INFO("dtype " << dtype);
    auto large = at::zeros({300006}, dtype);  // 7 x 42858
    const double biggest = dtype == at::kFloat ? std::numeric_limits<float>::max() : std::numeric_limits<double>::max();
    const double tiny = dtype == at::kFloat ? std::numeric_limits<float>::denorm_min()
                                            : std::numeric_limits<double>::denorm_min();
    const std::vector<std::pair<std::int64_t, double>> at_index = {
        {0, not_a_number}, {65535, infinity}, {65536, -infinity}, {131072, biggest}, {200000, -biggest},
        {250000, tiny},    {250001, -0.0},    {300000, not_a_number}};
    for (const auto& [i, v] : at_index) large[i] = v;
    CHECK(libtorch::count_not_finite(b, large) == 4);
    CHECK(libtorch::count_not_finite(b, large) == at::isfinite(large).logical_not().sum().item<std::int64_t>());
    CHECK(libtorch::count_not_finite(b, large.view({-1, 7}).narrow(1, 0, 1)) ==
          at::isfinite(large.view({-1, 7}).narrow(1, 0, 1)).logical_not().sum().item<std::int64_t>());
  }
  static_assert(grpo::detail::counts_not_finite<libtorch::backend>);
  static_assert(grpo::detail::counts_not_binary<libtorch::backend>);
  grpo::detail::expect_finite(libtorch::wrap(b, at::ones({3, 2}, at::kFloat)), "x");
  grpo::detail::expect_mask(libtorch::wrap(b, at::tensor(std::vector<double>{0.0, 1.0, -0.0}, at::kDouble)), "mask");
  require_error([&] { grpo::detail::expect_finite(libtorch::wrap(b, values), "logits"); },
                             {"logits: element 2 is nan"});
  require_error([&] { grpo::detail::expect_mask(libtorch::wrap(b, values), "mask"); },
                             {"mask: element 2 is nan", "must be 0 or 1"});
}
