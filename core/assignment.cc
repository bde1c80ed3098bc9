#include "core/assignment.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/random.h"

namespace offerd {
namespace {

constexpr uint64_t kFnvOffsetBasis = 0xcbf29ce484222325ULL;
constexpr uint64_t kFnvPrime = 0x100000001b3ULL;

uint64_t FnvAppend(uint64_t hash, absl::string_view bytes) {
  for (char c : bytes) {
    hash ^= static_cast<uint8_t>(c);
    hash *= kFnvPrime;
  }
  return hash;
}

bool IsFraction(double value) { return value >= 0.0 && value <= 1.0; }

}  // namespace

double AssignmentHash(absl::string_view salt, absl::string_view user_id) {
  // The length prefix is spelled out byte by byte so the result does not depend on the host's
  // endianness.
  char length_le[8];
  uint64_t length = salt.size();
  for (char& byte : length_le) {
    byte = static_cast<char>(length & 0xff);
    length >>= 8;
  }
  uint64_t hash = FnvAppend(kFnvOffsetBasis, absl::string_view(length_le, sizeof(length_le)));
  hash = FnvAppend(hash, salt);
  hash = FnvAppend(hash, user_id);
  // FNV-1a alone mixes its last bytes poorly into the high bits; the finalizer fixes that.
  return static_cast<double>(SplitMix64Mix(hash) >> 11) * 0x1.0p-53;
}

absl::Status ValidateAssignmentConfig(const AssignmentConfig& config, const PolicyParams& base) {
  if (!IsFraction(config.holdout_fraction)) {
    return absl::InvalidArgumentError(
        absl::StrCat("holdout_fraction: must be in [0, 1], got ", config.holdout_fraction));
  }
  if (!IsFraction(config.canary_fraction)) {
    return absl::InvalidArgumentError(
        absl::StrCat("canary_fraction: must be in [0, 1], got ", config.canary_fraction));
  }
  if (config.holdout_salt.empty() || config.arm_salt.empty() || config.canary_salt.empty()) {
    return absl::InvalidArgumentError("assignment salts must be non-empty");
  }
  if (config.holdout_salt == config.arm_salt || config.holdout_salt == config.canary_salt ||
      config.arm_salt == config.canary_salt) {
    return absl::InvalidArgumentError(
        "holdout_salt, arm_salt and canary_salt must differ (equal salts correlate the "
        "assignments)");
  }
  double total_share = 0.0;
  for (size_t i = 0; i < config.arms.size(); ++i) {
    const ExperimentArm& arm = config.arms[i];
    if (arm.name.empty())
      return absl::InvalidArgumentError(absl::StrCat("arm ", i, ": empty name"));
    for (size_t j = 0; j < i; ++j) {
      if (config.arms[j].name == arm.name) {
        return absl::InvalidArgumentError(absl::StrCat("arm '", arm.name, "' appears twice"));
      }
    }
    if (!IsFraction(arm.traffic_share)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "arm '", arm.name, "': traffic_share must be in [0, 1], got ", arm.traffic_share));
    }
    total_share += arm.traffic_share;
    if (absl::Status status = ValidatePolicyParams(ApplyOverrides(base, arm.overrides));
        !status.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("arm '", arm.name, "' overrides: ", status.message()));
    }
  }
  if (total_share > 1.0 + 1e-9) {
    return absl::InvalidArgumentError(
        absl::StrCat("arm traffic shares sum to ", total_share, ", more than 1"));
  }
  return absl::OkStatus();
}

Assignment AssignUser(const AssignmentConfig& config, absl::string_view user_id) {
  Assignment assignment;
  assignment.holdout = AssignmentHash(config.holdout_salt, user_id) < config.holdout_fraction;
  assignment.canary = AssignmentHash(config.canary_salt, user_id) < config.canary_fraction;
  if (!config.arms.empty()) {
    const double u = AssignmentHash(config.arm_salt, user_id);
    double upper = 0.0;
    for (size_t i = 0; i < config.arms.size(); ++i) {
      upper += config.arms[i].traffic_share;
      if (u < upper) {
        assignment.arm_index = static_cast<int32_t>(i);
        break;
      }
    }
    // Shares meant to sum to 1 may fall short by rounding; the last users belong to the last
    // arm that has traffic rather than to "no arm".
    if (assignment.arm_index < 0 && upper >= 1.0 - 1e-9) {
      for (size_t i = config.arms.size(); i-- > 0;) {
        if (config.arms[i].traffic_share > 0.0) {
          assignment.arm_index = static_cast<int32_t>(i);
          break;
        }
      }
    }
  }
  return assignment;
}

}  // namespace offerd
