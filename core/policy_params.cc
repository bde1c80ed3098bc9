#include "core/policy_params.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace offerd {
namespace {

absl::Status OutOfRange(absl::string_view field, absl::string_view range, double value) {
  return absl::InvalidArgumentError(
      absl::StrCat("policy ", field, ": must be ", range, ", got ", value));
}

}  // namespace

absl::Status ValidatePolicyParams(const PolicyParams& p) {
  if (!(p.beta >= 0.0) || !std::isfinite(p.beta)) return OutOfRange("beta", ">= 0", p.beta);
  if (!std::isfinite(p.min_ev)) return OutOfRange("min_ev", "finite", p.min_ev);
  if (!(p.epsilon >= 0.0 && p.epsilon <= 1.0)) return OutOfRange("epsilon", "in [0, 1]", p.epsilon);
  if (p.max_per_category < 0) {
    return OutOfRange("max_per_category", ">= 0 (0 = no limit)", p.max_per_category);
  }
  if (!(p.fatigue_decay > 0.0 && p.fatigue_decay <= 1.0)) {
    return OutOfRange("fatigue_decay", "in (0, 1]", p.fatigue_decay);
  }
  if (p.impression_window_seconds < 1) {
    return OutOfRange("impression_window_seconds", ">= 1",
                      static_cast<double>(p.impression_window_seconds));
  }
  if (p.max_impressions_per_window < 0) {
    return OutOfRange("max_impressions_per_window", ">= 0", p.max_impressions_per_window);
  }
  if (p.max_offers_per_day < 0)
    return OutOfRange("max_offers_per_day", ">= 0", p.max_offers_per_day);
  if (p.dismiss_cooldown_seconds < 0) {
    return OutOfRange("dismiss_cooldown_seconds", ">= 0",
                      static_cast<double>(p.dismiss_cooldown_seconds));
  }
  if (p.redeem_cooldown_seconds < 0) {
    return OutOfRange("redeem_cooldown_seconds", ">= 0",
                      static_cast<double>(p.redeem_cooldown_seconds));
  }
  const SegmentThresholds& t = p.segment_thresholds;
  if (!(t.uplift > 0.0) || !std::isfinite(t.uplift)) {
    return OutOfRange("segment_thresholds.uplift", "> 0", t.uplift);
  }
  if (!(t.response >= 0.0 && t.response <= 1.0)) {
    return OutOfRange("segment_thresholds.response", "in [0, 1]", t.response);
  }
  return absl::OkStatus();
}

PolicyParams ApplyOverrides(const PolicyParams& base, const PolicyOverrides& o) {
  PolicyParams p = base;
  if (o.beta) p.beta = *o.beta;
  if (o.min_ev) p.min_ev = *o.min_ev;
  if (o.epsilon) p.epsilon = *o.epsilon;
  if (o.max_per_category) p.max_per_category = *o.max_per_category;
  if (o.fatigue_decay) p.fatigue_decay = *o.fatigue_decay;
  if (o.impression_window_seconds) p.impression_window_seconds = *o.impression_window_seconds;
  if (o.max_impressions_per_window) p.max_impressions_per_window = *o.max_impressions_per_window;
  if (o.max_offers_per_day) p.max_offers_per_day = *o.max_offers_per_day;
  if (o.dismiss_cooldown_seconds) p.dismiss_cooldown_seconds = *o.dismiss_cooldown_seconds;
  if (o.redeem_cooldown_seconds) p.redeem_cooldown_seconds = *o.redeem_cooldown_seconds;
  if (o.segment_uplift_threshold) p.segment_thresholds.uplift = *o.segment_uplift_threshold;
  if (o.segment_response_threshold) p.segment_thresholds.response = *o.segment_response_threshold;
  return p;
}

OfferFatigueLimits ResolveOfferCaps(const PolicyParams& params, const OfferCaps& caps) {
  OfferFatigueLimits limits;
  limits.max_impressions = caps.max_impressions.value_or(params.max_impressions_per_window);
  limits.window_seconds = caps.window_seconds.value_or(params.impression_window_seconds);
  limits.dismiss_cooldown_seconds =
      caps.dismiss_cooldown_seconds.value_or(params.dismiss_cooldown_seconds);
  limits.redeem_cooldown_seconds =
      caps.redeem_cooldown_seconds.value_or(params.redeem_cooldown_seconds);
  return limits;
}

}  // namespace offerd
