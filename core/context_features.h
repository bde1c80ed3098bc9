#ifndef OFFERD_CORE_CONTEXT_FEATURES_H_
#define OFFERD_CORE_CONTEXT_FEATURES_H_

#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/feature_encoder.h"
#include "core/feature_schema.h"

namespace offerd {

// One request context attribute (Context.attributes), viewed without copying.
struct ContextAttribute {
  absl::string_view name;
  absl::string_view value;
};

// The request context as the `context` section reads it. Views into the request: they must
// outlive the Encode() call. Empty string = missing.
struct RequestContextView {
  absl::string_view channel;
  absl::string_view device;
  absl::string_view page;
  absl::string_view locale;
  absl::string_view country;
  absl::Span<const ContextAttribute> attributes;  // names unique; linear lookup (<= 64)
};

// Where a context feature reads its value (docs/models-format.md): the five named fields,
// any other name reads attributes[name].
enum class ContextField { kChannel, kDevice, kPage, kLocale, kCountry, kAttribute };
ContextField ContextFieldOf(absl::string_view feature_name);

// The `context` section compiled once per bundle. Categorical features take the string as is;
// numeric features parse it as a decimal number (unparsable = missing, as the offline
// encoder's to_numeric(errors="coerce")). Thread safety: immutable; const methods are safe
// concurrently.
class ContextSectionEncoder {
 public:
  // InvalidArgument for anything SectionEncoder::Create rejects.
  static absl::StatusOr<ContextSectionEncoder> Create(std::vector<FeatureSpec> features);

  ContextSectionEncoder() = default;

  int width() const { return section_.width(); }
  const SectionEncoder& section() const { return section_; }

  // Encodes `context` into out[0, width()). No allocation. REQUIRES out.size() >= width().
  void Encode(const RequestContextView& context, absl::Span<float> out) const;

 private:
  SectionEncoder section_;
  std::vector<ContextField> sources_;  // per feature, in section order
};

}  // namespace offerd

#endif  // OFFERD_CORE_CONTEXT_FEATURES_H_
