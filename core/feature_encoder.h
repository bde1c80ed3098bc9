#ifndef OFFERD_CORE_FEATURE_ENCODER_H_
#define OFFERD_CORE_FEATURE_ENCODER_H_

#include <cstdint>
#include <limits>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/feature_schema.h"
#include "core/user.h"

namespace offerd {

// The raw request-time value of one feature, before encoding. A numeric feature reads
// `number` (NaN = missing); a categorical feature reads `text` (empty = missing). The other
// member is ignored, so a default-constructed value is "missing" for either kind.
struct RawFeatureValue {
  double number = std::numeric_limits<double>::quiet_NaN();
  absl::string_view text;

  static RawFeatureValue Missing() { return RawFeatureValue(); }
  static RawFeatureValue Numeric(double value) {
    RawFeatureValue raw;
    raw.number = value;
    return raw;
  }
  static RawFeatureValue Categorical(absl::string_view value) {
    RawFeatureValue raw;
    raw.text = value;
    return raw;
  }
};

// One input section of a model (docs/models-format.md, "Input sections and their encoding"),
// compiled once per bundle: column offsets and a vocabulary index are precomputed so that
// Encode() is a pass over the features with no allocation.
//
// Encoding, bit-compatible with offline/uplift_models.py `encode_section`:
//   numeric:     v = transform(x); (v - mean) / std in double, rounded to float32; a missing
//                (NaN), non-finite or out-of-domain (log1p: x <= -1) value encodes as 0.
//   categorical: one-hot over `vocabulary` (exact byte compare) plus a trailing slot for
//                unknown, missing or empty values; width = vocabulary size + 1.
//
// Thread safety: immutable after Create(); all methods are const and safe concurrently.
// Copyable and movable (it holds no pointers into itself).
class SectionEncoder {
 public:
  // Validates and compiles `features` (in section order). InvalidArgument when a name is empty
  // or repeated, a numeric mean/std is non-finite or std <= 0, a categorical feature has a
  // transform, an empty or repeated vocabulary entry. An empty feature list is valid (width 0).
  static absl::StatusOr<SectionEncoder> Create(std::vector<FeatureSpec> features);

  SectionEncoder() = default;  // the empty section

  // Encoded width: 1 per numeric feature, vocabulary size + 1 per categorical feature.
  int width() const { return width_; }
  int num_features() const { return static_cast<int>(features_.size()); }
  const std::vector<FeatureSpec>& features() const { return features_; }

  // First output column of feature `feature_index`. REQUIRES 0 <= feature_index <
  // num_features().
  int offset(int feature_index) const { return offsets_[feature_index]; }

  // Index of the feature named `name`, or -1. For mapping named raw values (golden cases,
  // purchases, context) to section order once, at load time.
  int FeatureIndex(absl::string_view name) const;

  // Encodes `raw` (one value per feature, in section order) into out[0, width()).
  // Features at index >= raw.size() are missing, so an empty span encodes "all missing"
  // (an unknown user). REQUIRES out.size() >= width().
  void Encode(absl::Span<const RawFeatureValue> raw, absl::Span<float> out) const;

  // Writes only the columns of feature `feature_index`. REQUIRES 0 <= feature_index <
  // num_features(), out.size() >= width().
  void EncodeFeature(int feature_index, const RawFeatureValue& raw, absl::Span<float> out) const;

  // Encodes a stored user record (core/user.h: numeric / categorical values in the order of
  // the numeric / categorical features of this section) for the `user` section. Values past
  // the end of the record's vectors are missing. The caller checks feature_schema_id.
  // REQUIRES out.size() >= width().
  void EncodeUserRecord(const UserRecord& user, absl::Span<float> out) const;

 private:
  // Vocabulary index of `value` in feature `feature_index`, or the vocabulary size.
  int CategoryIndex(int feature_index, absl::string_view value) const;

  std::vector<FeatureSpec> features_;
  std::vector<int> offsets_;  // first output column per feature
  // Per categorical feature: vocabulary positions sorted by their string, for a binary search
  // that needs no hashing and stays valid when the encoder is copied or moved.
  std::vector<std::vector<int32_t>> sorted_vocabulary_;
  int width_ = 0;
};

// Encoded value of one numeric raw value under `spec` (exposed for tests and for callers that
// encode a single value): see SectionEncoder.
float EncodeNumericValue(const FeatureSpec& spec, double raw);

}  // namespace offerd

#endif  // OFFERD_CORE_FEATURE_ENCODER_H_
