#include "core/feature_schema.h"

namespace offerd {

int FeatureSchema::num_numeric() const {
  int n = 0;
  for (const FeatureSpec& f : features) n += f.kind == FeatureSpec::Kind::kNumeric;
  return n;
}

int FeatureSchema::num_categorical() const {
  return static_cast<int>(features.size()) - num_numeric();
}

}  // namespace offerd
