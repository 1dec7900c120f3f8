// SPDX-License-Identifier: Apache-2.0
// Which policy and which codec a config asks for. model.policy picks grpo's native CPU transformer
// or, in a build with LibTorch (GRPO_CLI_WITH_TORCH), the LibTorch causal LM on model.device; a
// model directory with a tokenizer.json (a Hugging Face checkpoint) brings its tokenizer and chat
// format, any other run uses the task's character vocabulary. with_policy() hands the policy to a
// generic body, so each command is written once for every policy.
#pragma once

#include <filesystem>
#include <memory>
#include <utility>

#include "grpo/error.hpp"
#include "grpo/hf/chat_codec.hpp"
#include "grpo/tasks/task.hpp"
#include "grpo/tasks/tokenizer.hpp"
#include "grpo/train/codec.hpp"
#include "grpo/train/config.hpp"
#include "grpo/train/setup.hpp"

#ifdef GRPO_CLI_WITH_TORCH
#include <ATen/Parallel.h>

#include "grpo/libtorch/causal_lm_policy.hpp"
#endif

namespace grpo::cli {

/// Whether `directory` carries its own tokenizer (a Hugging Face model directory).
inline bool has_tokenizer(const std::filesystem::path& directory) {
  return !directory.empty() && std::filesystem::exists(directory / "tokenizer.json");
}

/// The model directory's tokenizer in the configured chat format, or the task's characters.
inline std::unique_ptr<train::text_codec> make_codec(const train::train_config& c, const tasks::task& task) {
  if (has_tokenizer(c.init))
    return std::make_unique<hf::chat_codec>(hf::chat_codec::from_pretrained(c.init, c.chat_template, c.system_prompt));
  return std::make_unique<tasks::char_codec>(task.tokenizer());
}

/// Calls body(policy) with the policy the config names (the native one over `vocab` tokens when it
/// starts from scratch) and returns what the body returns.
/// \throws config_error naming "model.policy" for torch in a build without LibTorch.
template <class Body>
int with_policy(const train::train_config& c, std::int64_t vocab, Body&& body) {
  if (c.policy == "torch") {
#ifdef GRPO_CLI_WITH_TORCH
    if (c.threads > 0) at::set_num_threads(static_cast<int>(c.threads));
    libtorch::causal_lm_options options;
    options.device = at::Device(c.device);
    auto policy = libtorch::causal_lm_policy::load(c.init, options);
    return body(policy);
#else
    grpo::detail::fail<config_error>(
        "model.policy: \"torch\" needs a grpo built with LibTorch (cmake -DGRPO_WITH_TORCH=ON, as the ci preset does)");
#endif
  }
  auto policy = train::make_native_policy<float>(c, vocab);
  return body(policy);
}

}  // namespace grpo::cli
