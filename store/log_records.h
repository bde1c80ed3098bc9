#ifndef OFFERD_STORE_LOG_RECORDS_H_
#define OFFERD_STORE_LOG_RECORDS_H_

// The lines of the decision and event logs (docs/logs-format.md, the contract with
// `python3 -m offline logs`). Plain structs in, one JSON line out (no trailing '\n'), ready
// for JsonlLogWriter::TryAppend().
//
// The records are *views*: their string fields point into the caller's data, which must stay
// alive until the line is formatted. Build one, format it, drop it; copying nothing keeps the
// Recommend path free of per-field allocations.
//
// Formatting guarantees valid JSON on any input: strings are escaped (RFC 8259) and invalid
// UTF-8 bytes become U+FFFD; non-finite numbers (NaN, +-Inf) are written as null; finite
// doubles use the shortest text that parses back to the same double.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "core/event.h"
#include "core/expected_value.h"

namespace offerd {

// Request context of a decision.
struct DecisionContextRecord {
  absl::string_view channel;  // "web", "app", "email", "push" ("" when not given)
  absl::string_view device;
  absl::string_view page;
  absl::string_view country;
};

// One served offer of a decision (its explanation, always logged).
struct OfferLogRecord {
  absl::string_view offer_id;
  int32_t rank = 0;                 // 1-based position in the response
  double score = 0.0;               // ranking score (EV x fatigue multiplier for gains)
  double propensity = 1.0;          // P(this offer chosen for this slot), in (0, 1]
  bool explored = false;            // chosen by exploration, not greedily
  double p_treated = 0.0;           // p1 = P(convert | shown)
  double p_control = 0.0;           // p0 = P(convert | not shown)
  double uplift = 0.0;              // p1 - p0
  double clv = 0.0;                 // CLV(u), currency units
  double expected_value = 0.0;      // expected incremental value before fatigue, currency units
  double fatigue_multiplier = 1.0;  // decay^(recent impressions)
  Segment segment = Segment::kLostCause;
  bool has_segment = true;  // false when the bundle has no uplift model: written as ""
};

// One Recommend decision. Holdout decisions have no offers.
struct DecisionRecord {
  absl::string_view decision_id;  // 32 lower-case hex digits (128 bits)
  int64_t ts_ms = 0;              // server time of the decision, Unix ms
  absl::string_view user_id;
  absl::string_view arm;               // experiment arm name; "" = base parameters
  bool holdout = false;                // global holdout (control group): empty offers
  absl::string_view snapshot_version;  // bundle that served
  bool canary = false;                 // served by the canary bundle
  bool degraded = false;               // served with a fallback (e.g. a store read failed)
  DecisionContextRecord context;
  std::vector<OfferLogRecord> offers;  // in rank order
};

// One accepted ReportEvents event.
struct EventRecord {
  int64_t ts_ms = 0;        // event time used by the server, Unix ms
  int64_t received_ms = 0;  // server time the event was received, Unix ms
  absl::string_view user_id;
  absl::string_view offer_id;  // "" for purchases not tied to an offer
  EventKind event_type = EventKind::kImpression;
  absl::string_view decision_id;  // "" when not tied to a decision
  double amount = 0.0;            // purchase spend, currency units (0 for other types)
};

// "IMPRESSION", "CLICK", "REDEEM", "DISMISS", "PURCHASE".
absl::string_view EventTypeName(EventKind kind);

// Appends the line (without '\n') to `*out`; reuse `out` to avoid allocations.
void AppendJsonLine(const DecisionRecord& record, std::string* out);
void AppendJsonLine(const EventRecord& record, std::string* out);

// The line as a new string (without '\n').
std::string ToJsonLine(const DecisionRecord& record);
std::string ToJsonLine(const EventRecord& record);

// Appends `value` as a JSON string literal (quotes included), escaped as described above.
void AppendJsonString(absl::string_view value, std::string* out);
// Appends `value` as a JSON number (shortest round-trip form), or null when not finite.
void AppendJsonNumber(double value, std::string* out);

}  // namespace offerd

#endif  // OFFERD_STORE_LOG_RECORDS_H_
