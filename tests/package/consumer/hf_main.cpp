// SPDX-License-Identifier: Apache-2.0
// The consumer project's grpo::hf program: loads a tokenizer.json given on the command line and
// checks that an encode/decode round trip returns the text.
#include <cstdio>
#include <string>

#include <grpo/hf/tokenizer.hpp>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const auto tok = grpo::hf::tokenizer::load(argv[1]);
  const std::string text = "What is 23+58? Answer: 81";
  const auto ids = tok.encode(text);
  std::printf("grpo::hf: %zu tokens\n", ids.size());
  return tok.decode(ids) == text && !ids.empty() ? 0 : 1;
}
