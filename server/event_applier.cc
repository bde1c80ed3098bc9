#include "server/event_applier.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "core/event.h"
#include "core/request_limits.h"
#include "server/request_validation.h"
#include "store/log_records.h"

namespace offerd {

absl::Status EventApplier::Apply(const v1::ReportEventsRequest& request,
                                 v1::ReportEventsResponse* response,
                                 OnWriteStall on_stall) const {
  response->Clear();
  if (request.events_size() == 0) {
    return absl::InvalidArgumentError("events: must hold 1..1000 events, got 0");
  }
  if (request.events_size() > static_cast<int>(kMaxEventsPerReport)) {
    return absl::InvalidArgumentError(absl::StrCat("events: must hold 1..", kMaxEventsPerReport,
                                                   " events, got ", request.events_size()));
  }
  const int64_t now_ms = clock_->NowMs();
  const std::shared_ptr<const Bundle> bundle = snapshots_->Pin();
  std::vector<UserEvent> accepted;
  accepted.reserve(request.events_size());
  std::vector<int> rejected_types;  // counted once the call's outcome is known
  for (int i = 0; i < request.events_size(); ++i) {
    const v1::Event& event = request.events(i);
    absl::Status s = ValidateEvent(event, now_ms);
    if (s.ok() && !event.offer_id().empty() && bundle != nullptr &&
        !bundle->FindOffer(event.offer_id()).has_value()) {
      s = absl::InvalidArgumentError(absl::StrCat("offer_id: unknown offer \"", event.offer_id(),
                                                  "\" in bundle ", bundle->version()));
    }
    if (!s.ok()) {
      if (event.type() >= 1 && event.type() <= 5) rejected_types.push_back(event.type());
      v1::RejectedEvent* rejected = response->add_rejected();
      rejected->set_index(i);
      rejected->set_reason(std::string(s.message()));
      continue;
    }
    UserEvent e;
    e.user_id = event.user_id();
    e.offer_id = event.offer_id();
    e.kind = static_cast<EventKind>(event.type());
    e.timestamp_ms = (trust_client_time_ && event.timestamp_ms() > 0) ? event.timestamp_ms() : now_ms;
    e.decision_id = event.decision_id();
    e.amount = event.amount();
    accepted.push_back(std::move(e));
  }
  absl::StatusOr<RocksDbStore::ApplyStats> stats =
      accepted.empty() ? RocksDbStore::ApplyStats{} : store_->ApplyEvents(accepted, on_stall);
  if (IsWriteStalled(stats.status())) return stats.status();  // run again: count nothing
  if (metrics_ != nullptr) {
    for (int type : rejected_types) metrics_->event(type, ServerMetrics::kRejected).Increment();
  }
  if (!stats.ok()) {
    return absl::InternalError(absl::StrCat("event store: ", stats.status().message()));
  }
  response->set_duplicates(static_cast<int32_t>(stats->duplicates));
  for (size_t i = 0; i < accepted.size(); ++i) {
    const UserEvent& e = accepted[i];
    const bool duplicate = stats->duplicate[i];
    if (metrics_ != nullptr) {
      metrics_->event(static_cast<int>(e.kind),
                      duplicate ? ServerMetrics::kDuplicate : ServerMetrics::kAccepted)
          .Increment();
    }
    if (event_log_ != nullptr) {  // every accepted event; readers drop exact repeats
      EventRecord record;
      record.ts_ms = e.timestamp_ms;
      record.received_ms = now_ms;
      record.user_id = e.user_id;
      record.offer_id = e.offer_id;
      record.event_type = e.kind;
      record.decision_id = e.decision_id;
      record.amount = e.amount;
      event_log_->TryAppend(ToJsonLine(record));
    }
  }
  response->set_accepted(static_cast<int32_t>(accepted.size()));
  return absl::OkStatus();
}

}  // namespace offerd
