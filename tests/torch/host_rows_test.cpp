// SPDX-License-Identifier: Apache-2.0
// The LibTorch backend's CPU fp32 row path (grpo/libtorch/host_rows.hpp: the core's fp32 row kernels over the rows):
// which inputs take it (row_softmax_stats_path and its siblings, one condition at a time), and its row_softmax_stats,
// row_softmax_backward, row_divergence and row_sparse_forward_kl against the torch-op path in double (row_dtype
// double, the same fp32 logits) and against reference_backend<double>, on hand-picked rows: ordinary, |z| ~ 1e4,
// temperature != 1, -inf entries, and the rows the kernels hand back (all -inf, NaN, +inf, non-finite upstream values
// or weights), which must carry the torch-op path's semantics. Shapes: V over two blocks of 1024 and not a multiple
// of 16, N over several at::parallel_for tasks and not a multiple of one; in place over the logits.
#include <ATen/ATen.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "grpo/libtorch/autograd.hpp"
#include "grpo/libtorch/backend.hpp"
#include "grpo/logits_policy_loss.hpp"
#include "grpo/reference_backend.hpp"
#include "torch_support.hpp"

namespace {

using grpo::shape;
using grpo::libtorch::row_path;
using grpo::testing::host;
using grpo::testing::require_same;
using grpo::testing::torch_backend;
using grpo::testing::torch_ids;

constexpr double infinity = std::numeric_limits<double>::infinity();
constexpr double not_a_number = std::numeric_limits<double>::quiet_NaN();

/// A CPU backend whose row primitives compute in `row_dtype` (float: the host fp32 path for fp32 logits).
torch_backend rows_in(at::ScalarType row_dtype) {
  torch_backend b;
  b.dtype = at::kFloat;
  b.row_dtype = row_dtype;
  return b;
}

/// The kinds of hand-picked rows.
enum class row_kind { ordinary, large, masked, all_masked, has_nan, has_inf };

/// fp32 logits [kinds.size(), vocab]: ordinary rows in [-5, 5), large ones around +-1e4 (spread 20), masked ones with
/// every third entry -inf, and the special rows the kernels hand back to the torch ops.
std::vector<double> make_logits(const std::vector<row_kind>& kinds, std::int64_t vocab, std::uint32_t seed) {
  std::vector<double> z;
  for (std::size_t r = 0; r < kinds.size(); ++r) {
    const auto u = grpo::testing::uniform(static_cast<std::size_t>(vocab), -5.0, 5.0,
                                          seed + static_cast<std::uint32_t>(r));
    for (std::int64_t v = 0; v < vocab; ++v) {
      const double x = u[static_cast<std::size_t>(v)];
      double value = x;
      switch (kinds[r]) {
        case row_kind::ordinary:
          break;
        case row_kind::large:
          value = (r % 2 == 0 ? 1e4 : -1e4) + 4.0 * x;
          break;
        case row_kind::masked:
          value = v % 3 == 1 ? -infinity : x;
          break;
        case row_kind::all_masked:
          value = -infinity;
          break;
        case row_kind::has_nan:
          value = v == vocab / 2 ? not_a_number : x;
          break;
        case row_kind::has_inf:
          value = v == vocab / 3 ? infinity : x;
          break;
      }
      z.push_back(static_cast<double>(static_cast<float>(value)));
    }
  }
  return z;
}

grpo::reference_tensor<double> reference_values(const std::vector<double>& v, shape s) { return {s, v}; }

grpo::reference_index reference_ids(const std::vector<std::int64_t>& ids) {
  return grpo::upload_index(grpo::reference_backend<double>{}, std::span<const std::int64_t>(ids),
                            shape::vector(static_cast<std::int64_t>(ids.size())));
}

std::vector<std::int64_t> targets(std::int64_t rows, std::int64_t vocab) {
  std::vector<std::int64_t> ids;
  for (std::int64_t r = 0; r < rows; ++r) ids.push_back((r * 613 + 7) % vocab);
  return ids;
}

/// The rows of a [rows, cols] host vector where keep(r).
template <class Keep>
std::vector<double> rows_where(const std::vector<double>& x, std::int64_t cols, std::int64_t rows, Keep keep) {
  std::vector<double> out;
  for (std::int64_t r = 0; r < rows; ++r)
    if (keep(r)) out.insert(out.end(), x.begin() + r * cols, x.begin() + (r + 1) * cols);
  return out;
}

bool is_ordinary(row_kind k) { return k == row_kind::ordinary || k == row_kind::large || k == row_kind::masked; }

/// A per-row loss [rows] and its gradient [rows, vocab] as host values.
struct loss_and_gradient {
  std::vector<double> loss, gradient;
};

/// The fast path's loss and gradient against the double torch ops (`wide`) and the reference (`want`) on the rows
/// where ordinary(n), and against the float torch ops (`ops`) on the rows it hands back.
template <class Ordinary>
void require_fast_rows(const loss_and_gradient& fast, const loss_and_gradient& wide, const loss_and_gradient& want,
                       const loss_and_gradient& ops, std::int64_t rows, std::int64_t vocab, Ordinary ordinary) {
  const auto special = [&](std::int64_t n) { return !ordinary(n); };
  require_same(rows_where(fast.loss, 1, rows, ordinary), rows_where(wide.loss, 1, rows, ordinary), 1e-6, 1e-5);
  require_same(rows_where(fast.loss, 1, rows, ordinary), rows_where(want.loss, 1, rows, ordinary), 1e-6, 1e-5);
  require_same(rows_where(fast.gradient, vocab, rows, ordinary), rows_where(wide.gradient, vocab, rows, ordinary),
               1e-6, 1e-5);
  require_same(rows_where(fast.gradient, vocab, rows, ordinary), rows_where(want.gradient, vocab, rows, ordinary),
               1e-6, 1e-5);
  require_same(rows_where(fast.loss, 1, rows, special), rows_where(ops.loss, 1, rows, special), 1e-6, 1e-5);
  require_same(rows_where(fast.gradient, vocab, rows, special), rows_where(ops.gradient, vocab, rows, special), 1e-6,
               1e-5);
}

/// Every element equal, bit for bit up to NaN payloads (NaN matches NaN).
void require_identical(const std::vector<double>& got, const std::vector<double>& want) {
  require_same(got, want, 0, 0);
}

const std::vector<row_kind> all_kinds = {row_kind::ordinary,   row_kind::large,   row_kind::masked,
                                         row_kind::all_masked, row_kind::has_nan, row_kind::has_inf,
                                         row_kind::large,      row_kind::ordinary};

}  // namespace

TEST_CASE("libtorch host rows: the fp32 path is taken exactly for fp32 CPU logits, float row_dtype, no graph",
          "[torch][host_rows]") {
  const auto fast = rows_in(at::kFloat), exact = rows_in(at::kDouble);
  const auto z = at::zeros({3, 5}, at::kFloat);
  CHECK(row_softmax_stats_path(fast, z) == row_path::host_fp32);
  CHECK(row_softmax_backward_path(fast, z) == row_path::host_fp32);
  CHECK(row_divergence_path(fast, z, z) == row_path::host_fp32);
  // row_dtype double (the default): the torch ops.
  CHECK(row_softmax_stats_path(exact, z) == row_path::torch_ops);
  CHECK(row_softmax_backward_path(exact, z) == row_path::torch_ops);
  CHECK(row_divergence_path(exact, z, z) == row_path::torch_ops);
  CHECK(row_softmax_stats_path(torch_backend{}, z) == row_path::torch_ops);
  // Logits of another dtype: bf16, fp16, fp64.
  for (const auto type : {at::kBFloat16, at::kHalf, at::kDouble}) {
    const auto other = z.to(type);
    CHECK(row_softmax_stats_path(fast, other) == row_path::torch_ops);
    CHECK(row_softmax_backward_path(fast, other) == row_path::torch_ops);
    CHECK(row_divergence_path(fast, other, z) == row_path::torch_ops);
    CHECK(row_divergence_path(fast, z, other) == row_path::torch_ops);
  }
  // Not on the CPU (the meta device stands in for CUDA, which a CPU-only LibTorch has not).
  const auto elsewhere = at::empty({3, 5}, at::TensorOptions().dtype(at::kFloat).device(at::kMeta));
  CHECK(row_softmax_stats_path(fast, elsewhere) == row_path::torch_ops);
  CHECK(row_softmax_backward_path(fast, elsewhere) == row_path::torch_ops);
  CHECK(row_divergence_path(fast, z, elsewhere) == row_path::torch_ops);
  // A graph to record: logits requiring grad under grad mode; not under NoGradGuard. The backward records nothing.
  const auto tracked = at::zeros({3, 5}, at::kFloat).requires_grad_(true);
  CHECK(row_softmax_stats_path(fast, tracked) == row_path::torch_ops);
  CHECK(row_divergence_path(fast, tracked, z) == row_path::torch_ops);
  CHECK(row_divergence_path(fast, z, tracked) == row_path::torch_ops);
  CHECK(row_softmax_backward_path(fast, tracked) == row_path::host_fp32);
  {
    const at::NoGradGuard no_grad;
    CHECK(row_softmax_stats_path(fast, tracked) == row_path::host_fp32);
    CHECK(row_divergence_path(fast, tracked, tracked) == row_path::host_fp32);
  }
  // The sparse forward KL: the student logits and the teacher log-probs both fp32 CPU, neither recording a graph.
  const auto logprobs = at::zeros({3, 2}, at::kFloat);
  CHECK(row_sparse_forward_kl_path(fast, z, logprobs) == row_path::host_fp32);
  CHECK(row_sparse_forward_kl_path(exact, z, logprobs) == row_path::torch_ops);
  CHECK(row_sparse_forward_kl_path(fast, z.to(at::kBFloat16), logprobs) == row_path::torch_ops);
  CHECK(row_sparse_forward_kl_path(fast, z, logprobs.to(at::kDouble)) == row_path::torch_ops);
  CHECK(row_sparse_forward_kl_path(fast, elsewhere, logprobs) == row_path::torch_ops);
  CHECK(row_sparse_forward_kl_path(fast, tracked, logprobs) == row_path::torch_ops);
  CHECK(row_sparse_forward_kl_path(fast, z, logprobs.clone().requires_grad_(true)) == row_path::torch_ops);
  // Non-contiguous fp32 logits qualify (they are made contiguous).
  CHECK(row_softmax_stats_path(fast, at::zeros({5, 3}, at::kFloat).t()) == row_path::host_fp32);
}

TEST_CASE("libtorch host rows: statistics match the double torch ops and the reference, special rows exactly",
          "[torch][host_rows]") {
  const std::int64_t vocab = 2085;  // two blocks of 1024 and 37 more; 2085 = 16 * 130 + 5
  const auto rows = static_cast<std::int64_t>(all_kinds.size());
  const auto z = make_logits(all_kinds, vocab, 101);
  const auto ids = targets(rows, vocab);
  const auto zt = grpo::testing::torch_tensor(z, {rows, vocab}, at::kFloat);
  const auto it = torch_ids(ids, {rows});
  for (const double temperature : {1.0, 0.7, 2.5}) {
    INFO("temperature " << temperature);
    const double s = 1.0 / temperature;
    const auto got = row_softmax_stats(rows_in(at::kFloat), zt, it, s);
    const auto wide = row_softmax_stats(rows_in(at::kDouble), zt, it, s);
    const auto narrow_ops = [&] {  // the torch ops in float: what the special rows are handed to
      auto b = rows_in(at::kFloat);
      const auto tracked = zt.clone().requires_grad_(true);
      REQUIRE(row_softmax_stats_path(b, tracked) == row_path::torch_ops);
      return row_softmax_stats(b, tracked, it, s);
    }();
    CHECK(got.lse.scalar_type() == at::kFloat);
    const auto r = grpo::reference_backend<double>{};
    const auto want = row_softmax_stats(r, reference_values(z, shape::matrix(rows, vocab)), reference_ids(ids), s);
    const auto ordinary = [&](std::int64_t n) { return is_ordinary(all_kinds[static_cast<std::size_t>(n)]); };
    const auto special = [&](std::int64_t n) { return !ordinary(n); };
    // Ordinary rows: the fp32 kernels (exp within 2 ulp, lane sums merged in double) against double arithmetic; the
    // results are stored in float, so the lse of a row near 1e4 is off by up to ulp(1e4) / 2 = 5e-4 (rtol 1e-6).
    // Special rows: handed back to the torch ops in float, so their NaN, infinities and values are those ops'.
    const auto check = [&](const char* name, const at::Tensor& fast, const at::Tensor& in_double,
                           const std::vector<double>& reference, const at::Tensor& float_ops) {
      INFO(name);
      require_same(rows_where(host(fast), 1, rows, ordinary), rows_where(host(in_double), 1, rows, ordinary), 1e-6,
                   1e-6);
      require_same(rows_where(host(fast), 1, rows, ordinary), rows_where(reference, 1, rows, ordinary), 1e-6, 1e-6);
      require_same(rows_where(host(fast), 1, rows, special), rows_where(host(float_ops), 1, rows, special), 1e-6,
                   1e-6);
      require_same(rows_where(host(fast), 1, rows, special), rows_where(reference, 1, rows, special), 1e-6, 1e-6);
    };
    check("lse", got.lse, wide.lse, want.lse.data, narrow_ops.lse);
    check("entropy", got.entropy, wide.entropy, want.entropy.data, narrow_ops.entropy);
    check("logprob", got.logprob, wide.logprob, want.logprob.data, narrow_ops.logprob);
    // The reference's semantics on the special rows: all -inf has lse -inf, entropy 0, logprob NaN; NaN and +inf rows
    // a non-finite lse.
    const auto lse = host(got.lse), entropy = host(got.entropy), logprob = host(got.logprob);
    CHECK(lse[3] == -infinity);
    CHECK(entropy[3] == 0.0);
    CHECK(std::isnan(logprob[3]));
    CHECK(!std::isfinite(lse[4]));
    CHECK(!std::isfinite(lse[5]));
  }
}

TEST_CASE("libtorch host rows: the backward matches the double torch ops and the reference, in place too",
          "[torch][host_rows]") {
  const std::int64_t vocab = 1037;  // one block and 13 more; not a multiple of 16
  const std::vector<row_kind> kinds = {row_kind::ordinary, row_kind::large, row_kind::masked, row_kind::ordinary,
                                       row_kind::masked,   row_kind::large, row_kind::ordinary};
  const auto rows = static_cast<std::int64_t>(kinds.size());
  const auto z = make_logits(kinds, vocab, 202);
  auto ids = targets(rows, vocab);
  ids[3] = vocab - 1;
  const auto zt = grpo::testing::torch_tensor(z, {rows, vocab}, at::kFloat);
  const auto it = torch_ids(ids, {rows});
  const double s = 1.0 / 0.8;
  const auto stats = row_softmax_stats(rows_in(at::kDouble), zt, it, s);
  auto g_logprob = grpo::testing::uniform(static_cast<std::size_t>(rows), -1.0, 1.0, 5);
  auto g_entropy = grpo::testing::uniform(static_cast<std::size_t>(rows), -0.5, 0.5, 6);
  // Rows the kernel hands back: a NaN upstream gradient (row 3) and an infinite one (row 5).
  g_logprob[3] = not_a_number;
  g_entropy[5] = infinity;
  const auto gl = grpo::testing::torch_tensor(g_logprob, {rows}, at::kFloat);
  const auto ge = grpo::testing::torch_tensor(g_entropy, {rows}, at::kFloat);

  at::Tensor got, wide, narrow_ops;
  row_softmax_backward(rows_in(at::kFloat), zt, it, s, stats.lse, stats.entropy, gl, ge, got);
  row_softmax_backward(rows_in(at::kDouble), zt, it, s, stats.lse, stats.entropy, gl, ge, wide);
  CHECK(got.scalar_type() == at::kFloat);
  const auto r = grpo::reference_backend<double>{};
  grpo::reference_tensor<double> want;
  row_softmax_backward(r, reference_values(z, shape::matrix(rows, vocab)), reference_ids(ids), s,
                       reference_values(host(stats.lse), shape::vector(rows)),
                       reference_values(host(stats.entropy), shape::vector(rows)),
                       reference_values(host(gl), shape::vector(rows)), reference_values(host(ge), shape::vector(rows)),
                       want);
  const auto ordinary = [&](std::int64_t n) { return n != 3 && n != 5; };
  const auto special = [&](std::int64_t n) { return !ordinary(n); };
  // Entries s p (...) of order at most s (1 + |H|): fp32 arithmetic from the same lse, 1e-6 absolute.
  require_same(rows_where(host(got), vocab, rows, ordinary), rows_where(host(wide), vocab, rows, ordinary), 1e-6, 1e-5);
  require_same(rows_where(host(got), vocab, rows, ordinary), rows_where(want.data, vocab, rows, ordinary), 1e-6, 1e-5);
  // The handed-back rows are the torch ops' in float: fp64 logits in row_dtype float take them, on the same values.
  const auto as_double = zt.to(at::kDouble);
  REQUIRE(row_softmax_backward_path(rows_in(at::kFloat), as_double) == row_path::torch_ops);
  row_softmax_backward(rows_in(at::kFloat), as_double, it, s, stats.lse, stats.entropy, gl, ge, narrow_ops);
  require_same(rows_where(host(got), vocab, rows, special), rows_where(host(narrow_ops), vocab, rows, special), 1e-6,
               1e-5);
  require_same(rows_where(host(got), vocab, rows, special), rows_where(want.data, vocab, rows, special), 1e-6, 1e-5);
  CHECK(std::isnan(host(got)[3 * vocab]));

  // In place over the logits, and into a bf16 buffer (written through an fp32 temporary).
  auto inplace = zt.clone();
  row_softmax_backward(rows_in(at::kFloat), inplace, it, s, stats.lse, stats.entropy, gl, ge, inplace);
  require_identical(host(inplace), host(got));
  auto bf16_out = at::empty({rows, vocab}, at::kBFloat16);
  row_softmax_backward(rows_in(at::kFloat), zt, it, s, stats.lse, stats.entropy, gl, ge, bf16_out);
  CHECK(bf16_out.scalar_type() == at::kBFloat16);
  require_identical(host(bf16_out), host(got.to(at::kBFloat16)));
  // Non-contiguous logits, also in place (the logits' transposed storage).
  auto transposed = zt.t().contiguous().t();
  REQUIRE(!transposed.is_contiguous());
  row_softmax_backward(rows_in(at::kFloat), transposed, it, s, stats.lse, stats.entropy, gl, ge, transposed);
  require_identical(host(transposed), host(got));
}

TEST_CASE("libtorch host rows: many rows over several parallel tasks give the torch ops' statistics and gradient",
          "[torch][host_rows]") {
  // V = 4099: 15 rows per at::parallel_for task (64 Ki logits); N = 37 is not a multiple of 15, nor of 2 threads.
  const std::int64_t vocab = 4099, rows = 37;
  std::vector<row_kind> kinds(static_cast<std::size_t>(rows), row_kind::ordinary);
  kinds[10] = row_kind::has_nan;
  kinds[20] = row_kind::masked;
  kinds[36] = row_kind::all_masked;
  const auto z = make_logits(kinds, vocab, 303);
  const auto ids = targets(rows, vocab);
  const auto zt = grpo::testing::torch_tensor(z, {rows, vocab}, at::kFloat);
  const auto it = torch_ids(ids, {rows});
  const auto got = row_softmax_stats(rows_in(at::kFloat), zt, it, 1.0);
  const auto wide = row_softmax_stats(rows_in(at::kDouble), zt, it, 1.0);
  require_same(host(got.lse), host(wide.lse), 1e-6, 1e-6);
  require_same(host(got.entropy), host(wide.entropy), 1e-6, 1e-6);
  require_same(host(got.logprob), host(wide.logprob), 1e-6, 1e-6);
  const auto ones = at::ones({rows}, at::kFloat);
  at::Tensor g_fast, g_wide;
  row_softmax_backward(rows_in(at::kFloat), zt, it, 1.0, wide.lse, wide.entropy, ones, ones * 0.5, g_fast);
  row_softmax_backward(rows_in(at::kDouble), zt, it, 1.0, wide.lse, wide.entropy, ones, ones * 0.5, g_wide);
  require_same(host(g_fast), host(g_wide), 1e-6, 1e-5);
}

TEST_CASE("libtorch host rows: divergences match the double torch ops and the reference, special rows exactly",
          "[torch][host_rows][distillation]") {
  const std::int64_t vocab = 1500;
  // Teacher and student share their masked entries (a -inf in one only would make a forward KL infinite).
  const std::vector<row_kind> kinds = {row_kind::ordinary,   row_kind::large,   row_kind::masked, row_kind::ordinary,
                                       row_kind::all_masked, row_kind::has_nan, row_kind::has_inf};
  const auto rows = static_cast<std::int64_t>(kinds.size());
  const auto zs = make_logits(kinds, vocab, 404);
  auto zt_host = make_logits(kinds, vocab, 505);
  const auto student = grpo::testing::torch_tensor(zs, {rows, vocab}, at::kFloat);
  auto weights = grpo::testing::uniform(static_cast<std::size_t>(rows), 0.5, 2.0, 7);
  weights[3] = not_a_number;  // a non-finite weight: handed back
  const auto w = grpo::testing::torch_tensor(weights, {rows}, at::kFloat);
  const auto teacher = grpo::testing::torch_tensor(zt_host, {rows, vocab}, at::kFloat);
  const auto ordinary = [&](std::int64_t n) { return n < 3; };  // rows 3.. are handed back
  for (const double beta : {0.0, 1.0, 0.5, 0.9}) {
    for (const double temperature : {1.0, 2.0}) {
      INFO("beta " << beta << ", temperature " << temperature);
      const double s = 1.0 / temperature;
      at::Tensor g_fast, g_wide, g_ops;
      const auto loss = row_divergence(rows_in(at::kFloat), student, teacher, s, beta, w, g_fast);
      const auto wide = row_divergence(rows_in(at::kDouble), student, teacher, s, beta, w, g_wide);
      const auto ops = row_divergence(rows_in(at::kFloat), student.to(at::kDouble), teacher, s, beta, w, g_ops);
      const auto r = grpo::reference_backend<double>{};
      grpo::reference_tensor<double> g_want;
      const auto want = row_divergence(r, reference_values(zs, shape::matrix(rows, vocab)),
                                       reference_values(zt_host, shape::matrix(rows, vocab)), s, beta,
                                       reference_values(host(w), shape::vector(rows)), g_want);
      // Per-entry terms in fp32 summed in double; a row near 1e4 keeps its precision through the split lse.
      // The handed-back rows are the torch ops' in float (fp64 student logits take them, on the same values).
      require_fast_rows({host(loss), host(g_fast)}, {host(wide), host(g_wide)}, {want.data, g_want.data},
                        {host(ops), host(g_ops)}, rows, vocab, ordinary);
      const auto row3 = [](std::int64_t n) { return n == 3; };
      require_same(rows_where(host(loss), 1, rows, row3), rows_where(want.data, 1, rows, row3), 1e-6, 1e-5);
      require_same(rows_where(host(g_fast), vocab, rows, row3), rows_where(g_want.data, vocab, rows, row3), 1e-6, 1e-5);
      // Rows all -inf, with a NaN or with a +inf: a NaN gradient row as in the reference; the torch ops' loss there is
      // NaN where the reference's is 0 (inputs the concept leaves unspecified; the torch path's own semantics).
      const auto broken = [](std::int64_t n) { return n >= 4; };
      require_same(rows_where(host(g_fast), vocab, rows, broken), rows_where(g_want.data, vocab, rows, broken), 0, 0);
      for (const double x : rows_where(host(loss), 1, rows, broken)) CHECK(std::isnan(x));
      // In place over the student logits.
      auto inplace = student.clone();
      const auto loss_inplace = row_divergence(rows_in(at::kFloat), inplace, teacher, s, beta, w, inplace);
      require_identical(host(loss_inplace), host(loss));
      require_identical(host(inplace), host(g_fast));
    }
  }
}

TEST_CASE("libtorch host rows: the sparse forward KL matches the double torch ops and the reference",
          "[torch][host_rows][distillation]") {
  const std::int64_t vocab = 1300, k = 5;
  // Rows: ordinary, large, masked (ids avoid the masked entries v % 3 == 1), ordinary with a repeated id and a
  // teacher log-prob -inf (p = 0); then handed back: a NaN teacher log-prob, a NaN weight, a student row all -inf.
  const std::vector<row_kind> kinds = {row_kind::ordinary, row_kind::large,    row_kind::masked,
                                       row_kind::ordinary, row_kind::ordinary, row_kind::ordinary,
                                       row_kind::all_masked};
  const auto rows = static_cast<std::int64_t>(kinds.size());
  const auto zs = make_logits(kinds, vocab, 606);
  std::vector<std::int64_t> ids;
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t j = 0; j < k; ++j) ids.push_back((r * 131 + j * 3 * 97) % (vocab - 2) / 3 * 3);
  ids[3 * k + 4] = ids[3 * k + 1];
  auto logprobs = grpo::testing::uniform(static_cast<std::size_t>(rows * k), -4.0, -1.0, 8);
  for (auto& x : logprobs) x = static_cast<double>(static_cast<float>(x));
  logprobs[3 * k + 2] = -infinity;
  logprobs[4 * k + 3] = not_a_number;
  auto weights = grpo::testing::uniform(static_cast<std::size_t>(rows), 0.5, 2.0, 9);
  weights[5] = not_a_number;
  const auto student = grpo::testing::torch_tensor(zs, {rows, vocab}, at::kFloat);
  const auto it = torch_ids(ids, {rows, k});
  const auto lp = grpo::testing::torch_tensor(logprobs, {rows, k}, at::kFloat);
  const auto w = grpo::testing::torch_tensor(weights, {rows}, at::kFloat);
  const auto ordinary = [](std::int64_t n) { return n < 4; };  // rows 4.. are handed back
  for (const double temperature : {1.0, 0.6}) {
    INFO("temperature " << temperature);
    const double s = 1.0 / temperature;
    at::Tensor g_fast, g_wide, g_ops;
    const auto loss = row_sparse_forward_kl(rows_in(at::kFloat), student, it, lp, s, w, g_fast);
    const auto wide = row_sparse_forward_kl(rows_in(at::kDouble), student, it, lp, s, w, g_wide);
    // fp64 student logits in row_dtype float: the torch ops in float, on the same values.
    const auto ops = row_sparse_forward_kl(rows_in(at::kFloat), student.to(at::kDouble), it, lp, s, w, g_ops);
    CHECK(loss.scalar_type() == at::kFloat);
    const auto r = grpo::reference_backend<double>{};
    grpo::reference_tensor<double> g_want;
    const auto want = row_sparse_forward_kl(
        r, reference_values(zs, shape::matrix(rows, vocab)),
        grpo::upload_index(r, std::span<const std::int64_t>(ids), shape::matrix(rows, k)),
        reference_values(logprobs, shape::matrix(rows, k)), s, reference_values(host(w), shape::vector(rows)), g_want);
    require_fast_rows({host(loss), host(g_fast)}, {host(wide), host(g_wide)}, {want.data, g_want.data},
                      {host(ops), host(g_ops)}, rows, vocab, ordinary);
    // In place over the student logits.
    auto inplace = student.clone();
    const auto loss_inplace = row_sparse_forward_kl(rows_in(at::kFloat), inplace, it, lp, s, w, inplace);
    require_identical(host(loss_inplace), host(loss));
    require_identical(host(inplace), host(g_fast));
  }
}

TEST_CASE("libtorch host rows: policy_loss_from_logits with float row_dtype matches double rows",
          "[torch][host_rows][logits]") {
  // The benchmark's grpo_logits case in small: fp32 logits without autograd, the gradient written over them.
  const std::int64_t batch = 3, seq = 5, vocab = 1100, n = batch * seq;
  const auto z = grpo::testing::uniform(static_cast<std::size_t>(n * vocab), -4.0, 4.0, 9);
  const auto ids = targets(n, vocab);
  const auto mask_host = std::vector<double>{1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0};
  const auto run = [&](at::ScalarType row_dtype) {
    const auto b = rows_in(row_dtype);
    auto logits = grpo::libtorch::wrap(b, grpo::testing::torch_tensor(z, {n, vocab}, at::kFloat));
    const auto mask = grpo::libtorch::wrap(b, grpo::testing::torch_tensor(mask_host, {batch, seq}, at::kFloat));
    const grpo::logits_policy_loss_inputs<torch_backend> inputs{
        .advantages = grpo::libtorch::wrap(b, grpo::testing::torch_tensor({0.5, -1.0, 2.0}, {batch}, at::kFloat)),
        .mask = mask,
        .old_logprobs = grpo::libtorch::wrap(
            b, grpo::testing::torch_tensor(grpo::testing::uniform(static_cast<std::size_t>(n), -8.0, -6.0, 10),
                                           {batch, seq}, at::kFloat))};
    grpo::policy_loss_options options;
    options.entropy_coef = 0.01;
    auto grad = logits.raw();
    REQUIRE((row_softmax_stats_path(b, grad) == row_path::host_fp32) == (row_dtype == at::kFloat));
    auto result = grpo::policy_loss_from_logits(logits, grpo::libtorch::wrap_index(b, torch_ids(ids, {n})), 1.3, inputs,
                                                options, grpo::denominators_from_mask(mask), grad);
    return std::pair{host(result.policy.loss.raw()), host(grad)};
  };
  const auto [loss_fast, grad_fast] = run(at::kFloat);
  const auto [loss_wide, grad_wide] = run(at::kDouble);
  require_same(loss_fast, loss_wide, 1e-6, 1e-5);
  require_same(grad_fast, grad_wide, 1e-7, 1e-4);
}

TEST_CASE("libtorch host rows: the fused Functions with row_dtype float run the fp32 rows in forward and backward",
          "[torch][host_rows][autograd]") {
  const std::int64_t n = 9, vocab = 1100;
  const auto z = grpo::testing::uniform(static_cast<std::size_t>(n * vocab), -6.0, 6.0, 12);
  const auto ids = targets(n, vocab);
  const auto it = torch_ids(ids, {n});
  const auto g_lp = grpo::testing::torch_tensor(grpo::testing::uniform(static_cast<std::size_t>(n), -1, 1, 13), {n},
                                                at::kFloat);
  const auto g_h = grpo::testing::torch_tensor(grpo::testing::uniform(static_cast<std::size_t>(n), -1, 1, 14), {n},
                                               at::kFloat);
  const double temperature = 0.9;
  const auto run = [&](at::ScalarType row_dtype) {
    const auto logits = grpo::testing::torch_tensor(z, {n, vocab}, at::kFloat).requires_grad_(true);
    const auto out = grpo::libtorch::token_logprobs(logits, it, temperature, row_dtype);
    (out.logprobs * g_lp + out.entropy * g_h).sum().backward();
    return std::tuple{out.logprobs.detach(), out.entropy.detach(), logits.grad()};
  };
  const auto [lp_fast, h_fast, grad_fast] = run(at::kFloat);
  const auto [lp_wide, h_wide, grad_wide] = run(at::kDouble);
  // The forward and the backward are exactly the backend's host fp32 path, called directly.
  const auto zt = grpo::testing::torch_tensor(z, {n, vocab}, at::kFloat);
  const auto fast = rows_in(at::kFloat);
  REQUIRE(row_softmax_stats_path(fast, zt) == row_path::host_fp32);
  const auto stats = row_softmax_stats(fast, zt, it, 1.0 / temperature);
  require_identical(host(lp_fast), host(stats.logprob));
  require_identical(host(h_fast), host(stats.entropy));
  at::Tensor grad_direct;
  row_softmax_backward(fast, zt, it, 1.0 / temperature, stats.lse, stats.entropy, g_lp, g_h, grad_direct);
  require_identical(host(grad_fast), host(grad_direct));
  // And within fp32 rounding of the default, double rows.
  require_same(host(lp_fast), host(lp_wide), 1e-6, 1e-6);
  require_same(host(h_fast), host(h_wide), 1e-6, 1e-6);
  require_same(host(grad_fast), host(grad_wide), 1e-6, 1e-5);
  // The distillation Functions take the same option.
  const auto teacher = grpo::testing::torch_tensor(grpo::testing::uniform(static_cast<std::size_t>(n * vocab), -6.0,
                                                                          6.0, 15),
                                                   {n, vocab}, at::kFloat);
  const auto mask = at::ones({n}, at::kFloat);
  grpo::distillation_options options;
  options.beta = 0.5;
  const grpo::loss_denominators denominators{.tokens = static_cast<double>(n)};
  const auto distill = [&](at::ScalarType row_dtype) {
    const auto logits = grpo::testing::torch_tensor(z, {n, vocab}, at::kFloat).requires_grad_(true);
    const auto out = grpo::libtorch::distillation_loss(logits, teacher, mask, options, denominators, row_dtype);
    out.loss.backward();
    return std::pair{host(out.loss), host(logits.grad())};
  };
  const auto [loss_fast, dgrad_fast] = distill(at::kFloat);
  const auto [loss_wide, dgrad_wide] = distill(at::kDouble);
  require_same(loss_fast, loss_wide, 1e-6, 1e-5);
  require_same(dgrad_fast, dgrad_wide, 1e-7, 1e-4);
  grpo::testing::require_error(
      [&] { grpo::libtorch::token_logprobs(zt, it, 1.0, at::kInt); }, {"row_dtype", "floating", "Int"});
}
