#include "server/server_metrics.h"

#include <cmath>
#include <string>

#include "absl/status/status.h"
#include "core/event.h"
#include "server/snapshot_manager.h"
#include "store/jsonl_log.h"
#include "store/rocksdb_store.h"

namespace offerd {
namespace {

constexpr const char* kRpcNames[] = {"Recommend", "ReportEvents"};
constexpr const char* kStageNames[] = {"admission", "features", "user_tower", "retrieval",
                                       "scoring",   "fatigue",  "logging"};
constexpr const char* kEventTypes[] = {"", "IMPRESSION", "CLICK", "REDEEM", "DISMISS", "PURCHASE"};
constexpr const char* kOutcomes[] = {"accepted", "duplicate", "rejected"};

}  // namespace

ServerMetrics::ServerMetrics(MetricsRegistry* registry) : registry_(registry) {
  HistogramFamily& requests = registry->AddHistogram(
      MetricInfo("offerd_request_duration_seconds",
                 "Time from receiving an OfferService call to answering it, by rpc and gRPC "
                 "status code.",
                 {"rpc", "code"}),
      LatencyBucketsSeconds());
  for (int rpc = 0; rpc < 2; ++rpc) {
    for (int code = 0; code < kNumGrpcCodes; ++code) {
      const std::string code_name =
          absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
      request_duration_[rpc][code] = &requests.WithLabels({kRpcNames[rpc], code_name});
    }
  }
  HistogramFamily& stages = registry->AddHistogram(
      MetricInfo("offerd_stage_duration_seconds", "Time spent in each stage of Recommend.",
                 {"stage"}),
      LatencyBucketsSeconds());
  for (int s = 0; s < kNumStages; ++s) stage_[s] = &stages.WithLabels({kStageNames[s]});

  candidates_retrieved_ = &registry
                               ->AddCounter(MetricInfo("offerd_candidates_retrieved_total",
                                                       "Candidates returned by retrieval."))
                               .Get();
  CounterFamily& filtered = registry->AddCounter(MetricInfo(
      "offerd_candidates_filtered_total", "Retrieved candidates not ranked, by reason.",
      {"reason"}));
  for (int r = 1; r < kNumEligibilityReasons; ++r) {
    filtered_[r] = &filtered.WithLabels(
        {EligibilityReasonName(static_cast<EligibilityReason>(r))});
  }
  below_roi_gate_ = &filtered.WithLabels({"roi_gate"});
  offers_served_ =
      &registry->AddCounter(MetricInfo("offerd_offers_served_total", "Offers returned.")).Get();
  holdout_ = &registry
                  ->AddCounter(MetricInfo("offerd_holdout_decisions_total",
                                          "Decisions for users in the holdout (empty list)."))
                  .Get();
  explored_ = &registry
                   ->AddCounter(MetricInfo("offerd_explored_offers_total",
                                           "Offers chosen by exploration rather than greedily."))
                   .Get();
  in_flight_ = &registry
                    ->AddGauge(MetricInfo("offerd_requests_in_flight",
                                          "OfferService calls being worked on."))
                    .Get();
  CounterFamily& shed = registry->AddCounter(MetricInfo(
      "offerd_requests_shed_total",
      "Admitted or arriving calls answered without work, by reason: 'overload' (beyond "
      "--max_in_flight), 'deadline' (passed before work), 'queue_timeout' (waited longer than "
      "--max_queue_wait_ms for a worker), 'cancelled' (cancelled while queued: by its client, "
      "a broken connection or the server's drain at shutdown).",
      {"reason"}));
  shed_overload_ = &shed.WithLabels({"overload"});
  shed_deadline_ = &shed.WithLabels({"deadline"});
  shed_queue_timeout_ = &shed.WithLabels({"queue_timeout"});
  shed_cancelled_ = &shed.WithLabels({"cancelled"});
  queue_wait_ = &registry
                     ->AddHistogram(MetricInfo("offerd_queue_wait_seconds",
                                               "Time an admitted OfferService call handed to the "
                                               "worker pool waited for a worker thread."),
                                    LatencyBucketsSeconds())
                     .Get();
  CounterFamily& dispatched = registry->AddCounter(
      MetricInfo("offerd_dispatched_total",
                 "Admitted OfferService calls by where they ran: 'inline' on the polling thread "
                 "that received them (a call alone in flight, see --max_inline_calls), 'worker' "
                 "on the worker pool, 'inline_stalled' begun inline but rerun on the worker pool "
                 "because its write would have waited (a RocksDB write stall, or a store lock "
                 "held by another writer): the polling thread never waits for either.",
                 {"path"}));
  dispatched_inline_ = &dispatched.WithLabels({"inline"});
  dispatched_worker_ = &dispatched.WithLabels({"worker"});
  dispatched_inline_stalled_ = &dispatched.WithLabels({"inline_stalled"});
  CounterFamily& events = registry->AddCounter(MetricInfo(
      "offerd_events_total", "ReportEvents events by type and outcome.", {"type", "outcome"}));
  for (int kind = 1; kind <= 5; ++kind) {
    for (int outcome = 0; outcome < 3; ++outcome) {
      events_[kind][outcome] = &events.WithLabels({kEventTypes[kind], kOutcomes[outcome]});
    }
  }
  rocksdb_get_ = &registry
                      ->AddHistogram(MetricInfo("offerd_rocksdb_get_duration_seconds",
                                                "Time to read a user's state from RocksDB."),
                                     LatencyBucketsSeconds())
                      .Get();
  registry->AddProcessMetrics();
}

void ServerMetrics::WatchState(const SnapshotManager* snapshots, const RocksDbStore* store,
                               const Clock* clock, const JsonlLogWriter* decision_log,
                               const JsonlLogWriter* event_log) {
  callbacks_.push_back(registry_->AddCallback(
      MetricInfo("offerd_bundle_info", "The bundle serving (value 1), by version and index.",
                 {"version", "index", "role"}),
      MetricType::kGauge, [snapshots](SampleWriter& w) {
        const SnapshotManager::StatusSnapshot s = snapshots->Status();
        if (s.current) w.Add({s.current->version, s.current->index_type, "current"}, 1);
        if (s.canary) w.Add({s.canary->version, s.canary->index_type, "canary"}, 1);
      }));
  callbacks_.push_back(registry_->AddCallbackGauge(
      MetricInfo("offerd_bundle_age_seconds", "Seconds since the serving bundle was published."),
      [snapshots, clock] {
        const SnapshotManager::StatusSnapshot s = snapshots->Status();
        return s.current ? (clock->NowMs() - s.current->loaded_at_ms) / 1000.0 : std::nan("");
      }));
  callbacks_.push_back(registry_->AddCallback(
      MetricInfo("offerd_bundle_loads_total",
                 "Bundle load attempts by outcome (ok, or the error's status code).",
                 {"outcome"}),
      MetricType::kCounter, [snapshots](SampleWriter& w) {
        const SnapshotManager::StatusSnapshot s = snapshots->Status();
        w.Add({"ok"}, 0 + (s.load_outcomes.count("ok") ? s.load_outcomes.at("ok") : 0));
        for (const auto& [outcome, count] : s.load_outcomes) {
          if (outcome != "ok") w.Add({outcome}, static_cast<double>(count));
        }
      }));
  callbacks_.push_back(registry_->AddCallbackGauge(
      MetricInfo("offerd_rocksdb_block_cache_hit_ratio",
                 "RocksDB block cache hits / (hits + misses) since start."),
      [store] { return store->BlockCacheHitRatio(); }));
  const JsonlLogWriter* logs[] = {decision_log, event_log};
  callbacks_.push_back(registry_->AddCallback(
      MetricInfo("offerd_log_queue_depth", "Lines waiting to be written, by log.", {"log"}),
      MetricType::kGauge, [logs](SampleWriter& w) {
        if (logs[0]) w.Add({"decisions"}, static_cast<double>(logs[0]->stats().queue_depth));
        if (logs[1]) w.Add({"events"}, static_cast<double>(logs[1]->stats().queue_depth));
      }));
  callbacks_.push_back(registry_->AddCallback(
      MetricInfo("offerd_log_dropped_total", "Lines dropped because a log queue was full.",
                 {"log"}),
      MetricType::kCounter, [logs](SampleWriter& w) {
        w.Add({"decisions"}, logs[0] ? static_cast<double>(logs[0]->stats().dropped) : 0);
        w.Add({"events"}, logs[1] ? static_cast<double>(logs[1]->stats().dropped) : 0);
      }));
}

}  // namespace offerd
