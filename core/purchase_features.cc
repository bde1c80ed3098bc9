#include "core/purchase_features.h"

#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"

namespace offerd {
namespace {

constexpr double kMissing = std::numeric_limits<double>::quiet_NaN();

bool PurchaseFeatureOf(absl::string_view name, PurchaseFeature* feature) {
  struct Named {
    absl::string_view name;
    PurchaseFeature feature;
  };
  static constexpr Named kNames[] = {
      {"has_purchases", PurchaseFeature::kHasPurchases},
      {"repeat_days", PurchaseFeature::kRepeatDays},
      {"days_since_first", PurchaseFeature::kDaysSinceFirst},
      {"days_since_last", PurchaseFeature::kDaysSinceLast},
      {"repeat_spend_mean", PurchaseFeature::kRepeatSpendMean},
  };
  for (const Named& named : kNames) {
    if (named.name == name) {
      *feature = named.feature;
      return true;
    }
  }
  return false;
}

double ValueOf(const PurchaseFeatureValues& values, PurchaseFeature feature) {
  switch (feature) {
    case PurchaseFeature::kHasPurchases:
      return values.has_purchases;
    case PurchaseFeature::kRepeatDays:
      return values.repeat_days;
    case PurchaseFeature::kDaysSinceFirst:
      return values.days_since_first;
    case PurchaseFeature::kDaysSinceLast:
      return values.days_since_last;
    case PurchaseFeature::kRepeatSpendMean:
      return values.repeat_spend_mean;
  }
  return kMissing;
}

}  // namespace

PurchaseFeatureValues DerivePurchaseFeatures(const PurchaseSummary* summary, int32_t now_day) {
  PurchaseFeatureValues values;
  if (summary == nullptr || !summary->has_purchases) {
    values.has_purchases = 0.0;
    values.repeat_days = kMissing;
    values.days_since_first = kMissing;
    values.days_since_last = kMissing;
    values.repeat_spend_mean = kMissing;
    return values;
  }
  values.has_purchases = 1.0;
  values.repeat_days = summary->repeat_days;
  // Differences in int64: day numbers are int32 but their difference need not fit one.
  values.days_since_first =
      static_cast<double>(static_cast<int64_t>(now_day) - summary->first_purchase_day);
  values.days_since_last =
      static_cast<double>(static_cast<int64_t>(now_day) - summary->last_purchase_day);
  values.repeat_spend_mean =
      summary->repeat_days > 0 ? summary->repeat_spend_sum / summary->repeat_days : kMissing;
  return values;
}

absl::StatusOr<PurchaseSectionEncoder> PurchaseSectionEncoder::Create(
    std::vector<FeatureSpec> features) {
  std::vector<PurchaseFeature> sources;
  sources.reserve(features.size());
  for (const FeatureSpec& spec : features) {
    PurchaseFeature feature;
    if (!PurchaseFeatureOf(spec.name, &feature)) {
      return absl::InvalidArgumentError(
          absl::StrCat("purchases section: unknown feature '", spec.name, "'"));
    }
    if (spec.kind != FeatureSpec::Kind::kNumeric) {
      return absl::InvalidArgumentError(
          absl::StrCat("purchases section: feature '", spec.name, "' must be numeric"));
    }
    sources.push_back(feature);
  }
  absl::StatusOr<SectionEncoder> section = SectionEncoder::Create(std::move(features));
  if (!section.ok()) return section.status();
  PurchaseSectionEncoder encoder;
  encoder.section_ = *std::move(section);
  encoder.sources_ = std::move(sources);
  return encoder;
}

void PurchaseSectionEncoder::EncodeValues(const PurchaseFeatureValues& values,
                                          absl::Span<float> out) const {
  for (size_t i = 0; i < sources_.size(); ++i) {
    section_.EncodeFeature(static_cast<int>(i),
                           RawFeatureValue::Numeric(ValueOf(values, sources_[i])), out);
  }
}

void PurchaseSectionEncoder::Encode(const PurchaseSummary* summary, int32_t now_day,
                                    absl::Span<float> out) const {
  EncodeValues(DerivePurchaseFeatures(summary, now_day), out);
}

}  // namespace offerd
