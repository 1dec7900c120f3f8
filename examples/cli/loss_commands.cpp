// SPDX-License-Identifier: Apache-2.0
// grpo loss / grpo example: the GRPO/DAPO/Dr. GRPO policy loss, its gradient and diagnostics for a
// batch stored as safetensors (written by numpy, PyTorch, ...), so grpo's numbers can be checked
// against another framework's; `example` runs it on a seeded synthetic batch. The settings are
// resolved by grpo::resolve, the same translator the trainer uses.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "commands.hpp"
#include "grpo/advantages.hpp"
#include "grpo/aggregation.hpp"
#include "grpo/config.hpp"
#include "grpo/error.hpp"
#include "grpo/loss_settings.hpp"
#include "grpo/policy_loss.hpp"
#include "grpo/reference_backend.hpp"
#include "grpo/safetensors.hpp"
#include "grpo/tensor.hpp"
#include "grpo/train/limits.hpp"
#include "grpo/validate.hpp"
#include "grpo/version.hpp"

namespace grpo::cli {

namespace {

namespace st = grpo::safetensors;

using resolved_settings = grpo::resolved_loss_settings;

/// The settings resolved for a batch of T tokens per row, with the flags' names in messages.
resolved_settings resolve(const loss_settings& s, std::int64_t tokens) { return grpo::resolve(s, tokens, "--"); }

template <class T>
using backend = grpo::reference_backend<T>;

template <class T>
using tensor = grpo::tensor<backend<T>>;

/// The input tensors of one batch; only logprobs is required.
template <class T>
struct batch {
  tensor<T> logprobs;
  std::optional<tensor<T>> old_logprobs{};
  std::optional<tensor<T>> ref_logprobs{};
  std::optional<tensor<T>> rollout_logprobs{};
  std::optional<tensor<T>> rewards{};
  std::optional<tensor<T>> advantages{};
  std::optional<tensor<T>> mask{};
  std::optional<tensor<T>> entropy{};
};

template <class T>
struct loss_outcome {
  resolved_settings settings;
  tensor<T> advantages;
  std::optional<grpo::advantage_result<backend<T>>> reward_statistics;  ///< when advantages came from rewards
  grpo::loss_denominators denominators;
  grpo::policy_loss_result<backend<T>> result;
};

/// The shortest decimal that reads back as the same double.
std::string format_number(double x) {
  char buffer[64];
  const auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, x);
  return ec == std::errc() ? std::string(buffer, end) : std::string("?");
}

/// Every element of a log-prob tensor <= 0 (a probability is at most 1; log_softmax never rounds
/// above 0, since log of a sum >= 1 is >= 0). NaN is left to the library's finiteness check.
template <class T>
void expect_log_probabilities(const tensor<T>& t, std::string_view name) {
  const auto values = t.to_host();
  const std::int64_t columns = t.shape().dims[1];
  for (std::size_t i = 0; i < values.size(); ++i)
    GRPO_CHECK(!(values[i] > 0), grpo::value_error, name, ": element ", i, " (row ",
               static_cast<std::int64_t>(i) / columns, ", token ", static_cast<std::int64_t>(i) % columns, ") is ",
               format_number(values[i]), "; a log-probability must be <= 0");
}

/// Rewards: NaN marks an unscorable completion (left out of its group's statistics), Inf is
/// refused, and so are rewards whose group or batch mean or variance overflows a double (|r|
/// near 1e308), which would otherwise turn every advantage of the group into 0 without a word.
template <class T>
void expect_reward_moments(const tensor<T>& rewards, std::int64_t group) {
  const auto r = rewards.to_host();
  for (std::size_t i = 0; i < r.size(); ++i)
    GRPO_CHECK(!std::isinf(r[i]), grpo::value_error, "rewards: element ", i, " is ", format_number(r[i]),
               " (NaN marks an unscorable completion; Inf is not allowed)");
  const auto check = [&](std::size_t first, std::size_t count, const std::string& what) {
    double sum = 0, n = 0, largest = 0;
    for (std::size_t i = first; i < first + count; ++i)
      if (!std::isnan(r[i])) {
        sum += r[i];
        n += 1;
        largest = std::max(largest, std::abs(r[i]));
      }
    if (n == 0) return;
    const double mean = sum / n;
    double squares = 0;
    for (std::size_t i = first; i < first + count; ++i)
      if (!std::isnan(r[i])) squares += (r[i] - mean) * (r[i] - mean);
    GRPO_CHECK(std::isfinite(mean) && std::isfinite(squares), grpo::value_error, "rewards: the mean or standard "
               "deviation of ", what, " overflows a double (rewards up to ", format_number(largest),
               " in magnitude); rescale the rewards");
  };
  const auto g = static_cast<std::size_t>(group);
  for (std::size_t first = 0; first < r.size(); first += g)
    check(first, g, "group " + std::to_string(first / g) + " (rows " + std::to_string(first) + " to " +
                        std::to_string(first + g - 1) + ")");
  check(0, r.size(), "the batch");
}

/// Advantages (from the rewards with GRPO, or as given) and the policy loss, with the denominators
/// of the whole batch's final mask.
template <class T>
loss_outcome<T> compute_loss(const batch<T>& in, const loss_settings& s) {
  using grpo::detail::expect_shape;
  grpo::detail::expect_rank(in.logprobs, 2, "logprobs");
  const grpo::shape bt = in.logprobs.shape();
  GRPO_CHECK(bt.dims[0] >= 1, grpo::shape_error, "logprobs: shape ", grpo::to_string(bt),
             " has no rows (B = 0); a batch needs at least one completion");
  GRPO_CHECK(bt.dims[1] >= 1, grpo::shape_error, "logprobs: shape ", grpo::to_string(bt),
             " has no tokens (T = 0); a batch needs at least one token per row");
  for (const auto& [t, name] :
       {std::pair{&in.old_logprobs, "old_logprobs"}, std::pair{&in.ref_logprobs, "ref_logprobs"},
        std::pair{&in.rollout_logprobs, "rollout_logprobs"}, std::pair{&in.mask, "mask"},
        std::pair{&in.entropy, "entropy"}})
    if (*t) expect_shape(**t, bt, name);
  expect_log_probabilities(in.logprobs, "logprobs");
  for (const auto& [t, name] : {std::pair{&in.old_logprobs, "old_logprobs"}, std::pair{&in.ref_logprobs, "ref_logprobs"},
                                std::pair{&in.rollout_logprobs, "rollout_logprobs"}})
    if (*t) expect_log_probabilities(**t, name);
  GRPO_CHECK(in.rewards.has_value() != in.advantages.has_value(), grpo::config_error,
             "rewards, advantages: the batch must hold exactly one of them, it holds ",
             in.rewards ? "both" : "neither");

  const resolved_settings r = resolve(s, bt.dims[1]);
  const auto mask = in.mask ? *in.mask : grpo::full(in.logprobs.backend(), bt, 1.0);
  std::optional<grpo::advantage_result<backend<T>>> statistics;
  if (in.rewards) {
    expect_shape(*in.rewards, grpo::shape::vector(bt.dims[0]), "rewards");
    GRPO_CHECK(s.num_generations >= 1 && bt.dims[0] % s.num_generations == 0, grpo::config_error,
               "--num-generations: ", s.num_generations, " does not divide the batch of ", bt.dims[0], " rows");
    expect_reward_moments(*in.rewards, s.num_generations);
    statistics = grpo::grpo_advantages(*in.rewards, grpo::group_layout::consecutive(s.num_generations), r.advantage);
  }
  const tensor<T> advantages = statistics ? statistics->advantages : *in.advantages;
  const auto denominators = grpo::denominators_from_mask(mask, r.constant);
  grpo::policy_loss_inputs<backend<T>> inputs{in.logprobs, advantages, mask};
  inputs.old_logprobs = in.old_logprobs;
  inputs.ref_logprobs = in.ref_logprobs;
  inputs.rollout_logprobs = in.rollout_logprobs;
  inputs.entropy = in.entropy;
  auto result = grpo::policy_loss(inputs, r.policy, denominators);
  // Finite inputs can still overflow the surrogate (advantages near 1e308 times a ratio); a
  // non-finite loss or gradient is refused rather than written.
  const auto all_finite = [](const tensor<T>& t) {
    const auto values = t.to_host();
    return std::all_of(values.begin(), values.end(), [](double v) { return std::isfinite(v); });
  };
  const auto largest = [](const tensor<T>& t) {
    double m = 0;
    for (const double v : t.to_host()) m = std::max(m, std::abs(v));
    return m;
  };
  const double loss_value = result.loss.item();
  GRPO_CHECK(std::isfinite(loss_value) && all_finite(result.grad_logprobs), grpo::value_error,
             statistics ? "rewards" : "advantages", ": the loss overflows a double (loss ", format_number(loss_value),
             ", |advantages| up to ", format_number(largest(advantages)), "); rescale the ",
             statistics ? "rewards" : "advantages");
  return {r, advantages, std::move(statistics), denominators, std::move(result)};
}

template <class T>
constexpr st::dtype dtype_of() {
  return std::is_same_v<T, float> ? st::dtype::f32 : st::dtype::f64;
}

template <class T>
void add_tensor(st::writer& out, const std::string& name, const tensor<T>& t) {
  const grpo::shape s = t.shape();
  std::vector<std::int64_t> dims;
  for (int d = 0; d < s.rank; ++d) dims.push_back(s.dims[static_cast<std::size_t>(d)]);
  out.add(name, t.to_host(), std::move(dims), dtype_of<T>());
}

template <class T>
void add_scalar(st::writer& out, const std::string& name, double value) {
  out.add(name, std::vector<double>{value}, {}, dtype_of<T>());
}

/// Adds the outcome's tensors and scalars under `prefix`. The metrics only meaningful with an input
/// (kl_mean with ref_logprobs, entropy_mean with entropy, the IS fractions with rollout_logprobs)
/// are written only then.
template <class T>
void add_outcome(st::writer& out, const std::string& prefix, const loss_outcome<T>& o, const batch<T>& in) {
  const auto& m = o.result.metrics;
  add_tensor(out, prefix + "loss", o.result.loss);
  add_tensor(out, prefix + "grad_logprobs", o.result.grad_logprobs);
  add_tensor(out, prefix + "per_token_loss", o.result.per_token_loss);
  add_tensor(out, prefix + "advantages", o.advantages);
  if (o.result.grad_entropy) add_tensor(out, prefix + "grad_entropy", *o.result.grad_entropy);
  add_scalar<T>(out, prefix + "pg_loss", m.pg_loss);
  add_scalar<T>(out, prefix + "clip_fraction_low", m.clip_fraction_low);
  add_scalar<T>(out, prefix + "clip_fraction_high", m.clip_fraction_high);
  add_scalar<T>(out, prefix + "clip_fraction_dual", m.clip_fraction_dual);
  add_scalar<T>(out, prefix + "ratio_mean", m.ratio_mean);
  add_scalar<T>(out, prefix + "is_weight_mean", m.is_weight_mean);
  if (in.ref_logprobs) add_scalar<T>(out, prefix + "kl_mean", m.kl_mean);
  if (in.entropy) add_scalar<T>(out, prefix + "entropy_mean", m.entropy_mean);
  if (in.rollout_logprobs) {
    add_scalar<T>(out, prefix + "is_masked_fraction", m.is_masked_fraction);
    add_scalar<T>(out, prefix + "is_truncated_fraction", m.is_truncated_fraction);
  }
  if (o.reward_statistics) {
    add_scalar<T>(out, prefix + "reward_mean", o.reward_statistics->reward_mean);
    add_scalar<T>(out, prefix + "reward_std", o.reward_statistics->reward_std);
    add_scalar<T>(out, prefix + "zero_std_fraction", o.reward_statistics->zero_std_fraction);
  }
}

/// The effective options, as metadata strings.
template <class T>
std::map<std::string, std::string> describe(const loss_outcome<T>& o, const batch<T>& in, const loss_settings& s) {
  const auto& p = o.settings.policy;
  std::map<std::string, std::string> d{
      {"grpo_version", grpo::version_string},
      {"dtype", std::string(st::name_of(dtype_of<T>()))},
      {"loss_type", std::string(grpo::name_of(o.settings.type))},
      {"loss_agg_mode", std::string(grpo::name_of(p.aggregation))},
      {"max_completion_length", std::to_string(o.settings.max_completion_length)},
      {"denominator_tokens", format_number(o.denominators.tokens)},
      {"denominator_sequences", format_number(o.denominators.sequences)},
      {"denominator_constant", format_number(o.denominators.constant)},
      {"epsilon", format_number(p.epsilon_low)},
      {"epsilon_high", format_number(p.epsilon_high)},
      {"delta", p.delta ? format_number(*p.delta) : "none"},
      {"dual_clip", p.dual_clip ? format_number(*p.dual_clip) : "none"},
      {"beta", format_number(p.beta)},
      {"kl_estimator", std::string(grpo::name_of(p.kl))},
      {"importance_sampling_level", std::string(grpo::name_of(p.level))},
      {"log_ratio_bound", format_number(p.log_ratio_bound)},
      {"entropy_coef", format_number(p.entropy_coef)},
      {"advantages_from", o.reward_statistics ? "rewards" : "input"},
      {"old_logprobs", in.old_logprobs ? "input" : "logprobs (ratio 1)"},
      {"mask", in.mask ? "input" : "all ones"},
  };
  if (o.reward_statistics) {
    d["num_generations"] = std::to_string(s.num_generations);
    d["scale_rewards"] = std::string(grpo::name_of(o.settings.advantage.scale));
    d["adv_epsilon"] = format_number(o.settings.advantage.epsilon);
  }
  if (in.rollout_logprobs) {
    d["is_mode"] = std::string(grpo::name_of(p.is_mode));
    d["is_level"] = std::string(grpo::name_of(p.is_level));
    d["is_cap"] = format_number(p.is_cap);
  }
  return d;
}

// ---------------------------------------------------------------------------------------------
// grpo loss

const std::vector<std::string> input_names{"logprobs", "old_logprobs", "ref_logprobs", "rollout_logprobs",
                                           "rewards",  "advantages",   "mask",         "entropy"};

template <class T>
tensor<T> load(const st::file& f, const std::string& name) {
  const auto view = f.at(name);
  // A mask is 0/1, which BOOL holds exactly: accepted beside the batch's floating-point dtype.
  const bool bool_mask = name == "mask" && view.type == st::dtype::boolean;
  GRPO_CHECK(view.type == dtype_of<T>() || bool_mask, grpo::config_error, name, ": dtype ", st::name_of(view.type),
             " differs from logprobs' ", st::name_of(dtype_of<T>()), " (all inputs share one dtype, F32 or F64",
             name == "mask" ? "; a mask may also be BOOL" : "", ")");
  GRPO_CHECK(view.shape.size() <= 2, grpo::shape_error, name, ": expected a rank-1 or rank-2 tensor, got shape ",
             st::to_string(view.shape));
  // Checked before anything is sized by the shape: a zero extent makes a tensor of no bytes, so
  // [2^62, 0] reads fine but would size per-row buffers by its 2^62 rows.
  std::int64_t elements = 1;
  for (const auto d : view.shape) {
    GRPO_CHECK(d <= grpo::train::limits::loss_elements, grpo::shape_error, name, ": shape ", st::to_string(view.shape),
               " has an extent of ", d, ", above the limit of ", grpo::train::limits::loss_elements,
               " (B * T of a batch; grpo/train/limits.hpp)");
    elements *= d;
  }
  GRPO_CHECK(elements <= grpo::train::limits::loss_elements, grpo::shape_error, name, ": shape ",
             st::to_string(view.shape), " has ", elements, " elements, above the limit of ",
             grpo::train::limits::loss_elements, " (B * T of a batch; grpo/train/limits.hpp)");
  grpo::shape s = grpo::shape::scalar();
  if (view.shape.size() == 1) s = grpo::shape::vector(view.shape[0]);
  if (view.shape.size() == 2) s = grpo::shape::matrix(view.shape[0], view.shape[1]);
  return grpo::make_tensor(backend<T>{}, st::to_doubles(view), s);
}

template <class T>
batch<T> load_batch(const st::file& f) {
  const auto optional = [&](const std::string& name) -> std::optional<tensor<T>> {
    if (!f.contains(name)) return std::nullopt;
    return load<T>(f, name);
  };
  return {load<T>(f, "logprobs"), optional("old_logprobs"), optional("ref_logprobs"), optional("rollout_logprobs"),
          optional("rewards"),    optional("advantages"),   optional("mask"),         optional("entropy")};
}

template <class T>
int run_loss(const st::file& f, const loss_settings& s, const std::string& output) {
  const batch<T> in = load_batch<T>(f);
  const auto o = compute_loss(in, s);
  st::writer out;
  add_outcome(out, "", o, in);
  for (const auto& [key, value] : describe(o, in, s)) out.add_metadata(key, value);
  out.add_metadata("input", f.source());
  out.write(output);
  const auto& m = o.result.metrics;
  const grpo::shape bt = in.logprobs.shape();
  std::cout << "loss " << format_number(o.result.loss.item()) << " (" << grpo::name_of(o.settings.type) << ", "
            << grpo::name_of(o.settings.policy.aggregation) << ", " << st::name_of(dtype_of<T>())
            << ", B=" << bt.dims[0] << " T=" << bt.dims[1] << ", " << format_number(o.denominators.tokens) << " tokens)"
            << "  clip low/high/dual " << format_number(m.clip_fraction_low) << "/"
            << format_number(m.clip_fraction_high) << "/" << format_number(m.clip_fraction_dual) << "  ratio "
            << format_number(m.ratio_mean);
  if (in.ref_logprobs) std::cout << "  kl " << format_number(m.kl_mean);
  if (in.rollout_logprobs) std::cout << "  is_weight " << format_number(m.is_weight_mean);
  std::cout << "  -> " << output << '\n';
  return 0;
}

// ---------------------------------------------------------------------------------------------
// grpo example

/// Seeded uniform doubles in [lo, hi), the same on every platform (std::uniform_real_distribution's
/// algorithm is left to the implementation; mt19937_64's output is not).
class uniform_source {
 public:
  explicit uniform_source(std::uint64_t seed) : engine_(seed) {}
  double operator()(double lo, double hi) {
    return lo + (hi - lo) * static_cast<double>(engine_() >> 11) * 0x1p-53;
  }

 private:
  std::mt19937_64 engine_;
};

/// 4 prompts x G completions of up to T tokens. Each prompt asks for a target length; a completion
/// scores 1 when its length is within 1 token of it (the toy rule), else 0. The trainer's
/// log-probs drift from the sampler's by up to +-0.35 (one optimizer step), so some ratios leave
/// the clip range, and the reference model differs from the sampler by up to +-0.2.
batch<double> example_batch(std::uint64_t seed, std::int64_t prompts, std::int64_t group, std::int64_t tokens,
                            std::vector<std::int64_t>& lengths) {
  uniform_source u(seed);
  const std::int64_t rows = prompts * group;
  std::vector<double> logp(static_cast<std::size_t>(rows * tokens)), old(logp.size()), ref(logp.size()),
      mask(logp.size()), rewards(static_cast<std::size_t>(rows));
  lengths.assign(static_cast<std::size_t>(rows), 0);
  for (std::int64_t p = 0; p < prompts; ++p) {
    const auto target = static_cast<std::int64_t>(u(3.0, static_cast<double>(tokens) + 1.0));
    for (std::int64_t j = 0; j < group; ++j) {
      const std::int64_t i = p * group + j;
      const auto length = static_cast<std::int64_t>(u(2.0, static_cast<double>(tokens) + 1.0));
      lengths[static_cast<std::size_t>(i)] = length;
      rewards[static_cast<std::size_t>(i)] = std::abs(length - target) <= 1 ? 1.0 : 0.0;
      for (std::int64_t t = 0; t < tokens; ++t) {
        const auto k = static_cast<std::size_t>(i * tokens + t);
        if (t >= length) continue;  // padding: mask 0, log-probs 0
        mask[k] = 1.0;
        old[k] = u(-2.5, -0.4);  // below -0.35, so that every log-prob stays below 0
        logp[k] = old[k] + u(-0.35, 0.35);
        ref[k] = old[k] + u(-0.2, 0.2);
      }
    }
  }
  const backend<double> b;
  const auto bt = grpo::shape::matrix(rows, tokens);
  return {grpo::make_tensor(b, logp, bt), grpo::make_tensor(b, old, bt),   grpo::make_tensor(b, ref, bt),
          std::nullopt,                   grpo::make_tensor(b, rewards, grpo::shape::vector(rows)),
          std::nullopt,                   grpo::make_tensor(b, mask, bt), std::nullopt};
}

}  // namespace

int loss_command(const std::string& input, const std::string& output, const loss_settings& s) {
  std::error_code ec;
  GRPO_CHECK(!std::filesystem::equivalent(input, output, ec), grpo::io_error, "--output: ", output,
             " is the input file ", input, "; writing the result would replace the batch");
  const auto f = st::file::read(input);
  std::string unknown;
  for (const auto& name : f.names())
    if (std::find(input_names.begin(), input_names.end(), name) == input_names.end())
      unknown += (unknown.empty() ? "'" : ", '") + name + "'";
  if (!unknown.empty()) {
    std::string expected;
    for (const auto& name : input_names) expected += (expected.empty() ? "" : ", ") + name;
    grpo::detail::fail<grpo::config_error>(input, ": unknown tensors ", unknown, " (expected: ", expected, ")");
  }
  const auto type = f.at("logprobs").type;
  if (type == st::dtype::f32) return run_loss<float>(f, s, output);
  GRPO_CHECK(type == st::dtype::f64, grpo::config_error, "logprobs: dtype ", st::name_of(type),
             " is not supported (expected F32 or F64)");
  return run_loss<double>(f, s, output);
}

int example_command(const std::string& directory, std::uint64_t seed) {
  constexpr std::int64_t prompts = 4, group = 4, tokens = 12;
  std::error_code ec;
  std::filesystem::create_directories(directory, ec);
  GRPO_CHECK(!ec, grpo::io_error, directory, ": cannot create the directory (", ec.message(), ")");
  const auto dir = std::filesystem::path(directory);

  std::vector<std::int64_t> lengths;
  const batch<double> in = example_batch(seed, prompts, group, tokens, lengths);
  st::writer batch_file;
  add_tensor(batch_file, "logprobs", in.logprobs);
  add_tensor(batch_file, "old_logprobs", *in.old_logprobs);
  add_tensor(batch_file, "ref_logprobs", *in.ref_logprobs);
  add_tensor(batch_file, "rewards", *in.rewards);
  add_tensor(batch_file, "mask", *in.mask);
  batch_file.add_metadata("grpo_version", grpo::version_string);
  batch_file.add_metadata("description", "grpo example: synthetic GRPO batch, 4 prompts x 4 completions x 12 tokens");
  batch_file.add_metadata("seed", std::to_string(seed));
  const auto batch_path = dir / "batch.safetensors";
  batch_file.write(batch_path);

  const auto rewards = in.rewards->to_host();
  const auto statistics = grpo::grpo_advantages(*in.rewards, grpo::group_layout::consecutive(group));
  const auto advantages = statistics.advantages.to_host();
  std::cout << "grpo " << grpo::version_string << " example: " << prompts << " prompts x " << group
            << " completions x up to " << tokens << " tokens (seed " << seed << "); reward 1 when a completion's "
            << "length is within 1 of its prompt's target\n";
  for (std::int64_t p = 0; p < prompts; ++p) {
    const auto row = [&](std::int64_t j) { return static_cast<std::size_t>(p * group + j); };
    std::cout << "  prompt " << p << ": lengths";
    for (std::int64_t j = 0; j < group; ++j) std::cout << ' ' << std::setw(2) << lengths[row(j)];
    std::cout << "   rewards";
    for (std::int64_t j = 0; j < group; ++j) std::cout << ' ' << rewards[row(j)];
    std::cout << "   advantages" << std::fixed << std::setprecision(3);
    for (std::int64_t j = 0; j < group; ++j) std::cout << ' ' << std::setw(6) << advantages[row(j)];
    std::cout << std::defaultfloat << '\n';
  }
  std::cout << "  reward mean " << format_number(statistics.reward_mean) << ", groups without signal (zero std) "
            << format_number(statistics.zero_std_fraction) << '\n';

  st::writer results;
  std::cout << "\n  " << std::left << std::setw(10) << "loss_type" << std::setw(6) << "beta" << std::setw(24)
            << "aggregation" << std::right << std::setw(12) << "loss" << std::setw(12) << "kl_mean" << std::setw(10)
            << "clip_low" << std::setw(10) << "clip_high" << std::setw(12) << "|grad|" << '\n';
  bool first = true;
  for (const std::string type : {"grpo", "bnpo", "dr_grpo", "dapo"}) {
    for (const double beta : {0.0, 0.04}) {
      loss_settings s;
      s.loss_type = type;
      s.num_generations = group;
      s.beta = beta;
      const auto o = compute_loss(in, s);
      const std::string prefix = type + "/beta_" + format_number(beta) + "/";
      add_outcome(results, prefix, o, in);
      if (first) {
        for (const auto& [key, value] : describe(o, in, s))
          if (key != "loss_type" && key != "loss_agg_mode" && key != "beta" && key != "denominator_constant" &&
              key != "max_completion_length")
            results.add_metadata(key, value);
        add_tensor(results, "advantages", o.advantages);
        first = false;
      }
      const auto& m = o.result.metrics;
      const double grad_norm = std::sqrt(grpo::sum(grpo::square(o.result.grad_logprobs)).item());
      std::cout << "  " << std::left << std::setw(10) << type << std::setw(6) << format_number(beta) << std::setw(24)
                << grpo::name_of(o.settings.policy.aggregation) << std::right << std::fixed << std::setprecision(6)
                << std::setw(12) << o.result.loss.item() << std::setw(12) << m.kl_mean << std::setprecision(4)
                << std::setw(10) << m.clip_fraction_low << std::setw(10) << m.clip_fraction_high << std::setprecision(6)
                << std::setw(12) << grad_norm << '\n'
                << std::defaultfloat;
    }
  }
  results.add_metadata("variants",
                       "<loss_type>/beta_<beta>/<name> for loss_type in grpo, bnpo, dr_grpo, dapo and beta in 0, 0.04");
  const auto result_path = dir / "result.safetensors";
  results.write(result_path);
  std::cout << "\nwrote " << batch_path.string() << " and " << result_path.string() << "\n"
            << "reproduce a row: grpo loss --input " << batch_path.string()
            << " --output row.safetensors --num-generations 4 --loss-type grpo --beta 0.04\n";
  return 0;
}

}  // namespace grpo::cli
