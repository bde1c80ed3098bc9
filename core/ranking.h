#ifndef OFFERD_CORE_RANKING_H_
#define OFFERD_CORE_RANKING_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "core/retriever.h"

namespace offerd {

// An offer chosen for a response slot.
struct RankedOffer {
  int32_t offer_index = -1;
  double score = 0.0;            // ranking score, higher is better
  double retrieval_score = 0.0;  // inner product from retrieval
  double propensity = 1.0;       // probability this offer was chosen for its slot
  bool explored = false;
};

// Writes the `n` best candidates by retrieval score into `out` (cleared first), best first.
// Ties are broken by the lower catalog index so the result is deterministic. n <= 0 yields an
// empty result.
void SelectTopNByRetrievalScore(absl::Span<const Candidate> candidates, int n,
                                std::vector<RankedOffer>* out);

}  // namespace offerd

#endif  // OFFERD_CORE_RANKING_H_
