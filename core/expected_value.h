#ifndef OFFERD_CORE_EXPECTED_VALUE_H_
#define OFFERD_CORE_EXPECTED_VALUE_H_

#include "absl/strings/string_view.h"
#include "core/policy_params.h"

namespace offerd {

// The uplift segment of a user x offer (ARCHITECTURE.md, "Words").
enum class Segment { kPersuadable, kSureThing, kLostCause, kSleepingDog };

// "persuadable", "sure_thing", "lost_cause", "sleeping_dog" (the offline names).
absl::string_view SegmentName(Segment segment);

// The segment of predicted p0 = P(convert | not shown), p1 = P(convert | shown), by the rule
// of SegmentThresholds: uplift = p1 - p0 >= t.uplift -> persuadable; <= -t.uplift ->
// sleeping_dog; else p0 >= t.response -> sure_thing; else lost_cause.
Segment ClassifySegment(double p0, double p1, const SegmentThresholds& thresholds);

// Expected incremental value of showing an offer, in currency units:
//   EV = (p1 - p0) * (margin + beta * clv) - p1 * cost
// The incremental conversions earn the offer's margin plus beta times the user's CLV; every
// conversion of a shown offer (incremental or not) redeems it at `cost`. So a persuadable
// earns, a sure thing (uplift ~ 0, high p1) costs p1 * cost, and a sleeping dog (uplift < 0)
// loses margin as well.
double ExpectedIncrementalValue(double p0, double p1, double margin, double cost, double clv,
                                double beta);

// ROI gate: true when `value` > min_ev (so NaN never passes).
inline bool PassesRoiGate(double value, double min_ev) { return value > min_ev; }

}  // namespace offerd

#endif  // OFFERD_CORE_EXPECTED_VALUE_H_
