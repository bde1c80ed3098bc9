#include "core/eligibility.h"

#include <algorithm>
#include <vector>

namespace offerd {
namespace {

bool Contains(const std::vector<std::string>& list, absl::string_view value) {
  for (const std::string& entry : list) {
    if (entry == value) return true;
  }
  return false;
}

// Empty list = no restriction. An unknown (empty) value cannot prove membership, so a
// restricted offer is not shown to it.
bool AllowedBy(const std::vector<std::string>& list, absl::string_view value) {
  return list.empty() || (!value.empty() && Contains(list, value));
}

}  // namespace

absl::string_view EligibilityReasonName(EligibilityReason reason) {
  switch (reason) {
    case EligibilityReason::kEligible:
      return "eligible";
    case EligibilityReason::kInactive:
      return "inactive";
    case EligibilityReason::kChannel:
      return "channel";
    case EligibilityReason::kCountry:
      return "country";
    case EligibilityReason::kAudience:
      return "audience";
    case EligibilityReason::kPaused:
      return "paused";
    case EligibilityReason::kBudget:
      return "budget";
    case EligibilityReason::kCapped:
      return "capped";
    case EligibilityReason::kCooldown:
      return "cooldown";
  }
  return "unknown";
}

std::optional<int64_t> RemainingRedemptions(std::optional<int64_t> catalog_budget,
                                            std::optional<int64_t> override_budget,
                                            int64_t consumed) {
  const std::optional<int64_t> budget = override_budget ? override_budget : catalog_budget;
  if (!budget) return std::nullopt;
  return std::max<int64_t>(0, *budget - std::max<int64_t>(0, consumed));
}

EligibilityReason CheckEligibility(const Offer& offer, const OfferRuntimeState& runtime,
                                   const OfferFatigueState& fatigue,
                                   const EligibilityRequest& request, const PolicyParams& params) {
  if ((offer.active_from_ms != 0 && request.now_ms < offer.active_from_ms) ||
      (offer.active_to_ms != 0 && request.now_ms >= offer.active_to_ms)) {
    return EligibilityReason::kInactive;
  }
  if (!AllowedBy(offer.channels, request.channel)) return EligibilityReason::kChannel;
  if (!AllowedBy(offer.countries, request.country)) return EligibilityReason::kCountry;
  if (!offer.audiences.empty()) {
    const bool member =
        std::any_of(request.user_audiences.begin(), request.user_audiences.end(),
                    [&offer](const std::string& audience) {
                      return !audience.empty() && Contains(offer.audiences, audience);
                    });
    if (!member) return EligibilityReason::kAudience;
  }
  if (runtime.paused) return EligibilityReason::kPaused;
  if (runtime.remaining_redemptions && *runtime.remaining_redemptions <= 0) {
    return EligibilityReason::kBudget;
  }
  switch (CheckFatigue(fatigue, ResolveOfferCaps(params, offer.caps), request.now_ms)) {
    case FatigueVerdict::kAllowed:
      return EligibilityReason::kEligible;
    case FatigueVerdict::kCapped:
      return EligibilityReason::kCapped;
    case FatigueVerdict::kCooldown:
      return EligibilityReason::kCooldown;
  }
  return EligibilityReason::kEligible;
}

}  // namespace offerd
