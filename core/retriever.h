#ifndef OFFERD_CORE_RETRIEVER_H_
#define OFFERD_CORE_RETRIEVER_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace offerd {

// A retrieved offer: its row in the bundle's catalog and its inner-product score.
struct Candidate {
  int32_t offer_index = -1;
  float retrieval_score = 0.0f;
};

// Top-K maximum-inner-product search over a bundle's offer embeddings. The seam between the
// ranking pipeline and an index implementation (FaissRetriever in store/).
//
// Thread safety: Search() is const and safe to call concurrently.
class CandidateRetriever {
 public:
  virtual ~CandidateRetriever() = default;

  // Writes up to `k` candidates for `query` (length = dimension()) into `out`, best first.
  // `out` is cleared first; fewer than k are written when the catalog is smaller.
  virtual absl::Status Search(absl::Span<const float> query, int k,
                              std::vector<Candidate>* out) const = 0;

  virtual int dimension() const = 0;
  virtual int64_t size() const = 0;
};

}  // namespace offerd

#endif  // OFFERD_CORE_RETRIEVER_H_
