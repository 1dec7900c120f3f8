// SPDX-License-Identifier: Apache-2.0
// grpo/libtorch/causal_lm_policy.hpp: a Hugging Face causal LM (grpo/libtorch/causal_lm.hpp) as a
// grpo::trainable_policy. forward() returns the completion positions' logits detached, as a tensor
// of grpo::libtorch::backend, and keeps the autograd graph, so the trainer computes the loss with
// the generic algorithms and hands d loss / d logits to backward(). Log-probs run without autograd
// through grpo::token_logprobs; generate() is grpo/libtorch/generate.hpp. The optimizer is AdamW in
// torch ops with the formulas of grpo/train/optimizer.hpp, element by element in double, so on the
// CPU an update equals the host implementation's to the bit. Mixed precision on CUDA: fp32 master
// weights, gradients and AdamW moments, forward in bf16 through autograd-connected casts.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#ifdef GRPO_TORCH_CUDA
#include <c10/cuda/CUDAStream.h>
#endif

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "grpo/concepts.hpp"
#include "grpo/error.hpp"
#include "grpo/hf/model_config.hpp"
#include "grpo/libtorch/backend.hpp"
#include "grpo/libtorch/causal_lm.hpp"
#include "grpo/libtorch/config.hpp"
#include "grpo/libtorch/generate.hpp"
#include "grpo/logits.hpp"
#include "grpo/safetensors.hpp"
#include "grpo/tensor.hpp"
#include "grpo/train/adamw_options.hpp"
#include "grpo/train/communicator.hpp"

namespace grpo::libtorch {
inline namespace GRPO_LIBTORCH_NAMESPACE {

namespace detail {

/// A sequence_batch laid out for the model: the B rows with a completion feed prompt ++
/// completion[0 .. c-2], right-padded to the longest (L); causal attention keeps padding out of
/// every real position. Output n (of N valid completion tokens) reads flat position gather[n] of
/// [B * L] and lands in row slots[n] = r * T + i of the [R * T, V] logits.
struct packed_batch {
  std::int64_t rows = 0, max_completion = 0, outputs = 0;
  at::Tensor ids, positions, gather, slots, targets;
};

/// \throws shape_error as grpo::model::plan_batch: "batch" for mismatched counts or a row longer
///         than max_position_embeddings, "batch.prompts" for an empty prompt, "batch.prompts" /
///         "batch.completions" for a token id outside [0, vocab_size).
inline packed_batch pack(const hf::model_config& c, const sequence_batch& batch, at::Device device) {
  GRPO_CHECK(batch.prompts.size() == batch.completions.size(), shape_error, "batch: ", batch.prompts.size(),
             " prompts for ", batch.completions.size(), " completions");
  packed_batch out;
  out.rows = static_cast<std::int64_t>(batch.rows());
  out.max_completion = batch.max_completion_length();
  std::int64_t width = 0, fed_rows = 0;
  for (std::size_t r = 0; r < batch.rows(); ++r) {
    const auto& prompt = batch.prompts[r];
    const auto& completion = batch.completions[r];
    GRPO_CHECK(!prompt.empty(), shape_error, "batch.prompts: row ", r, " is empty (a prompt needs at least one token)");
    for (const auto* tokens : {&prompt, &completion})
      for (std::size_t i = 0; i < tokens->size(); ++i)
        GRPO_CHECK((*tokens)[i] >= 0 && (*tokens)[i] < c.vocab_size, shape_error,
                   tokens == &prompt ? "batch.prompts" : "batch.completions", ": row ", r, ", element ", i, " is ",
                   (*tokens)[i], ", out of range [0, ", c.vocab_size, ")");
    const auto p = static_cast<std::int64_t>(prompt.size()), n = static_cast<std::int64_t>(completion.size());
    GRPO_CHECK(p + n <= c.max_position_embeddings, shape_error, "batch: row ", r, " has ", p + n, " tokens (prompt ", p,
               " + completion ", n, "), more than max_position_embeddings ", c.max_position_embeddings);
    if (n == 0) continue;
    width = std::max(width, p + n - 1);
    ++fed_rows;
  }
  std::vector<std::int64_t> ids(static_cast<std::size_t>(fed_rows * width), 0), gather, slots, targets;
  std::int64_t b = 0;
  for (std::size_t r = 0; r < batch.rows(); ++r) {
    const auto& prompt = batch.prompts[r];
    const auto& completion = batch.completions[r];
    if (completion.empty()) continue;
    const auto p = static_cast<std::int64_t>(prompt.size());
    auto* row = ids.data() + b * width;
    std::copy(prompt.begin(), prompt.end(), row);
    std::copy(completion.begin(), completion.end() - 1, row + p);
    for (std::size_t i = 0; i < completion.size(); ++i) {
      gather.push_back(b * width + p - 1 + static_cast<std::int64_t>(i));
      slots.push_back(static_cast<std::int64_t>(r) * out.max_completion + static_cast<std::int64_t>(i));
      targets.push_back(completion[i]);
    }
    ++b;
  }
  out.outputs = static_cast<std::int64_t>(gather.size());
  out.ids = device_ids(ids, {fed_rows, width}, device);
  out.positions = at::arange(width, at::TensorOptions().dtype(at::kLong).device(device)).expand({fed_rows, width});
  out.gather = device_ids(gather, {out.outputs}, device);
  out.slots = device_ids(slots, {out.outputs}, device);
  out.targets = device_ids(targets, {out.outputs}, device);
  return out;
}

inline void expect_temperature(double temperature) {
  GRPO_CHECK(std::isfinite(temperature) && temperature > 0.0 && std::isfinite(1.0 / temperature), config_error,
             "temperature: must be a finite value > 0 with a finite inverse, got ", temperature);
}

}  // namespace detail

/// A causal_lm that the GRPO trainer can drive (grpo::trainable_policy). Move-only: it owns the
/// weights, their gradients, the AdamW moments and the frozen reference.
class causal_lm_policy {
 public:
  using backend_type = libtorch::backend;

  /// \throws config_error naming the adamw_options field that is invalid.
  explicit causal_lm_policy(causal_lm model, const train::adamw_options& adamw = {}) : model_(std::move(model)) {
    for (auto& [name, t] : model_.named_parameters()) {
      t.requires_grad_(true);
      parameters_.push_back(t);
    }
    backend_.device = model_.options().device;
    backend_.dtype = detail::compute_type(model_.compute_dtype(), backend_);
    reset_optimizer(adamw);
    zero_grad();
  }

  /// causal_lm::load(directory, options), then the policy; see there for the errors.
  static causal_lm_policy load(const std::filesystem::path& directory, const causal_lm_options& options = {},
                               const train::adamw_options& adamw = {}) {
    return causal_lm_policy(causal_lm::load(directory, options), adamw);
  }

  causal_lm_policy(causal_lm_policy&&) = default;
  causal_lm_policy& operator=(causal_lm_policy&&) = default;
  causal_lm_policy(const causal_lm_policy&) = delete;
  causal_lm_policy& operator=(const causal_lm_policy&) = delete;

  const backend_type& backend() const { return backend_; }
  std::int64_t vocab_size() const { return model_.config().vocab_size; }
  const causal_lm& model() const { return model_; }
  /// The model; after changing its weights directly, call weights_changed().
  causal_lm& model() { return model_; }
  void weights_changed() { inference_cache_.reset(); }
  std::int64_t optimizer_steps() const { return steps_; }
  const train::adamw_options& adamw() const { return adamw_; }

  /// [R * T, V] logits of every completion position (row r * T + i predicts completion[r][i]; zero
  /// rows at padding), detached; the graph stays for backward(). The lm_head runs on the
  /// completion positions only. On CUDA the logits are bf16 (the backend computes on them in fp32).
  tensor<backend_type> forward(const sequence_batch& batch) {
    auto packed = detail::pack(model_.config(), batch, backend_.device);
    graph_ = {};
    graph_.rows = packed.rows * packed.max_completion;
    graph_.pending = true;
    const auto vocab = vocab_size();
    const auto options = at::TensorOptions().dtype(model_.compute_dtype()).device(backend_.device);
    if (packed.outputs == 0) return wrap(backend_, at::zeros({graph_.rows, vocab}, options));
    const at::AutoGradMode grad(true);
    const auto w = cast_weights(model_.config(), model_.weights(), model_.compute_dtype());
    const auto hidden = model_.hidden_states(w, packed.ids, packed.positions);
    const auto selected = hidden.reshape({-1, hidden.size(2)}).index_select(0, packed.gather);
    graph_.logits = model_.logits(w, selected);
    graph_.dense = packed.outputs == graph_.rows;
    if (graph_.dense) return wrap(backend_, graph_.logits.detach());
    graph_.slots = packed.slots;
    auto full = at::zeros({graph_.rows, vocab}, options);
    full.index_copy_(0, packed.slots, graph_.logits.detach());
    return wrap(backend_, full);
  }

  /// Adds d sum(d_logits * logits) / d weights of the last forward() to the gradients.
  /// \throws error when no forward() precedes (each forward allows one backward); shape_error
  ///         naming "d_logits" when its shape is not that forward's [R * T, V].
  void backward(const tensor<backend_type>& d_logits) {
    GRPO_CHECK(graph_.pending, error, "backward: needs a preceding forward(batch) (one backward per forward)");
    const auto& d = d_logits.raw();
    GRPO_CHECK(d.dim() == 2 && d.size(0) == graph_.rows && d.size(1) == vocab_size(), shape_error,
               "d_logits: expected shape [", graph_.rows, ", ", vocab_size(), "], got ", d.sizes());
    graph_.pending = false;
    if (!graph_.logits.defined()) return;
    const auto grad = graph_.dense ? d : d.index_select(0, graph_.slots);
    graph_.logits.backward(grad.to(graph_.logits.scalar_type()));
    graph_ = {};
  }

  /// [R, T] log softmax(z / temperature)[completion token], zero at padding, without autograd.
  tensor<backend_type> logprobs(const sequence_batch& batch, double temperature) {
    return score(inference_weights(), batch, temperature);
  }

  /// Keeps a copy of the current master weights as the KL term's reference.
  void freeze_reference() {
    const at::NoGradGuard no_grad;
    causal_lm_weights copy = model_.weights();
    visit_weights(model_.config(), copy,
                  [](const std::string&, const std::vector<std::int64_t>&, at::Tensor& t) { t = t.detach().clone(); });
    reference_ = std::move(copy);
    reference_cache_.reset();
  }
  bool has_reference() const { return reference_.has_value(); }

  /// logprobs() under the frozen reference. \throws error when freeze_reference() was never called.
  tensor<backend_type> reference_logprobs(const sequence_batch& batch, double temperature) {
    GRPO_CHECK(reference_.has_value(), error, "reference_logprobs: no frozen reference (call freeze_reference first)");
    if (!reference_cache_) reference_cache_ = compute_copy(*reference_);
    return score(*reference_cache_, batch, temperature);
  }

  /// group_size completions per prompt with a key/value cache (grpo::libtorch::generate).
  std::vector<sampled_completion> generate(std::span<const std::vector<token_id>> prompts,
                                           const sampling_options& options, std::uint64_t seed,
                                           std::int64_t group_size = 1) {
    return libtorch::generate(model_, inference_weights(), prompts, options, seed, group_size);
  }

  /// Zeroes every gradient (allocating it on first use, so gradients always exist).
  void zero_grad() {
    const at::NoGradGuard no_grad;
    for (auto& p : parameters_) {
      if (p.grad().defined())
        p.mutable_grad().zero_();
      else
        p.mutable_grad() = at::zeros_like(p);
    }
  }

  /// Sums every gradient over the communicator's ranks, in buckets of at most `bucket_bytes` (default 25 MiB, PyTorch
  /// DDP's bucket_cap_mb): the gradients of one device and dtype are flattened into one buffer per bucket in parameter
  /// order (the same on every rank), summed with one collective, and copied back; a gradient larger than a bucket is
  /// a bucket alone. Float buckets on a CUDA device go to comm.all_reduce_sum_device on LibTorch's current stream
  /// when comm.on_device() (NCCL: no copy to the host; needs LibTorch with CUDA, which defines GRPO_TORCH_CUDA for
  /// grpo::torch), every other bucket to comm.all_reduce_sum through host memory. One process: nothing to do.
  void all_reduce_gradients(train::communicator& comm, std::size_t bucket_bytes = std::size_t{25} << 20) {
    if (comm.world_size() <= 1) return;
    const at::NoGradGuard no_grad;
    const auto sum = [&comm](at::Tensor& flat) {
      const auto n = static_cast<std::size_t>(flat.numel());
#ifdef GRPO_TORCH_CUDA
      if (flat.is_cuda() && flat.scalar_type() == at::kFloat && comm.on_device()) {
        const auto stream = c10::cuda::getCurrentCUDAStream(flat.device().index());
        comm.all_reduce_sum_device(flat.data_ptr<float>(), n, stream.stream());
        return;
      }
#endif
      auto host = flat.is_cpu() ? flat : flat.to(at::kCPU);
      if (host.scalar_type() == at::kDouble)
        comm.all_reduce_sum(std::span<double>(host.data_ptr<double>(), n));
      else
        comm.all_reduce_sum(std::span<float>(host.data_ptr<float>(), n));
      if (!flat.is_cpu()) flat.copy_(host);
    };
    std::vector<at::Tensor> bucket;
    std::size_t bytes = 0;
    const auto flush = [&] {
      if (bucket.empty()) return;
      std::vector<at::Tensor> parts;
      for (const auto& grad : bucket) parts.push_back(grad.reshape({-1}));
      auto flat = at::cat(parts);
      sum(flat);
      std::int64_t offset = 0;
      for (auto& grad : bucket) {
        grad.copy_(flat.narrow(0, offset, grad.numel()).view_as(grad));
        offset += grad.numel();
      }
      bucket.clear();
      bytes = 0;
    };
    for (auto& p : parameters_) {
      const at::Tensor& grad = p.mutable_grad();
      const auto size = static_cast<std::size_t>(grad.numel()) * grad.element_size();
      if (!bucket.empty() && (grad.device() != bucket.front().device() ||
                              grad.scalar_type() != bucket.front().scalar_type() || bytes + size > bucket_bytes))
        flush();
      bucket.push_back(grad);
      bytes += size;
    }
    flush();
  }

  /// The global L2 norm of the gradients (in double) and, when above max_norm > 0, every gradient
  /// scaled by max_norm / (norm + 1e-6) (PyTorch's clip_grad_norm_, grpo::train::clip_grad_norm).
  /// \throws value_error naming "grads" when the norm is not finite.
  double clip_grad_norm(double max_norm) {
    const at::NoGradGuard no_grad;
    std::vector<at::Tensor> squares;
    for (const auto& p : parameters_) squares.push_back(p.grad().to(at::kDouble).square().sum());
    const double norm = std::sqrt(at::stack(squares).sum().item<double>());
    GRPO_CHECK(std::isfinite(norm), value_error, "grads: the global norm is ", norm, " (a NaN or Inf gradient)");
    if (max_norm > 0 && norm > max_norm) {
      const double scale = max_norm / (norm + 1e-6);
      for (auto& p : parameters_) {
        auto grad = p.mutable_grad();
        grad.copy_(grad.to(at::kDouble) * scale);
      }
    }
    return norm;
  }

  /// Fresh (zero) AdamW moments and step count with these settings.
  void reset_optimizer(const train::adamw_options& adamw) {
    train::validate(adamw);
    adamw_ = adamw;
    exp_avg_.clear();
    exp_avg_sq_.clear();
    for (const auto& p : parameters_) {
      exp_avg_.push_back(at::zeros_like(p, p.options().requires_grad(false)));
      exp_avg_sq_.push_back(at::zeros_like(p, p.options().requires_grad(false)));
    }
    steps_ = 0;
  }

  /// One AdamW update at learning rate lr (grpo::train::adamw::step's formulas, in double per
  /// element): m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g g, p = p (1 - lr wd) - lr m_hat /
  /// (sqrt(v_hat) + eps). \throws config_error naming "lr" unless finite and >= 0.
  void optimizer_step(double lr) {
    GRPO_CHECK(std::isfinite(lr) && lr >= 0, config_error, "lr: must be a finite value >= 0, got ", lr);
    const at::NoGradGuard no_grad;
    ++steps_;
    const double b1 = adamw_.adam_beta1, b2 = adamw_.adam_beta2;
    const double c1 = 1.0 - std::pow(b1, static_cast<double>(steps_));
    const double c2 = 1.0 - std::pow(b2, static_cast<double>(steps_));
    const double decay = 1.0 - lr * adamw_.weight_decay;
    for (std::size_t i = 0; i < parameters_.size(); ++i) {
      auto& p = parameters_[i];
      const auto g = p.grad().to(at::kDouble);
      const auto m = exp_avg_[i].to(at::kDouble) * b1 + g * (1.0 - b1);
      const auto v = exp_avg_sq_[i].to(at::kDouble) * b2 + (g * (1.0 - b2)) * g;
      exp_avg_[i].copy_(m);
      exp_avg_sq_[i].copy_(v);
      const auto update = (m / c1) / ((v / c2).sqrt() + adamw_.adam_epsilon);
      p.copy_(p.to(at::kDouble) * decay - update * lr);
    }
    inference_cache_.reset();
  }

  /// A Hugging Face model directory of the current weights (causal_lm::save_pretrained).
  void save_pretrained(const std::filesystem::path& directory) const { model_.save_pretrained(directory); }

  /// Writes what an exact resume needs into `directory`: weights.safetensors (master weights),
  /// exp_avg.safetensors and exp_avg_sq.safetensors (AdamW moments), reference.safetensors (when a
  /// reference is frozen), all under the Hugging Face tensor names, and policy_state.json (format,
  /// architecture, master dtype, optimizer steps, whether a reference exists).
  /// \throws io_error naming the path that cannot be written.
  void save_state(const std::filesystem::path& directory) const {
    std::error_code ec;
    std::filesystem::create_directories(directory, ec);
    GRPO_CHECK(!ec, io_error, directory.string(), ": cannot create the directory (", ec.message(), ")");
    const auto names = model_.named_parameters();
    const auto write = [&](const std::vector<at::Tensor>& tensors, const char* file) {
      safetensors::writer writer;
      for (std::size_t i = 0; i < names.size(); ++i) causal_lm::add_tensor(writer, names[i].first, tensors[i]);
      writer.write(directory / file);
    };
    write(parameters_, "weights.safetensors");
    write(exp_avg_, "exp_avg.safetensors");
    write(exp_avg_sq_, "exp_avg_sq.safetensors");
    if (reference_) write(reference_tensors(*reference_), "reference.safetensors");
    std::ostringstream json;
    json << "{\n  \"format\": \"" << state_format << "\",\n  \"version\": 1,\n  \"architecture\": \""
         << hf::architecture_name(model_.config().architecture) << "\",\n  \"master_dtype\": \""
         << causal_lm::dtype_name(model_.options().master_dtype) << "\",\n  \"optimizer_steps\": " << steps_
         << ",\n  \"has_reference\": " << (reference_ ? "true" : "false") << "\n}\n";
    const std::string text = json.str();
    safetensors::write_file_atomically(
        directory / "policy_state.json",
        std::span<const std::byte>(reinterpret_cast<const std::byte*>(text.data()), text.size()));
  }

  /// Restores what save_state wrote (into a policy of the same model), with fresh AdamW settings
  /// `adamw`; gradients are zeroed.
  /// \throws io_error naming the file and field or tensor for a missing file, another format, a
  ///         missing or unexpected tensor, or a tensor whose shape or dtype differs from the
  ///         model's; config_error naming the adamw_options field.
  void load_state(const std::filesystem::path& directory, const train::adamw_options& adamw) {
    train::validate(adamw);
    const auto state_path = directory / "policy_state.json";
    const std::string source = state_path.string();
    const auto root = hf::detail::parse_object(hf::detail::read_text(state_path), source);
    const hf::detail::fields f(root, source);
    const auto expect = [&](const char* field, const std::string& want) {
      const auto got = f.string(field);
      GRPO_CHECK(got && *got == want, io_error, source, ": field \"", field, "\": expected \"", want, "\", got ",
                 got ? "\"" + *got + "\"" : std::string("nothing"));
    };
    expect("format", state_format);
    GRPO_CHECK(f.optional_integer("version") == 1, io_error, source, ": field \"version\": expected 1");
    expect("architecture", std::string(hf::architecture_name(model_.config().architecture)));
    expect("master_dtype", causal_lm::dtype_name(model_.options().master_dtype));
    const auto steps = f.integer("optimizer_steps");
    const bool reference = f.boolean("has_reference", false);

    const at::NoGradGuard no_grad;
    read_into(directory / "weights.safetensors", parameters_);
    read_into(directory / "exp_avg.safetensors", exp_avg_);
    read_into(directory / "exp_avg_sq.safetensors", exp_avg_sq_);
    if (reference) {
      freeze_reference();
      auto tensors = reference_tensors(*reference_);
      read_into(directory / "reference.safetensors", tensors);
    } else {
      reference_.reset();
      reference_cache_.reset();
    }
    adamw_ = adamw;
    steps_ = steps;
    graph_ = {};
    inference_cache_.reset();
    zero_grad();
  }

  std::string describe() const {
    return model_.describe() + ", AdamW step " + std::to_string(steps_) +
           (reference_ ? ", reference frozen" : ", no reference");
  }

 private:
  static constexpr const char* state_format = "grpo.causal_lm_policy_state";

  struct pending_graph {
    at::Tensor logits, slots;  // [N, V] with autograd history; their rows in [R * T]
    std::int64_t rows = 0;     // R * T
    bool dense = false;        // N == R * T: no padding rows
    bool pending = false;
  };

  causal_lm model_;
  backend_type backend_;
  std::vector<at::Tensor> parameters_;  // the master weights, in visit_weights order
  train::adamw_options adamw_;
  std::vector<at::Tensor> exp_avg_, exp_avg_sq_;
  std::int64_t steps_ = 0;
  std::optional<causal_lm_weights> reference_;
  std::optional<causal_lm_weights> inference_cache_, reference_cache_;  // compute-dtype copies (when it differs)
  pending_graph graph_;

  /// `w` in the compute dtype, detached (the same tensors when the dtype already matches).
  causal_lm_weights compute_copy(const causal_lm_weights& w) const {
    const at::NoGradGuard no_grad;
    return cast_weights(model_.config(), w, model_.compute_dtype());
  }

  const causal_lm_weights& inference_weights() {
    if (!inference_cache_) inference_cache_ = compute_copy(model_.weights());
    return *inference_cache_;
  }

  std::vector<at::Tensor> reference_tensors(const causal_lm_weights& w) const {
    std::vector<at::Tensor> out;
    auto copy = w;
    visit_weights(model_.config(), copy,
                  [&](const std::string&, const std::vector<std::int64_t>&, at::Tensor& t) { out.push_back(t); });
    return out;
  }

  tensor<backend_type> score(const causal_lm_weights& w, const sequence_batch& batch, double temperature) const {
    detail::expect_temperature(temperature);
    const at::NoGradGuard no_grad;
    const auto packed = detail::pack(model_.config(), batch, backend_.device);
    auto result = at::zeros({packed.rows * packed.max_completion},
                            at::TensorOptions().dtype(backend_.dtype).device(backend_.device));
    if (packed.outputs > 0) {
      const auto hidden = model_.hidden_states(w, packed.ids, packed.positions);
      const auto selected = hidden.reshape({-1, hidden.size(2)}).index_select(0, packed.gather);
      // The lm_head and log-softmax a chunk of positions at a time: O(chunk * V) memory.
      const std::int64_t chunk = std::max<std::int64_t>(1, (std::int64_t{1} << 24) / vocab_size());
      std::vector<at::Tensor> parts;
      for (std::int64_t s = 0; s < packed.outputs; s += chunk) {
        const auto n = std::min(chunk, packed.outputs - s);
        const auto logits = model_.logits(w, selected.narrow(0, s, n));
        parts.push_back(grpo::token_logprobs(wrap(backend_, logits),
                                             wrap_index(backend_, packed.targets.narrow(0, s, n)), temperature)
                            .logprobs.raw());
      }
      result.index_copy_(0, packed.slots, at::cat(parts).to(backend_.dtype));
    }
    return wrap(backend_, result.view({packed.rows, packed.max_completion}));
  }

  /// Copies the tensors of a state file into `targets` (in visit_weights order), checking names,
  /// shapes and dtypes.
  void read_into(const std::filesystem::path& path, std::vector<at::Tensor>& targets) const {
    const auto file = safetensors::file::read(path);
    const auto names = model_.named_parameters();
    const auto want = model_.options().master_dtype == at::kDouble ? safetensors::dtype::f64 : safetensors::dtype::f32;
    for (std::size_t i = 0; i < names.size(); ++i) {
      const auto& name = names[i].first;
      GRPO_CHECK(file.contains(name), io_error, path.string(), ": tensor \"", name, "\" is missing");
      const auto view = file.at(name);
      GRPO_CHECK(view.type == want && view.shape == targets[i].sizes().vec(), io_error, path.string(), ": tensor \"",
                 name, "\": expected ", safetensors::name_of(want), " ",
                 safetensors::to_string(targets[i].sizes().vec()), ", got ", safetensors::name_of(view.type), " ",
                 safetensors::to_string(view.shape));
      targets[i].copy_(causal_lm::from_view(view));
    }
    GRPO_CHECK(file.names().size() == names.size(), io_error, path.string(), ": holds ", file.names().size(),
               " tensors, the model has ", names.size());
  }
};

static_assert(trainable_policy<causal_lm_policy>);

}  // namespace GRPO_LIBTORCH_NAMESPACE
}  // namespace grpo::libtorch
