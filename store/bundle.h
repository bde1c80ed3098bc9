#ifndef OFFERD_STORE_BUNDLE_H_
#define OFFERD_STORE_BUNDLE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/offer.h"
#include "core/retriever.h"
#include "store/manifest.h"
#include "store/model_loader.h"

namespace offerd {

// One immutable, validated snapshot bundle in memory: catalog, embeddings and index
// (docs/snapshot-format.md). Shared read-only by every request that pinned it.
//
// Thread safety: immutable after Load(); all methods are safe to call concurrently.
class Bundle {
 public:
  struct LoadOptions {
    // When non-empty, the bundle's feature_schema.id must equal it (the schema the stored
    // user features were ingested with).
    std::string expected_feature_schema_id;
  };

  // Loads and validates `<dir>`: manifest, sha256 and size of every listed file, catalog,
  // embeddings (shape, dtype, NaN/Inf, unit norm), feature schema, index. Every error names
  // the bundle version, the file and the reason: "bundle V: FILE: reason".
  static absl::StatusOr<std::shared_ptr<const Bundle>> Load(const std::string& dir,
                                                           const LoadOptions& options);

  const BundleManifest& manifest() const { return manifest_; }
  const std::string& version() const { return manifest_.version; }
  int dimension() const { return manifest_.embedding_dim; }
  const std::vector<Offer>& offers() const { return offers_; }
  const CandidateRetriever& retriever() const { return *retriever_; }
  // The query used for users without a stored embedding: the L2-normalised mean offer
  // embedding.
  absl::Span<const float> cold_start_query() const { return cold_start_query_; }
  // Catalog row of `offer_id`, if present.
  std::optional<int32_t> FindOffer(absl::string_view offer_id) const;
  // The bundle's models (uplift heads, user tower); each may be absent.
  const BundleModels& models() const { return models_; }
  // Worst relative error of the golden cases re-computed at load (0 without golden cases).
  double golden_max_relative_error() const { return golden_max_relative_error_; }
  // The cold-start ranking (top offers for the cold-start query), computed at load: the
  // candidates of the degraded path when too little of a request's deadline is left.
  const std::vector<Candidate>& fallback_candidates() const { return fallback_candidates_; }
  // A few offer embeddings sampled at load, used as realistic warm-up queries.
  const std::vector<std::vector<float>>& warmup_queries() const { return warmup_queries_; }
  // Approximate bytes held (index vectors and catalog).
  int64_t memory_bytes() const { return memory_bytes_; }

 private:
  Bundle() = default;

  BundleManifest manifest_;
  std::vector<Offer> offers_;
  BundleModels models_;
  double golden_max_relative_error_ = 0;
  std::unique_ptr<CandidateRetriever> retriever_;
  std::vector<float> cold_start_query_;
  std::vector<std::vector<float>> warmup_queries_;
  std::vector<Candidate> fallback_candidates_;
  absl::flat_hash_map<std::string, int32_t> offer_index_;
  int64_t memory_bytes_ = 0;
};

// True when `version` is a valid bundle directory name: [0-9A-Za-z._-]{1,128}, not starting
// with '.'.
bool IsValidBundleVersion(absl::string_view version);

// Valid bundle versions (directories) under `snapshot_root`, newest (lexicographically
// highest) first. Entries starting with '.' and other names are ignored.
absl::StatusOr<std::vector<std::string>> ListBundleVersions(const std::string& snapshot_root);

}  // namespace offerd

#endif  // OFFERD_STORE_BUNDLE_H_
