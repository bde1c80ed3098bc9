#ifndef OFFERD_CORE_ELIGIBILITY_H_
#define OFFERD_CORE_ELIGIBILITY_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/fatigue.h"
#include "core/offer.h"
#include "core/policy_params.h"

namespace offerd {

// Why a retrieved candidate was kept or filtered (request path step 7). The values are dense
// from 0, so a server can count filtered candidates in an array indexed by the reason.
enum class EligibilityReason {
  kEligible = 0,
  kInactive,  // outside [active_from_ms, active_to_ms)
  kChannel,   // the offer is not shown on the request's channel
  kCountry,   // the offer is not shown in the request's country
  kAudience,  // the user is in none of the offer's audiences
  kPaused,    // runtime override
  kBudget,    // no redemptions left
  kCapped,    // hard impression cap reached for this user x offer
  kCooldown,  // dismiss or redeem cooldown running
};
inline constexpr int kNumEligibilityReasons = 9;

// "eligible", "inactive", "channel", "country", "audience", "paused", "budget", "capped",
// "cooldown" (metric label values).
absl::string_view EligibilityReasonName(EligibilityReason reason);

// Runtime state of an offer (the store's `offers` column family), not part of the bundle.
struct OfferRuntimeState {
  bool paused = false;
  // Redemptions still allowed; std::nullopt = unlimited. See RemainingRedemptions().
  std::optional<int64_t> remaining_redemptions;
};

// Remaining redemptions of an offer: the runtime override budget if set, else the catalog
// budget, minus the redemptions consumed (never below 0); std::nullopt when neither is set.
std::optional<int64_t> RemainingRedemptions(std::optional<int64_t> catalog_budget,
                                            std::optional<int64_t> override_budget,
                                            int64_t consumed);

// The request-level facts eligibility reads. Views must outlive the call.
struct EligibilityRequest {
  int64_t now_ms = 0;                            // server time, Unix ms
  absl::string_view channel;                     // Context.channel; empty = unknown
  absl::string_view country;                     // Context.country; empty = unknown
  absl::Span<const std::string> user_audiences;  // audiences the user belongs to
};

// The first rule the candidate breaks, in the enum's order, or kEligible.
//  - active window: active_from_ms <= now_ms (when != 0) and now_ms < active_to_ms (when != 0);
//  - channel / country / audience: an empty offer list means no restriction; otherwise the
//    request's value must equal (exact bytes) one entry, and an unknown (empty) request value
//    matches no list; audience: any of the user's audiences in the offer's list;
//  - paused; budget: remaining_redemptions set and <= 0;
//  - capped / cooldown: CheckFatigue with ResolveOfferCaps(params, offer.caps).
// Pure and allocation-free.
EligibilityReason CheckEligibility(const Offer& offer, const OfferRuntimeState& runtime,
                                   const OfferFatigueState& fatigue,
                                   const EligibilityRequest& request, const PolicyParams& params);

}  // namespace offerd

#endif  // OFFERD_CORE_ELIGIBILITY_H_
