#include "tests/test_util/bundle_writer.h"

#include <filesystem>
#include <fstream>
#include <random>

#include "absl/strings/str_format.h"
#include "core/vector_math.h"
#include "store/file_util.h"
#include "store/npy.h"

namespace offerd::testing {
namespace {

std::vector<float> RandomUnit(std::mt19937_64* rng, int dim) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(dim);
  for (float& x : v) x = normal(*rng);
  L2NormalizeInPlace(absl::MakeSpan(v));
  return v;
}

void WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary);
  out << contents;
}

}  // namespace

std::vector<float> TestWorld::OfferEmbeddings() const {
  std::mt19937_64 rng(seed);
  std::vector<float> all;
  for (int i = 0; i < num_offers; ++i) {
    std::vector<float> v = RandomUnit(&rng, dim);
    all.insert(all.end(), v.begin(), v.end());
  }
  return all;
}

std::vector<float> TestWorld::UserEmbedding(int i) const {
  std::mt19937_64 rng(seed * 1000003 + i + 1);
  return RandomUnit(&rng, dim);
}

std::string TestWorld::OfferId(int i) const { return absl::StrFormat("o%04d", i); }
std::string TestWorld::UserId(int i) const { return absl::StrFormat("u%05d", i); }

nlohmann::json TestWorld::FeatureSchema() const {
  return {{"id", schema_id},
          {"features",
           {{{"name", "age"}, {"kind", "numeric"}, {"mean", 40.0}, {"std", 12.0}},
            {{"name", "tier"}, {"kind", "categorical"},
             {"vocabulary", {"basic", "silver", "gold"}}}}}};
}

std::string TestWorld::OffersJsonl() const {
  static const char* kCategories[] = {"groceries", "travel", "fashion", "electronics"};
  std::string out;
  for (int i = 0; i < num_offers; ++i) {
    nlohmann::json offer = {{"offer_id", OfferId(i)},
                            {"category", kCategories[i % 4]},
                            {"type", "cashback"},
                            {"title", absl::StrFormat("Offer %d", i)},
                            {"margin", 1.0 + i % 7},
                            {"cost", 0.5},
                            {"active_from_ms", 0},
                            {"active_to_ms", 0},
                            {"channels", nlohmann::json::array()},
                            {"countries", nlohmann::json::array()},
                            {"audiences", nlohmann::json::array()},
                            {"budget", nullptr}};
    out += offer.dump() + "\n";
  }
  return out;
}

std::string TestWorld::WriteBundle(const std::string& root, const std::string& version) const {
  const std::string dir = root + "/" + version;
  std::filesystem::create_directories(dir);
  WriteFile(dir + "/offers.jsonl", OffersJsonl());
  WriteFile(dir + "/offer_embeddings.npy",
            EncodeNpyFloat32({num_offers, dim}, OfferEmbeddings()));
  nlohmann::json manifest = {{"format", "offerd-bundle"},
                             {"format_version", 1},
                             {"version", version},
                             {"created_at", "2026-11-23T07:00:00Z"},
                             {"embedding_dim", dim},
                             {"num_offers", num_offers},
                             {"feature_schema", FeatureSchema()},
                             {"index", {{"type", index_type}}},
                             {"policy", {{"retrieval_k", 20}}},
                             {"files", nlohmann::json::object()}};
  for (const char* file : {"offers.jsonl", "offer_embeddings.npy"}) {
    manifest["files"][file] = {{"sha256", *Sha256File(dir + "/" + file)},
                               {"bytes", std::filesystem::file_size(dir + "/" + file)}};
  }
  WriteFile(dir + "/MANIFEST.json", manifest.dump(2));
  return dir;
}

std::string TestWorld::PublishBundle(const std::string& root, const std::string& version) const {
  const std::string tmp = WriteBundle(root, ".tmp-" + version);
  // The manifest names the final version.
  std::ifstream in(tmp + "/MANIFEST.json");
  nlohmann::json manifest = nlohmann::json::parse(in);
  manifest["version"] = version;
  WriteFile(tmp + "/MANIFEST.json", manifest.dump(2));
  const std::string dir = root + "/" + version;
  std::filesystem::rename(tmp, dir);
  return dir;
}

void TestWorld::WriteUsers(const std::string& path) const {
  nlohmann::json header = {{"header",
                            {{"format", "offerd-users"},
                             {"format_version", 1},
                             {"embedding_dim", dim},
                             {"feature_schema", FeatureSchema()}}}};
  std::string out = header.dump() + "\n";
  static const char* kTiers[] = {"basic", "silver", "gold"};
  for (int i = 0; i < num_users; ++i) {
    nlohmann::json user = {{"user_id", UserId(i)},
                           {"features", {{"age", 20 + i}, {"tier", kTiers[i % 3]}}},
                           {"embedding", UserEmbedding(i)},
                           {"purchases",
                            {{"first_purchase_day", 20000},
                             {"last_purchase_day", 20000 + i},
                             {"repeat_days", i / 2},
                             {"repeat_spend_sum", 10.0 * (i / 2)}}}};
    out += user.dump() + "\n";
  }
  WriteFile(path, out);
}

void WriteGreedyPolicyConfig(const std::string& path) {
  WriteFile(path, R"({"holdout_fraction": 0, "overrides": {"epsilon": 0, "max_per_category": 0}})");
}

void RewriteChecksum(const std::string& bundle_dir, const std::string& file) {
  const std::string manifest_path = bundle_dir + "/MANIFEST.json";
  std::ifstream in(manifest_path);
  nlohmann::json manifest = nlohmann::json::parse(in);
  manifest["files"][file] = {{"sha256", *Sha256File(bundle_dir + "/" + file)},
                             {"bytes", std::filesystem::file_size(bundle_dir + "/" + file)}};
  WriteFile(manifest_path, manifest.dump(2));
}

}  // namespace offerd::testing
