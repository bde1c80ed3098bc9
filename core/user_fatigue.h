#ifndef OFFERD_CORE_USER_FATIGUE_H_
#define OFFERD_CORE_USER_FATIGUE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "core/fatigue.h"

namespace offerd {

// Everything the fatigue policy needs to know about one user, kept as one record so that a
// request reads it with a single lookup: time-bucketed impressions and the last dismiss /
// redeem per offer, and offers shown per UTC day.
//
// Impressions are counted in hour buckets; a rolling window of W seconds counts every bucket
// that overlaps (now - W, now], so a count can only be over-estimated by less than an hour's
// worth, never under-estimated: caps stay caps.

inline constexpr int64_t kMsPerHour = 3600 * 1000;

struct ImpressionBucket {
  int64_t hour = 0;  // floor(ms / kMsPerHour)
  int32_t count = 0;
};

struct OfferFatigueEntry {
  std::string offer_id;
  std::vector<ImpressionBucket> impressions;  // sorted by hour
  int64_t last_dismiss_ms = 0;                // 0 = never
  int64_t last_redeem_ms = 0;                 // 0 = never
};

struct DayCount {
  int32_t day = 0;  // days since 1970-01-01 UTC
  int32_t count = 0;
};

struct UserFatigueRecord {
  std::vector<DayCount> shown_per_day;     // sorted by day
  std::vector<OfferFatigueEntry> offers;   // sorted by offer_id

  bool empty() const { return shown_per_day.empty() && offers.empty(); }
  const OfferFatigueEntry* Find(absl::string_view offer_id) const;
  OfferFatigueEntry* FindOrAdd(absl::string_view offer_id);
};

// Impressions of `entry` in the rolling window of `window_seconds` ending at now_ms.
int32_t ImpressionsInWindow(const OfferFatigueEntry& entry, int64_t now_ms, int64_t window_seconds);

// The fatigue state of one offer for core/fatigue.h (all zero for an offer never shown).
OfferFatigueState OfferFatigueStateOf(const UserFatigueRecord& record, absl::string_view offer_id,
                                      int64_t now_ms, int64_t window_seconds);

// Offers shown to the user on the UTC day of now_ms.
UserDayState DayStateOf(const UserFatigueRecord& record, int64_t now_ms);

// One impression of `offer_id` at ts_ms; it also counts for that day's shown offers.
void RecordImpression(UserFatigueRecord* record, absl::string_view offer_id, int64_t ts_ms);
// Dismiss / redeem times (the latest one wins; out-of-order events never move it back).
void RecordDismiss(UserFatigueRecord* record, absl::string_view offer_id, int64_t ts_ms);
void RecordRedeem(UserFatigueRecord* record, absl::string_view offer_id, int64_t ts_ms);

// Drops what no policy can need any more: impression buckets older than `retention_seconds`
// before now_ms, dismiss/redeem times older than that, day counts before yesterday, and
// entries left empty. Returns true when something was removed.
bool PruneFatigueRecord(UserFatigueRecord* record, int64_t now_ms, int64_t retention_seconds);

}  // namespace offerd

#endif  // OFFERD_CORE_USER_FATIGUE_H_
