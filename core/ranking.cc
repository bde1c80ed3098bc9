#include "core/ranking.h"

#include <algorithm>

namespace offerd {

void SelectTopNByRetrievalScore(absl::Span<const Candidate> candidates, int n,
                                std::vector<RankedOffer>* out) {
  out->clear();
  if (n <= 0 || candidates.empty()) return;
  out->reserve(candidates.size());
  for (const Candidate& c : candidates) {
    if (c.offer_index < 0) continue;  // FAISS pads with -1 when the index has fewer than k
    RankedOffer r;
    r.offer_index = c.offer_index;
    r.score = c.retrieval_score;
    r.retrieval_score = c.retrieval_score;
    out->push_back(r);
  }
  const auto better = [](const RankedOffer& a, const RankedOffer& b) {
    if (a.score != b.score) return a.score > b.score;
    return a.offer_index < b.offer_index;
  };
  const size_t keep = std::min(out->size(), static_cast<size_t>(n));
  std::partial_sort(out->begin(), out->begin() + keep, out->end(), better);
  out->resize(keep);
}

}  // namespace offerd
