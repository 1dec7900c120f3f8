// SPDX-License-Identifier: Apache-2.0
// The data-parallel trainer without MPI: ranks are threads in this process, joined by an in-memory
// communicator that sums in rank order (so every rank gets the same bits, as the real ones
// guarantee). Two ranks running one global batch must match one process running it: the same
// rollouts, advantages, denominators and metrics, and weights equal up to the order in which the
// ranks' gradients are summed. Batch-scaled advantages, token-mean denominators and dynamic
// sampling make a statistic computed per rank show up at once.
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "grpo/train/train.hpp"
#include "test_support.hpp"

namespace {

using namespace grpo::train;

/// The shared state of `world` in-process ranks.
class thread_group {
 public:
  explicit thread_group(std::size_t world) : world_(world), slots_(world) {}

  /// Every rank's `values` summed in rank order, on every rank.
  template <class T>
  void all_reduce_sum(std::size_t rank, std::span<T> values) {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return readers_ == 0; });  // the previous collective has been read
    const auto generation = generation_;
    slots_[rank].assign(values.begin(), values.end());
    if (++arrived_ == world_) {
      result_.assign(values.size(), 0.0);
      for (const auto& slot : slots_)
        for (std::size_t i = 0; i < slot.size(); ++i) result_[i] += slot[i];
      arrived_ = 0;
      readers_ = world_;
      ++generation_;
      changed_.notify_all();
    } else {
      changed_.wait(lock, [&] { return generation_ != generation; });
    }
    for (std::size_t i = 0; i < values.size(); ++i) values[i] = static_cast<T>(result_[i]);
    if (--readers_ == 0) changed_.notify_all();
  }

  std::size_t world() const { return world_; }

 private:
  std::size_t world_;
  std::vector<std::vector<double>> slots_;
  std::vector<double> result_;
  std::size_t arrived_ = 0, readers_ = 0;
  std::uint64_t generation_ = 0;
  std::mutex mutex_;
  std::condition_variable changed_;
};

/// One rank of a thread_group. Sums of floats are carried in double and rounded once, as an MPI
/// reduction of floats summed on one rank would round each partial sum; with two ranks the result
/// is the same float either way.
class thread_communicator final : public communicator {
 public:
  thread_communicator(thread_group& group, std::size_t rank) : group_(&group), rank_(rank) {}
  std::size_t rank() const override { return rank_; }
  std::size_t world_size() const override { return group_->world(); }
  void all_reduce_sum(std::span<float> values) override { group_->all_reduce_sum(rank_, values); }
  void all_reduce_sum(std::span<double> values) override { group_->all_reduce_sum(rank_, values); }

 private:
  thread_group* group_;
  std::size_t rank_;
};

train_config parallel_run(const std::filesystem::path& dir) {
  train_config c;
  c.output_dir = dir.string();
  c.seed = 11;
  c.threads = 1;
  c.operations = "+";
  c.min_digits = 1;
  c.max_digits = 1;
  c.heldout_size = 6;
  c.hidden_size = 16;
  c.intermediate_size = 32;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.max_position_embeddings = 64;
  c.sft_steps = 4;
  c.sft_examples = 16;
  c.sft_batch_size = 8;
  c.max_steps = 4;
  c.num_generations = 4;
  c.per_device_train_batch_size = 4;
  c.gradient_accumulation_steps = 4;  // 16 completions = 4 prompts a step: 2 per rank
  c.max_completion_length = 10;
  c.mask_truncated_completions = false;
  c.dynamic_sampling = true;
  c.loss.scale_rewards = "batch";
  c.loss.loss_type = "dapo";
  c.loss.beta = 0.04;
  c.num_iterations = 2;
  c.eval_size = 5;  // not a multiple of 2: one rank evaluates 3 problems, the other 2
  c.eval_num_samples = 2;
  c.eval_pass_k = {1, 2};
  c.learning_rate = 1e-2;
  return c;
}

/// A reward that varies from the first step (the share of '1' characters), so every group trains.
std::optional<double> ones(std::string_view, std::string_view text) {
  double n = 0;
  for (const char ch : text) n += ch == '1' ? 1 : 0;
  return n / 10.0;
}

std::vector<std::map<std::string, double>> read_metrics(const std::filesystem::path& path) {
  std::vector<std::map<std::string, double>> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    auto v = grpo::detail::json::parse(line, path.string());
    std::map<std::string, double> record;
    for (const auto& m : v.members)
      if (m.value.kind == grpo::detail::json::kind::number) record[m.key] = std::stod(m.value.text);
    out.push_back(record);
  }
  return out;
}

}  // namespace

TEST_CASE("data parallel: two ranks on one global batch match one process", "[train][parallel]") {
  const auto single_dir = grpo::testing::scratch_path("grpo_parallel_single");
  const auto split_dir = grpo::testing::scratch_path("grpo_parallel_two");

  auto single = make_native_trainer<double>(parallel_run(single_dir));
  single.set_reward("ones", ones);
  metrics_writer single_metrics(single_dir / "metrics.jsonl");
  const auto single_eval = single.run(&single_metrics);
  REQUIRE(single_eval.has_value());

  thread_group group(2);
  std::vector<std::optional<eval_result>> evals(2);
  std::vector<std::vector<double>> weights(2);
  std::vector<std::string> errors(2);
  {
    std::vector<std::thread> ranks;
    for (std::size_t r = 0; r < 2; ++r)
      ranks.emplace_back([&, r] {
        try {
          thread_communicator comm(group, r);
          auto t = make_native_trainer<double>(parallel_run(split_dir), nullptr, &comm);
          t.set_reward("ones", ones);
          metrics_writer metrics(split_dir / ("metrics_rank" + std::to_string(r) + ".jsonl"));
          evals[r] = t.run(&metrics);
          const auto w = t.policy().model().weights().values();
          weights[r].assign(w.begin(), w.end());
        } catch (const std::exception& e) {
          errors[r] = e.what();
        }
      });
    for (auto& t : ranks) t.join();
  }
  REQUIRE(errors[0].empty());
  REQUIRE(errors[1].empty());

  // Every rank ends with the same weights, bit for bit: they apply the same summed update.
  REQUIRE(weights[0] == weights[1]);
  // Only rank 0 writes metrics, the checkpoint and the model.
  const auto two = read_metrics(split_dir / "metrics_rank0.jsonl");
  REQUIRE(read_metrics(split_dir / "metrics_rank1.jsonl").empty());
  REQUIRE(std::filesystem::exists(split_dir / "model" / "model.safetensors"));

  const auto one = read_metrics(single_dir / "metrics.jsonl");
  REQUIRE(one.size() == two.size());
  // The GRPO steps did train: some groups kept, a non-zero loss and gradient.
  REQUIRE(one.back().at("kept_rows") > 0);
  REQUIRE(one.back().at("actor/grad_norm") > 0);
  for (std::size_t i = 0; i < one.size(); ++i)
    for (const auto& [key, value] : one[i]) {
      if (key.starts_with("perf/") || key.starts_with("time/")) continue;
      INFO("step " << i + 1 << ", " << key);
      REQUIRE(two[i].count(key) == 1);
      // The rollouts, rewards, advantages and counts are the same numbers; the losses and norms
      // differ only by the order of the ranks' sums.
      grpo::testing::require_close(two[i].at(key), value, 1e-9, 1e-6);
    }
  const auto& w1 = single.policy().model().weights().values();
  REQUIRE(w1.size() == weights[0].size());
  double worst = 0;
  for (std::size_t i = 0; i < w1.size(); ++i)
    worst = std::max(worst, std::abs(weights[0][i] - w1[i]) / std::max(std::abs(w1[i]), 1e-3));
  INFO("largest relative weight difference " << worst);
  REQUIRE(worst < 1e-6);
  REQUIRE(evals[0]->accuracy == single_eval->accuracy);
  REQUIRE(evals[1]->accuracy == single_eval->accuracy);
  REQUIRE(evals[0]->pass_at == single_eval->pass_at);
  std::filesystem::remove_all(single_dir);
  std::filesystem::remove_all(split_dir);
}
