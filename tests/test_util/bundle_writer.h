#ifndef OFFERD_TESTS_TEST_UTIL_BUNDLE_WRITER_H_
#define OFFERD_TESTS_TEST_UTIL_BUNDLE_WRITER_H_

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace offerd::testing {

// Writes valid bundles and users.jsonl files in the documented format
// (docs/snapshot-format.md) for tests; each test then breaks what it wants to break.
struct TestWorld {
  int num_offers = 50;
  int dim = 8;
  int num_users = 20;
  uint64_t seed = 7;
  std::string schema_id = "schema-test-1";
  std::string index_type = "flat";

  // Row-major unit-norm embeddings, generated from `seed`.
  std::vector<float> OfferEmbeddings() const;
  // Unit-norm embedding of user i.
  std::vector<float> UserEmbedding(int i) const;
  std::string OfferId(int i) const;
  std::string UserId(int i) const;

  nlohmann::json FeatureSchema() const;
  std::string OffersJsonl() const;
  // Writes <root>/<version>/ with manifest, catalog and embeddings. Returns the bundle dir.
  std::string WriteBundle(const std::string& root, const std::string& version) const;
  // Same, but built under <root>/.tmp-<version>/ and renamed into place, as writers must do
  // when a server may be watching the root.
  std::string PublishBundle(const std::string& root, const std::string& version) const;
  // Writes users.jsonl for users 0..num_users-1 (with embeddings and purchases).
  void WriteUsers(const std::string& path) const;
};

// Writes a --policy_config that makes ranking deterministic: no holdout, no exploration, no
// diversity limit (tests that compare against exact top-N).
void WriteGreedyPolicyConfig(const std::string& path);

// Recomputes the manifest's sha256/bytes for `file` after a test modified it on purpose.
void RewriteChecksum(const std::string& bundle_dir, const std::string& file);

}  // namespace offerd::testing

#endif  // OFFERD_TESTS_TEST_UTIL_BUNDLE_WRITER_H_
