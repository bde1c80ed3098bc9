#include "core/context_features.h"

#include <limits>
#include <utility>

#include "absl/strings/numbers.h"

namespace offerd {
namespace {

absl::string_view ReadField(const RequestContextView& context, ContextField field,
                            absl::string_view name) {
  switch (field) {
    case ContextField::kChannel:
      return context.channel;
    case ContextField::kDevice:
      return context.device;
    case ContextField::kPage:
      return context.page;
    case ContextField::kLocale:
      return context.locale;
    case ContextField::kCountry:
      return context.country;
    case ContextField::kAttribute:
      for (const ContextAttribute& attribute : context.attributes) {
        if (attribute.name == name) return attribute.value;
      }
      return {};
  }
  return {};
}

}  // namespace

ContextField ContextFieldOf(absl::string_view feature_name) {
  if (feature_name == "channel") return ContextField::kChannel;
  if (feature_name == "device") return ContextField::kDevice;
  if (feature_name == "page") return ContextField::kPage;
  if (feature_name == "locale") return ContextField::kLocale;
  if (feature_name == "country") return ContextField::kCountry;
  return ContextField::kAttribute;
}

absl::StatusOr<ContextSectionEncoder> ContextSectionEncoder::Create(
    std::vector<FeatureSpec> features) {
  std::vector<ContextField> sources;
  sources.reserve(features.size());
  for (const FeatureSpec& spec : features) sources.push_back(ContextFieldOf(spec.name));
  absl::StatusOr<SectionEncoder> section = SectionEncoder::Create(std::move(features));
  if (!section.ok()) return section.status();
  ContextSectionEncoder encoder;
  encoder.section_ = *std::move(section);
  encoder.sources_ = std::move(sources);
  return encoder;
}

void ContextSectionEncoder::Encode(const RequestContextView& context, absl::Span<float> out) const {
  const std::vector<FeatureSpec>& features = section_.features();
  for (size_t i = 0; i < features.size(); ++i) {
    const absl::string_view text = ReadField(context, sources_[i], features[i].name);
    RawFeatureValue raw;
    if (features[i].kind == FeatureSpec::Kind::kCategorical) {
      raw.text = text;
    } else {
      double number;
      if (!text.empty() && absl::SimpleAtod(text, &number)) raw.number = number;
    }
    section_.EncodeFeature(static_cast<int>(i), raw, out);
  }
}

}  // namespace offerd
