#include "server/recommender.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/ranking.h"
#include "server/decision_id.h"
#include "server/request_validation.h"

namespace offerd {

Recommender::Recommender(const SnapshotManager* snapshots, const FeatureStore* store)
    : snapshots_(snapshots), store_(store) {}

absl::Status Recommender::Recommend(const v1::RecommendRequest& request,
                                    v1::RecommendResponse* response) const {
  if (absl::Status s = ValidateRecommendRequest(request); !s.ok()) return s;

  // Pin one bundle for the whole request.
  const std::shared_ptr<const Bundle> bundle = snapshots_->Pin(request.user_id());
  if (bundle == nullptr) return absl::UnavailableError("no snapshot bundle is loaded yet");

  // User state. Unknown user -> cold start.
  absl::StatusOr<std::optional<UserRecord>> user = store_->GetUser(request.user_id());
  if (!user.ok()) {
    return absl::InternalError(absl::StrCat("feature store: ", user.status().message()));
  }
  absl::Span<const float> query = bundle->cold_start_query();
  bool cold_start = true;
  if (user->has_value() && static_cast<int>((*user)->embedding.size()) == bundle->dimension()) {
    query = (*user)->embedding;
    cold_start = false;
  }

  // Retrieve and rank.
  const int n = request.num_offers();
  const int k = std::max(n, bundle->manifest().policy.retrieval_k);
  thread_local std::vector<Candidate> candidates;
  thread_local std::vector<RankedOffer> ranked;
  if (absl::Status s = bundle->retriever().Search(query, k, &candidates); !s.ok()) {
    return absl::InternalError(absl::StrCat("retrieval: ", s.message()));
  }
  SelectTopNByRetrievalScore(candidates, n, &ranked);

  response->Clear();
  response->set_decision_id(NewDecisionId());
  response->set_snapshot_version(bundle->version());
  response->set_cold_start(cold_start);
  int rank = 0;
  for (const RankedOffer& r : ranked) {
    const Offer& offer = bundle->offers()[r.offer_index];
    v1::ScoredOffer* out = response->add_offers();
    out->set_offer_id(offer.offer_id);
    out->set_category(offer.category);
    out->set_score(r.score);
    out->set_rank(++rank);
    out->set_propensity(r.propensity);
    if (request.explain()) {
      v1::Explanation* e = out->mutable_explanation();
      e->set_retrieval_score(r.retrieval_score);
      e->set_fatigue_multiplier(1.0);
      e->set_explored(r.explored);
    }
  }
  return absl::OkStatus();
}

}  // namespace offerd
