#ifndef OFFERD_STORE_MANIFEST_H_
#define OFFERD_STORE_MANIFEST_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/feature_schema.h"
#include "store/faiss_retriever.h"

namespace offerd {

inline constexpr int kBundleFormatVersion = 1;
inline constexpr int kMaxEmbeddingDim = 4096;

// Default policy parameters carried by a bundle (MANIFEST.json "policy").
struct PolicyDefaults {
  int retrieval_k = 200;  // candidates retrieved per request, 1..10000
};

struct BundleFileEntry {
  std::string sha256;  // lower-case hex
  int64_t bytes = 0;
};

// The parsed MANIFEST.json of a bundle (docs/snapshot-format.md).
struct BundleManifest {
  int format_version = 0;
  std::string version;
  std::string created_at;
  int embedding_dim = 0;
  int64_t num_offers = 0;
  FeatureSchema feature_schema;
  IndexSpec index;
  PolicyDefaults policy;
  std::map<std::string, BundleFileEntry> files;  // file name -> checksum
};

// Parses and checks MANIFEST.json text: required fields, types and ranges. Errors say which
// field is wrong (the caller prefixes bundle and file name).
absl::StatusOr<BundleManifest> ParseManifest(absl::string_view json_text);

// Parses a feature schema object ({"id": ..., "features": [...]}) given as JSON text.
absl::StatusOr<FeatureSchema> ParseFeatureSchemaJson(absl::string_view json_text);

}  // namespace offerd

#endif  // OFFERD_STORE_MANIFEST_H_
