#ifndef OFFERD_SERVER_SERVICES_H_
#define OFFERD_SERVER_SERVICES_H_

#include <algorithm>
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

// offerd.v1.OfferService's admission and dispatch, independent of how calls arrive (the
// async front end in server/async_frontend.h delivers them). Handlers never block on a bundle
// load.
//
// Admission: a call whose deadline has passed is refused (DEADLINE_EXCEEDED); beyond
// `max_in_flight` admitted calls (queued + running) a call fails fast with RESOURCE_EXHAUSTED.
// With a `pool`, admitted calls are handed to it and the thread that delivered them returns at
// once to receive more, so overload is seen here instead of piling up unread in gRPC; a call
// that waited in the pool's queue longer than `max_queue_wait` is refused with
// RESOURCE_EXHAUSTED (its caller is better served by a retry elsewhere than by an answer that
// is already late), as is one whose deadline passed while it waited. Without a pool, calls run
// on the delivering thread.
//
// Inline fast path (`max_inline` = 1): while a call is alone in flight and none waits in the
// pool's queue, it runs on the delivering thread instead of being handed over, saving a thread
// wake-up and a cache migration per call on a lightly loaded server; as soon as calls overlap
// they go to the pool. The front end has one delivering thread, so while it computes a lone
// call (a fraction of a millisecond) nothing else is received; that is why inline work is
// limited to a call alone in flight, and why the call first lets the front end take whatever
// already waits (Call::BeforeInline): a thread that reads calls one by one would otherwise
// find every call alone, compute them all itself with the pool idle, and stop reading under
// load (measured at twice capacity: 3% of calls answered, the rest past their deadline).
// Nor does an inline call wait for a RocksDB write stall (flushes or compactions behind), or for
// a store lock held by a writer caught in one, which would stop the front end for as long: it
// writes with OnWriteStall::kFail, and a call whose write would wait is dropped unrecorded and
// handed to the pool, where it runs again and may wait
// (offerd_dispatched_total{path="inline_stalled"}).
class OfferServiceImpl {
 public:
  struct Options {
    int max_in_flight = 256;
    // Not owned; stopped after the gRPC server's shutdown and before the front end's (its
    // workers send replies through the front end's queue).
    WorkerPool* pool = nullptr;
    absl::Duration max_queue_wait = absl::Milliseconds(50);
    int max_inline = 0;  // 0: every call goes to the pool; 1: a lone call runs inline (max)
  };

  // One unary call being served. Reply() ends it: the call (and the request and response it
  // was delivered with) must not be touched afterwards.
  class Call {
   public:
    virtual std::chrono::system_clock::time_point deadline() const = 0;
    virtual void Reply(const grpc::Status& status) = 0;
    // The call is about to run on the thread that delivered it: the front end first takes
    // the events already waiting for that thread (they may be calls, which are admitted), so
    // that a call is only computed inline when the server really is idle.
    virtual void BeforeInline() {}
    // True once the client has cancelled the call or gone away (known to the front end while
    // the call waits for a worker). Thread-safe.
    virtual bool cancelled() const { return false; }

   protected:
    ~Call() = default;
  };

  OfferServiceImpl(const Recommender* recommender, EventApplier* events, ServerMetrics* metrics,
                   Options options)
      : recommender_(recommender), events_(events), metrics_(metrics),
        max_in_flight_(options.max_in_flight), pool_(options.pool),
        max_queue_wait_(absl::ToChronoNanoseconds(options.max_queue_wait)),
        max_inline_(std::clamp(options.max_inline, 0, 1)) {}

  // Serve one call; `request` and `response` live until `call` is replied to.
  void Recommend(Call* call, const v1::RecommendRequest* request,
                 v1::RecommendResponse* response);
  void ReportEvents(Call* call, const v1::ReportEventsRequest* request,
                    v1::ReportEventsResponse* response);

 private:
  // Admission: true when the call may run (then Finish(..., admitted=true) must follow).
  bool Admit(Call* call, Rpc rpc, std::chrono::steady_clock::time_point start);
  void Finish(Rpc rpc, Call* call, const absl::Status& status,
              std::chrono::steady_clock::time_point start, bool admitted);
  // Runs `work` (an admitted call) inline when the fast path allows it (see the class
  // comment), else on the pool, or inline without one; finishes the call with its status.
  // `work` is told whether it may wait for a RocksDB write stall; it must start from a clean
  // response, as a call whose inline run stalled is run again on the pool.
  void Dispatch(Call* call, Rpc rpc, std::chrono::steady_clock::time_point start,
                std::function<absl::Status(OnWriteStall)> work);

  const Recommender* const recommender_;
  EventApplier* const events_;
  ServerMetrics* const metrics_;
  const int max_in_flight_;
  WorkerPool* const pool_;
  const std::chrono::nanoseconds max_queue_wait_;
  const int max_inline_;
  std::atomic<int> in_flight_{0};
  std::atomic<int> queued_{0};  // handed to the pool, not yet started
};

// Synchronous implementation of offerd.v1.AdminService (on its own listener, see
// OfferdServer::Start for how its threads stay out of the public port's way). Loads run on the
// calling thread, which is never a Recommend thread's concern: serving keeps the current
// bundle until the new one is published.
class AdminServiceImpl final : public v1::AdminService::Service {
 public:
  // `admin_token`: when non-empty, every call must carry "authorization: Bearer <token>".
  AdminServiceImpl(SnapshotManager* snapshots, RocksDbStore* store, const Clock* clock,
                   int64_t started_at_ms, std::string admin_token)
      : snapshots_(snapshots), store_(store), clock_(clock), started_at_ms_(started_at_ms),
        admin_token_(std::move(admin_token)) {}

  grpc::Status LoadSnapshot(grpc::ServerContext* context,
                            const v1::LoadSnapshotRequest* request,
                            v1::LoadSnapshotResponse* response) override;
  grpc::Status Rollback(grpc::ServerContext* context,
                        const v1::RollbackRequest* request,
                        v1::RollbackResponse* response) override;
  grpc::Status Promote(grpc::ServerContext* context,
                       const v1::PromoteRequest* request,
                       v1::PromoteResponse* response) override;
  grpc::Status Unpin(grpc::ServerContext* context,
                     const v1::UnpinRequest* request,
                     v1::UnpinResponse* response) override;
  grpc::Status SetOfferOverride(grpc::ServerContext* context,
                                const v1::SetOfferOverrideRequest* request,
                                v1::SetOfferOverrideResponse* response) override;
  grpc::Status ForgetUser(grpc::ServerContext* context,
                          const v1::ForgetUserRequest* request,
                          v1::ForgetUserResponse* response) override;
  grpc::Status Checkpoint(grpc::ServerContext* context,
                          const v1::CheckpointRequest* request,
                          v1::CheckpointResponse* response) override;
  grpc::Status GetUserState(grpc::ServerContext* context,
                            const v1::GetUserStateRequest* request,
                            v1::GetUserStateResponse* response) override;
  grpc::Status IngestFeatures(grpc::ServerContext* context,
                              const v1::IngestFeaturesRequest* request,
                              v1::IngestFeaturesResponse* response) override;
  grpc::Status GetStatus(grpc::ServerContext* context,
                         const v1::GetStatusRequest* request,
                         v1::GetStatusResponse* response) override;

 private:
  // UNAUTHENTICATED unless the call carries the admin token (constant-time comparison).
  grpc::Status Authorize(const grpc::ServerContext* context) const;

  SnapshotManager* const snapshots_;
  RocksDbStore* const store_;
  const Clock* const clock_;
  const int64_t started_at_ms_;
  const std::string admin_token_;
};

}  // namespace offerd

#endif  // OFFERD_SERVER_SERVICES_H_
