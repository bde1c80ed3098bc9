#include "core/user_fatigue.h"

#include <algorithm>

#include "core/event.h"

namespace offerd {
namespace {

int64_t FloorDiv(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

}  // namespace

const OfferFatigueEntry* UserFatigueRecord::Find(absl::string_view offer_id) const {
  auto it = std::lower_bound(offers.begin(), offers.end(), offer_id,
                             [](const OfferFatigueEntry& e, absl::string_view id) {
                               return absl::string_view(e.offer_id) < id;
                             });
  return it != offers.end() && it->offer_id == offer_id ? &*it : nullptr;
}

OfferFatigueEntry* UserFatigueRecord::FindOrAdd(absl::string_view offer_id) {
  auto it = std::lower_bound(offers.begin(), offers.end(), offer_id,
                             [](const OfferFatigueEntry& e, absl::string_view id) {
                               return absl::string_view(e.offer_id) < id;
                             });
  if (it != offers.end() && it->offer_id == offer_id) return &*it;
  OfferFatigueEntry entry;
  entry.offer_id = std::string(offer_id);
  return &*offers.insert(it, std::move(entry));
}

int32_t ImpressionsInWindow(const OfferFatigueEntry& entry, int64_t now_ms,
                            int64_t window_seconds) {
  // Every bucket overlapping (now - window, now] counts.
  const int64_t first_hour = FloorDiv(now_ms - window_seconds * 1000 + 1, kMsPerHour);
  int32_t total = 0;
  for (const ImpressionBucket& b : entry.impressions) {
    if (b.hour >= first_hour) total += b.count;
  }
  return total;
}

OfferFatigueState OfferFatigueStateOf(const UserFatigueRecord& record, absl::string_view offer_id,
                                      int64_t now_ms, int64_t window_seconds) {
  OfferFatigueState state;
  const OfferFatigueEntry* entry = record.Find(offer_id);
  if (entry == nullptr) return state;
  state.impressions_in_window = ImpressionsInWindow(*entry, now_ms, window_seconds);
  state.last_dismiss_ms = entry->last_dismiss_ms;
  state.last_redeem_ms = entry->last_redeem_ms;
  return state;
}

UserDayState DayStateOf(const UserFatigueRecord& record, int64_t now_ms) {
  UserDayState state;
  const int32_t today = DayOfMs(now_ms);
  for (const DayCount& d : record.shown_per_day) {
    if (d.day == today) state.offers_served_today = d.count;
  }
  return state;
}

void RecordImpression(UserFatigueRecord* record, absl::string_view offer_id, int64_t ts_ms) {
  OfferFatigueEntry* entry = record->FindOrAdd(offer_id);
  const int64_t hour = FloorDiv(ts_ms, kMsPerHour);
  auto it = std::lower_bound(entry->impressions.begin(), entry->impressions.end(), hour,
                             [](const ImpressionBucket& b, int64_t h) { return b.hour < h; });
  if (it != entry->impressions.end() && it->hour == hour) {
    ++it->count;
  } else {
    entry->impressions.insert(it, ImpressionBucket{hour, 1});
  }
  const int32_t day = DayOfMs(ts_ms);
  auto d = std::lower_bound(record->shown_per_day.begin(), record->shown_per_day.end(), day,
                            [](const DayCount& c, int32_t v) { return c.day < v; });
  if (d != record->shown_per_day.end() && d->day == day) {
    ++d->count;
  } else {
    record->shown_per_day.insert(d, DayCount{day, 1});
  }
}

void RecordDismiss(UserFatigueRecord* record, absl::string_view offer_id, int64_t ts_ms) {
  OfferFatigueEntry* entry = record->FindOrAdd(offer_id);
  entry->last_dismiss_ms = std::max(entry->last_dismiss_ms, ts_ms);
}

void RecordRedeem(UserFatigueRecord* record, absl::string_view offer_id, int64_t ts_ms) {
  OfferFatigueEntry* entry = record->FindOrAdd(offer_id);
  entry->last_redeem_ms = std::max(entry->last_redeem_ms, ts_ms);
}

bool PruneFatigueRecord(UserFatigueRecord* record, int64_t now_ms, int64_t retention_seconds) {
  const int64_t oldest_ms = now_ms - retention_seconds * 1000;
  const int64_t oldest_hour = FloorDiv(oldest_ms, kMsPerHour);
  const int32_t oldest_day = DayOfMs(now_ms) - 1;  // only today's count is ever read
  bool changed = false;
  const size_t days_before = record->shown_per_day.size();
  record->shown_per_day.erase(
      std::remove_if(record->shown_per_day.begin(), record->shown_per_day.end(),
                     [&](const DayCount& d) { return d.day < oldest_day; }),
      record->shown_per_day.end());
  changed |= record->shown_per_day.size() != days_before;
  for (OfferFatigueEntry& e : record->offers) {
    const size_t before = e.impressions.size();
    e.impressions.erase(std::remove_if(e.impressions.begin(), e.impressions.end(),
                                       [&](const ImpressionBucket& b) { return b.hour < oldest_hour; }),
                        e.impressions.end());
    changed |= e.impressions.size() != before;
    if (e.last_dismiss_ms != 0 && e.last_dismiss_ms < oldest_ms) e.last_dismiss_ms = 0, changed = true;
    if (e.last_redeem_ms != 0 && e.last_redeem_ms < oldest_ms) e.last_redeem_ms = 0, changed = true;
  }
  const size_t offers_before = record->offers.size();
  record->offers.erase(std::remove_if(record->offers.begin(), record->offers.end(),
                                      [](const OfferFatigueEntry& e) {
                                        return e.impressions.empty() && e.last_dismiss_ms == 0 &&
                                               e.last_redeem_ms == 0;
                                      }),
                       record->offers.end());
  changed |= record->offers.size() != offers_before;
  return changed;
}

}  // namespace offerd
