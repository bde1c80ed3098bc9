#ifndef OFFERD_CORE_FEATURE_SCHEMA_H_
#define OFFERD_CORE_FEATURE_SCHEMA_H_

#include <string>
#include <vector>

namespace offerd {

// One user feature of a bundle's feature schema (docs/snapshot-format.md).
struct FeatureSpec {
  enum class Kind { kNumeric, kCategorical };
  // Numeric only, applied to the raw value before scaling (docs/models-format.md). kLog1p is
  // ln(1 + x); x <= -1 counts as missing. The user section (feature_schema) never has one.
  enum class Transform { kNone, kLog1p };
  std::string name;
  Kind kind = Kind::kNumeric;
  double mean = 0.0;  // numeric: encoded as (x - mean) / std
  double std = 1.0;   // numeric: > 0
  std::vector<std::string> vocabulary;  // categorical: one-hot + one trailing unknown slot
  Transform transform = Transform::kNone;  // numeric: applied before (x - mean) / std
};

// The ordered user features a bundle's models were trained on. `id` identifies the schema;
// the feature store records the id it ingested with.
struct FeatureSchema {
  std::string id;
  std::vector<FeatureSpec> features;

  int num_numeric() const;
  int num_categorical() const;
};

}  // namespace offerd

#endif  // OFFERD_CORE_FEATURE_SCHEMA_H_
