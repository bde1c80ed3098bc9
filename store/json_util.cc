#include "store/json_util.h"

#include <cmath>

namespace offerd::json_util {

absl::Status GetString(const json& obj, const char* key, bool required, std::string* out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) {
    return required ? FieldError(key, "missing") : absl::OkStatus();
  }
  if (!it->is_string()) return FieldError(key, "must be a string");
  *out = it->get<std::string>();
  return absl::OkStatus();
}

absl::Status GetInt(const json& obj, const char* key, bool required, int64_t* out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) {
    return required ? FieldError(key, "missing") : absl::OkStatus();
  }
  if (it->is_number_integer()) {
    *out = it->get<int64_t>();
    return absl::OkStatus();
  }
  if (it->is_number_float()) {
    const double v = it->get<double>();
    if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 9.0e15) {
      *out = static_cast<int64_t>(v);
      return absl::OkStatus();
    }
  }
  return FieldError(key, "must be an integer");
}

absl::Status GetDouble(const json& obj, const char* key, bool required, double* out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) {
    return required ? FieldError(key, "missing") : absl::OkStatus();
  }
  if (!it->is_number()) return FieldError(key, "must be a number");
  const double v = it->get<double>();
  if (!std::isfinite(v)) return FieldError(key, "must be finite");
  *out = v;
  return absl::OkStatus();
}

absl::Status GetStringList(const json& obj, const char* key, std::vector<std::string>* out) {
  out->clear();
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_array()) return FieldError(key, "must be a list of strings");
  for (const json& item : *it) {
    if (!item.is_string()) return FieldError(key, "must be a list of strings");
    out->push_back(item.get<std::string>());
  }
  return absl::OkStatus();
}

absl::Status ParseFeatureList(const json& list, const std::string& where,
                              std::vector<FeatureSpec>* features) {
  if (!list.is_array()) return FieldError(where, "missing or not a list");
  features->clear();
  for (size_t i = 0; i < list.size(); ++i) {
    const json& f = list[i];
    const std::string at = absl::StrCat(where, "[", i, "]");
    if (!f.is_object()) return FieldError(at, "must be an object");
    FeatureSpec spec;
    std::string kind, transform;
    absl::Status s = GetString(f, "name", true, &spec.name);
    if (s.ok()) s = GetString(f, "kind", true, &kind);
    if (s.ok()) s = GetString(f, "transform", false, &transform);
    if (!s.ok()) return FieldError(at, s.message());
    if (kind == "numeric") {
      spec.kind = FeatureSpec::Kind::kNumeric;
      s = GetDouble(f, "mean", true, &spec.mean);
      if (s.ok()) s = GetDouble(f, "std", true, &spec.std);
      if (!s.ok()) return FieldError(at, s.message());
      if (!(spec.std > 0)) return FieldError(at, "std must be > 0");
    } else if (kind == "categorical") {
      spec.kind = FeatureSpec::Kind::kCategorical;
      s = GetStringList(f, "vocabulary", &spec.vocabulary);
      if (!s.ok()) return FieldError(at, s.message());
    } else {
      return FieldError(at, absl::StrCat("kind must be numeric or categorical, got \"", kind, "\""));
    }
    if (transform.empty() || transform == "none") {
      spec.transform = FeatureSpec::Transform::kNone;
    } else if (transform == "log1p") {
      spec.transform = FeatureSpec::Transform::kLog1p;
    } else {
      return FieldError(at, absl::StrCat("transform must be none or log1p, got \"", transform, "\""));
    }
    for (const FeatureSpec& prev : *features) {
      if (prev.name == spec.name) return FieldError(at, "duplicate feature name " + spec.name);
    }
    features->push_back(std::move(spec));
  }
  return absl::OkStatus();
}

absl::Status ParseFeatureSchema(const json& obj, FeatureSchema* schema) {
  if (!obj.is_object()) return FieldError("feature_schema", "must be an object");
  if (absl::Status s = GetString(obj, "id", true, &schema->id); !s.ok()) {
    return FieldError("feature_schema", s.message());
  }
  if (schema->id.empty()) return FieldError("feature_schema.id", "must not be empty");
  auto features = obj.find("features");
  if (features == obj.end()) return FieldError("feature_schema.features", "missing");
  return ParseFeatureList(*features, "feature_schema.features", &schema->features);
}

}  // namespace offerd::json_util
