#include "core/expected_value.h"

namespace offerd {

absl::string_view SegmentName(Segment segment) {
  switch (segment) {
    case Segment::kPersuadable:
      return "persuadable";
    case Segment::kSureThing:
      return "sure_thing";
    case Segment::kLostCause:
      return "lost_cause";
    case Segment::kSleepingDog:
      return "sleeping_dog";
  }
  return "unknown";
}

Segment ClassifySegment(double p0, double p1, const SegmentThresholds& thresholds) {
  const double uplift = p1 - p0;
  // Same comparison order as offline/metrics_uplift.py segment_labels: the sleeping-dog test
  // first, so the two uplift tests can never both hold.
  if (uplift <= -thresholds.uplift) return Segment::kSleepingDog;
  if (uplift >= thresholds.uplift) return Segment::kPersuadable;
  return p0 >= thresholds.response ? Segment::kSureThing : Segment::kLostCause;
}

double ExpectedIncrementalValue(double p0, double p1, double margin, double cost, double clv,
                                double beta) {
  return (p1 - p0) * (margin + beta * clv) - p1 * cost;
}

}  // namespace offerd
