#ifndef OFFERD_SERVER_SERVICES_H_
#define OFFERD_SERVER_SERVICES_H_

#include <atomic>
#include <chrono>
#include <functional>
#include <string>

#include "absl/time/time.h"
#include "offerd/v1/admin_service.grpc.pb.h"
#include "offerd/v1/offer_service.grpc.pb.h"
#include "server/event_applier.h"
#include "server/recommender.h"
#include "server/clock.h"
#include "server/server_metrics.h"
#include "server/snapshot_manager.h"
#include "server/worker_pool.h"
#include "store/rocksdb_store.h"

namespace offerd {

// Threads gRPC 1.51 runs callback-API handlers on, shared by every server in the process (its
// "nexting" threads: half the cores, clamped to [2, 16]).
int GrpcCallbackThreads();

// How many of gRPC's callback threads offerd's own work holds: OfferService calls running
// inline and admin calls (which run on the thread that received them; a bundle load holds one
// for seconds). One thread must always stay free to admit OfferService calls and hand them to
// the worker pool, so inline work may only take a thread while fewer than `limit` are held.
// Thread-safe.
class GrpcThreadUse {
 public:
  // `limit`: threads offerd's work may hold while still taking one for an inline call
  // (GrpcCallbackThreads() - 1 in the server).
  explicit GrpcThreadUse(int limit) : limit_(limit) {}

  // Takes a thread for an inline call if fewer than `limit` are held; false otherwise.
  bool TryAcquire() {
    if (held_.fetch_add(1, std::memory_order_acq_rel) < limit_) return true;
    held_.fetch_sub(1, std::memory_order_acq_rel);
    return false;
  }
  void Release() { held_.fetch_sub(1, std::memory_order_acq_rel); }
  int held() const { return held_.load(std::memory_order_acquire); }

  // Holds a thread for an admin call's duration (never refused: the call already runs on it).
  // A null `use` holds nothing.
  class Scoped {
   public:
    explicit Scoped(GrpcThreadUse* use) : use_(use) {
      if (use_ != nullptr) use_->held_.fetch_add(1, std::memory_order_acq_rel);
    }
    ~Scoped() {
      if (use_ != nullptr) use_->Release();
    }
    Scoped(const Scoped&) = delete;
    Scoped& operator=(const Scoped&) = delete;

   private:
    GrpcThreadUse* const use_;
  };

 private:
  const int limit_;
  std::atomic<int> held_{0};
};

// gRPC callback-API implementation of offerd.v1.OfferService. Handlers never block on a
// bundle load.
//
// Admission: a call whose deadline has passed is refused (DEADLINE_EXCEEDED); beyond
// `max_in_flight` admitted calls (queued + running) a call fails fast with RESOURCE_EXHAUSTED.
// With a `pool`, admitted calls are handed to it and gRPC's thread returns at once, so overload
// is seen here instead of piling up invisibly inside gRPC; a call that waited in the pool's
// queue longer than `max_queue_wait` is refused with RESOURCE_EXHAUSTED (its caller is better
// served by a retry elsewhere than by an answer that is already late), as is one whose
// deadline passed while it waited. Without a pool, calls run inline on gRPC's thread.
//
// Inline fast path (`max_inline` > 0): while at most `max_inline` calls are admitted (this one
// included) and none waits in the pool's queue, a call runs on the gRPC thread that received it
// instead of being handed over, saving a thread wake-up and a cache migration per call on a
// lightly loaded server; under load calls go to the pool as above. It also needs a thread from
// `grpc_threads` (when given): one of gRPC's threads always stays free to admit calls and hand
// them to the pool, even while admin calls hold others, so overload still reaches admission
// control and the bounded queue. (Measured with both of a 2-core machine's threads allowed to
// compute: above capacity, calls piled up inside gRPC while the few it delivered ran inline,
// and 99% ended DEADLINE_EXCEEDED at their 1 s deadline instead of being refused at once.)
class OfferServiceImpl final : public v1::OfferService::CallbackService {
 public:
  struct Options {
    int max_in_flight = 256;
    WorkerPool* pool = nullptr;  // not owned; must outlive the gRPC server's shutdown
    absl::Duration max_queue_wait = absl::Milliseconds(50);
    int max_inline = 0;  // 0: every call goes to the pool
    GrpcThreadUse* grpc_threads = nullptr;  // not owned; null: not accounted
  };
  OfferServiceImpl(const Recommender* recommender, EventApplier* events, ServerMetrics* metrics,
                   Options options)
      : recommender_(recommender), events_(events), metrics_(metrics),
        max_in_flight_(options.max_in_flight), pool_(options.pool),
        max_queue_wait_(absl::ToChronoNanoseconds(options.max_queue_wait)),
        max_inline_(options.max_inline), grpc_threads_(options.grpc_threads) {}

  grpc::ServerUnaryReactor* Recommend(grpc::CallbackServerContext* context,
                                      const v1::RecommendRequest* request,
                                      v1::RecommendResponse* response) override;
  grpc::ServerUnaryReactor* ReportEvents(grpc::CallbackServerContext* context,
                                         const v1::ReportEventsRequest* request,
                                         v1::ReportEventsResponse* response) override;

 private:
  // Admission: true when the call may run (then Finish(..., admitted=true) must follow).
  bool Admit(grpc::CallbackServerContext* context, Rpc rpc, grpc::ServerUnaryReactor* reactor,
             std::chrono::steady_clock::time_point start);
  void Finish(Rpc rpc, grpc::ServerUnaryReactor* reactor, const absl::Status& status,
              std::chrono::steady_clock::time_point start, bool admitted);
  // Runs `work` (an admitted call) inline when the fast path allows it (see the class
  // comment), else on the pool, or inline without one; finishes the call with its status.
  void Dispatch(grpc::CallbackServerContext* context, Rpc rpc, grpc::ServerUnaryReactor* reactor,
                std::chrono::steady_clock::time_point start, std::function<absl::Status()> work);

  const Recommender* const recommender_;
  EventApplier* const events_;
  ServerMetrics* const metrics_;
  const int max_in_flight_;
  WorkerPool* const pool_;
  const std::chrono::nanoseconds max_queue_wait_;
  const int max_inline_;
  GrpcThreadUse* const grpc_threads_;
  std::atomic<int> in_flight_{0};
  std::atomic<int> queued_{0};  // handed to the pool, not yet started
};

// gRPC callback-API implementation of offerd.v1.AdminService. Loads run on the calling gRPC
// thread, which is never a Recommend thread's concern: serving keeps the current bundle until
// the new one is published.
class AdminServiceImpl final : public v1::AdminService::CallbackService {
 public:
  // `admin_token`: when non-empty, every call must carry "authorization: Bearer <token>".
  // `grpc_threads` (optional, not owned): every admin call holds one for its duration.
  AdminServiceImpl(SnapshotManager* snapshots, RocksDbStore* store, const Clock* clock,
                   int64_t started_at_ms, std::string admin_token,
                   GrpcThreadUse* grpc_threads = nullptr)
      : snapshots_(snapshots), store_(store), clock_(clock), started_at_ms_(started_at_ms),
        admin_token_(std::move(admin_token)), grpc_threads_(grpc_threads) {}

  grpc::ServerUnaryReactor* LoadSnapshot(grpc::CallbackServerContext* context,
                                         const v1::LoadSnapshotRequest* request,
                                         v1::LoadSnapshotResponse* response) override;
  grpc::ServerUnaryReactor* Rollback(grpc::CallbackServerContext* context,
                                     const v1::RollbackRequest* request,
                                     v1::RollbackResponse* response) override;
  grpc::ServerUnaryReactor* Promote(grpc::CallbackServerContext* context,
                                    const v1::PromoteRequest* request,
                                    v1::PromoteResponse* response) override;
  grpc::ServerUnaryReactor* Unpin(grpc::CallbackServerContext* context,
                                  const v1::UnpinRequest* request,
                                  v1::UnpinResponse* response) override;
  grpc::ServerUnaryReactor* SetOfferOverride(grpc::CallbackServerContext* context,
                                             const v1::SetOfferOverrideRequest* request,
                                             v1::SetOfferOverrideResponse* response) override;
  grpc::ServerUnaryReactor* ForgetUser(grpc::CallbackServerContext* context,
                                       const v1::ForgetUserRequest* request,
                                       v1::ForgetUserResponse* response) override;
  grpc::ServerUnaryReactor* Checkpoint(grpc::CallbackServerContext* context,
                                       const v1::CheckpointRequest* request,
                                       v1::CheckpointResponse* response) override;
  grpc::ServerUnaryReactor* GetUserState(grpc::CallbackServerContext* context,
                                         const v1::GetUserStateRequest* request,
                                         v1::GetUserStateResponse* response) override;
  grpc::ServerUnaryReactor* IngestFeatures(grpc::CallbackServerContext* context,
                                           const v1::IngestFeaturesRequest* request,
                                           v1::IngestFeaturesResponse* response) override;
  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* context,
                                      const v1::GetStatusRequest* request,
                                      v1::GetStatusResponse* response) override;

 private:
  // UNAUTHENTICATED unless the call carries the admin token (constant-time comparison).
  grpc::Status Authorize(const grpc::CallbackServerContext* context) const;

  SnapshotManager* const snapshots_;
  RocksDbStore* const store_;
  const Clock* const clock_;
  const int64_t started_at_ms_;
  const std::string admin_token_;
  GrpcThreadUse* const grpc_threads_;
};

}  // namespace offerd

#endif  // OFFERD_SERVER_SERVICES_H_
