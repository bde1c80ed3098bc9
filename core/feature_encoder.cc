#include "core/feature_encoder.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"

namespace offerd {
namespace {

absl::Status Invalid(const FeatureSpec& spec, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("feature '", spec.name, "': ", what));
}

absl::Status ValidateSpec(const FeatureSpec& spec) {
  if (spec.name.empty()) return absl::InvalidArgumentError("feature with an empty name");
  if (spec.kind == FeatureSpec::Kind::kNumeric) {
    if (!std::isfinite(spec.mean)) return Invalid(spec, "mean must be finite");
    if (!(spec.std > 0.0) || !std::isfinite(spec.std)) {
      return Invalid(spec, "std must be finite and > 0");
    }
    return absl::OkStatus();
  }
  if (spec.transform != FeatureSpec::Transform::kNone) {
    return Invalid(spec, "a categorical feature cannot have a transform");
  }
  std::vector<absl::string_view> words(spec.vocabulary.begin(), spec.vocabulary.end());
  std::sort(words.begin(), words.end());
  for (size_t i = 0; i < words.size(); ++i) {
    // "" always means missing (the trailing slot); a vocabulary entry "" could never be hit
    // the way the offline encoder hits it, so the bundle is inconsistent.
    if (words[i].empty()) return Invalid(spec, "empty vocabulary entry");
    if (i > 0 && words[i] == words[i - 1]) {
      return Invalid(spec, absl::StrCat("repeated vocabulary entry '", words[i], "'"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

float EncodeNumericValue(const FeatureSpec& spec, double raw) {
  double value = raw;
  if (spec.transform == FeatureSpec::Transform::kLog1p) {
    // log1p is only defined above -1; the offline encoder treats the rest as missing.
    if (!(value > -1.0)) return 0.0f;
    value = std::log1p(value);
  }
  const double scaled = (value - spec.mean) / spec.std;
  if (!std::isfinite(scaled)) return 0.0f;  // also catches NaN (missing)
  // numpy's astype(float32) turns a finite double beyond the float range into +-inf; do the
  // same explicitly (the C++ conversion would be undefined) so golden cases stay comparable.
  constexpr double kFloatMax = std::numeric_limits<float>::max();
  if (scaled > kFloatMax || scaled < -kFloatMax) {
    // Values between FLT_MAX and the rounding midpoint still round to FLT_MAX in numpy.
    const double midpoint = kFloatMax + std::ldexp(1.0, 103);
    if (std::fabs(scaled) < midpoint) return scaled > 0 ? kFloatMax : -kFloatMax;
    return scaled > 0 ? std::numeric_limits<float>::infinity()
                      : -std::numeric_limits<float>::infinity();
  }
  return static_cast<float>(scaled);
}

absl::StatusOr<SectionEncoder> SectionEncoder::Create(std::vector<FeatureSpec> features) {
  SectionEncoder encoder;
  std::vector<absl::string_view> names;
  names.reserve(features.size());
  for (const FeatureSpec& spec : features) {
    if (absl::Status status = ValidateSpec(spec); !status.ok()) return status;
    names.push_back(spec.name);
  }
  std::sort(names.begin(), names.end());
  if (auto dup = std::adjacent_find(names.begin(), names.end()); dup != names.end()) {
    return absl::InvalidArgumentError(absl::StrCat("feature '", *dup, "' appears twice"));
  }

  encoder.features_ = std::move(features);
  encoder.offsets_.reserve(encoder.features_.size());
  encoder.sorted_vocabulary_.resize(encoder.features_.size());
  int64_t width = 0;
  for (size_t i = 0; i < encoder.features_.size(); ++i) {
    const FeatureSpec& spec = encoder.features_[i];
    encoder.offsets_.push_back(static_cast<int>(width));
    if (spec.kind == FeatureSpec::Kind::kNumeric) {
      width += 1;
      continue;
    }
    std::vector<int32_t>& order = encoder.sorted_vocabulary_[i];
    order.resize(spec.vocabulary.size());
    for (size_t k = 0; k < order.size(); ++k) order[k] = static_cast<int32_t>(k);
    std::sort(order.begin(), order.end(),
              [&spec](int32_t a, int32_t b) { return spec.vocabulary[a] < spec.vocabulary[b]; });
    width += static_cast<int64_t>(spec.vocabulary.size()) + 1;
  }
  if (width > std::numeric_limits<int>::max()) {
    return absl::InvalidArgumentError("section too wide");
  }
  encoder.width_ = static_cast<int>(width);
  return encoder;
}

int SectionEncoder::FeatureIndex(absl::string_view name) const {
  for (size_t i = 0; i < features_.size(); ++i) {
    if (features_[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

int SectionEncoder::CategoryIndex(int feature_index, absl::string_view value) const {
  const std::vector<std::string>& vocabulary = features_[feature_index].vocabulary;
  const int unknown = static_cast<int>(vocabulary.size());
  if (value.empty()) return unknown;
  const std::vector<int32_t>& order = sorted_vocabulary_[feature_index];
  auto it = std::lower_bound(order.begin(), order.end(), value,
                             [&vocabulary](int32_t position, absl::string_view v) {
                               return absl::string_view(vocabulary[position]) < v;
                             });
  if (it == order.end() || vocabulary[*it] != value) return unknown;
  return *it;
}

void SectionEncoder::EncodeFeature(int feature_index, const RawFeatureValue& raw,
                                   absl::Span<float> out) const {
  assert(out.size() >= static_cast<size_t>(width_));
  const FeatureSpec& spec = features_[feature_index];
  float* column = out.data() + offsets_[feature_index];
  if (spec.kind == FeatureSpec::Kind::kNumeric) {
    *column = EncodeNumericValue(spec, raw.number);
    return;
  }
  const size_t slots = spec.vocabulary.size() + 1;
  std::fill(column, column + slots, 0.0f);
  column[CategoryIndex(feature_index, raw.text)] = 1.0f;
}

void SectionEncoder::Encode(absl::Span<const RawFeatureValue> raw, absl::Span<float> out) const {
  const RawFeatureValue missing;
  for (int i = 0; i < num_features(); ++i) {
    EncodeFeature(i, static_cast<size_t>(i) < raw.size() ? raw[i] : missing, out);
  }
}

void SectionEncoder::EncodeUserRecord(const UserRecord& user, absl::Span<float> out) const {
  size_t next_numeric = 0;
  size_t next_categorical = 0;
  for (int i = 0; i < num_features(); ++i) {
    RawFeatureValue raw;
    if (features_[i].kind == FeatureSpec::Kind::kNumeric) {
      if (next_numeric < user.numeric.size()) raw.number = user.numeric[next_numeric];
      ++next_numeric;
    } else {
      if (next_categorical < user.categorical.size()) raw.text = user.categorical[next_categorical];
      ++next_categorical;
    }
    EncodeFeature(i, raw, out);
  }
}

}  // namespace offerd
