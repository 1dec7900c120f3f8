// SPDX-License-Identifier: Apache-2.0
// User data: the JSONL loader (every error names the file and line), the hash split, and the
// dataset task built on them.
#include "test_support.hpp"

#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "grpo/tasks/jsonl.hpp"
#include "grpo/tasks/rewards.hpp"

using grpo::tasks::answer_kind;
using grpo::tasks::dataset_task;
using grpo::tasks::parse_jsonl;
using grpo::tasks::problem;
using grpo::testing::require_error;

namespace {

// A scratch directory under the system temp dir, removed at the end of the test.
struct scratch_dir {
  std::filesystem::path path;
  scratch_dir() {
    path = std::filesystem::temp_directory_path() / std::string("grpo_tasks_jsonl_").append(std::to_string(std::random_device{}()));
    std::filesystem::create_directories(path);
  }
  ~scratch_dir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  std::filesystem::path write(const std::string& name, const std::string& contents) const {
    const auto file = path / name;
    std::ofstream(file, std::ios::binary) << contents;
    return file;
  }
};

}  // namespace

TEST_CASE("parse_jsonl reads prompts and answers", "[tasks][jsonl]") {
  const std::string text =
      "\xEF\xBB\xBF{\"prompt\": \"2+2=\", \"answer\": \"4\"}\r\n"
      "\n"
      "   \n"
      "{\"id\": 7, \"answer\": 42, \"prompt\": \"six times seven?\", \"tags\": [\"x\"]}\n"
      "{\"prompt\": \"use 3 5 7 to make 22.\", \"answer\": \"3*5+7\"}\n"
      "{\"prompt\": \"2+2=\", \"answer\": \"4\"}";  // a repeat with the same answer; no final newline
  const std::vector<problem> rows = parse_jsonl(text, "data.jsonl");
  REQUIRE(rows.size() == 4);
  CHECK(rows[0].prompt == "2+2=");
  CHECK(rows[0].answer == "4");
  CHECK(rows[1].prompt == "six times seven?");
  CHECK(rows[1].answer == "42");  // a number keeps its source text
  CHECK(rows[2].answer == "3*5+7");
  CHECK(rows[3].prompt == "2+2=");
  for (const auto& r : rows) CHECK(r.demonstration.empty());
  // Escapes are decoded: "\n" in JSON is a newline in the prompt.
  CHECK(parse_jsonl(R"({"prompt": "a\nb", "answer": "1"})", "x")[0].prompt == "a\nb");
}

TEST_CASE("parse_jsonl errors name the file and line", "[tasks][jsonl]") {
  require_error([] { parse_jsonl("{\"prompt\": \"1+1=\", \"answer\": \"2\"}\n{\"prompt\": \"1+2=\",", "data.jsonl"); },
                {"data.jsonl:2: invalid JSON"});
  require_error([] { parse_jsonl("[1, 2]", "data.jsonl"); }, {"data.jsonl:1: expected a JSON object, got an array"});
  require_error([] { parse_jsonl("\n\n{\"prompt\": \"1+1=\"}", "data.jsonl"); },
                {"data.jsonl:3: missing field \"answer\""});
  require_error([] { parse_jsonl(R"({"answer": "2"})", "data.jsonl"); }, {"data.jsonl:1: missing field \"prompt\""});
  require_error([] { parse_jsonl(R"({"prompt": 12, "answer": "2"})", "data.jsonl"); },
                {"data.jsonl:1: field \"prompt\" must be a string, got a number"});
  require_error([] { parse_jsonl(R"({"prompt": "", "answer": "2"})", "data.jsonl"); },
                {"data.jsonl:1: field \"prompt\" is empty"});
  require_error([] { parse_jsonl(R"({"prompt": "1+1=", "answer": null})", "data.jsonl"); },
                {"data.jsonl:1: field \"answer\" must be a string or a number, got null"});
  require_error([] { parse_jsonl(R"({"prompt": "1+1=", "answer": ["2"]})", "data.jsonl"); },
                {"data.jsonl:1: field \"answer\" must be a string or a number, got an array"});
  require_error([] { parse_jsonl(R"({"prompt": "what is Q?", "answer": "1"})", "data.jsonl"); },
                {"data.jsonl:1: field \"prompt\" has character 'Q' (0x51) at byte 8"});
  require_error([] { parse_jsonl(R"({"prompt": "1+1=", "prompt": "1+2=", "answer": "2"})", "data.jsonl"); },
                {"data.jsonl:1: invalid JSON", "duplicate key \"prompt\""});
  require_error(
      [] {
        parse_jsonl("{\"prompt\": \"1+1=\", \"answer\": \"2\"}\n{\"prompt\": \"1+2=\", \"answer\": \"3\"}\n"
                    "{\"prompt\": \"1+1=\", \"answer\": \"3\"}\n",
                    "data.jsonl");
      },
      {"data.jsonl:3: the prompt of line 1 is repeated with a different answer (\"3\" here, \"2\" there)"});
  require_error([] { parse_jsonl("", "data.jsonl"); }, {"data.jsonl: no problems"});
  require_error([] { parse_jsonl("\n \n", "data.jsonl"); }, {"data.jsonl: no problems"});
  CHECK_THROWS_AS(parse_jsonl("{", "data.jsonl"), grpo::io_error);
}

TEST_CASE("load_jsonl reads files", "[tasks][jsonl]") {
  const scratch_dir dir;
  const auto file = dir.write("train.jsonl", "{\"prompt\": \"1+1=\", \"answer\": \"2\"}\n");
  const auto rows = grpo::tasks::load_jsonl(file);
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].answer == "2");
  const auto missing = dir.path / "missing.jsonl";
  require_error([&] { grpo::tasks::load_jsonl(missing); }, {missing.string() + ": cannot open the file"});
  const auto bad = dir.write("bad.jsonl", "{\"prompt\": \"1+1=\", \"answer\": \"2\"}\n{\"prompt\": 1}\n");
  require_error([&] { grpo::tasks::load_jsonl(bad); }, {bad.string() + ":2: missing field \"answer\""});
}

TEST_CASE("split_problems partitions by a fixed hash of the prompt", "[tasks][jsonl]") {
  std::vector<problem> rows;
  for (int i = 0; i < 1000; ++i) rows.push_back({std::to_string(i) + "+1=", std::to_string(i + 1), {}});
  const auto [train, heldout] = grpo::tasks::split_problems(rows, 0.2);
  CHECK(train.size() + heldout.size() == 1000);
  CHECK(heldout.size() > 150);  // about 200
  CHECK(heldout.size() < 250);
  // The same prompt lands in the same split whatever the order of the file.
  std::vector<problem> reversed(rows.rbegin(), rows.rend());
  const auto [train2, heldout2] = grpo::tasks::split_problems(reversed, 0.2);
  std::set<std::string> a, b;
  for (const auto& p : heldout) a.insert(p.prompt);
  for (const auto& p : heldout2) b.insert(p.prompt);
  CHECK(a == b);
  CHECK(grpo::tasks::split_problems(rows, 0.0).second.empty());
  CHECK(grpo::tasks::split_problems(rows, 1.0).first.empty());
  require_error([&] { grpo::tasks::split_problems(rows, 1.5); }, {"heldout_fraction: must be in [0, 1], got 1.5"});
}

TEST_CASE("dataset_task serves user problems", "[tasks][jsonl]") {
  const dataset_task t("data.jsonl", answer_kind::countdown,
                       {{"use 3 5 7 to make 22.", "3*5+7", {}}, {"use 2 3 4 to make 20.", "(2+3)*4", {}},
                        {"broken row", "3 5 7", {}}},
                       {{"use 1 2 3 to make 9.", "(1+2)*3", {}}});
  CHECK(t.name() == "data.jsonl");
  CHECK(t.kind() == answer_kind::countdown);
  CHECK(t.heldout_size() == 1);
  CHECK(t.heldout(0).answer == "(1+2)*3");
  CHECK(t.train_problems().size() == 3);
  require_error([&] { t.heldout(1); }, {"index: 1 is outside the held-out split of size 1"});
  CHECK(t.reference_answer("use 3 5 7 to make 22.") == "3*5+7");
  CHECK(t.reference_answer("use 1 2 3 to make 9.") == "(1+2)*3");
  CHECK_FALSE(t.reference_answer("unknown").has_value());
  CHECK(t.check("use 3 5 7 to make 22.", "7+5*3") == true);
  CHECK(t.check("use 3 5 7 to make 22.", "7+5+3") == false);
  CHECK(t.check("broken row", "3*5+7") == std::nullopt);  // the reference does not parse

  // sample_train draws uniformly from the training split, reproducibly.
  std::mt19937_64 rng(1), same(1);
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    const problem p = t.sample_train(rng);
    CHECK(p.prompt == t.sample_train(same).prompt);
    seen.insert(p.prompt);
  }
  CHECK(seen.size() == 3);

  using grpo::config_error;
  require_error([] { dataset_task("d", answer_kind::integer, {}); }, {"train: no problems (0 held-out)"});
  require_error([] { dataset_task("", answer_kind::integer, {{"1+1=", "2", {}}}); }, {"name: must not be empty"});
  require_error([] { dataset_task("d", answer_kind::integer, {{"1+1=", "2", {}}, {"1+1=", "3", {}}}); },
                {"train: problem 1 repeats the prompt \"1+1=\" with a different answer"});
  require_error([] { dataset_task("d", answer_kind::integer, {{"1+1=", "2", {}}}, {{"1+1=", "2", {}}}); },
                {"heldout: the prompt \"1+1=\" is also in the training split"});
  require_error([] { dataset_task("d", answer_kind::integer, {{"1+1=", "2", {}}}, {{"1+1=X", "2", {}}}); },
                {"heldout: problem 0: prompt has character 'X' (0x58) at byte 4"});
}

TEST_CASE("load_dataset_task: one file split, or two files", "[tasks][jsonl]") {
  const scratch_dir dir;
  std::string lines;
  for (int i = 0; i < 200; ++i)
    lines.append("{\"prompt\": \"").append(std::to_string(i)).append("+1=\", \"answer\": \"")
        .append(std::to_string(i + 1)).append("\"}\n");
  const auto train_file = dir.write("sums.jsonl", lines);
  const auto eval_file = dir.write("eval.jsonl", "{\"prompt\": \"1000+1=\", \"answer\": 1001}\n");

  const dataset_task split = grpo::tasks::load_dataset_task(train_file, answer_kind::integer, std::nullopt, 0.25);
  CHECK(split.name() == "sums.jsonl");
  CHECK(split.train_problems().size() + split.heldout_size() == 200);
  CHECK(split.heldout_size() > 20);
  const grpo::tasks::accuracy_reward accuracy(split);
  CHECK(accuracy("7+1=", "<answer>8</answer>") == 1.0);

  const dataset_task two = grpo::tasks::load_dataset_task(train_file, answer_kind::integer, eval_file);
  CHECK(two.train_problems().size() == 200);
  REQUIRE(two.heldout_size() == 1);
  CHECK(two.heldout(0).answer == "1001");
  CHECK(two.check("1000+1=", "1001") == true);
}
