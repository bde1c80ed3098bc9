#include "store/bundle.h"

#include <filesystem>
#include <fstream>
#include <limits>

#include <faiss/IndexFlat.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/index_io.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/vector_math.h"
#include "store/npy.h"
#include "tests/test_util/bundle_writer.h"
#include "tests/test_util/temp_dir.h"

namespace offerd {
namespace {

using testing::RewriteChecksum;
using testing::TempDir;
using testing::TestWorld;

void WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class BundleTest : public ::testing::Test {
 protected:
  absl::Status LoadError(const std::string& dir, Bundle::LoadOptions options = {}) {
    absl::StatusOr<std::shared_ptr<const Bundle>> bundle = Bundle::Load(dir, options);
    return bundle.status();
  }
  TempDir tmp_;
  TestWorld world_;
};

TEST_F(BundleTest, LoadsAValidBundle) {
  const std::string dir = world_.WriteBundle(tmp_.path(), "20261123T070000Z");
  absl::StatusOr<std::shared_ptr<const Bundle>> bundle = Bundle::Load(dir, {});
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  EXPECT_EQ((*bundle)->version(), "20261123T070000Z");
  EXPECT_EQ((*bundle)->offers().size(), 50u);
  EXPECT_EQ((*bundle)->dimension(), 8);
  EXPECT_EQ((*bundle)->FindOffer("o0007"), 7);
  EXPECT_FALSE((*bundle)->FindOffer("nope").has_value());
  EXPECT_NEAR(L2Norm((*bundle)->cold_start_query()), 1.0, 1e-5);
  EXPECT_EQ((*bundle)->manifest().feature_schema.features.size(), 2u);
  EXPECT_EQ((*bundle)->manifest().policy.retrieval_k, 20);
}

TEST_F(BundleTest, RetrievalMatchesBruteForce) {
  for (const char* type : {"flat", "ivf", "hnsw"}) {
    world_.index_type = type;
    world_.num_offers = 300;
    const std::string dir = world_.WriteBundle(tmp_.path(), std::string("v-") + type);
    absl::StatusOr<std::shared_ptr<const Bundle>> bundle = Bundle::Load(dir, {});
    ASSERT_TRUE(bundle.ok()) << bundle.status();
    const std::vector<float> query = world_.UserEmbedding(3);
    std::vector<Candidate> got;
    ASSERT_TRUE((*bundle)->retriever().Search(query, 5, &got).ok());
    ASSERT_EQ(got.size(), 5u) << type;
    // Brute force best.
    const std::vector<float> emb = world_.OfferEmbeddings();
    int best = 0;
    double best_score = -2;
    for (int i = 0; i < world_.num_offers; ++i) {
      const double s = Dot(query, absl::MakeConstSpan(emb.data() + i * world_.dim, world_.dim));
      if (s > best_score) best_score = s, best = i;
    }
    if (std::string(type) == "flat") {
      EXPECT_EQ(got[0].offer_index, best);
      EXPECT_NEAR(got[0].retrieval_score, best_score, 1e-5);
    }
    for (size_t i = 1; i < got.size(); ++i) {
      EXPECT_GE(got[i - 1].retrieval_score, got[i].retrieval_score);
    }
  }
}

TEST_F(BundleTest, LoadsAPrebuiltIndexFile) {
  world_.num_offers = 300;
  const std::string dir = world_.WriteBundle(tmp_.path(), "v1");
  // Write an IVF index with FAISS itself, list it in the manifest.
  const std::vector<float> emb = world_.OfferEmbeddings();
  faiss::IndexFlatIP quantizer(world_.dim);
  faiss::IndexIVFFlat ivf(&quantizer, world_.dim, 8, faiss::METRIC_INNER_PRODUCT);
  ivf.train(world_.num_offers, emb.data());
  ivf.add(world_.num_offers, emb.data());
  faiss::write_index(&ivf, (dir + "/index.faiss").c_str());
  {
    std::ifstream in(dir + "/MANIFEST.json");
    nlohmann::json manifest = nlohmann::json::parse(in);
    manifest["index"] = {{"type", "ivf"}, {"nprobe", 8}, {"file", "index.faiss"}};
    std::ofstream(dir + "/MANIFEST.json") << manifest.dump();
  }
  RewriteChecksum(dir, "index.faiss");
  absl::StatusOr<std::shared_ptr<const Bundle>> bundle = Bundle::Load(dir, {});
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  std::vector<Candidate> got;
  ASSERT_TRUE((*bundle)->retriever().Search(world_.UserEmbedding(1), 10, &got).ok());
  EXPECT_EQ(got.size(), 10u);  // nprobe == nlist: exact

  // A prebuilt index that does not match the catalog is rejected, naming the file.
  faiss::IndexFlatIP small(world_.dim);
  small.add(10, emb.data());
  faiss::write_index(&small, (dir + "/index.faiss").c_str());
  RewriteChecksum(dir, "index.faiss");
  const absl::Status s = LoadError(dir);
  EXPECT_NE(s.message().find("index.faiss"), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find("holds 10 vectors"), absl::string_view::npos) << s;
  // Garbage bytes: FAISS throws; the loader returns a Status naming the file.
  WriteFile(dir + "/index.faiss", "not an index");
  RewriteChecksum(dir, "index.faiss");
  const absl::Status garbage = LoadError(dir);
  EXPECT_NE(garbage.message().find("index.faiss: FAISS error"), absl::string_view::npos) << garbage;
}

TEST_F(BundleTest, RejectsBadChecksum) {
  const std::string dir = world_.WriteBundle(tmp_.path(), "v1");
  std::string catalog = ReadFile(dir + "/offers.jsonl");
  catalog[10] = catalog[10] == 'x' ? 'y' : 'x';
  WriteFile(dir + "/offers.jsonl", catalog);
  const absl::Status s = LoadError(dir);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("bundle v1: offers.jsonl: sha256 mismatch"), absl::string_view::npos)
      << s;
}

TEST_F(BundleTest, RejectsWrongDimension) {
  const std::string dir = world_.WriteBundle(tmp_.path(), "v1");
  WriteFile(dir + "/offer_embeddings.npy",
            EncodeNpyFloat32({50, 4}, std::vector<float>(200, 0.5f)));
  RewriteChecksum(dir, "offer_embeddings.npy");
  const absl::Status s = LoadError(dir);
  EXPECT_NE(s.message().find("offer_embeddings.npy: shape (50,4,) must be"), absl::string_view::npos)
      << s;
}

TEST_F(BundleTest, RejectsNaNInEmbeddings) {
  const std::string dir = world_.WriteBundle(tmp_.path(), "v1");
  std::vector<float> emb = world_.OfferEmbeddings();
  emb[8 * 3 + 2] = std::numeric_limits<float>::quiet_NaN();
  WriteFile(dir + "/offer_embeddings.npy", EncodeNpyFloat32({50, 8}, emb));
  RewriteChecksum(dir, "offer_embeddings.npy");
  const absl::Status s = LoadError(dir);
  EXPECT_NE(s.message().find("row 3 (offer o0003) contains NaN"), absl::string_view::npos) << s;
}

TEST_F(BundleTest, RejectsTruncatedNpy) {
  const std::string dir = world_.WriteBundle(tmp_.path(), "v1");
  std::string npy = ReadFile(dir + "/offer_embeddings.npy");
  npy.resize(npy.size() - 100);
  WriteFile(dir + "/offer_embeddings.npy", npy);
  RewriteChecksum(dir, "offer_embeddings.npy");
  const absl::Status s = LoadError(dir);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("offer_embeddings.npy: truncated"), absl::string_view::npos) << s;
}

TEST_F(BundleTest, RejectsMissingFile) {
  const std::string dir = world_.WriteBundle(tmp_.path(), "v1");
  std::filesystem::remove(dir + "/offers.jsonl");
  const absl::Status s = LoadError(dir);
  EXPECT_NE(s.message().find("offers.jsonl: listed in the manifest but missing"),
            absl::string_view::npos)
      << s;
}

TEST_F(BundleTest, RejectsDuplicateOfferId) {
  const std::string dir = world_.WriteBundle(tmp_.path(), "v1");
  std::string catalog = ReadFile(dir + "/offers.jsonl");
  const size_t pos = catalog.find("o0001");
  catalog.replace(pos, 5, "o0000");
  WriteFile(dir + "/offers.jsonl", catalog);
  RewriteChecksum(dir, "offers.jsonl");
  const absl::Status s = LoadError(dir);
  EXPECT_NE(s.message().find("line 2: duplicate offer_id \"o0000\""), absl::string_view::npos)
      << s;
}

TEST_F(BundleTest, RejectsManifestThatIsNotJson) {
  const std::string dir = world_.WriteBundle(tmp_.path(), "v1");
  WriteFile(dir + "/MANIFEST.json", "{ this is not json");
  const absl::Status s = LoadError(dir);
  EXPECT_NE(s.message().find("bundle v1: MANIFEST.json: not valid JSON"), absl::string_view::npos)
      << s;
}

TEST_F(BundleTest, RejectsFeatureSchemaMismatch) {
  const std::string dir = world_.WriteBundle(tmp_.path(), "v1");
  Bundle::LoadOptions options;
  options.expected_feature_schema_id = "another-schema";
  const absl::Status s = LoadError(dir, options);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("re-ingest"), absl::string_view::npos) << s;
  options.expected_feature_schema_id = world_.schema_id;
  EXPECT_TRUE(Bundle::Load(dir, options).ok());
}

TEST_F(BundleTest, RejectsVersionNotMatchingDirectory) {
  const std::string dir = world_.WriteBundle(tmp_.path(), "v1");
  std::filesystem::rename(dir, tmp_.Join("v2"));
  const absl::Status s = LoadError(tmp_.Join("v2"));
  EXPECT_NE(s.message().find("does not match the directory name"), absl::string_view::npos) << s;
}

TEST_F(BundleTest, RejectsNonUnitRows) {
  const std::string dir = world_.WriteBundle(tmp_.path(), "v1");
  std::vector<float> emb = world_.OfferEmbeddings();
  for (float& x : emb) x *= 2;
  WriteFile(dir + "/offer_embeddings.npy", EncodeNpyFloat32({50, 8}, emb));
  RewriteChecksum(dir, "offer_embeddings.npy");
  EXPECT_NE(LoadError(dir).message().find("unit-norm"), absl::string_view::npos);
}

TEST(BundleVersionTest, NamesAndOrdering) {
  EXPECT_TRUE(IsValidBundleVersion("20261123T070000Z"));
  EXPECT_TRUE(IsValidBundleVersion("v1.2_a-b"));
  EXPECT_FALSE(IsValidBundleVersion(""));
  EXPECT_FALSE(IsValidBundleVersion(".tmp-v1"));
  EXPECT_FALSE(IsValidBundleVersion("../etc"));
  EXPECT_FALSE(IsValidBundleVersion("a/b"));
  EXPECT_FALSE(IsValidBundleVersion(std::string(129, 'a')));

  TempDir tmp;
  for (const char* name : {"20261101T000000Z", "20261123T070000Z", ".tmp-20261201T000000Z",
                           "bad name"}) {
    std::filesystem::create_directories(tmp.Join(name));
  }
  std::ofstream(tmp.Join("PINNED")) << "x";
  absl::StatusOr<std::vector<std::string>> versions = ListBundleVersions(tmp.path());
  ASSERT_TRUE(versions.ok());
  EXPECT_EQ(*versions, (std::vector<std::string>{"20261123T070000Z", "20261101T000000Z"}));
  EXPECT_FALSE(ListBundleVersions(tmp.Join("missing")).ok());
}

}  // namespace
}  // namespace offerd
