// SPDX-License-Identifier: Apache-2.0
// grpo::mpi::communicator on however many ranks mpirun started (2 in ctest) or one (the singleton run): sums of
// float and double spans against the sum of every rank's input computed locally (each rank's input is a function of
// its rank), exact where the values are dyadic, bit-identical across ranks where they are not, NaN and Inf, empty
// and one-element spans, chunked sums; train::all_gather and train::check_same over MPI; a communicator on
// MPI_COMM_SELF; the options and GRPO_MPI_TIMEOUT.
#include "grpo/mpi/communicator.hpp"

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "grpo/train/collectives.hpp"
#include "test_support.hpp"

using namespace grpo;
using grpo::testing::require_error;

namespace {

// Seconds, short enough that a test that lost step with the other ranks fails instead of waiting for ctest's limit.
constexpr std::chrono::seconds test_timeout{30};

mpi::communicator make_communicator(std::size_t max_chunk = std::numeric_limits<int>::max()) {
  return mpi::communicator(mpi::communicator_options{test_timeout, max_chunk});
}

// Rank r's input: dyadic values whose sums over a few ranks are exact in float, so any summation order gives them.
template <class T>
std::vector<T> dyadic_input(std::size_t rank, std::size_t n) {
  std::vector<T> v(n);
  for (std::size_t i = 0; i < n; ++i)
    v[i] = static_cast<T>(static_cast<double>(i % 97) * 0.5 - static_cast<double>(rank) * 0.25 - 3.0);
  return v;
}

// Rank r's input: seeded random values whose rounded sum depends on the order of the additions.
template <class T>
std::vector<T> random_input(std::size_t rank, std::size_t n) {
  std::mt19937 gen(static_cast<std::uint32_t>(1000 + rank));
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(dist(gen) * std::pow(10.0, static_cast<double>(gen() % 7) - 3.0));
  return v;
}

template <class T, class Input>
std::vector<T> local_sum(std::size_t world_size, std::size_t n, Input input) {
  std::vector<T> sum(n, T(0));
  for (std::size_t r = 0; r < world_size; ++r) {
    const auto x = input(r, n);
    for (std::size_t i = 0; i < n; ++i) sum[i] += x[i];
  }
  return sum;
}

template <class T>
std::string_view bytes_of(const std::vector<T>& v) {
  return {reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T)};
}

template <class T>
void check_sums(mpi::communicator& comm, std::size_t n) {
  const std::size_t world = comm.world_size();
  INFO("type size " << sizeof(T) << ", " << n << " values, " << world << " ranks");
  auto dyadic = dyadic_input<T>(comm.rank(), n);
  comm.all_reduce_sum(std::span<T>(dyadic));
  CHECK(dyadic == local_sum<T>(world, n, dyadic_input<T>));

  auto random = random_input<T>(comm.rank(), n);
  comm.all_reduce_sum(std::span<T>(random));
  // The same bits on every rank, whatever order rank 0 added in.
  train::check_same(comm, bytes_of(random), "sum");
  const auto want = local_sum<T>(world, n, random_input<T>);
  if (world <= 2) {
    CHECK(random == want);  // a + b == b + a in IEEE arithmetic: one order only
  } else {
    for (std::size_t i = 0; i < n; ++i) CHECK(random[i] == Approx(want[i]).margin(1e-5));
  }
}

}  // namespace

TEST_CASE("mpi: ranks, world size and the options") {
  int world = 0;
  int rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  auto comm = make_communicator();
  CHECK(comm.world_size() == static_cast<std::size_t>(world));
  CHECK(comm.rank() == static_cast<std::size_t>(rank));
  CHECK(comm.timeout() == test_timeout);
  CHECK_FALSE(comm.on_device());
  int compare = MPI_UNEQUAL;
  MPI_Comm_compare(comm.handle(), MPI_COMM_WORLD, &compare);
  CHECK(compare == MPI_CONGRUENT);  // a duplicate: same ranks, its own context
  float x = 1;
  require_error([&] { comm.all_reduce_sum_device(&x, 1, nullptr); }, {"all_reduce_sum_device", "host buffers"});

  // Checked before the collective duplication, so every rank raises them alone.
  require_error([] { mpi::communicator(mpi::communicator_options{std::chrono::seconds(0), 1}); }, {"timeout"});
  require_error([] { mpi::communicator(mpi::communicator_options{std::chrono::seconds(1), 0}); }, {"max_chunk"});
  require_error(
      [] {
        mpi::communicator(mpi::communicator_options{std::chrono::duration<double>(-1), 1});
      },
      {"timeout", "positive"});
  // MPI's error code, in MPI_Error_string's words (under the session MPI_COMM_WORLD returns codes).
  require_error([] { mpi::communicator(MPI_COMM_NULL, mpi::communicator_options{test_timeout}); },
                {"grpo::mpi::communicator: MPI_Comm_rank of the parent communicator failed: ", "communicator"});
}

TEST_CASE("mpi: GRPO_MPI_TIMEOUT sets the default timeout") {
  ::setenv("GRPO_MPI_TIMEOUT", "2.5", 1);
  CHECK(mpi::communicator().timeout().count() == 2.5);
  ::setenv("GRPO_MPI_TIMEOUT", "soon", 1);
  require_error([] { mpi::communicator(); }, {"GRPO_MPI_TIMEOUT", "positive number of seconds", "\"soon\""});
  ::setenv("GRPO_MPI_TIMEOUT", "-3", 1);
  require_error([] { mpi::communicator(); }, {"GRPO_MPI_TIMEOUT", "\"-3\""});
  ::unsetenv("GRPO_MPI_TIMEOUT");
  CHECK(mpi::communicator().timeout().count() == 300);
  // An explicit option wins over the environment.
  ::setenv("GRPO_MPI_TIMEOUT", "7", 1);
  CHECK(make_communicator().timeout() == test_timeout);
  ::unsetenv("GRPO_MPI_TIMEOUT");
}

TEST_CASE("mpi: all_reduce_sum of float and double spans") {
  auto comm = make_communicator();
  for (const std::size_t n : {0, 1, 2, 97, 1000, 1 << 20}) {
    check_sums<float>(comm, n);
    check_sums<double>(comm, n);
  }
}

TEST_CASE("mpi: all_reduce_sum in chunks of max_chunk values") {
  auto comm = make_communicator(7);
  for (const std::size_t n : {1, 6, 7, 8, 14, 100}) {
    check_sums<float>(comm, n);
    check_sums<double>(comm, n);
  }
}

TEST_CASE("mpi: all_reduce_sum carries NaN, infinities and signed zeros") {
  auto comm = make_communicator();
  constexpr double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  // Rank 0 holds the special values, the others 1, except a -inf from rank 1 under rank 0's +inf.
  const bool root = comm.rank() == 0;
  std::vector<double> x = root ? std::vector<double>{nan, inf, -inf, inf, -0.0, 2.0}
                               : std::vector<double>{1.0, 1.0, 1.0, comm.rank() == 1 ? -inf : 1.0, -0.0, 1.0};
  std::vector<float> f(x.begin(), x.end());
  comm.all_reduce_sum(std::span<double>(x));
  comm.all_reduce_sum(std::span<float>(f));
  const bool two = comm.world_size() >= 2;
  for (const auto& [values, label] :
       {std::pair{x, "double"}, std::pair{std::vector<double>(f.begin(), f.end()), "float"}}) {
    INFO(label);
    CHECK(std::isnan(values[0]));
    CHECK(values[1] == inf);
    CHECK(values[2] == -inf);
    if (two)
      CHECK(std::isnan(values[3]));  // inf + -inf
    else
      CHECK(values[3] == inf);
    CHECK(values[4] == 0.0);
    CHECK(std::signbit(values[4]));  // -0 + -0 is -0
    CHECK(values[5] == 2.0 + static_cast<double>(comm.world_size() - 1));
  }
}

TEST_CASE("mpi: train::all_gather puts every rank's values in rank order") {
  auto comm = make_communicator();
  const double r = static_cast<double>(comm.rank());
  const std::vector<double> mine{r, 10 * r + 1, -r};
  const auto all = train::all_gather(comm, mine);
  std::vector<double> want;
  for (std::size_t k = 0; k < comm.world_size(); ++k) {
    const double d = static_cast<double>(k);
    want.insert(want.end(), {d, 10 * d + 1, -d});
  }
  CHECK(all == want);
}

TEST_CASE("mpi: train::check_same names the first rank whose text differs") {
  auto comm = make_communicator();
  const std::string config = "[grpo]\nlearning_rate = 1e-6\nnum_generations = 8\n";
  train::check_same(comm, config, "config");  // the same everywhere: no error
  if (comm.world_size() < 2) return;
  // Every rank raises the same error, so every rank leaves the collective sequence at the same point.
  const std::string mine = comm.rank() == 1 ? config + "seed = 2\n" : config;
  require_error([&] { train::check_same(comm, mine, "config"); }, {"config: rank 1 of ", "different config than rank 0",
                                                                   "FNV-1a", "start every rank with the same config"});
  // Same length, different bytes.
  std::string flipped = config;
  if (comm.rank() == comm.world_size() - 1) flipped[3] = 'G';
  require_error([&] { train::check_same(comm, flipped, "config"); },
                {"rank " + std::to_string(comm.world_size() - 1), "different config"});
}

TEST_CASE("mpi: a communicator over MPI_COMM_SELF is one rank") {
  mpi::communicator self(MPI_COMM_SELF, mpi::communicator_options{test_timeout});
  CHECK(self.rank() == 0);
  CHECK(self.world_size() == 1);
  std::vector<float> x{1.5f, -2.0f, 3.25f};
  self.all_reduce_sum(std::span<float>(x));
  CHECK(x == std::vector<float>{1.5f, -2.0f, 3.25f});
}

TEST_CASE("collectives: fnv1a_64 against the FNV test vectors, check_same on one process") {
  // The FNV reference's test vectors for FNV-1a 64 (http://www.isthe.com/chongo/tech/comp/fnv/).
  CHECK(grpo::detail::fnv1a_64("") == 0xcbf29ce484222325ull);
  CHECK(grpo::detail::fnv1a_64("a") == 0xaf63dc4c8601ec8cull);
  CHECK(grpo::detail::fnv1a_64("foobar") == 0x85944171f73967e8ull);
  train::single_process one;
  train::check_same(one, "anything", "config");
}
