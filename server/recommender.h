#ifndef OFFERD_SERVER_RECOMMENDER_H_
#define OFFERD_SERVER_RECOMMENDER_H_

#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "core/assignment.h"
#include "core/eligibility.h"
#include "offerd/v1/offer_service.pb.h"
#include "server/clock.h"
#include "server/server_metrics.h"
#include "server/snapshot_manager.h"
#include "store/rocksdb_store.h"

namespace offerd {

// What a decision looked like, for the decision log and metrics.
struct DecisionInfo {
  int64_t now_ms = 0;
  bool canary = false;
  int candidates_retrieved = 0;
  int filtered[kNumEligibilityReasons] = {};  // by EligibilityReason (kEligible unused)
  int below_roi_gate = 0;
};

// The Recommend request path (ARCHITECTURE.md "The request path"): validate, assign (holdout,
// arm), pin one bundle, fetch the user's state, build the query (user tower, stored
// embedding or cold start), retrieve, filter (eligibility, caps, cooldowns), score (uplift x
// (margin + beta CLV) - p1 cost, fatigue, ROI gate), explore and diversify, and record the
// served offers as impressions at decision time under the user's lock.
//
// Thread safety: Recommend() is const and safe to call concurrently.
class Recommender {
 public:
  struct Options {
    AssignmentConfig assignment;     // holdout, arms, salts (server config, not bundle data)
    PolicyOverrides global_overrides;  // applied over the bundle's defaults, before the arm's
    bool trust_client_time = false;  // use Context.timestamp_ms (replays, tests)
    ServerMetrics* metrics = nullptr;  // optional
    // When less than this is left of a call's deadline, a cheaper ranking serves: the bundle's
    // precomputed cold-start candidates, filtered by eligibility, caps and cooldowns, greedy,
    // no models; the response says `degraded`.
    absl::Duration degrade_below = absl::Milliseconds(2);
    // Called once per decision after the response is complete (decision log).
    std::function<void(const v1::RecommendRequest&, const v1::RecommendResponse&,
                       const DecisionInfo&)>
        on_decision;
  };

  Recommender(const SnapshotManager* snapshots, RocksDbStore* store, const Clock* clock,
              Options options);

  // Fills `response`. INVALID_ARGUMENT for bad input, UNAVAILABLE when no bundle is loaded,
  // INTERNAL for storage or index failures. With OnWriteStall::kFail, a decision whose record
  // would have to wait is dropped, neither recorded, logged nor counted as a decision (its
  // stage timings, work that did happen, are kept): the error satisfies IsWriteStalled() and
  // the call can be run again where waiting is allowed.
  absl::Status Recommend(const v1::RecommendRequest& request, v1::RecommendResponse* response,
                         absl::Time deadline = absl::InfiniteFuture(),
                         OnWriteStall on_stall = OnWriteStall::kWait) const;

  const Options& options() const { return options_; }

 private:
  const SnapshotManager* const snapshots_;
  RocksDbStore* const store_;
  const Clock* const clock_;
  const Options options_;
};

}  // namespace offerd

#endif  // OFFERD_SERVER_RECOMMENDER_H_
