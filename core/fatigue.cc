#include "core/fatigue.h"

#include <algorithm>
#include <cmath>

namespace offerd {
namespace {

// True while an event at `event_ms` (0 = none) still blocks at `now_ms`.
bool WithinCooldown(int64_t event_ms, int64_t cooldown_seconds, int64_t now_ms) {
  if (event_ms == 0 || cooldown_seconds <= 0) return false;
  // Written as a difference so that an event "in the future" (skew between replicas or an
  // out-of-order event) blocks rather than being treated as long ago. Saturating the
  // multiplication keeps absurd cooldown values from overflowing.
  constexpr int64_t kMaxSeconds = INT64_MAX / 1000;
  const int64_t cooldown_ms = std::min(cooldown_seconds, kMaxSeconds) * 1000;
  if (now_ms < event_ms) return true;
  return now_ms - event_ms < cooldown_ms;
}

}  // namespace

FatigueVerdict CheckFatigue(const OfferFatigueState& state, const OfferFatigueLimits& limits,
                            int64_t now_ms) {
  if (state.impressions_in_window >= limits.max_impressions) return FatigueVerdict::kCapped;
  if (WithinCooldown(state.last_dismiss_ms, limits.dismiss_cooldown_seconds, now_ms) ||
      WithinCooldown(state.last_redeem_ms, limits.redeem_cooldown_seconds, now_ms)) {
    return FatigueVerdict::kCooldown;
  }
  return FatigueVerdict::kAllowed;
}

double FatigueMultiplier(double fatigue_decay, int32_t impressions_in_window) {
  if (impressions_in_window <= 0) return 1.0;
  return std::pow(fatigue_decay, impressions_in_window);
}

int32_t OffersRemainingToday(const UserDayState& day, const PolicyParams& params) {
  return std::max<int32_t>(
      0, params.max_offers_per_day - std::max<int32_t>(0, day.offers_served_today));
}

}  // namespace offerd
