#ifndef OFFERD_SERVER_RECOMMENDER_H_
#define OFFERD_SERVER_RECOMMENDER_H_

#include "absl/status/status.h"
#include "offerd/v1/offer_service.pb.h"
#include "server/snapshot_manager.h"
#include "store/feature_store.h"

namespace offerd {

// The Recommend request path (ARCHITECTURE.md "The request path"): validate, pin one bundle,
// fetch the user's state, build the query, retrieve, rank, answer.
//
// Thread safety: Recommend() is const and safe to call concurrently.
class Recommender {
 public:
  Recommender(const SnapshotManager* snapshots, const FeatureStore* store);

  // Fills `response`. INVALID_ARGUMENT for bad input, UNAVAILABLE when no bundle is loaded,
  // INTERNAL for storage or index failures.
  absl::Status Recommend(const v1::RecommendRequest& request,
                         v1::RecommendResponse* response) const;

 private:
  const SnapshotManager* const snapshots_;
  const FeatureStore* const store_;
};

}  // namespace offerd

#endif  // OFFERD_SERVER_RECOMMENDER_H_
