// SPDX-License-Identifier: Apache-2.0
// grpo tokenize / score / convert-gguf: the commands that check grpo against a Python stack on the
// same model directory. tokenize prints the ids the `tokenizers` library would give
// (encode(text, add_special_tokens=False)); score prints the per-token log-probs transformers would
// compute for given completions; convert-gguf turns a llama.cpp GGUF file into a Hugging Face
// directory. Their input and output formats are an interface other scripts rely on.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "commands.hpp"
#include "json_io.hpp"
#include "grpo/concepts.hpp"
#include "grpo/detail/json.hpp"
#include "grpo/error.hpp"
#include "grpo/hf/gguf_convert.hpp"
#include "grpo/hf/tokenizer.hpp"
#include "grpo/model/config.hpp"
#include "grpo/train/checkpoint.hpp"
#include "policies.hpp"

namespace grpo::cli {

namespace {

hf::tokenizer load_tokenizer(const std::filesystem::path& directory) {
  GRPO_CHECK(has_tokenizer(directory), io_error, "--model: ", (directory / "tokenizer.json").string(),
             " does not exist (a Hugging Face model directory is needed)");
  return hf::tokenizer::from_pretrained(directory);
}

/// One {"prompt", "completion"} line of the score input.
struct score_row {
  std::vector<token_id> prompt;
  std::vector<token_id> completion;
};

std::vector<score_row> read_score_input(const std::string& path, const hf::tokenizer& tok) {
  namespace json = grpo::detail::json;
  std::vector<score_row> rows;
  for_each_jsonl_object(path, [&](const json::value& v, const std::string& where) {
    const auto field = [&](std::string_view key) -> const std::string& {
      for (const auto& m : v.members)
        if (m.key == key) {
          GRPO_CHECK(m.value.kind == json::kind::string, io_error, where, ": \"", key, "\" must be a string, got ",
                     json::kind_name(m.value.kind));
          return m.value.text;
        }
      grpo::detail::fail<io_error>(where, ": missing \"", key, "\"");
    };
    score_row row{tok.encode(field("prompt")), tok.encode(field("completion"))};
    GRPO_CHECK(!row.prompt.empty(), value_error, where,
               ": \"prompt\" encodes to no tokens (the first completion token needs context)");
    rows.push_back(std::move(row));
  });
  return rows;
}

}  // namespace

int tokenize_command(const std::string& model_dir) {
  const hf::tokenizer tok = load_tokenizer(model_dir);
  const std::string text((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  std::cout << ids_json(tok.encode(text)) << std::endl;
  return 0;
}

int score_command(const train::train_config& c, const std::string& input, const std::string& output,
                  double temperature) {
  const hf::tokenizer tok = load_tokenizer(c.init);
  const auto rows = read_score_input(input, tok);
  // Rows of similar lengths would pad less; input order keeps memory bounded and output in order.
  constexpr std::size_t batch_rows = 16;
  return with_policy(c, tok.vocab_size(), [&](auto& policy) {
    std::string text;
    for (std::size_t start = 0; start < rows.size(); start += batch_rows) {
      sequence_batch batch;
      for (std::size_t r = start; r < std::min(rows.size(), start + batch_rows); ++r) {
        batch.prompts.push_back(rows[r].prompt);
        batch.completions.push_back(rows[r].completion);
      }
      const auto t = static_cast<std::size_t>(batch.max_completion_length());
      const auto logprobs = t == 0 ? std::vector<double>{} : policy.logprobs(batch, temperature).to_host();
      for (std::size_t r = 0; r < batch.rows(); ++r) {
        text += "{\"completion_ids\": " + ids_json(batch.completions[r]) + ", \"logprobs\": [";
        for (std::size_t i = 0; i < batch.completions[r].size(); ++i)
          text += (i ? ", " : "") + grpo::detail::json::number(logprobs[r * t + i]);
        text += "]}\n";
      }
    }
    train::write_text_file(output, text);
    std::cout << "scored " << rows.size() << " completions with " << policy.describe() << " -> " << output
              << std::endl;
    return 0;
  });
}

int convert_gguf_command(const std::string& input, const std::string& output) {
  const auto summary = hf::convert_gguf(input, output);
  std::cout << "converted " << input << " (" << summary.architecture << ", " << summary.n_tensors << " tensors, "
            << summary.n_parameters << " parameters) -> " << output << std::endl;
  return 0;
}

}  // namespace grpo::cli
