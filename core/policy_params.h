#ifndef OFFERD_CORE_POLICY_PARAMS_H_
#define OFFERD_CORE_POLICY_PARAMS_H_

#include <cstdint>
#include <optional>

#include "absl/status/status.h"
#include "core/offer.h"

namespace offerd {

// How a user x offer is labelled from its predicted p0 and p1 (docs/models-format.md,
// `segment_thresholds`; offline/metrics_uplift.py SegmentThresholds): persuadable if
// uplift >= `uplift`, sleeping_dog if uplift <= -`uplift`, otherwise sure_thing if
// p0 >= `response`, else lost_cause.
struct SegmentThresholds {
  double uplift = 0.02;   // probability difference, > 0
  double response = 0.2;  // probability, in [0, 1]
};

// Parameters of the ranking policy (ARCHITECTURE.md, request path steps 7-10). Money is in the
// catalog's currency units; durations are in seconds. Defaults come from the bundle's
// `policy` object and can be overridden per experiment arm (PolicyOverrides); per-offer
// catalog caps (Offer::caps) replace the fatigue defaults for that offer (ResolveOfferCaps).
struct PolicyParams {
  // Weight of the user's CLV in the expected incremental value:
  // EV = uplift * (margin + beta * CLV) - p1 * cost. Dimensionless, >= 0.
  double beta = 0.1;
  // ROI gate: a candidate whose fatigue-adjusted EV is <= min_ev is dropped. Currency units.
  double min_ev = 0.0;
  // Probability per slot of serving a uniformly random other candidate instead of the greedy
  // one. In [0, 1].
  double epsilon = 0.05;
  // Diversity: at most this many served offers per category; 0 = no limit.
  int32_t max_per_category = 2;
  // Soft fatigue: EV is multiplied by fatigue_decay^(impressions in the window). In (0, 1].
  double fatigue_decay = 0.8;
  // Hard cap per user x offer: at most max_impressions_per_window impressions in any
  // trailing window of impression_window_seconds. Catalog caps may override both.
  int64_t impression_window_seconds = 7 * 24 * 3600;
  int32_t max_impressions_per_window = 3;
  // Hard cap per user: at most this many offers served per UTC day (all offers together).
  int32_t max_offers_per_day = 20;
  // After a dismiss / redeem the offer is not shown to that user for this long.
  int64_t dismiss_cooldown_seconds = 3 * 24 * 3600;
  int64_t redeem_cooldown_seconds = 30 * 24 * 3600;
  SegmentThresholds segment_thresholds;
};

// OK when every field is in the range documented above (and finite); InvalidArgument naming
// the first field that is not.
absl::Status ValidatePolicyParams(const PolicyParams& params);

// Per-experiment-arm overrides: each set field replaces the base value.
struct PolicyOverrides {
  std::optional<double> beta;
  std::optional<double> min_ev;
  std::optional<double> epsilon;
  std::optional<int32_t> max_per_category;
  std::optional<double> fatigue_decay;
  std::optional<int64_t> impression_window_seconds;
  std::optional<int32_t> max_impressions_per_window;
  std::optional<int32_t> max_offers_per_day;
  std::optional<int64_t> dismiss_cooldown_seconds;
  std::optional<int64_t> redeem_cooldown_seconds;
  std::optional<double> segment_uplift_threshold;
  std::optional<double> segment_response_threshold;
};

// `base` with the set fields of `overrides` applied. Validate the result.
PolicyParams ApplyOverrides(const PolicyParams& base, const PolicyOverrides& overrides);

// The fatigue limits that apply to one offer: the catalog's caps where set, else the policy.
struct OfferFatigueLimits {
  int32_t max_impressions = 0;  // in any trailing window of window_seconds
  int64_t window_seconds = 0;
  int64_t dismiss_cooldown_seconds = 0;
  int64_t redeem_cooldown_seconds = 0;
};
OfferFatigueLimits ResolveOfferCaps(const PolicyParams& params, const OfferCaps& caps);

}  // namespace offerd

#endif  // OFFERD_CORE_POLICY_PARAMS_H_
