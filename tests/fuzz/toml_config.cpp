// SPDX-License-Identifier: Apache-2.0
// tests/fuzz/toml_config.cpp: libFuzzer target for the training config: the TOML reader
// (grpo/train/toml.hpp), its application to a train_config and validate() (grpo/train/config.hpp).
// The input is a config.toml. A config that validates must survive the round trip through the
// config.toml a run records (to_toml, read back over the defaults: the same text again). Each line is
// also applied on its own as a `--set key=value` override.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "fuzz_support.hpp"
#include "grpo/error.hpp"
#include "grpo/train/config.hpp"
#include "grpo/train/toml.hpp"

namespace train = grpo::train;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = grpo::fuzz::as_text(data, size);

  for (std::string_view rest = text; !rest.empty();) {
    const std::size_t end = rest.find('\n');
    const std::string_view line = rest.substr(0, end);
    rest.remove_prefix(end == std::string_view::npos ? rest.size() : end + 1);
    train::train_config config;
    try {
      train::apply_override(config, line);
      config.validate();
    } catch (const grpo::error&) {
    }
  }

  std::optional<train::train_config> config;
  try {
    train::train_config c;
    train::apply(c, train::toml::parse(text, "fuzz.toml"), "fuzz.toml");
    c.validate();
    config = std::move(c);
  } catch (const grpo::error&) {
    return 0;
  }
  const std::string written = train::to_toml(*config);
  train::train_config again;
  train::apply(again, train::toml::parse(written, "written.toml"), "written.toml");
  again.validate();
  FUZZ_REQUIRE(train::to_toml(again) == written);
  return 0;
}
