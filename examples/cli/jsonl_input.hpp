// SPDX-License-Identifier: Apache-2.0
// The CLI's JSON Lines inputs (`grpo score`, `grpo grad`): one JSON object per non-blank line, each
// error naming "FILE:LINE".
#pragma once

#include <cstddef>
#include <fstream>
#include <string>

#include "grpo/detail/json.hpp"
#include "grpo/error.hpp"

namespace grpo::cli {

/// Calls `row(object, where)` for every non-blank line of `path` (where = "path:line"); a line that
/// is not a JSON object, an unreadable file and a failed read are io_errors naming them.
template <class RowFunction>
void for_each_jsonl_object(const std::string& path, RowFunction&& row) {
  namespace json = grpo::detail::json;
  std::ifstream in(path, std::ios::binary);
  GRPO_CHECK(in.good(), io_error, path, ": cannot open for reading");
  std::string line;
  for (std::size_t number = 1; std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(number);
    const json::value v = json::parse(line, where);
    GRPO_CHECK(v.kind == json::kind::object, io_error, where, ": expected a JSON object, got ", json::kind_name(v.kind));
    row(v, where);
  }
  GRPO_CHECK(!in.bad(), io_error, path, ": read failed");
}

}  // namespace grpo::cli
