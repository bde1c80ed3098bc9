#ifndef OFFERD_STORE_JSON_UTIL_H_
#define OFFERD_STORE_JSON_UTIL_H_

// Helpers for reading nlohmann::json values with Status errors instead of exceptions.
// Internal to store/: keeps nlohmann out of public headers.

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/feature_schema.h"

namespace offerd::json_util {

using nlohmann::json;

inline absl::Status FieldError(absl::string_view field, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", problem));
}

// Reads obj[key] as a string. Missing -> error when `required`, else leaves *out unchanged.
absl::Status GetString(const json& obj, const char* key, bool required, std::string* out);
absl::Status GetInt(const json& obj, const char* key, bool required, int64_t* out);
absl::Status GetDouble(const json& obj, const char* key, bool required, double* out);
absl::Status GetStringList(const json& obj, const char* key, std::vector<std::string>* out);

// Parses a list of feature specs ([{"name", "kind", "mean", "std", "vocabulary",
// "transform"}...]); `where` prefixes error messages.
absl::Status ParseFeatureList(const json& list, const std::string& where,
                              std::vector<FeatureSpec>* features);

// Parses {"id": ..., "features": [...]} into `schema`.
absl::Status ParseFeatureSchema(const json& obj, FeatureSchema* schema);

}  // namespace offerd::json_util

#endif  // OFFERD_STORE_JSON_UTIL_H_
