#ifndef OFFERD_CORE_FATIGUE_H_
#define OFFERD_CORE_FATIGUE_H_

#include <cstdint>

#include "core/policy_params.h"

namespace offerd {

// What the counter store knows about one user x offer at request time.
struct OfferFatigueState {
  // Impressions of this offer to this user in the trailing window of the offer's effective
  // `window_seconds` (ResolveOfferCaps) ending at now, including those counted at serve time.
  int32_t impressions_in_window = 0;
  int64_t last_dismiss_ms = 0;  // Unix ms of the latest dismiss; 0 = never
  int64_t last_redeem_ms = 0;   // Unix ms of the latest redeem; 0 = never
};

// What the counter store knows about one user for the current UTC day (DayOfMs(now_ms)).
struct UserDayState {
  int32_t offers_served_today = 0;  // offers served to the user today, all offers together
};

// Outcome of the hard fatigue rules for one user x offer.
enum class FatigueVerdict {
  kAllowed,
  kCapped,    // impressions_in_window >= max_impressions: serving once more would exceed it
  kCooldown,  // within the dismiss or redeem cooldown
};

// The hard rules: capped when the window count is at (or above) the cap; cooldown when
// now_ms - last_dismiss_ms < dismiss_cooldown_seconds (same for redeem, `last_*_ms` != 0).
// A last event in the future (clock skew) counts as within the cooldown. The cap is checked
// first.
FatigueVerdict CheckFatigue(const OfferFatigueState& state, const OfferFatigueLimits& limits,
                            int64_t now_ms);

// Soft fatigue multiplier fatigue_decay^impressions_in_window, in (0, 1]; 1 for a count <= 0.
double FatigueMultiplier(double fatigue_decay, int32_t impressions_in_window);

// How many more offers the user may be served today: max(0, max_offers_per_day -
// offers_served_today). The selection never serves more than this.
int32_t OffersRemainingToday(const UserDayState& day, const PolicyParams& params);

}  // namespace offerd

#endif  // OFFERD_CORE_FATIGUE_H_
