// SPDX-License-Identifier: Apache-2.0
// The CLI's JSON helpers: JSON Lines inputs (`grpo score`, `grpo grad`: one JSON object per
// non-blank line, each error naming "FILE:LINE") and token ids written as a JSON array.
#pragma once

#include <cstddef>
#include <fstream>
#include <span>
#include <string>

#include "grpo/concepts.hpp"
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

/// Token ids as a JSON array: "[1, 2, 3]".
inline std::string ids_json(std::span<const token_id> ids) {
  std::string out = "[";
  for (std::size_t i = 0; i < ids.size(); ++i) out += (i ? ", " : "") + std::to_string(ids[i]);
  return out + "]";
}

}  // namespace grpo::cli
