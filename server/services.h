#ifndef OFFERD_SERVER_SERVICES_H_
#define OFFERD_SERVER_SERVICES_H_

#include "offerd/v1/admin_service.grpc.pb.h"
#include "offerd/v1/offer_service.grpc.pb.h"
#include "server/event_applier.h"
#include "server/recommender.h"
#include "server/snapshot_manager.h"
#include "store/rocksdb_store.h"

namespace offerd {

// gRPC callback-API implementation of offerd.v1.OfferService. Handlers run inline on gRPC's
// threads; they never block on a bundle load.
class OfferServiceImpl final : public v1::OfferService::CallbackService {
 public:
  OfferServiceImpl(const Recommender* recommender, EventApplier* events)
      : recommender_(recommender), events_(events) {}

  grpc::ServerUnaryReactor* Recommend(grpc::CallbackServerContext* context,
                                      const v1::RecommendRequest* request,
                                      v1::RecommendResponse* response) override;
  grpc::ServerUnaryReactor* ReportEvents(grpc::CallbackServerContext* context,
                                         const v1::ReportEventsRequest* request,
                                         v1::ReportEventsResponse* response) override;

 private:
  const Recommender* const recommender_;
  EventApplier* const events_;
};

// gRPC callback-API implementation of offerd.v1.AdminService. Loads run on the calling gRPC
// thread, which is never a Recommend thread's concern: serving keeps the current bundle until
// the new one is published.
class AdminServiceImpl final : public v1::AdminService::CallbackService {
 public:
  AdminServiceImpl(SnapshotManager* snapshots, RocksDbStore* store, int64_t started_at_ms)
      : snapshots_(snapshots), store_(store), started_at_ms_(started_at_ms) {}

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
  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* context,
                                      const v1::GetStatusRequest* request,
                                      v1::GetStatusResponse* response) override;

 private:
  SnapshotManager* const snapshots_;
  RocksDbStore* const store_;
  const int64_t started_at_ms_;
};

}  // namespace offerd

#endif  // OFFERD_SERVER_SERVICES_H_
