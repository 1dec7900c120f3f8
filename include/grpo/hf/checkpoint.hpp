// SPDX-License-Identifier: Apache-2.0
// grpo/hf/checkpoint.hpp: the weight tensors of a Hugging Face model directory, from a single
// model.safetensors or from the shards a model.safetensors.index.json lists (its "weight_map":
// tensor name -> shard file, as transformers' save_pretrained writes it). Every file is read and
// validated whole by grpo::safetensors::file, so a missing or truncated file is an io_error naming
// it. Model weights must be F32, BF16 or F16; shapes are checked by the caller against the config.
#pragma once

#include <cstddef>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "grpo/detail/json.hpp"
#include "grpo/error.hpp"
#include "grpo/hf/model_config.hpp"
#include "grpo/safetensors.hpp"

namespace grpo::hf {

/// The tensors of a model directory, owning the bytes of every file.
class checkpoint {
 public:
  /// Opens `directory`: model.safetensors when present, otherwise model.safetensors.index.json
  /// and every shard it names.
  /// \throws io_error naming the directory when it has neither file, naming a file that is
  ///         missing, unreadable or truncated, and naming the index and its field "weight_map" when
  ///         it is not an object of file names, names a file outside the directory, maps a tensor
  ///         to a shard that lacks it, or a shard holds a tensor the map does not list.
  static checkpoint open(const std::filesystem::path& directory) {
    checkpoint out;
    out.directory_ = directory;
    std::error_code ec;
    const auto single = directory / "model.safetensors";
    const auto index = directory / "model.safetensors.index.json";
    if (std::filesystem::exists(single, ec)) {
      out.add_file(single);
      for (const auto& name : out.files_.back().names()) out.where_.emplace(name, 0);
      return out;
    }
    GRPO_CHECK(std::filesystem::exists(index, ec), io_error, directory.string(),
               ": no model.safetensors or model.safetensors.index.json (not a Hugging Face model directory?)");
    out.open_index(index);
    return out;
  }

  const std::filesystem::path& directory() const { return directory_; }

  /// Every tensor name, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(where_.size());
    for (const auto& [name, file] : where_) out.push_back(name);
    return out;
  }

  bool contains(std::string_view name) const { return where_.find(name) != where_.end(); }

  /// The file holding `name` (io_error when there is none).
  const std::string& file_of(std::string_view name) const { return files_[locate(name)].source(); }

  /// The tensor `name`, a view valid while this checkpoint lives.
  /// \throws io_error naming the tensor and directory when absent; config_error naming the tensor
  ///         and its file when its dtype is not F32, BF16 or F16.
  safetensors::tensor_view tensor(std::string_view name) const {
    const auto& file = files_[locate(name)];
    auto view = file.at(name);
    GRPO_CHECK(view.type == safetensors::dtype::f32 || view.type == safetensors::dtype::bf16 ||
                   view.type == safetensors::dtype::f16,
               config_error, file.source(), ": tensor \"", name, "\": dtype ", safetensors::name_of(view.type),
               " is not supported (model weights must be F32, BF16 or F16)");
    return view;
  }

 private:
  std::filesystem::path directory_;
  std::vector<safetensors::file> files_;
  std::map<std::string, std::size_t, std::less<>> where_;  // tensor -> index in files_

  std::size_t locate(std::string_view name) const {
    const auto it = where_.find(name);
    GRPO_CHECK(it != where_.end(), io_error, directory_.string(), ": tensor \"", name,
               "\" not found in the checkpoint");
    return it->second;
  }

  void add_file(const std::filesystem::path& path) { files_.push_back(safetensors::file::read(path)); }

  void open_index(const std::filesystem::path& index) {
    namespace json = grpo::detail::json;
    const std::string source = index.string();
    const auto root = detail::parse_object(detail::read_text(index), source);
    const detail::fields f(root, source);
    const json::value* map = f.find_set("weight_map");
    GRPO_CHECK(map != nullptr && map->kind == json::kind::object && !map->members.empty(), io_error, source,
               ": field \"weight_map\": expected a non-empty object {tensor name: shard file}");
    std::map<std::string, std::size_t, std::less<>> shard_index;
    for (const auto& m : map->members) {
      GRPO_CHECK(m.value.kind == json::kind::string, io_error, source, ": field \"weight_map\": tensor \"", m.key,
                 "\": expected a file name, got ", json::kind_name(m.value.kind));
      const std::filesystem::path shard(m.value.text);
      // A plain file name: an index must not make the loader read outside the model directory.
      GRPO_CHECK(!m.value.text.empty() && shard.filename() == shard && shard != "." && shard != "..", io_error, source,
                 ": field \"weight_map\": tensor \"", m.key, "\": ", json::quote(m.value.text),
                 " is not a file name in the model directory");
      auto it = shard_index.find(m.value.text);
      if (it == shard_index.end()) {
        add_file(directory_ / shard);
        it = shard_index.emplace(m.value.text, files_.size() - 1).first;
      }
      GRPO_CHECK(files_[it->second].contains(m.key), io_error, source, ": field \"weight_map\": tensor \"", m.key,
                 "\" is mapped to ", m.value.text, ", which does not contain it");
      where_.emplace(m.key, it->second);
    }
    for (std::size_t i = 0; i < files_.size(); ++i)
      for (const auto& name : files_[i].names()) {
        const auto it = where_.find(name);
        GRPO_CHECK(it != where_.end() && it->second == i, io_error, source,
                   ": field \"weight_map\": ", files_[i].source(), " holds tensor \"", name,
                   "\", which the map does not assign to it");
      }
  }
};

}  // namespace grpo::hf
