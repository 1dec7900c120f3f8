// SPDX-License-Identifier: Apache-2.0
// grpo: the command-line tool.
#include <CLI/CLI.hpp>

#include "grpo/version.hpp"

int main(int argc, char** argv) {
  CLI::App app{"grpo: GRPO, PPO-clip and distillation losses from the command line"};
  app.set_version_flag("--version", grpo::version_string);
  CLI11_PARSE(app, argc, argv);
  return 0;
}
