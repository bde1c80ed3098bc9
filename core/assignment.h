#ifndef OFFERD_CORE_ASSIGNMENT_H_
#define OFFERD_CORE_ASSIGNMENT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "core/policy_params.h"

namespace offerd {

// Deterministic, platform-independent hash of (salt, user_id) to [0, 1):
//   bytes = le64(len(salt)) || salt || user_id       (le64: 8 bytes, little-endian)
//   h     = FNV-1a 64 over bytes (offset basis 0xcbf29ce484222325, prime 0x100000001b3)
//   z     = splitmix64 finalizer of h:  z = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9;
//           z = (z ^ (z >> 27)) * 0x94d049bb133111eb;  z ^= z >> 31   (mod 2^64)
//   u     = (z >> 11) / 2^53
// The length prefix keeps ("ab", "c") and ("a", "bc") apart. Python, for offline joins:
//   h = 0xcbf29ce484222325
//   for b in len(salt).to_bytes(8, "little") + salt + user_id:
//       h = ((h ^ b) * 0x100000001b3) % 2**64
//   ... then the finalizer with the same constants, and (z >> 11) / 2**53.
// Different salts give (empirically) independent assignments.
double AssignmentHash(absl::string_view salt, absl::string_view user_id);

// A named set of policy overrides served to a share of the users.
struct ExperimentArm {
  std::string name;
  double traffic_share = 0.0;  // fraction of users, in [0, 1]
  PolicyOverrides overrides;
};

// How users are split (server config `--policy_config`, not the bundle, so a new bundle does
// not reshuffle users). Each decision uses its own salt, so the three are independent.
struct AssignmentConfig {
  // Global holdout: users with AssignmentHash(holdout_salt, id) < holdout_fraction get an
  // empty list (logged), as the control group of lift-versus-holdout. In [0, 1].
  std::string holdout_salt = "offerd-holdout";
  double holdout_fraction = 0.05;
  // Arms by cumulative traffic share over AssignmentHash(arm_salt, id): arm i takes
  // [share_0 + ... + share_{i-1}, ... + share_i). Shares sum to <= 1; users past the sum get
  // no arm (the base parameters).
  std::string arm_salt = "offerd-arm";
  std::vector<ExperimentArm> arms;
  // Canary: users with AssignmentHash(canary_salt, id) < canary_fraction are served by the
  // canary bundle when one is loaded. In [0, 1].
  std::string canary_salt = "offerd-canary";
  double canary_fraction = 0.0;
};

// OK when the fractions and shares are in [0, 1], the shares sum to <= 1 (+1e-9), arm names
// are non-empty and unique, salts are non-empty and pairwise different, and every arm's
// overrides applied to `base` pass ValidatePolicyParams. InvalidArgument otherwise.
absl::Status ValidateAssignmentConfig(const AssignmentConfig& config, const PolicyParams& base);

struct Assignment {
  bool holdout = false;
  int32_t arm_index = -1;  // index into config.arms; -1 = no arm (base parameters)
  bool canary = false;
};

// The user's holdout, arm and canary assignment. Pure: same config and id, same answer.
Assignment AssignUser(const AssignmentConfig& config, absl::string_view user_id);

}  // namespace offerd

#endif  // OFFERD_CORE_ASSIGNMENT_H_
