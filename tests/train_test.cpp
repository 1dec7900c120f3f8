// SPDX-License-Identifier: Apache-2.0
#include <array>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

#include "grpo/train/distill_config.hpp"
#include "grpo/train/train.hpp"
#include "bigram_policy.hpp"
#include "test_support.hpp"

namespace {

using namespace grpo::train;

grpo::model::transformer_config tiny_model() {
  grpo::model::transformer_config c;
  c.vocab_size = 5;
  c.hidden_size = 4;
  c.intermediate_size = 4;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  return c;
}

train_config tiny_run(const std::filesystem::path& dir) {
  train_config c;
  c.output_dir = dir.string();
  c.seed = 7;
  c.threads = 2;
  c.operations = "+";
  c.min_digits = 1;
  c.max_digits = 1;
  c.heldout_size = 4;
  c.hidden_size = 16;
  c.intermediate_size = 32;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.max_position_embeddings = 64;
  c.sft_steps = 3;
  c.sft_examples = 8;
  c.sft_batch_size = 4;
  c.max_steps = 3;
  c.num_generations = 4;
  c.per_device_train_batch_size = 4;
  c.gradient_accumulation_steps = 2;
  c.max_completion_length = 12;
  c.loss.beta = 0.04;
  c.num_iterations = 2;
  c.adam_epsilon = 1e-3;      // the phases' epsilons differ, so a resume must restore the right one
  c.sft_adam_epsilon = 1e-7;
  c.eval_size = 2;
  c.eval_num_samples = 0;
  return c;
}

std::filesystem::path fresh_dir(const std::string& name) {
  return grpo::testing::scratch_path("grpo_train_test_" + name);
}

/// The records of a metrics.jsonl, each as its (key, JSON text) pairs without the timing keys
/// (perf/, time/), which differ from run to run.
using record_texts = std::vector<std::pair<std::string, std::string>>;

std::vector<record_texts> records_without_timing(const std::filesystem::path& path) {
  std::vector<record_texts> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    const auto v = grpo::detail::json::parse(line, path.string());
    auto& record = out.emplace_back();
    for (const auto& m : v.members)
      if (!m.key.starts_with("perf/") && !m.key.starts_with("time/")) record.emplace_back(m.key, m.value.text);
  }
  return out;
}

/// Rank `rank` of a two-rank group whose collectives are never called (a trainer's constructor makes none).
class idle_rank final : public communicator {
 public:
  explicit idle_rank(std::size_t rank) : rank_(rank) {}
  std::size_t rank() const override { return rank_; }
  std::size_t world_size() const override { return 2; }
  void all_reduce_sum(std::span<float>) override {}
  void all_reduce_sum(std::span<double>) override {}

 private:
  std::size_t rank_;
};

}  // namespace

TEST_CASE("demonstration_stream: verified_only keeps the drawn demonstrations the verifier accepts", "[train][sft]") {
  grpo::tasks::arithmetic_options o;
  o.operations = "+";
  o.teacher_errors = 0.3;
  const grpo::tasks::arithmetic_task task(o);
  demonstration_stream all(task, 300, 11), verified(task, 300, 11, true);
  REQUIRE(all.size() == 300);
  const grpo::tasks::accuracy_reward accuracy(task);
  std::multiset<std::string> right;  // the prompts of the correct demonstrations among the 300 drawn
  for (std::size_t i = 0; i < all.size(); ++i) {
    const auto& p = all.at(static_cast<std::int64_t>(i));
    if (accuracy(p.prompt, p.demonstration) == 1.0) right.insert(p.prompt);
  }
  REQUIRE(right.size() > 100);
  REQUIRE(right.size() < 250);
  REQUIRE(verified.size() == right.size());
  std::multiset<std::string> kept;
  for (std::size_t i = 0; i < verified.size(); ++i) kept.insert(verified.at(static_cast<std::int64_t>(i)).prompt);
  REQUIRE(kept == right);
  // Epochs go on over the kept set only.
  for (std::int64_t i = 0; i < 3 * static_cast<std::int64_t>(verified.size()); ++i)
    REQUIRE(accuracy(verified.at(i).prompt, verified.at(i).demonstration) == 1.0);

  // A teacher wrong on every digit pair (the largest unit_hash is 0.974) leaves nothing to keep.
  o.teacher_errors = 0.99;
  const grpo::tasks::arithmetic_task hopeless(o);
  REQUIRE(demonstration_stream(hopeless, 50, 1).size() == 50);
  grpo::testing::require_error([&] { demonstration_stream(hopeless, 50, 1, true); },
                               {"sft.verified_only: the verifier rejects all 50 demonstrations drawn"});
}

TEST_CASE("adamw: one step matches the hand-worked update", "[train][optimizer]") {
  std::vector<double> w(4, 1.0), g(4, 0.5), m(4, 0.0), v(4, 0.0);
  const adamw_options o{0.9, 0.999, 1e-8, 0.1};
  adamw_update<double>(o, 1, w, g, m, v, 0.1);
  // m = 0.1 * 0.5 = 0.05, v = 0.001 * 0.25 = 0.00025; m_hat = 0.05 / 0.1 = 0.5, v_hat = 0.00025 / 0.001 = 0.25
  // p = 1 * (1 - 0.1 * 0.1) - 0.1 * 0.5 / (0.5 + 1e-8) = 0.99 - 0.09999999800000004 = 0.89000000199999996
  REQUIRE(w[0] == Approx(0.890000002).epsilon(1e-12));
  REQUIRE(m[3] == Approx(0.05));
  REQUIRE(v[3] == Approx(0.00025));
  // Second step, g = 0.5 again: m = 0.9*0.05 + 0.05 = 0.095, v = 0.999*0.00025 + 0.00025 = 0.00049975
  // m_hat = 0.095 / 0.19 = 0.5, v_hat = 0.00049975 / 0.001999 = 0.25 -> update 0.99999998
  // p = 0.890000002 * 0.99 - 0.099999998 = 0.78110000 (0.88110000198 - 0.099999998)
  adamw_update<double>(o, 2, w, g, m, v, 0.1);
  REQUIRE(w[0] == Approx(0.88110000198 - 0.099999998).epsilon(1e-10));
  std::vector<double> short_grads(3, 0.0);
  grpo::testing::require_error([&] { adamw_update<double>(o, 3, w, short_grads, m, v, 0.1); }, {"grads"});
  grpo::testing::require_error([&] { adamw_update<double>(o, 0, w, g, m, v, 0.1); }, {"step"});
  grpo::testing::require_error([&] { validate(adamw_options{1.0, 0.999, 1e-8, 0.0}); }, {"adam_beta1"});
  grpo::testing::require_error([&] { validate(adamw_options{0.9, 0.999, 0.0, 0.0}); }, {"adam_epsilon"});
}

TEST_CASE("native policy: reset_optimizer, optimizer_step and save_state / load_state round trip", "[train][optimizer]") {
  grpo::model::parameters<double> w(tiny_model());
  grpo::model::initialize(w, 3);
  grpo::model::native_policy<double> p(w, grpo::model::transformer_options{1});
  p.reset_optimizer({0.9, 0.999, 1e-8, 0.1});
  const grpo::sequence_batch batch{{{1, 2}}, {{3, 4, 0}}};
  const auto step = [&](grpo::model::native_policy<double>& policy) {
    policy.zero_grad();
    const auto logits = policy.forward(batch);
    policy.backward(grpo::full(policy.backend(), logits.shape(), 0.25));
    policy.optimizer_step(0.01);
  };
  step(p);
  REQUIRE(p.optimizer_steps() == 1);
  REQUIRE(!(p.model().weights() == w));
  const auto dir = fresh_dir("policy_state");
  std::filesystem::create_directories(dir);
  p.freeze_reference();
  p.save_state(dir);
  grpo::model::native_policy<double> q(w, grpo::model::transformer_options{2});
  q.load_state(dir, {0.9, 0.999, 1e-8, 0.1});
  REQUIRE(q.optimizer_steps() == 1);
  REQUIRE(q.has_reference());
  REQUIRE(q.model().weights() == p.model().weights());
  step(p);
  step(q);
  REQUIRE(q.model().weights() == p.model().weights());
  std::filesystem::remove(dir / "optimizer.safetensors");
  grpo::testing::require_error([&] { q.load_state(dir, {}); }, {"optimizer.safetensors"});
  std::filesystem::remove_all(dir);
}

TEST_CASE("native_options: threads and the kernels setting, checked against this CPU", "[train][config]") {
  namespace m = grpo::model;
  train_config c;
  c.threads = 3;
  CHECK(native_options(c).threads == 3);
  CHECK(native_options(c).kernels == m::best_isa());  // "auto"
  c.kernels = "generic";
  CHECK(native_options(c).kernels == m::isa::generic);
  for (const m::isa kernels : {m::isa::avx2, m::isa::avx512}) {
    c.kernels = m::isa_name(kernels);
    if (m::supported(kernels))
      CHECK(native_options(c).kernels == kernels);
    else
      grpo::testing::require_error([&] { (void)native_options(c); },
                                   {"kernels", c.kernels, "not available on this CPU"});
  }
  c.kernels = "neon";
  grpo::testing::require_error([&] { (void)native_options(c); }, {"kernels", "neon", "auto, generic, avx2 or avx512"});
  // The same run with AVX2 and with the best kernels: AVX-512 changes only the speed.
  if (m::supported(m::isa::avx512)) {
    c = tiny_run({});
    c.kernels = "avx2";
    auto first = make_native_policy<float>(c, 20);
    c.kernels = "auto";
    auto second = make_native_policy<float>(c, 20);
    CHECK(first.model().kernels() == m::isa::avx2);
    CHECK(second.model().kernels() == m::isa::avx512);
    const grpo::sequence_batch batch{{{1, 2, 3}}, {{4, 5, 6, 7}}};
    CHECK(first.forward(batch).raw().data == second.forward(batch).raw().data);
  }
}

TEST_CASE("learning-rate schedules: warmup then cosine, linear, constant", "[train][schedule]") {
  // 10 steps, warmup_ratio 0.2 -> ceil(2) = 2 warmup steps: lr 0, 0.5, then cosine over 8 steps.
  REQUIRE(warmup_steps(0.2, 10) == 2);
  REQUIRE(warmup_steps(0.15, 10) == 2);  // ceil(1.5)
  REQUIRE(learning_rate_at(lr_scheduler::cosine, 1.0, 0.2, 10, 0) == 0.0);
  REQUIRE(learning_rate_at(lr_scheduler::cosine, 1.0, 0.2, 10, 1) == Approx(0.5));
  REQUIRE(learning_rate_at(lr_scheduler::cosine, 1.0, 0.2, 10, 2) == Approx(1.0));
  // progress (6 - 2) / 8 = 0.5 -> 0.5 (1 + cos(pi/2)) = 0.5
  REQUIRE(learning_rate_at(lr_scheduler::cosine, 1.0, 0.2, 10, 6) == Approx(0.5));
  // progress 2/8 = 0.25 -> 0.5 (1 + cos(pi/4)) = 0.8535533905932737
  REQUIRE(learning_rate_at(lr_scheduler::cosine, 1.0, 0.2, 10, 4) == Approx(0.8535533905932737));
  REQUIRE(learning_rate_at(lr_scheduler::linear, 2.0, 0.2, 10, 6) == Approx(1.0));  // 2 * (1 - 0.5)
  REQUIRE(learning_rate_at(lr_scheduler::constant, 2.0, 0.2, 10, 9) == 2.0);
  REQUIRE(learning_rate_at(lr_scheduler::constant, 2.0, 0.0, 10, 0) == 2.0);
  grpo::testing::require_error([] { learning_rate_at(lr_scheduler::cosine, 1.0, 1.5, 10, 0); }, {"warmup_ratio"});
  grpo::testing::require_error([] { parse_lr_scheduler("polynomial"); }, {"lr_scheduler_type"});
}

TEST_CASE("clip_grad_norm: global L2 norm, PyTorch scaling", "[train][clip]") {
  std::vector<double> g{3.0, 4.0};
  // norm 5 > 1: scale 1 / (5 + 1e-6)
  REQUIRE(clip_grad_norm(std::span<double>(g), 1.0) == Approx(5.0));
  REQUIRE(g[0] == Approx(3.0 / (5.0 + 1e-6)));
  REQUIRE(g[1] == Approx(4.0 / (5.0 + 1e-6)));
  std::vector<double> small{0.3, 0.4};
  REQUIRE(clip_grad_norm(std::span<double>(small), 1.0) == Approx(0.5));
  REQUIRE(small[0] == 0.3);
  std::vector<double> bad{1.0, std::nan("")};
  grpo::testing::require_error([&] { clip_grad_norm(std::span<double>(bad), 1.0); }, {"grads"});
}

TEST_CASE("batching: kept rows, micro-batches, final masks and the batch's denominators", "[train][batching]") {
  // Two groups of G = 2. The first group's scores are equal: dynamic sampling drops it.
  const std::vector<double> scores{1.0, 1.0, 0.0, 1.0};
  REQUIRE(kept_rows(scores, 2, true) == std::vector<std::size_t>{2, 3});
  const auto kept = kept_rows(scores, 2, false);
  REQUIRE(kept == std::vector<std::size_t>{0, 1, 2, 3});

  const std::vector<std::vector<grpo::token_id>> prompts{{7}, {8, 9}};
  std::vector<grpo::sampled_completion> completions(4);
  const std::vector<std::vector<grpo::token_id>> tokens{{1, 2}, {3}, {4, 5, 6}, {1, 1}};
  for (std::size_t r = 0; r < 4; ++r) {
    completions[r].tokens = tokens[r];
    completions[r].stopped = r != 3;  // row 3 ran out of tokens
  }
  const grpo::reference_backend<double> b;
  const auto rows = make_masked_micro_batches(b, prompts, completions, kept, 2, 3, true);
  REQUIRE(rows.micro_batches.size() == 2);
  REQUIRE(rows.micro_batches[0].rows == std::vector<std::size_t>{0, 1, 2});
  REQUIRE(rows.micro_batches[0].batch.prompts[2] == prompts[1]);
  REQUIRE(rows.micro_batches[1].rows == std::vector<std::size_t>{3});
  // Each micro-batch padded to its own longest completion; the truncated row 3 masked out whole.
  REQUIRE(rows.masks[0].to_host() == std::vector<double>{1, 1, 0, 1, 0, 0, 1, 1, 1});
  REQUIRE(rows.masks[1].to_host() == std::vector<double>{0, 0});
  single_process one;
  const auto d = global_denominators<grpo::reference_backend<double>>(rows.masks, 4.0, one);
  REQUIRE(d.tokens == 6.0);
  REQUIRE(d.sequences == 4.0);  // every row counts, the masked-out one included (TRL's per-sequence mean)
  REQUIRE(d.constant == 4.0);
}

TEST_CASE("pass_at_k: the unbiased estimator of Chen et al. 2021", "[train][eval]") {
  REQUIRE(pass_at_k(4, 0, 1) == 0.0);
  REQUIRE(pass_at_k(4, 4, 4) == 1.0);
  REQUIRE(pass_at_k(4, 1, 1) == Approx(0.25));  // c / n
  // n=4, c=1, k=2: 1 - C(3,2)/C(4,2) = 1 - 3/6 = 0.5
  REQUIRE(pass_at_k(4, 1, 2) == Approx(0.5));
  // n=5, c=2, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10 = 0.7
  REQUIRE(pass_at_k(5, 2, 2) == Approx(0.7));
  REQUIRE(pass_at_k(5, 4, 2) == 1.0);  // n - c = 1 < k
  grpo::testing::require_error([] { pass_at_k(4, 5, 1); }, {"c:"});
  grpo::testing::require_error([] { pass_at_k(4, 1, 5); }, {"k:"});
  grpo::testing::require_error([] { pass_at_k(0, 0, 1); }, {"n:"});
}

TEST_CASE("toml: the subset parser and its errors", "[train][toml]") {
  const auto doc = toml::parse(
      "# comment\nseed = 3\nlearning_rate = 1e-3 # trailing\nname = \"a\\\"b\"\n\n[sft]\nsteps = 1_000\n"
      "flag = true\nweights = [1.0, 0.5, 2]\nlit = 'x y'\n",
      "t.toml");
  REQUIRE(doc.entries.size() == 7);
  REQUIRE(doc.find("seed")->item.integer == 3);
  REQUIRE(doc.find("learning_rate")->item.floating == 1e-3);
  REQUIRE(doc.find("name")->item.string == "a\"b");
  REQUIRE(doc.find("sft.steps")->item.integer == 1000);
  REQUIRE(doc.find("sft.flag")->item.boolean);
  REQUIRE(doc.find("sft.weights")->item.array.size() == 3);
  REQUIRE(doc.find("sft.lit")->item.string == "x y");
  grpo::testing::require_error([] { toml::parse("a = 1\nb = \"x\n", "f.toml"); }, {"f.toml:2: unterminated string"});
  grpo::testing::require_error([] { toml::parse("a = 1\na = 2\n", "f.toml"); }, {"f.toml:2: 'a' is defined twice"});
  grpo::testing::require_error([] { toml::parse("a.b = 1\n", "f.toml"); }, {"f.toml:1: dotted keys"});
  grpo::testing::require_error([] { toml::parse("[s\n", "f.toml"); }, {"f.toml:1: expected ']'"});
  grpo::testing::require_error([] { toml::parse("a = word\n", "f.toml"); }, {"strings must be quoted"});
  grpo::testing::require_error([] { toml::parse("a = 1 2\n", "f.toml"); }, {"unexpected text"});
  grpo::testing::require_error([] { toml::parse("a = {x = 1}\n", "f.toml"); }, {"inline tables"});
}

TEST_CASE("train_config: TOML round trip, overrides and errors", "[train][config]") {
  train_config c;
  apply_override(c, "learning_rate=5e-4");
  apply_override(c, "task.name=countdown");
  apply_override(c, "sft.steps=12");
  apply_override(c, "reward_weights=[1, 0.25]");
  apply_override(c, "sft.adam_epsilon=1e-6");
  REQUIRE(c.sft_adam_epsilon == 1e-6);
  REQUIRE(c.learning_rate == 5e-4);
  REQUIRE(c.task == "countdown");
  REQUIRE(c.sft_steps == 12);
  REQUIRE(c.reward_weights == std::vector<double>{1.0, 0.25});
  train_config back;
  apply(back, toml::parse(to_toml(c), "x"), "x");
  REQUIRE(to_toml(back) == to_toml(c));
  REQUIRE(back.learning_rate == c.learning_rate);
  grpo::testing::require_error([&] { apply_override(c, "bogus=1"); }, {"bogus: unknown setting"});
  grpo::testing::require_error([&] { apply_override(c, "max_steps=\"x\""); }, {"max_steps: expected an integer"});
  grpo::testing::require_error([&] { apply_override(c, "nothing"); }, {"--set"});
  grpo::testing::require_error([&] { apply(c, toml::parse("\n\nbeta = true\n", "c.toml"), "c.toml"); }, {"c.toml:3: beta"});
  train_config bad;
  bad.num_generations = 3;
  grpo::testing::require_error([&] { bad.validate(); }, {"num_generations"});
  bad = {};
  bad.sft_adam_epsilon = 0;
  grpo::testing::require_error([&] { bad.validate(); }, {"sft.adam_epsilon", "> 0"});
  bad = {};
  bad.reward_weights = {1.0};
  grpo::testing::require_error([&] { bad.validate(); }, {"reward_weights"});
  bad = {};
  bad.reward_funcs = {"accuracy", "exactness"};
  grpo::testing::require_error([&] { bad.validate(); }, {"reward_funcs", "\"exactness\"", "partial_accuracy"});
  bad.reward_funcs = {"partial_accuracy", "format"};
  bad.validate();
}

TEST_CASE("example configs: each loads and validates, default.toml is the built-in default", "[train][config]") {
  const auto dir = std::filesystem::path(GRPO_TEST_DATA_DIR).parent_path().parent_path() / "examples" / "configs";
  int configs = 0, distill_configs = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".toml") continue;
    INFO(entry.path().string());
    // grpo distill's configs are a train config plus a [distill] section (distill_config.hpp).
    if (entry.path().filename().string().starts_with("distill_")) {
      const auto run = grpo::train::load_distill_config(entry.path());
      run.train.validate();
      run.distill.validate();
      ++distill_configs;
      continue;
    }
    load_config(entry.path()).validate();
    ++configs;
  }
  REQUIRE(configs >= 2);
  REQUIRE(distill_configs == 3);
  REQUIRE(to_toml(load_config(dir / "default.toml")) == to_toml(train_config{}));
  // The main job's GRPO phase damps Adam; its cold start must not share that epsilon.
  const auto main_job = load_config(dir / "r1_addition.toml");
  REQUIRE(main_job.adam_epsilon == 1e-2);
  REQUIRE(main_job.sft_adam_epsilon == 1e-8);
  // It demonstrates RL beyond its demonstrations: a weak teacher's traces, filtered by the verifier.
  REQUIRE(main_job.teacher_errors == 0.3);
  REQUIRE(main_job.sft_verified_only);
  REQUIRE(load_config(dir / "addition_teacher.toml").teacher_errors == 0);
}

TEST_CASE("metrics: JSONL line with slash keys in order, NaN as null", "[train][metrics]") {
  metrics_record m;
  m.set("step", 3);
  m.set("actor/pg_loss", 0.25);
  m.set("critic/score/std", std::nan(""));
  REQUIRE(m.to_json() == "{\"step\": 3, \"actor/pg_loss\": 0.25, \"critic/score/std\": null}");
  REQUIRE(format_duration(125) == "2m05s");
  REQUIRE(progress_line("grpo", 5, 10, m, {{"loss", "actor/pg_loss"}}, 2.0) ==
          "[grpo] step 5/10 | loss 0.250 | 2.00s/step | ETA 10s");
}

TEST_CASE("checkpoint: atomic directory replace and round trip", "[train][checkpoint]") {
  const auto dir = fresh_dir("ckpt");
  write_checkpoint_directory(dir / "c", [](const std::filesystem::path& t) { write_text_file(t / "a.txt", "one"); });
  write_checkpoint_directory(dir / "c", [](const std::filesystem::path& t) {
    write_text_file(t / "a.txt", "two");
    write_text_file(t / "b.txt", "x");
  });
  // A failure while filling leaves the previous checkpoint in place.
  REQUIRE_THROWS(write_checkpoint_directory(dir / "c", [](const std::filesystem::path&) { throw grpo::io_error("x"); }));
  REQUIRE(read_text_file(dir / "c" / "b.txt") == "x");
  REQUIRE(read_text_file(dir / "c" / "a.txt") == "two");
  REQUIRE(!std::filesystem::exists(dir / ".c.tmp"));
  REQUIRE(!std::filesystem::exists(dir / ".c.old"));
  // A save killed between its renames: the new checkpoint complete in .c.tmp, the old in .c.old.
  REQUIRE(resolve_checkpoint(dir / "c") == dir / "c");
  std::filesystem::rename(dir / "c", dir / ".c.old");
  grpo::testing::require_error([&] { (void)resolve_checkpoint(dir / "d"); }, {"no checkpoint there"});
  REQUIRE(resolve_checkpoint(dir / "c") == dir / ".c.old");
  write_checkpoint_directory(dir / "staged", [](const std::filesystem::path& t) { write_text_file(t / "a.txt", "new"); });
  std::filesystem::rename(dir / "staged", dir / ".c.tmp");
  REQUIRE(resolve_checkpoint(dir / "c") == dir / ".c.tmp");
  REQUIRE(read_text_file(resolve_checkpoint(dir / "c") / "a.txt") == "new");
  // The next save starts clean and leaves one complete directory.
  write_checkpoint_directory(dir / "c", [](const std::filesystem::path& t) { write_text_file(t / "a.txt", "next"); });
  REQUIRE(read_text_file(dir / "c" / "a.txt") == "next");
  REQUIRE(!std::filesystem::exists(dir / ".c.tmp"));
  REQUIRE(!std::filesystem::exists(dir / ".c.old"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("checkpoint: a save killed at any point resumes from the newest complete checkpoint", "[train][checkpoint]") {
  // The directories a save of "c" from version "one" to "two" leaves at each point it can be killed
  // (write_checkpoint_directory: clear .c.tmp and .c.old, fill .c.tmp, rename c -> .c.old, rename
  // .c.tmp -> c, remove .c.old), built by hand; a partial directory is an empty one.
  const auto dir = fresh_dir("ckpt_kill");
  const auto version = [&](const std::string& name, const std::string& text) {
    std::filesystem::create_directories(dir / name);
    write_text_file(dir / name / "a.txt", text);
  };
  const auto partial = [&](const std::string& name) { std::filesystem::create_directories(dir / name); };
  struct kill_point {
    std::string what;
    std::array<std::string, 3> left;
    std::string resumes;  ///< the version resolve_checkpoint must find
  };
  // Each: what the kill leaves (the version in c, .c.tmp, .c.old; "" none, "-" partial), the version to resume.
  const std::vector<kill_point> points = {
      {"while .c.tmp is filled", {"one", "-", ""}, "one"},
      {"with .c.tmp complete, before the renames", {"one", "two", ""}, "one"},
      {"between the renames", {"", "two", "one"}, "two"},
      {"after the renames", {"two", "", "one"}, "two"},
      {"while .c.old is removed", {"two", "", "-"}, "two"},
  };
  for (const auto& point : points) {
    INFO("killed " << point.what);
    std::filesystem::remove_all(dir);
    for (std::size_t i = 0; i < 3; ++i) {
      const std::string name = std::array{"c", ".c.tmp", ".c.old"}[i];
      if (point.left[i] == "-") partial(name);
      else if (!point.left[i].empty()) version(name, point.left[i]);
    }
    REQUIRE(read_text_file(resolve_checkpoint(dir / "c") / "a.txt") == point.resumes);
    REQUIRE(read_text_file(resolve_checkpoint(dir / "c/") / "a.txt") == point.resumes);  // "--resume DIR/c/"
    // The resumed run's next save, killed while filling (here: its fill throws), still leaves
    // that checkpoint to resume from: the first thing a save does is put it back in place.
    REQUIRE_THROWS(write_checkpoint_directory(dir / "c", [](const std::filesystem::path& t) {
      write_text_file(t / "a.txt", "three");
      throw grpo::io_error("killed");
    }));
    REQUIRE(read_text_file(resolve_checkpoint(dir / "c") / "a.txt") == point.resumes);
    REQUIRE(read_text_file(dir / "c" / "a.txt") == point.resumes);
    // And a save that completes leaves one directory.
    write_checkpoint_directory(dir / "c/",
                               [](const std::filesystem::path& t) { write_text_file(t / "a.txt", "three"); });
    REQUIRE(read_text_file(dir / "c" / "a.txt") == "three");
    REQUIRE(!std::filesystem::exists(dir / ".c.tmp"));
    REQUIRE(!std::filesystem::exists(dir / ".c.old"));
  }
  // The first save killed before its rename: no complete checkpoint yet, and the error says so.
  std::filesystem::remove_all(dir);
  version(".c.tmp", "one");
  grpo::testing::require_error([&] { (void)resolve_checkpoint(dir / "c"); },
                               {(dir / "c").string(), "no checkpoint there", ".c.old"});
  std::filesystem::remove_all(dir);
}

TEST_CASE("run directory: one run at a time, and a new run refuses a directory holding one", "[train][run_directory]") {
  const auto dir = fresh_dir("lock");
  const auto lock_file = dir / ".grpo.lock";
#if defined(__unix__) || defined(__APPLE__)
  const std::string pid = std::to_string(::getpid());
  {
    run_directory_lock lock(dir / "");
    REQUIRE(std::filesystem::is_directory(dir));
    REQUIRE(read_text_file(lock_file) == pid + "\n");
    // A second lock, even in this process, fails naming the directory and the holder.
    grpo::testing::require_error([&] { run_directory_lock second(dir); },
                                 {dir.string(), "another run is writing", "pid " + pid, ".grpo.lock"});
    const run_directory_lock moved = std::move(lock);  // the lock travels with the object
    grpo::testing::require_error([&] { run_directory_lock second(dir); }, {"pid " + pid});
  }
  REQUIRE(read_text_file(lock_file).empty());  // released: the file stays, without a holder
  { run_directory_lock again(dir); }

  // A trainer holds its output directory's lock (rank 0 only) from construction to destruction.
  {
    const auto t = make_native_trainer<float>(tiny_run(dir));
    grpo::testing::require_error([&] { (void)make_native_trainer<float>(tiny_run(dir)); },
                                 {dir.string(), "another run is writing", "pid " + pid});
    idle_rank second_rank(1);
    REQUIRE_NOTHROW(make_native_trainer<float>(tiny_run(dir), nullptr, &second_rank));
    idle_rank first_rank(0);
    grpo::testing::require_error([&] { (void)make_native_trainer<float>(tiny_run(dir), nullptr, &first_rank); },
                                 {"pid " + pid});
  }
  REQUIRE_NOTHROW(make_native_trainer<float>(tiny_run(dir)));
#endif

  // What a run leaves, piece by piece, makes the directory one that holds a run.
  std::filesystem::remove_all(dir);
  REQUIRE_NOTHROW(prepare_run_directory(dir, "", false));  // missing
  { run_directory_lock lock(dir); }
  REQUIRE(run_contents(dir).empty());  // the lock file alone is no run
  REQUIRE_NOTHROW(prepare_run_directory(dir, "", false));
  for (const std::string piece : {"model", "checkpoint", ".checkpoint.tmp", ".checkpoint.old"}) {
    std::filesystem::create_directories(dir / piece);
    REQUIRE(run_contents(dir) == std::vector<std::string>{piece + "/"});
    grpo::testing::require_error([&] { prepare_run_directory(dir, "", false); },
                                 {"output_dir", dir.string(), "holds a run already", piece + "/", "--overwrite",
                                  "--resume " + (dir / "checkpoint").string(), "--output-dir"});
    std::filesystem::remove_all(dir / piece);
  }
  write_text_file(dir / "metrics.jsonl", "{\"step\": 1}\n");
  std::filesystem::create_directories(dir / "checkpoint");
  std::filesystem::create_directories(dir / "model");
  write_text_file(dir / "notes.txt", "mine");
  grpo::testing::require_error([&] { prepare_run_directory(dir, "", false); },
                               {"(model/, checkpoint/, metrics.jsonl)"});
  // Resuming the directory's own checkpoint continues the run; one from elsewhere does not.
  REQUIRE_NOTHROW(prepare_run_directory(dir, dir / "checkpoint", false));
  REQUIRE_NOTHROW(prepare_run_directory(dir, dir / "checkpoint" / "", false));
  REQUIRE_NOTHROW(prepare_run_directory(dir, dir / ".checkpoint.tmp", false));
  grpo::testing::require_error([&] { prepare_run_directory(dir, fresh_dir("elsewhere") / "checkpoint", false); },
                               {"holds a run already"});
  // --overwrite refuses to remove the model the run starts from, then removes the run's pieces only.
  grpo::testing::require_error([&] { prepare_run_directory(dir, "", true, dir / "model"); },
                               {"model.init", (dir / "model").string(), "--overwrite would remove"});
  REQUIRE_NOTHROW(prepare_run_directory(dir, "", true, dir / "notes.txt"));
  REQUIRE(run_contents(dir).empty());
  REQUIRE(read_text_file(dir / "notes.txt") == "mine");
  std::filesystem::remove_all(dir);
}

TEST_CASE("trainer: a resumed run cuts metrics.jsonl back to its checkpoint", "[train][resume][metrics]") {
  const auto full_dir = fresh_dir("metrics_full"), split_dir = fresh_dir("metrics_split");
  {
    auto full = make_native_trainer<float>(tiny_run(full_dir));
    metrics_writer metrics(full_dir / "metrics.jsonl");
    REQUIRE(full.run(&metrics).has_value());
  }
  const auto expected = records_without_timing(full_dir / "metrics.jsonl");
  REQUIRE(expected.size() == 6);
  const auto metrics_path = split_dir / "metrics.jsonl";
  {
    auto first = make_native_trainer<float>(tiny_run(split_dir));
    metrics_writer metrics(metrics_path);
    REQUIRE(!first.run(&metrics, 4).has_value());
    // The checkpoint records how much of the file it covers.
    const auto state = read_trainer_state(split_dir / "checkpoint" / "trainer_state.json");
    REQUIRE(state.metrics_bytes == std::filesystem::file_size(metrics_path));
  }
  // What a kill after the checkpoint leaves: the records of steps after it, and a torn line.
  const auto covered = std::filesystem::file_size(metrics_path);
  {
    std::ifstream in(full_dir / "metrics.jsonl");
    std::string line;
    for (int i = 0; i < 5; ++i) std::getline(in, line);
    std::ofstream out(metrics_path, std::ios::app);
    out << line << "\n" << line.substr(0, line.size() / 2);
  }
  auto second = make_native_trainer<float>(load_config(split_dir / "checkpoint" / "config.toml"));
  second.load_checkpoint(split_dir / "checkpoint");
  REQUIRE(second.state().metrics_bytes == covered);
  metrics_writer metrics(metrics_path, true);
  REQUIRE(second.run(&metrics).has_value());
  REQUIRE(records_without_timing(metrics_path) == expected);

  // A size that does not end a record is not this file's: refused, naming the file.
  grpo::testing::require_error([&] { metrics.truncate(covered - 1); }, {metrics_path.string(), "does not end a record"});
  REQUIRE(records_without_timing(metrics_path) == expected);
  metrics.truncate(covered);
  REQUIRE(std::filesystem::file_size(metrics_path) == covered);
  metrics.truncate(covered + 100);  // longer than the file: left as it is
  REQUIRE(std::filesystem::file_size(metrics_path) == covered);
  std::filesystem::remove_all(full_dir);
  std::filesystem::remove_all(split_dir);
}

TEST_CASE("trainer: a run stopped and resumed ends bit-identical, and metrics carry the keys", "[train][resume]") {
  const auto full_dir = fresh_dir("full"), split_dir = fresh_dir("split");
  auto full = make_native_trainer<float>(tiny_run(full_dir));
  metrics_writer metrics(full_dir / "metrics.jsonl");
  REQUIRE(full.run(&metrics).has_value());
  for (const std::int64_t stop : {2, 4}) {  // in the SFT phase, and in the GRPO phase
    std::filesystem::remove_all(split_dir);
    {
      auto first = make_native_trainer<float>(tiny_run(split_dir));
      REQUIRE(!first.run(nullptr, stop).has_value());
      REQUIRE(first.global_step() == stop);
    }
    const auto config = load_config(split_dir / "checkpoint" / "config.toml");
    auto second = make_native_trainer<float>(config);
    second.load_checkpoint(split_dir / "checkpoint");
    REQUIRE(second.global_step() == stop);
    REQUIRE(second.policy().optimizer_options().adam_epsilon == (stop <= 3 ? 1e-7 : 1e-3));
    REQUIRE(second.run().has_value());
    REQUIRE(second.policy().optimizer_options().adam_epsilon == 1e-3);
    REQUIRE(second.policy().model().weights() == full.policy().model().weights());
  }
  const std::string line = [&] {
    std::ifstream in(full_dir / "metrics.jsonl");
    std::string l, last;
    while (std::getline(in, l)) last = l;
    return last;
  }();
  for (const char* key : {"\"actor/pg_loss\"", "\"actor/kl\"", "\"actor/entropy\"", "\"actor/pg_clipfrac\"",
                          "\"actor/grad_norm\"", "\"critic/score/mean\"", "\"reward/accuracy/mean\"",
                          "\"reward/format/std\"", "\"accuracy\"", "\"format_rate\"", "\"response_length/mean\"",
                          "\"response_length/max\"", "\"response_length/clip_ratio\"", "\"frac_reward_zero_std\"",
                          "\"perf/rollout_tokens_per_s\"", "\"perf/train_tokens_per_s\"", "\"lr\"", "\"step\""})
    REQUIRE(line.find(key) != std::string::npos);
  std::filesystem::remove_all(full_dir);
  std::filesystem::remove_all(split_dir);
}

TEST_CASE("trainer: GRPO raises a user reward, with the sampler's log-probs reproduced", "[train][grpo][reward]") {
  // A random tiny policy and a trivially learnable reward (the share of '1' characters in the
  // completion): a correct GRPO step raises it within a few dozen steps; a flipped advantage
  // sign, a descent on the wrong side or misaligned log-prob rows would not.
  const auto dir = fresh_dir("user_reward");
  train_config c = tiny_run(dir);
  c.sft_steps = 0;
  c.max_steps = 30;
  c.loss.beta = 0;
  c.num_iterations = 1;
  c.learning_rate = 1e-2;
  c.max_grad_norm = 1.0;
  c.temperature = 0.7;  // the trainer's log-probs must use the sampler's temperature
  c.num_generations = 8;
  c.per_device_train_batch_size = 32;
  c.gradient_accumulation_steps = 2;
  c.max_completion_length = 6;
  c.mask_truncated_completions = false;  // every completion here runs to the length limit
  c.eval_size = 0;
  auto t = make_native_trainer<float>(c);
  const auto ones = [](std::string_view, std::string_view text) -> std::optional<double> {
    double n = 0;
    for (const char ch : text) n += ch == '1' ? 1 : 0;
    return n / 6.0;
  };
  t.set_reward("ones", ones);
  REQUIRE(t.rewards().size() == 1);
  t.begin_grpo();
  std::vector<double> reward;
  for (std::int64_t step = 0; step < c.max_steps; ++step) {
    const auto m = t.grpo_step();
    reward.push_back(m.get("reward/ones/mean"));
    REQUIRE(m.get("rollout/logprob_diff_max") < 1e-5);
  }
  const auto mean_of = [&](std::size_t begin, std::size_t end) {
    double s = 0;
    for (std::size_t i = begin; i < end; ++i) s += reward[i];
    return s / static_cast<double>(end - begin);
  };
  const double first = mean_of(0, 5), last = mean_of(reward.size() - 5, reward.size());
  INFO("reward over the first 5 steps " << first << ", over the last 5 " << last);
  CHECK(first < 0.1);
  CHECK(last > 0.5);
  std::filesystem::remove_all(dir);
}

TEST_CASE("trainer: set_rewards validates its parts", "[train][reward]") {
  const auto dir = fresh_dir("reward_errors");
  auto t = make_native_trainer<float>(tiny_run(dir));
  REQUIRE(t.rewards().size() == 2);
  REQUIRE(t.rewards()[0].name == "accuracy");
  grpo::testing::require_error([&] { t.set_rewards({}); }, {"parts", "at least one"});
  {
    // The configured partial-credit accuracy: 115 for 57+68 = 125 earns 0.5 * 2/3.
    auto c = tiny_run(fresh_dir("reward_errors_partial"));  // t holds dir's lock
    c.reward_funcs = {"partial_accuracy", "format"};
    auto partial = make_native_trainer<float>(c);
    REQUIRE(partial.rewards()[0].name == "partial_accuracy");
    grpo::testing::require_close(*partial.rewards()[0].function("57+68=", "<answer>115</answer>"), 1.0 / 3.0, 1e-15);
  }
  grpo::testing::require_error(
      [&] {
        t.set_rewards({{"a", 1.0, grpo::tasks::format_reward{}}, {"a", 2.0, grpo::tasks::format_reward{}}});
      },
      {"parts", "\"a\"", "twice"});
  REQUIRE(t.rewards().size() == 2);
  std::filesystem::remove_all(dir);
}

TEST_CASE("trainer: drives any trainable policy, a bigram table learns a user reward and resumes exactly",
          "[train][grpo][concepts]") {
  // The trainer knows nothing of the native transformer: a 64 x 64 bigram table (tests/bigram_policy.hpp)
  // trains through the same rollout, batching, update and checkpoint rooms.
  const auto dir = fresh_dir("bigram");
  train_config c = tiny_run(dir);
  c.sft_steps = 2;
  c.max_steps = 20;
  c.loss.beta = 0.04;
  c.learning_rate = 0.5;
  c.adam_epsilon = 1e-8;
  c.num_generations = 8;
  c.per_device_train_batch_size = 16;
  c.max_completion_length = 6;
  c.mask_truncated_completions = false;
  c.eval_size = 0;
  const auto make = [](train_config config) {
    auto task = make_task(config);
    auto codec = std::make_unique<grpo::tasks::char_codec>(task->tokenizer());
    grpo::testing::bigram_policy policy(codec->vocab_size());
    trainer<grpo::testing::bigram_policy> t(std::move(config), std::move(policy), std::move(task), std::move(codec));
    t.set_reward("ones", [](std::string_view, std::string_view text) -> std::optional<double> {
      double n = 0;
      for (const char ch : text) n += ch == '1' ? 1 : 0;
      return n / 6.0;
    });
    return t;
  };
  auto full = make(c);
  metrics_writer metrics(dir / "metrics.jsonl");
  REQUIRE(full.run(&metrics).has_value());
  std::vector<double> reward;
  {
    std::ifstream in(dir / "metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
      const auto at = line.find("\"reward/ones/mean\": ");
      if (at != std::string::npos) reward.push_back(std::stod(line.substr(at + 20)));
    }
  }
  REQUIRE(reward.size() == 20);
  INFO("reward at the first GRPO step " << reward.front() << ", at the last " << reward.back());
  CHECK(reward.front() < 0.1);
  CHECK(reward.back() > 0.4);
  REQUIRE(full.policy().has_reference());

  const auto split_dir = fresh_dir("bigram_split");
  c.output_dir = split_dir.string();
  {
    auto first = make(c);
    REQUIRE(!first.run(nullptr, 9).has_value());
  }
  auto second = make(load_config(split_dir / "checkpoint" / "config.toml"));
  second.load_checkpoint(split_dir / "checkpoint");
  REQUIRE(second.run().has_value());
  REQUIRE(second.policy().weights() == full.policy().weights());
  std::filesystem::remove_all(dir);
  std::filesystem::remove_all(split_dir);
}
