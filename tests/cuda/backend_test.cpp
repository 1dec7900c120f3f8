// SPDX-License-Identifier: Apache-2.0
// grpo::cccl::backend on a host device system (built twice: THRUST_DEVICE_SYSTEM CPP and OMP): the shared unit
// tests of backend_cases.hpp, plus what only the host can check directly: both row-sum layouts (the CUDA one
// included), results that do not depend on the OpenMP thread count, and the pool's size classes.
#include <cstdint>
#include <vector>

#include "backend_cases.hpp"

#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_OMP
#include <omp.h>
#endif

TEMPLATE_TEST_CASE("cccl backend: both row-sum layouts give the reference's sums", "[cccl][reduce]", float, double) {
  using namespace cccl_test;
  const dev<TestType> b;
  const std::int64_t rows = 3, cols = 5000;
  const auto values = grpo::testing::uniform(static_cast<std::size_t>(rows * cols), -1, 1, 70);
  const auto x = grpo::make_tensor(b, values, shape::matrix(rows, cols));
  const auto want = sum_rows(grpo::make_tensor(host<TestType>{}, values, shape::matrix(rows, cols))).to_host();
  for (const bool interleaved : {false, true}) {
    for (const std::int64_t parts : {1, 2, 7, 1024, 6000}) {
      INFO("interleaved " << interleaved << " parts " << parts);
      auto out = grpo::full(b, shape::vector(rows), -1.0);
      grpo::cccl::detail::sum_rows_into(b, x.raw().data.data(), rows, cols, out.raw().data.data(),
                                        grpo::cccl::detail::row_sum_layout{interleaved, parts});
      // One part is the reference's order; more parts regroup the double sum.
      const tolerance t = parts == 1
                              ? tolerance{0.0, 0.0}
                              : (std::is_same_v<TestType, float> ? tolerance{1e-9, 3e-7} : tolerance{1e-13, 1e-13});
      require_matches(out.to_host(), want, t);
    }
  }
}

#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_OMP
TEST_CASE("cccl backend (OMP): results do not depend on the number of threads", "[cccl][omp]") {
  using namespace cccl_test;
  const dev<double> b;
  const auto values = grpo::testing::uniform(2 * 70000, -1, 1, 71);
  const auto ids = random_ids(70000, 13, 72);
  auto run = [&] {
    const auto x = grpo::make_tensor(b, values, shape::matrix(2, 70000));
    const auto seg = grpo::make_index(b, ids, shape::vector(70000));
    std::vector<double> out = sum_rows(x).to_host();
    out.push_back(sum(x).item());
    for (double v : sum_segments(gather(reshape(x, shape::vector(140000)), seg), seg, 13).to_host()) out.push_back(v);
    for (double v : reverse_scan_rows(x, grpo::full(b, shape::matrix(2, 70000), 0.99)).to_host()) out.push_back(v);
    return out;
  };
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const auto one = run();
  omp_set_num_threads(2);
  const auto two = run();
  omp_set_num_threads(saved);
  CHECK(one == two);
}
#endif

TEST_CASE("cccl backend: the pool reuses a block for any request of its size class", "[cccl][memory]") {
  grpo::cccl::workspace ws;
  const auto base = ws.statistics().upstream_allocations;  // the error slot
  void* a = ws.allocate(1000);
  ws.deallocate(a, 1000);
  CHECK(ws.statistics().bytes_cached == 1024);
  void* b = ws.allocate(1020);  // the same class (1024 bytes): the same block
  CHECK(b == a);
  CHECK(ws.statistics().upstream_allocations == base + 1);
  void* c = ws.allocate(5000);  // another class: a new block
  CHECK(ws.statistics().upstream_allocations == base + 2);
  CHECK(ws.allocate(0) == nullptr);
  ws.deallocate(b, 1020);
  ws.deallocate(c, 5000);
  ws.release_cached();
  const auto s = ws.statistics();
  CHECK(s.bytes_cached == 0);
  CHECK(s.bytes_reserved == 512);  // only the error slot's block is left
}
