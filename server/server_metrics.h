#ifndef OFFERD_SERVER_SERVER_METRICS_H_
#define OFFERD_SERVER_SERVER_METRICS_H_

#include <array>
#include <vector>

#include "core/eligibility.h"
#include "server/clock.h"
#include "server/metrics.h"

namespace offerd {

class JsonlLogWriter;
class RocksDbStore;
class SnapshotManager;

// Request-path stages timed by offerd_stage_duration_seconds{stage}.
enum class Stage { kAdmission, kFeatures, kUserTower, kRetrieval, kScoring, kFatigue, kLogging };
inline constexpr int kNumStages = 7;

enum class Rpc { kRecommend, kReportEvents };
inline constexpr int kNumGrpcCodes = 17;

// offerd's metric families (deploy/metrics.txt lists the names), registered once, with every
// hot-path series created up front so that an observation is one sharded atomic update.
//
// Thread safety: all members may be used concurrently.
class ServerMetrics {
 public:
  explicit ServerMetrics(MetricsRegistry* registry);

  Histogram& request_duration(Rpc rpc, int grpc_code) {
    return *request_duration_[static_cast<int>(rpc)][grpc_code];
  }
  Histogram& stage(Stage s) { return *stage_[static_cast<int>(s)]; }
  Counter& filtered(EligibilityReason reason) { return *filtered_[static_cast<int>(reason)]; }
  Counter& filtered_below_roi_gate() { return *below_roi_gate_; }
  Counter& shed_overload() { return *shed_overload_; }
  Counter& shed_deadline() { return *shed_deadline_; }
  Counter& shed_queue_timeout() { return *shed_queue_timeout_; }
  Counter& shed_cancelled() { return *shed_cancelled_; }
  // Time an admitted OfferService call handed to the worker pool waited for a worker thread.
  Histogram& queue_wait() { return *queue_wait_; }
  // Admitted OfferService calls by where they ran: inline on the polling thread, or on a worker.
  Counter& dispatched_inline() { return *dispatched_inline_; }
  Counter& dispatched_worker() { return *dispatched_worker_; }
  Counter& dispatched_inline_stalled() { return *dispatched_inline_stalled_; }
  // Events by type (EventKind 1..5) and outcome.
  Counter& event(int kind, int outcome) { return *events_[kind][outcome]; }
  static constexpr int kAccepted = 0, kDuplicate = 1, kRejected = 2;

  Counter& candidates_retrieved() { return *candidates_retrieved_; }
  Counter& offers_served() { return *offers_served_; }
  Counter& holdout_decisions() { return *holdout_; }
  Counter& explored_offers() { return *explored_; }
  Gauge& in_flight() { return *in_flight_; }
  Histogram& rocksdb_get_duration() { return *rocksdb_get_; }

  // Scrape-time metrics read from the live objects (bundle info and age, load outcomes,
  // block cache hit ratio, log queues). The pointers must outlive this object or be reset
  // by destroying it first.
  void WatchState(const SnapshotManager* snapshots, const RocksDbStore* store,
                  const Clock* clock, const JsonlLogWriter* decision_log,
                  const JsonlLogWriter* event_log);

 private:
  MetricsRegistry* registry_;
  std::array<std::array<Histogram*, kNumGrpcCodes>, 2> request_duration_{};
  std::array<Histogram*, kNumStages> stage_{};
  std::array<Counter*, kNumEligibilityReasons> filtered_{};
  Counter* below_roi_gate_ = nullptr;
  Counter* shed_overload_ = nullptr;
  Counter* shed_deadline_ = nullptr;
  Counter* shed_queue_timeout_ = nullptr;
  Counter* shed_cancelled_ = nullptr;
  Histogram* queue_wait_ = nullptr;
  Counter* dispatched_inline_ = nullptr;
  Counter* dispatched_worker_ = nullptr;
  Counter* dispatched_inline_stalled_ = nullptr;
  std::array<std::array<Counter*, 3>, 6> events_{};
  Counter* candidates_retrieved_ = nullptr;
  Counter* offers_served_ = nullptr;
  Counter* holdout_ = nullptr;
  Counter* explored_ = nullptr;
  Gauge* in_flight_ = nullptr;
  Histogram* rocksdb_get_ = nullptr;
  std::vector<CallbackHandle> callbacks_;
};

}  // namespace offerd

#endif  // OFFERD_SERVER_SERVER_METRICS_H_
