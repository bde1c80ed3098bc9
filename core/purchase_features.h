#ifndef OFFERD_CORE_PURCHASE_FEATURES_H_
#define OFFERD_CORE_PURCHASE_FEATURES_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/feature_encoder.h"
#include "core/feature_schema.h"
#include "core/user.h"

namespace offerd {

// The raw values of the `purchases` section (docs/models-format.md), derived at request time
// from the user's PurchaseSummary and the server's day. NaN = missing.
struct PurchaseFeatureValues {
  double has_purchases = 0.0;      // 1 or 0
  double repeat_days = 0.0;        // x of BG/NBD: distinct purchase days after the first
  double days_since_first = 0.0;   // now_day - first_purchase_day
  double days_since_last = 0.0;    // now_day - last_purchase_day
  double repeat_spend_mean = 0.0;  // repeat_spend_sum / repeat_days; missing when x = 0
};

// Derives the purchase features. Without purchases (`summary == nullptr` or
// `!summary->has_purchases`): has_purchases = 0 and every other value missing (NaN).
// `now_day` is days since 1970-01-01 UTC of the server's "now" (DayOfMs in core/event.h).
PurchaseFeatureValues DerivePurchaseFeatures(const PurchaseSummary* summary, int32_t now_day);

// The features a `purchases` section may list, by name.
enum class PurchaseFeature {
  kHasPurchases,     // "has_purchases"
  kRepeatDays,       // "repeat_days"
  kDaysSinceFirst,   // "days_since_first"
  kDaysSinceLast,    // "days_since_last"
  kRepeatSpendMean,  // "repeat_spend_mean"
};

// The `purchases` section compiled once per bundle: the generic encoder plus which derived
// value feeds each feature. Thread safety: immutable; const methods are safe concurrently.
class PurchaseSectionEncoder {
 public:
  // InvalidArgument for anything SectionEncoder::Create rejects, a feature name other than the
  // five above, or a categorical kind (all purchase features are numeric).
  static absl::StatusOr<PurchaseSectionEncoder> Create(std::vector<FeatureSpec> features);

  PurchaseSectionEncoder() = default;

  int width() const { return section_.width(); }
  const SectionEncoder& section() const { return section_; }

  // Derives the features (see DerivePurchaseFeatures) and encodes them into out[0, width()).
  // REQUIRES out.size() >= width().
  void Encode(const PurchaseSummary* summary, int32_t now_day, absl::Span<float> out) const;

  // Encodes already-derived values (golden cases give them directly).
  void EncodeValues(const PurchaseFeatureValues& values, absl::Span<float> out) const;

 private:
  SectionEncoder section_;
  std::vector<PurchaseFeature> sources_;  // per feature, in section order
};

}  // namespace offerd

#endif  // OFFERD_CORE_PURCHASE_FEATURES_H_
