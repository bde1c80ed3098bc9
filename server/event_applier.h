#ifndef OFFERD_SERVER_EVENT_APPLIER_H_
#define OFFERD_SERVER_EVENT_APPLIER_H_

#include "absl/status/status.h"
#include "offerd/v1/offer_service.pb.h"
#include "server/clock.h"
#include "server/server_metrics.h"
#include "store/jsonl_log.h"
#include "server/snapshot_manager.h"
#include "store/rocksdb_store.h"

namespace offerd {

// The ReportEvents path: validates each event, resolves its time (the server's clock unless
// --trust_client_time), checks the offer against the serving bundle, and applies the valid
// ones durably in one batch. Invalid events are listed with reasons; they never stop the
// others.
//
// Thread safety: Apply() is safe to call concurrently.
class EventApplier {
 public:
  // `metrics` and `event_log` are optional (nullptr).
  EventApplier(const SnapshotManager* snapshots, RocksDbStore* store, const Clock* clock,
               bool trust_client_time, ServerMetrics* metrics, JsonlLogWriter* event_log)
      : snapshots_(snapshots), store_(store), clock_(clock),
        trust_client_time_(trust_client_time), metrics_(metrics), event_log_(event_log) {}

  // INVALID_ARGUMENT when the request itself is malformed (no events, too many); INTERNAL
  // when the store fails (then nothing of this request was applied). With
  // OnWriteStall::kFail, a batch RocksDB would delay is not applied, counted or logged: the
  // error satisfies IsWriteStalled() and the call can be run again where waiting is allowed.
  absl::Status Apply(const v1::ReportEventsRequest& request, v1::ReportEventsResponse* response,
                     OnWriteStall on_stall = OnWriteStall::kWait) const;

 private:
  const SnapshotManager* const snapshots_;
  RocksDbStore* const store_;
  const Clock* const clock_;
  const bool trust_client_time_;
  ServerMetrics* const metrics_;
  JsonlLogWriter* const event_log_;
};

}  // namespace offerd

#endif  // OFFERD_SERVER_EVENT_APPLIER_H_
