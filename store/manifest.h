#ifndef OFFERD_STORE_MANIFEST_H_
#define OFFERD_STORE_MANIFEST_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/feature_schema.h"
#include "core/policy_params.h"
#include "store/faiss_retriever.h"

namespace offerd {

inline constexpr int kBundleFormatVersion = 1;
inline constexpr int kMaxEmbeddingDim = 4096;

// Default policy parameters carried by a bundle (MANIFEST.json "policy").
struct PolicyDefaults {
  int retrieval_k = 200;  // candidates retrieved per request, 1..10000
  PolicyParams params;    // ranking policy defaults (core/policy_params.h)
};

// CLV parameters carried by a bundle (MANIFEST.json "clv"); absent = no CLV term.
struct ClvSpec {
  bool present = false;
  double r = 0, alpha = 0, a = 0, b = 0;  // BG/NBD, time unit weeks
  double p = 0, q = 0, v = 0;             // Gamma-Gamma
  double horizon_weeks = 52;
  double margin = 0.3;                    // share of spend that is margin
  double annual_discount_rate = 0.1;
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
  ClvSpec clv;
  std::string models_json;  // the "models" object as JSON text ("" when absent)
  std::string golden_file;  // golden cases file named by the models ("" when none)
  std::map<std::string, BundleFileEntry> files;  // file name -> checksum
};

// Parses and checks MANIFEST.json text: required fields, types and ranges. Errors say which
// field is wrong (the caller prefixes bundle and file name).
absl::StatusOr<BundleManifest> ParseManifest(absl::string_view json_text);

// Parses a feature schema object ({"id": ..., "features": [...]}) given as JSON text.
absl::StatusOr<FeatureSchema> ParseFeatureSchemaJson(absl::string_view json_text);

}  // namespace offerd

#endif  // OFFERD_STORE_MANIFEST_H_
