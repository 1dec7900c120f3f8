// SPDX-License-Identifier: Apache-2.0
// grpo/kl_controller.hpp: the coefficient beta of a KL penalty (in the reward or in the loss), held
// fixed or adapted towards a target KL (Ziegler et al. 2019, "Fine-tuning language models from
// human preferences", Eq. 2): e = clip(KL / target - 1, -0.2, 0.2), beta <- beta (1 + e n / horizon).
// Same update as veRL's and OpenRLHF's AdaptiveKLController, except that the factor is floored at 0
// so that n_steps > 5 horizon cannot turn beta negative (which would reward divergence).
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>

#include "grpo/error.hpp"
#include "grpo/validate.hpp"

namespace grpo {

/// concept kl_controller<C>: c.value() is the current coefficient; c.update(kl, n_steps) takes the
/// KL measured on the last batch and the number of samples (or steps) it covered.
template <class C>
concept kl_controller = requires(C& c, const C& cc, double kl, std::int64_t n) {
  { cc.value() } -> std::same_as<double>;
  { c.update(kl, n) } -> std::same_as<void>;
};

namespace detail {
inline void validate_kl_update(double current_kl, std::int64_t n_steps) {
  GRPO_CHECK(std::isfinite(current_kl), value_error, "current_kl: must be finite, got ", current_kl);
  GRPO_CHECK(n_steps >= 0, config_error, "n_steps: must be >= 0, got ", n_steps);
}
}  // namespace detail

/// A constant coefficient. update() validates its arguments and changes nothing.
class fixed_kl_controller {
 public:
  /// \param coef  finite, >= 0 (throws config_error "coef" otherwise).
  explicit fixed_kl_controller(double coef) : coef_(coef) { detail::expect_non_negative(coef, "coef"); }

  double value() const { return coef_; }

  /// Throws value_error if current_kl is not finite, config_error if n_steps < 0.
  void update(double current_kl, std::int64_t n_steps) { detail::validate_kl_update(current_kl, n_steps); }

 private:
  double coef_;
};

/// The adaptive controller of Ziegler et al. 2019, Eq. 2 (veRL `AdaptiveKLController`, OpenRLHF).
class adaptive_kl_controller {
 public:
  /// \param init_coef  initial beta, finite and >= 0.
  /// \param target     target KL, finite and > 0.
  /// \param horizon    samples over which beta may change by up to 20% (veRL default 10000), > 0.
  /// Throws config_error naming the argument.
  adaptive_kl_controller(double init_coef, double target, double horizon)
      : coef_(init_coef), target_(target), horizon_(horizon) {
    detail::expect_non_negative(init_coef, "init_coef");
    detail::expect_positive(target, "target");
    detail::expect_positive(horizon, "horizon");
  }

  double value() const { return coef_; }
  double target() const { return target_; }
  double horizon() const { return horizon_; }

  /// beta <- beta max(0, 1 + clip(current_kl / target - 1, -0.2, 0.2) n_steps / horizon).
  /// current_kl may be negative (a k1 estimate can be): the clip bounds its effect.
  /// Throws value_error if current_kl is not finite, config_error if n_steps < 0.
  void update(double current_kl, std::int64_t n_steps) {
    detail::validate_kl_update(current_kl, n_steps);
    const double relative_error = std::clamp(current_kl / target_ - 1.0, -0.2, 0.2);
    coef_ *= std::max(0.0, 1.0 + relative_error * static_cast<double>(n_steps) / horizon_);
  }

 private:
  double coef_, target_, horizon_;
};

static_assert(kl_controller<fixed_kl_controller>);
static_assert(kl_controller<adaptive_kl_controller>);

}  // namespace grpo
