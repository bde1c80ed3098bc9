#include "core/offer_features.h"

#include "absl/strings/str_cat.h"

namespace offerd {

absl::Status EncodeOfferSection(const SectionEncoder& encoder, const Offer& offer,
                                absl::Span<float> out) {
  const std::vector<FeatureSpec>& features = encoder.features();
  for (size_t i = 0; i < features.size(); ++i) {
    const FeatureSpec& spec = features[i];
    const bool numeric = spec.kind == FeatureSpec::Kind::kNumeric;
    RawFeatureValue raw;
    bool kind_matches;
    if (spec.name == "offer_id" || spec.name == "category" || spec.name == "type") {
      kind_matches = !numeric;
      raw.text = spec.name == "offer_id"   ? offer.offer_id
                 : spec.name == "category" ? offer.category
                                           : offer.type;
    } else if (spec.name == "margin" || spec.name == "cost") {
      kind_matches = numeric;
      raw.number = spec.name == "margin" ? offer.margin : offer.cost;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("offer section: unknown feature '", spec.name, "'"));
    }
    if (!kind_matches) {
      return absl::InvalidArgumentError(absl::StrCat("offer section: feature '", spec.name,
                                                     "' must be ",
                                                     numeric ? "categorical" : "numeric"));
    }
    encoder.EncodeFeature(static_cast<int>(i), raw, out);
  }
  return absl::OkStatus();
}

absl::Status ValidateOfferSection(const SectionEncoder& encoder) {
  // Encoding a default offer exercises exactly the name and kind checks.
  std::vector<float> scratch(encoder.width());
  return EncodeOfferSection(encoder, Offer(), absl::MakeSpan(scratch));
}

absl::StatusOr<std::vector<float>> EncodeOfferCatalog(const SectionEncoder& encoder,
                                                      absl::Span<const Offer> offers) {
  if (absl::Status status = ValidateOfferSection(encoder); !status.ok()) return status;
  const size_t width = static_cast<size_t>(encoder.width());
  std::vector<float> rows(offers.size() * width);
  for (size_t i = 0; i < offers.size(); ++i) {
    absl::Status status =
        EncodeOfferSection(encoder, offers[i], absl::MakeSpan(rows).subspan(i * width, width));
    if (!status.ok()) return status;
  }
  return rows;
}

}  // namespace offerd
