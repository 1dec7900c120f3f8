// SPDX-License-Identifier: Apache-2.0
// Distillation pipeline (grpo/train/distill.hpp, traces.hpp, topk_file.hpp, distill_config.hpp):
// zero loss and gradient for a student identical to its teacher, finite differences of the
// on-policy loss through native_policy<double>, the verifier filter, the traces and top-k files,
// errors naming their input, and exact resumption of each mode.
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "grpo/train/distill.hpp"
#include "grpo/train/setup.hpp"
#include "test_support.hpp"

namespace {

using namespace grpo;
using namespace grpo::train;
using native = model::native_policy<double>;

model::transformer_config tiny_model(std::int64_t vocab) {
  model::transformer_config c;
  c.vocab_size = vocab;
  c.hidden_size = 8;
  c.intermediate_size = 8;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.max_position_embeddings = 32;
  return c;
}

native random_policy(std::int64_t vocab, std::uint64_t seed, double std) {
  model::parameters<double> w(tiny_model(vocab));
  model::initialize(w, seed, std);
  return native(std::move(w), model::transformer_options{1});
}

sequence_batch small_batch() {
  sequence_batch b;
  b.prompts = {{0, 1, 2}, {3, 1}, {4}};
  b.completions = {{2, 3, 4, 0}, {1}, {0, 2}};
  return b;
}

loss_denominators tokens_of(const sequence_batch& b) {
  loss_denominators d;
  d.tokens = 0;
  for (const auto& c : b.completions) d.tokens += static_cast<double>(c.size());
  return d;
}

double max_abs(std::span<const double> v) {
  double m = 0;
  for (const double x : v) m = std::max(m, std::abs(x));
  return m;
}

std::filesystem::path fresh_dir(const std::string& name) {
  return grpo::testing::scratch_path("grpo_distill_test_" + name);
}

/// A small built-in run: 1-digit additions, a tiny student, a few steps.
distill_run_config tiny_run(const std::filesystem::path& dir, const std::string& mode) {
  distill_run_config c;
  auto& t = c.train;
  t.output_dir = dir.string();
  t.seed = 5;
  t.threads = 1;
  t.operations = "+";
  t.min_digits = 1;
  t.max_digits = 1;
  t.heldout_size = 4;
  t.hidden_size = 16;
  t.intermediate_size = 32;
  t.num_hidden_layers = 1;
  t.num_attention_heads = 2;
  t.num_key_value_heads = 1;
  t.max_position_embeddings = 64;
  t.max_completion_length = 12;
  t.per_device_train_batch_size = 3;  // micro-batches of 3 rows: the step's token count is global
  t.num_generations = 2;
  t.sft_examples = 6;
  t.eval_size = 2;
  t.eval_num_samples = 0;
  t.save_steps = 2;
  c.distill.mode = mode;
  c.distill.teacher = (dir / "teacher").string();
  c.distill.steps = 4;
  c.distill.batch_size = 4;
  c.distill.num_samples = 2;
  c.distill.top_k = 3;
  c.distill.beta = 0.5;
  c.distill.learning_rate = 1e-2;
  return c;
}

using float_policy = model::native_policy<float>;

distiller<float_policy, float_policy> make_tiny_distiller(const distill_run_config& c) {
  auto task = make_task(c.train);
  auto codec = std::make_unique<tasks::char_codec>(task->tokenizer());
  const auto vocab = codec->vocab_size();
  auto student = make_native_policy<float>(c.train, vocab);
  train_config teacher_config = c.train;
  teacher_config.seed = 99;
  teacher_config.init_std = 0.5;  // a peaked teacher, unlike the student
  auto teacher = make_native_policy<float>(teacher_config, vocab);
  return distiller<float_policy, float_policy>(c, std::move(student), std::move(teacher), std::move(task),
                                               std::move(codec));
}

}  // namespace

TEST_CASE("distill: a student identical to its teacher has zero loss and zero gradient", "[distill]") {
  const std::int64_t vocab = 5;
  auto teacher = random_policy(vocab, 3, 0.7);
  auto student = random_policy(vocab, 3, 0.7);
  const auto batch = small_batch();
  const auto den = tokens_of(batch);
  SECTION("on-policy: forward KL, JSD(beta), reverse KL") {
    for (const double beta : {0.0, 0.3, 1.0}) {
      student.zero_grad();
      const auto r = on_policy_loss(student, teacher, batch, {1.3, beta}, den);
      CHECK(std::abs(r.loss) < 1e-12);
      CHECK(std::abs(r.kl) < 1e-12);
      CHECK(r.agreement == r.tokens);
      CHECK(r.tokens == 7);
      CHECK(max_abs(student.gradients().values()) < 1e-12);
    }
  }
  SECTION("top-k: the sparse forward KL at K = V (and its loss at K < V)") {
    for (const std::int64_t k : {vocab, std::int64_t{2}}) {
      topk_sequences data;
      data.k = k;
      append_teacher_topk(teacher, batch, data);
      const std::vector<std::size_t> rows{0, 1, 2};
      student.zero_grad();
      const auto r = topk_loss(student, data, rows, {1.0, 0.0}, false, den);
      CHECK(std::abs(r.loss) < 1e-7);  // the file's log-probs are F32
      CHECK(r.agreement == 7);
      // Below K = V the teacher's mass off its K ids is dropped, so only the loss vanishes.
      if (k == vocab) CHECK(max_abs(student.gradients().values()) < 1e-6);
    }
  }
  SECTION("traces: the teacher's log-probs of its tokens are the student's (sampled KL 0)") {
    const auto lp = teacher.logprobs(batch, 1.0).to_host();
    std::vector<std::vector<double>> teacher_lp;
    for (std::size_t r = 0; r < batch.rows(); ++r)
      teacher_lp.emplace_back(lp.begin() + static_cast<std::ptrdiff_t>(r * 4),
                              lp.begin() + static_cast<std::ptrdiff_t>(r * 4 + batch.completions[r].size()));
    student.zero_grad();
    const auto r = traces_loss(student, batch, teacher_lp, den);
    CHECK(std::abs(r.kl) < 1e-12);
    CHECK(r.loss > 0);  // the SFT cross-entropy is the teacher's entropy here; its gradient is 0 only in expectation
  }
}

TEST_CASE("distill: the on-policy loss's gradient through the policy matches finite differences", "[distill][gradient]") {
  const std::int64_t vocab = 5;
  auto teacher = random_policy(vocab, 11, 0.8);
  auto student = random_policy(vocab, 12, 0.8);
  const auto batch = small_batch();
  const auto den = tokens_of(batch);
  for (const double beta : {0.0, 0.4, 1.0}) {
    const distillation_options options{1.5, beta};
    student.zero_grad();
    on_policy_loss(student, teacher, batch, options, den);
    const std::vector<double> grad(student.gradients().values().begin(), student.gradients().values().end());
    REQUIRE(max_abs(grad) > 1e-3);
    auto weights = student.model().weights().values();
    const double h = 1e-6;
    for (std::size_t i = 0; i < weights.size(); i += 7) {
      const double w0 = weights[i];
      weights[i] = w0 + h;
      const double up = on_policy_loss(student, teacher, batch, options, den).loss;
      weights[i] = w0 - h;
      const double down = on_policy_loss(student, teacher, batch, options, den).loss;
      weights[i] = w0;
      INFO("beta " << beta << ", weight " << i);
      CHECK(grad[i] == Approx((up - down) / (2 * h)).margin(1e-8).epsilon(1e-5));
    }
  }
}

TEST_CASE("distill: the verifier keeps exactly the correct, well-formatted completions", "[distill][traces]") {
  tasks::arithmetic_options o;
  o.operations = "+";
  o.max_digits = 1;
  o.heldout_size = 4;
  const tasks::arithmetic_task task(o);
  const tasks::char_codec codec(task.tokenizer());
  std::mt19937_64 rng(1);
  const std::vector<tasks::problem> problems{task.sample_train(rng), task.sample_train(rng)};
  const auto answer = [&](std::size_t k, bool right) {
    return right ? problems[k].answer : std::to_string(std::stoll(problems[k].answer) + 1);
  };
  const auto make = [&](const std::string& text) {
    sampled_completion c;
    c.tokens = codec.encode_completion(text);
    c.full_logprobs.assign(c.tokens.size(), -0.5);
    c.stopped = true;
    return c;
  };
  const std::vector<sampled_completion> completions{
      make("<think>ok</think><answer>" + answer(0, true) + "</answer>"),   // kept
      make("<think>ok</think><answer>" + answer(0, false) + "</answer>"),  // wrong
      make("<answer>" + answer(0, true) + "</answer>"),                    // right, no <think>
      make("<think>ok</think><answer>" + answer(1, false) + "</answer>"),  // wrong
      make("<think>a</think><answer>" + answer(1, true) + "</answer>"),    // kept
      make("<think>b</think><answer>" + answer(1, true) + "</answer>"),    // kept
  };
  const auto strict = verified_traces(problems, completions, 3, task, codec, true);
  REQUIRE(strict.size() == 3);
  CHECK(strict[0].prompt == problems[0].prompt);
  CHECK(strict[0].completion == "<think>ok</think><answer>" + answer(0, true) + "</answer>");
  CHECK(strict[0].completion_ids == completions[0].tokens);
  CHECK(strict[0].teacher_logprobs == completions[0].full_logprobs);
  CHECK(strict[1].completion == "<think>a</think><answer>" + answer(1, true) + "</answer>");
  CHECK(strict[2].prompt == problems[1].prompt);
  for (const auto& t : strict) CHECK(t.reward == 1.0);
  const auto lenient = verified_traces(problems, completions, 3, task, codec, false);
  REQUIRE(lenient.size() == 4);
  CHECK(lenient[1].completion == "<answer>" + answer(0, true) + "</answer>");
}

TEST_CASE("distill: traces files round-trip, and malformed rows are errors naming file and line", "[distill][traces]") {
  const auto dir = fresh_dir("traces_file");
  const std::vector<trace> traces{{"1+2=", "<answer>3</answer>", {4, 5, 6}, 1.0, {-0.25, -1e-9, -3.5}},
                                  {"say \"hi\"\n", "x", {0}, 1.0, {0.0}}};
  write_traces(dir / "t.jsonl", traces);
  const auto back = read_traces(dir / "t.jsonl", 7);
  REQUIRE(back.size() == 2);
  for (std::size_t i = 0; i < 2; ++i) {
    CHECK(back[i].prompt == traces[i].prompt);
    CHECK(back[i].completion == traces[i].completion);
    CHECK(back[i].completion_ids == traces[i].completion_ids);
    CHECK(back[i].teacher_logprobs == traces[i].teacher_logprobs);
    CHECK(back[i].reward == 1.0);
  }
  const auto path = (dir / "bad.jsonl").string();
  const std::string good = to_json(traces[0]);
  const auto with_line = [&](const std::string& bad, std::vector<std::string> fragments) {
    std::ofstream(path) << good << "\n\n" << bad << "\n";
    fragments.insert(fragments.begin(), path + ":3");
    grpo::testing::require_error([&] { (void)read_traces(path, 7); }, fragments);
  };
  with_line("{\"prompt\": \"a\"", {});
  with_line("[1, 2]", {"expected a JSON object"});
  with_line(R"({"prompt": "a", "completion": "b", "completion_ids": [1], "reward": 1.0})", {"teacher_logprobs"});
  with_line(R"({"prompt": "a", "completion": "b", "completion_ids": [7], "reward": 1.0, "teacher_logprobs": [-1.0]})",
            {"completion_ids", "[0, 7)"});
  with_line(R"({"prompt": "a", "completion": "b", "completion_ids": [1, 2], "reward": 1, "teacher_logprobs": [-1.0]})",
            {"teacher_logprobs", "1 values for 2"});
  with_line(R"({"prompt": "a", "completion": "b", "completion_ids": [1], "reward": 1, "teacher_logprobs": [0.5]})",
            {"teacher_logprobs", "not a log-probability"});
  with_line(R"({"prompt": 3, "completion": "b", "completion_ids": [1], "reward": 1, "teacher_logprobs": [0.5]})",
            {"\"prompt\" must be a string"});
  std::filesystem::remove_all(dir);
}

TEST_CASE("distill: the teacher top-k file round-trips and holds the teacher's log-softmax", "[distill][topk]") {
  const auto dir = fresh_dir("topk_file");
  const std::int64_t vocab = 5;
  auto teacher = random_policy(vocab, 4, 0.9);
  const auto batch = small_batch();
  topk_sequences data;
  data.k = 3;
  data.temperature = 0.7;
  data.teacher = "teacher-dir";
  append_teacher_topk(teacher, batch, data);
  REQUIRE(data.ids.size() == 7 * 3);
  // Row 0 by hand from the teacher's logits: descending log softmax(z / T).
  const auto z = teacher.forward(batch).to_host();
  std::vector<double> lp(vocab);
  double top = -INFINITY, s = 0;
  for (std::int64_t v = 0; v < vocab; ++v) top = std::max(top, z[static_cast<std::size_t>(v)] / 0.7);
  for (std::int64_t v = 0; v < vocab; ++v) s += std::exp(z[static_cast<std::size_t>(v)] / 0.7 - top);
  for (std::int64_t v = 0; v < vocab; ++v) lp[static_cast<std::size_t>(v)] = z[static_cast<std::size_t>(v)] / 0.7 - top - std::log(s);
  for (std::size_t j = 0; j < 3; ++j) {
    CHECK(data.logprobs[j] == Approx(lp[static_cast<std::size_t>(data.ids[j])]).margin(1e-6));
    if (j > 0) CHECK(data.logprobs[j] <= data.logprobs[j - 1]);
  }
  CHECK(*std::max_element(lp.begin(), lp.end()) == Approx(data.logprobs[0]).margin(1e-6));
  write_topk_file(dir / "topk.safetensors", data);
  const auto back = read_topk_file(dir / "topk.safetensors", vocab);
  CHECK(back.k == 3);
  CHECK(back.temperature == 0.7);
  CHECK(back.teacher == "teacher-dir");
  CHECK(back.prompts == batch.prompts);
  CHECK(back.completions == batch.completions);
  CHECK(back.ids == data.ids);
  CHECK(back.logprobs == data.logprobs);
  CHECK(back.offsets == std::vector<std::int64_t>{0, 4, 5, 7});
  // k larger than the vocabulary, when computing and when reading.
  topk_sequences too_many;
  too_many.k = vocab + 1;
  grpo::testing::require_error([&] { append_teacher_topk(teacher, batch, too_many); }, {"distill.top_k", "k = 6"});
  grpo::testing::require_error([&] { (void)read_topk_file(dir / "topk.safetensors", 2); },
                               {"distill.top_k", "k = 3"});
  std::filesystem::remove_all(dir);
}

TEST_CASE("distill: config keys parse, read back, and bad input names its setting", "[distill][config]") {
  const auto dir = fresh_dir("config");
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "d.toml") << "seed = 3\n[model]\nhidden_size = 32\n[distill]\nmode = \"on_policy\"\n"
                                   "teacher = \"t\"\nbeta = 0.25\nsteps = 9\n";
  auto c = load_distill_config(dir / "d.toml");
  CHECK(c.train.seed == 3);
  CHECK(c.train.hidden_size == 32);
  CHECK(c.distill.mode == "on_policy");
  CHECK(c.distill.beta == 0.25);
  CHECK(c.distill.steps == 9);
  apply_override(c, "distill.top_k=5");
  CHECK(c.distill.top_k == 5);
  std::ofstream(dir / "back.toml") << to_toml(c);
  const auto back = load_distill_config(dir / "back.toml");
  CHECK(to_toml(back) == to_toml(c));
  std::ofstream(dir / "bad.toml") << "[distill]\nmode = \"traces\"\nk = 3\n";
  grpo::testing::require_error([&] { (void)load_distill_config(dir / "bad.toml"); }, {"bad.toml:3", "distill.k"});
  c.distill.mode = "offline";
  grpo::testing::require_error([&] { c.distill.validate(); }, {"distill.mode", "offline"});
  c.distill.mode = "traces";
  c.distill.teacher = "";
  grpo::testing::require_error([&] { c.distill.validate(); }, {"distill.teacher"});

  // A teacher whose vocabulary differs from the student's; k above the vocabulary.
  auto run = tiny_run(dir, "topk");
  auto task = make_task(run.train);
  auto codec = std::make_unique<tasks::char_codec>(task->tokenizer());
  const auto vocab = codec->vocab_size();
  auto student = make_native_policy<float>(run.train, vocab);
  auto teacher = make_native_policy<float>(run.train, vocab + 1);
  grpo::testing::require_error(
      [&] {
        distiller<float_policy, float_policy>(run, std::move(student), std::move(teacher), std::move(task),
                                              std::move(codec));
      },
      {"distill.teacher", "vocabulary of " + std::to_string(vocab + 1), "student " + std::to_string(vocab)});
  run.distill.top_k = vocab + 1;
  grpo::testing::require_error([&] { (void)make_tiny_distiller(run); }, {"distill.top_k", "exceeds the vocabulary"});
  std::filesystem::remove_all(dir);
}

TEST_CASE("distill: each mode trains, and a run stopped and resumed ends bit-identical", "[distill][resume]") {
  for (const std::string mode : {"traces", "on_policy", "topk"}) {
    INFO("mode " << mode);
    const auto full_dir = fresh_dir("full_" + mode), split_dir = fresh_dir("split_" + mode);
    auto full_config = tiny_run(full_dir, mode), split_config = tiny_run(split_dir, mode);
    if (mode == "traces") {
      // A random teacher verifies nothing, so the traces are worked demonstrations written as a
      // traces file (the reuse path: the file exists, the teacher is not sampled).
      auto task = make_task(full_config.train);
      const tasks::char_codec codec(task->tokenizer());
      std::mt19937_64 rng(3);
      std::vector<trace> traces;
      for (int i = 0; i < 6; ++i) {
        const auto p = task->sample_train(rng);
        const auto ids = codec.encode_completion(p.demonstration);
        traces.push_back({p.prompt, p.demonstration, ids, 1.0, std::vector<double>(ids.size(), -0.1)});
      }
      for (const auto* dir : {&full_dir, &split_dir}) write_traces(*dir / "traces.jsonl", traces);
    }
    auto full = make_tiny_distiller(full_config);
    metrics_writer metrics(full_dir / "metrics.jsonl");
    REQUIRE(full.run(&metrics).has_value());
    REQUIRE(full.state().phase == "done");
    REQUIRE(std::filesystem::exists(full_dir / "model" / "model.safetensors"));
    if (mode == "topk") REQUIRE(std::filesystem::exists(full_dir / "teacher_topk.safetensors"));
    {
      auto first = make_tiny_distiller(split_config);
      REQUIRE(!first.run(nullptr, 3).has_value());
      REQUIRE(first.state().step == 3);
    }
    const auto config = load_distill_config(split_dir / "checkpoint" / "config.toml");
    CHECK(config.distill.mode == mode);
    auto second = make_tiny_distiller(config);
    second.load_checkpoint(split_dir / "checkpoint");
    REQUIRE(second.state().step == 3);
    REQUIRE(second.run().has_value());
    REQUIRE(second.student().model().weights() == full.student().model().weights());
    REQUIRE(second.student().model().weights() != make_native_policy<float>(full_config.train, 20).model().weights());
    const std::string last = [&] {
      std::ifstream in(full_dir / "metrics.jsonl");
      std::string l, previous;
      while (std::getline(in, l)) previous = l;
      return previous;
    }();
    for (const char* key : {"\"step\": 4", "\"distill/loss\"", "\"distill/kl\"", "\"distill/top1_agreement\"",
                            "\"actor/grad_norm\"", "\"lr\""})
      CHECK(last.find(key) != std::string::npos);
    std::filesystem::remove_all(full_dir);
    std::filesystem::remove_all(split_dir);
  }
}
