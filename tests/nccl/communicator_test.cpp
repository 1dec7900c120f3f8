// SPDX-License-Identifier: Apache-2.0
// grpo::nccl::communicator. Without a GPU (what CI runs): the rendezvous file's round trip and its errors (a stale
// file, another world size, a malformed file, rank 0 never writing it), and CUDA's "no device" as a backend_error.
// With one GPU ([gpu]): a one-rank communicator through the rendezvous file and through a host communicator, whose
// sums leave every value's bits unchanged (one rank) while going through NCCL on the device and through the host
// path's staging buffer; bad device indexes; two ranks on one GPU refused by NCCL (NVIDIA/nccl#418) with an error on
// both instead of a hang.
#include "grpo/nccl/communicator.hpp"

#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "test_support.hpp"

using namespace grpo;
using grpo::testing::require_error;

namespace {

std::filesystem::path scratch(const std::string& name) {
  const auto path = grpo::testing::scratch_path("grpo_nccl_test_" + name);
  std::filesystem::remove_all(path.string() + ".partial");
  return path;
}

ncclUniqueId pattern_id() {
  ncclUniqueId id{};
  for (std::size_t i = 0; i < NCCL_UNIQUE_ID_BYTES; ++i) id.internal[i] = static_cast<char>(i * 37 + 11);
  return id;
}

int device_count() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess ? count : 0;
}

nccl::communicator_options quick(std::optional<int> device = 0) {
  return nccl::communicator_options{device, std::chrono::seconds(20)};
}

// Every value of a float vector that NCCL must carry bit for bit: signed zeros, NaN, infinities, subnormals.
std::vector<float> special_floats(std::size_t n) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<float>(i) * 0.37f - 100.0f;
  const float specials[] = {0.0f,
                            -0.0f,
                            std::numeric_limits<float>::quiet_NaN(),
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::denorm_min(),
                            std::numeric_limits<float>::max()};
  for (std::size_t i = 0; i < std::size(specials) && i < n; ++i) v[i] = specials[i];
  return v;
}

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

// A one-rank communicator sums nothing but its own values: every bit must come back as it went in.
void check_identity_sums(nccl::communicator& comm) {
  for (const std::size_t n : {0, 1, 7, 1000, 1 << 20}) {
    INFO(n << " values");
    const auto original = special_floats(n);
    float* device = nullptr;
    REQUIRE(cudaMalloc(&device, std::max<std::size_t>(n, 1) * sizeof(float)) == cudaSuccess);
    REQUIRE(cudaMemcpy(device, original.data(), n * sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess);
    cudaStream_t stream = nullptr;
    REQUIRE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess);
    comm.all_reduce_sum_device(device, n, stream);
    comm.all_reduce_sum_device(device, n, nullptr);  // the legacy default stream
    std::vector<float> back(n);
    REQUIRE(cudaMemcpy(back.data(), device, n * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
    CHECK(same_bits(back, original));
    cudaStreamDestroy(stream);
    cudaFree(device);

    auto host = original;
    comm.all_reduce_sum(std::span<float>(host));
    CHECK(same_bits(host, original));
    std::vector<double> doubles(original.begin(), original.end());
    const auto doubles_before = doubles;
    comm.all_reduce_sum(std::span<double>(doubles));
    CHECK(same_bits(doubles, doubles_before));
  }
}

}  // namespace

TEST_CASE("nccl: the rendezvous file carries the id and the world size") {
  const auto path = scratch("rendezvous");
  const auto id = pattern_id();
  nccl::write_rendezvous(path, id, 3);
  CHECK_FALSE(std::filesystem::exists(path.string() + ".partial"));
  const auto read = nccl::read_rendezvous(path, 3, std::chrono::seconds(1));
  CHECK(std::memcmp(read.internal, id.internal, NCCL_UNIQUE_ID_BYTES) == 0);
  // A second job on the same path before the first removed it: rank 0 refuses.
  require_error([&] { nccl::write_rendezvous(path, id, 3); }, {path.string(), "exists already", "fresh path"});
  require_error([&] { nccl::read_rendezvous(path, 4, std::chrono::seconds(1)); },
                {path.string(), "world_size", "job of 3 ranks", "started for 4"});
  std::filesystem::remove(path);
}

TEST_CASE("nccl: malformed rendezvous files and a rank 0 that never writes one") {
  const auto path = scratch("malformed");
  const auto write = [&](const std::string& text) { std::ofstream(path, std::ios::binary | std::ios::trunc) << text; };
  write("something else\n");
  require_error([&] { nccl::read_rendezvous(path, 1, std::chrono::seconds(1)); },
                {path.string(), "not a grpo rendezvous file", "something else"});
  write("grpo-nccl-rendezvous 1\nworld_size two\n");
  require_error([&] { nccl::read_rendezvous(path, 1, std::chrono::seconds(1)); }, {"world_size", "malformed"});
  write("grpo-nccl-rendezvous 1\nworld_size 1\nid abc\n");
  require_error([&] { nccl::read_rendezvous(path, 1, std::chrono::seconds(1)); }, {"\"id\"", "256 hex digits"});
  write("grpo-nccl-rendezvous 1\nworld_size 1\nid " + std::string(256, 'g') + "\n");
  require_error([&] { nccl::read_rendezvous(path, 1, std::chrono::seconds(1)); }, {"\"id\"", "hex digits"});
  std::filesystem::remove(path);

  const auto start = std::chrono::steady_clock::now();
  require_error([&] { nccl::read_rendezvous(path, 2, std::chrono::milliseconds(200)); },
                {"grpo::nccl", path.string(), "no rendezvous file after 0.2 s", "GRPO_NCCL_TIMEOUT"});
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
}

TEST_CASE("nccl: a machine without a usable device, or a device index it lacks, is an error naming it") {
  const auto path = scratch("no_device");
  if (device_count() == 0) {
    // CUDA's own status, converted at the boundary: no device, or no driver at all.
    require_error([&] { nccl::communicator(path, 0, 1, quick()); }, {"grpo::nccl: cudaGetDeviceCount failed"});
    train::single_process host;
    require_error([&] { nccl::communicator(host, quick()); }, {"cudaGetDeviceCount"});
  } else {
    require_error([&] { nccl::communicator(path, 0, 1, quick(999)); }, {"device: 999 (given)", "is not a CUDA device"});
    require_error([&] { nccl::communicator(path, 0, 1, quick(-1)); }, {"device: -1"});
  }
  CHECK_FALSE(std::filesystem::exists(path));  // refused before rank 0 wrote anything
  require_error([&] { nccl::communicator(path, 2, 2, quick()); }, {"rank: 2", "world_size = 2"});
  require_error(
      [&] {
        nccl::communicator(path, 0, 1, nccl::communicator_options{0, std::chrono::seconds(0)});
      },
      {"timeout"});
}

TEST_CASE("nccl: one rank through the rendezvous file sums on the device and through the host", "[gpu]") {
  const auto path = scratch("one_rank");
  nccl::communicator comm(path, 0, 1, quick());
  CHECK_FALSE(std::filesystem::exists(path));  // removed once every rank joined
  CHECK(comm.rank() == 0);
  CHECK(comm.world_size() == 1);
  CHECK(comm.device() == 0);
  CHECK(comm.on_device());
  CHECK(comm.timeout() == std::chrono::seconds(20));
  check_identity_sums(comm);
}

TEST_CASE("nccl: one rank set up through a host communicator", "[gpu]") {
  train::single_process host;
  nccl::communicator comm(host, quick(std::nullopt));  // device from the environment, else rank 0
  CHECK(comm.world_size() == 1);
  CHECK(comm.device() == 0);
  check_identity_sums(comm);
  // The same id path with a stale rendezvous file left in the way: rank 0 refuses it and leaves it there.
  const auto path = scratch("stale");
  std::ofstream(path) << "stale\n";
  require_error([&] { nccl::communicator(path, 0, 1, quick()); }, {path.string(), "exists already"});
  CHECK(std::filesystem::exists(path));
  std::filesystem::remove(path);
}

TEST_CASE("nccl: two ranks on one GPU fail on both ranks instead of hanging", "[gpu]") {
  // NCCL refuses a device used twice in one communicator (NVIDIA/nccl#418); each rank must get an error within its
  // timeout. Two threads of this process play the two ranks.
  const auto path = scratch("duplicate");
  std::string errors[2];
  const auto rank = [&](std::size_t r) {
    try {
      nccl::communicator comm(path, r, 2, nccl::communicator_options{0, std::chrono::seconds(20)});
      errors[r] = "no error";
    } catch (const grpo::error& e) {
      errors[r] = e.what();
    }
  };
  const auto start = std::chrono::steady_clock::now();
  std::thread first(rank, 0);
  std::thread second(rank, 1);
  first.join();
  second.join();
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(60));
  for (const auto& message : errors) {
    INFO(message);
    CHECK(message.find("grpo::nccl: set-up (ncclCommInitRankConfig) on rank ") != std::string::npos);
  }
  CHECK_FALSE(std::filesystem::exists(path));
}
