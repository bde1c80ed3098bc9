#ifndef OFFERD_SERVER_POLICY_CONFIG_H_
#define OFFERD_SERVER_POLICY_CONFIG_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/assignment.h"
#include "core/policy_params.h"

namespace offerd {

// --policy_config: server-side policy configuration (not bundle data, so that a new bundle
// does not reshuffle users):
// {
//   "holdout_fraction": 0.05,                 // global control group, [0, 1)
//   "holdout_salt": "...", "arm_salt": "...", "canary_salt": "...",
//   "overrides": {"epsilon": 0.0, ...},       // applied to everyone, over the bundle defaults
//   "arms": [{"name": "beta-high", "traffic_share": 0.5, "overrides": {"beta": 0.3}}, ...]
// }
// Override keys: beta, min_ev, epsilon, max_per_category, fatigue_decay,
// impression_window_seconds, max_impressions_per_window, max_offers_per_day,
// dismiss_cooldown_seconds, redeem_cooldown_seconds, segment_uplift_threshold,
// segment_response_threshold. Unknown keys are errors (a typo must not silently do nothing).
struct PolicyConfig {
  AssignmentConfig assignment;
  PolicyOverrides overrides;  // global
};

absl::StatusOr<PolicyConfig> ParsePolicyConfig(absl::string_view json_text);
// Reads and parses a file; errors name the file.
absl::StatusOr<PolicyConfig> LoadPolicyConfig(const std::string& path);

}  // namespace offerd

#endif  // OFFERD_SERVER_POLICY_CONFIG_H_
