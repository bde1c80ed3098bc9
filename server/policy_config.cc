#include "server/policy_config.h"

#include <cmath>
#include <exception>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "store/file_util.h"

namespace offerd {
namespace {

using nlohmann::json;

absl::Status Error(absl::string_view where, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat("policy config: ", where, ": ", problem));
}

absl::Status ParseOverrides(const json& obj, const std::string& where, PolicyOverrides* out) {
  if (!obj.is_object()) return Error(where, "must be an object");
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    const std::string& key = it.key();
    const std::string at = absl::StrCat(where, ".", key);
    if (!it->is_number()) return Error(at, "must be a number");
    const double v = it->get<double>();
    if (!std::isfinite(v)) return Error(at, "must be finite");
    const bool integral = v == std::floor(v);
    const auto as_int = [&](auto* dst) -> absl::Status {
      if (!integral) return Error(at, "must be an integer");
      *dst = static_cast<typename std::remove_reference_t<decltype(*dst)>::value_type>(v);
      return absl::OkStatus();
    };
    absl::Status s;
    if (key == "beta") out->beta = v;
    else if (key == "min_ev") out->min_ev = v;
    else if (key == "epsilon") out->epsilon = v;
    else if (key == "fatigue_decay") out->fatigue_decay = v;
    else if (key == "segment_uplift_threshold") out->segment_uplift_threshold = v;
    else if (key == "segment_response_threshold") out->segment_response_threshold = v;
    else if (key == "max_per_category") s = as_int(&out->max_per_category);
    else if (key == "impression_window_seconds") s = as_int(&out->impression_window_seconds);
    else if (key == "max_impressions_per_window") s = as_int(&out->max_impressions_per_window);
    else if (key == "max_offers_per_day") s = as_int(&out->max_offers_per_day);
    else if (key == "dismiss_cooldown_seconds") s = as_int(&out->dismiss_cooldown_seconds);
    else if (key == "redeem_cooldown_seconds") s = as_int(&out->redeem_cooldown_seconds);
    else return Error(at, "unknown policy parameter");
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status GetString(const json& obj, const char* key, std::string* out) {
  auto it = obj.find(key);
  if (it == obj.end()) return absl::OkStatus();
  if (!it->is_string() || it->get<std::string>().empty()) return Error(key, "must be a non-empty string");
  *out = it->get<std::string>();
  return absl::OkStatus();
}

absl::StatusOr<PolicyConfig> Parse(const json& root) {
  if (!root.is_object()) return Error("(root)", "must be a JSON object");
  PolicyConfig config;
  AssignmentConfig& a = config.assignment;
  for (auto it = root.begin(); it != root.end(); ++it) {
    static const char* kKnown[] = {"holdout_fraction", "holdout_salt", "arm_salt", "canary_salt",
                                   "overrides", "arms"};
    bool known = false;
    for (const char* k : kKnown) known |= it.key() == k;
    if (!known) return Error(it.key(), "unknown key");
  }
  if (root.contains("holdout_fraction")) {
    if (!root["holdout_fraction"].is_number()) return Error("holdout_fraction", "must be a number");
    a.holdout_fraction = root["holdout_fraction"].get<double>();
  }
  if (absl::Status s = GetString(root, "holdout_salt", &a.holdout_salt); !s.ok()) return s;
  if (absl::Status s = GetString(root, "arm_salt", &a.arm_salt); !s.ok()) return s;
  if (absl::Status s = GetString(root, "canary_salt", &a.canary_salt); !s.ok()) return s;
  if (root.contains("overrides")) {
    if (absl::Status s = ParseOverrides(root["overrides"], "overrides", &config.overrides); !s.ok()) {
      return s;
    }
  }
  if (root.contains("arms")) {
    const json& arms = root["arms"];
    if (!arms.is_array()) return Error("arms", "must be a list");
    for (size_t i = 0; i < arms.size(); ++i) {
      const json& arm = arms[i];
      const std::string where = absl::StrCat("arms[", i, "]");
      if (!arm.is_object()) return Error(where, "must be an object");
      ExperimentArm out;
      if (!arm.contains("name") || !arm["name"].is_string() || arm["name"].get<std::string>().empty()) {
        return Error(where + ".name", "must be a non-empty string");
      }
      out.name = arm["name"].get<std::string>();
      if (!arm.contains("traffic_share") || !arm["traffic_share"].is_number()) {
        return Error(where + ".traffic_share", "must be a number");
      }
      out.traffic_share = arm["traffic_share"].get<double>();
      if (arm.contains("overrides")) {
        if (absl::Status s = ParseOverrides(arm["overrides"], where + ".overrides", &out.overrides);
            !s.ok()) {
          return s;
        }
      }
      a.arms.push_back(std::move(out));
    }
  }
  if (absl::Status s = ValidateAssignmentConfig(a, ApplyOverrides(PolicyParams(), config.overrides));
      !s.ok()) {
    return Error("(config)", s.message());
  }
  if (absl::Status s = ValidatePolicyParams(ApplyOverrides(PolicyParams(), config.overrides)); !s.ok()) {
    return Error("overrides", s.message());
  }
  return config;
}

}  // namespace

absl::StatusOr<PolicyConfig> ParsePolicyConfig(absl::string_view json_text) {
  json root = json::parse(json_text.begin(), json_text.end(), nullptr, false);
  if (root.is_discarded()) return absl::InvalidArgumentError("policy config: not valid JSON");
  try {
    return Parse(root);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("policy config: ", e.what()));
  }
}

absl::StatusOr<PolicyConfig> LoadPolicyConfig(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  absl::StatusOr<PolicyConfig> config = ParsePolicyConfig(*text);
  if (!config.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", config.status().message()));
  }
  return config;
}

}  // namespace offerd
