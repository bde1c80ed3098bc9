#ifndef OFFERD_CORE_EVENT_H_
#define OFFERD_CORE_EVENT_H_

#include <cstdint>
#include <string>

namespace offerd {

enum class EventKind { kImpression = 1, kClick = 2, kRedeem = 3, kDismiss = 4, kPurchase = 5 };

// A validated user event (ReportEvents), in plain form.
struct UserEvent {
  std::string user_id;
  std::string offer_id;  // empty only for purchases
  EventKind kind = EventKind::kImpression;
  int64_t timestamp_ms = 0;  // server-resolved time, Unix ms
  std::string decision_id;   // "" when shown by another system
  double amount = 0.0;       // purchase spend, currency units
};

// Days since 1970-01-01 UTC of a Unix-ms timestamp (floor division).
inline int32_t DayOfMs(int64_t ms) {
  constexpr int64_t kMsPerDay = 86400000;
  return static_cast<int32_t>(ms >= 0 ? ms / kMsPerDay : (ms - kMsPerDay + 1) / kMsPerDay);
}

}  // namespace offerd

#endif  // OFFERD_CORE_EVENT_H_
