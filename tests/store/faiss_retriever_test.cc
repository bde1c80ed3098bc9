#include "store/faiss_retriever.h"

#include <faiss/IndexFlat.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/index_io.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <set>
#include <string>
#include <unistd.h>
#include <vector>

namespace offerd {
namespace {

// Clustered, L2-normalised vectors (like trained embeddings): `clusters` centres plus noise.
std::vector<float> Clustered(int64_t rows, int dim, int clusters, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> centres(static_cast<size_t>(clusters) * dim);
  for (float& v : centres) v = normal(rng);
  std::vector<float> out(static_cast<size_t>(rows) * dim);
  for (int64_t i = 0; i < rows; ++i) {
    const float* centre = centres.data() + (i % clusters) * dim;
    float* row = out.data() + i * dim;
    double norm = 0;
    for (int j = 0; j < dim; ++j) {
      row[j] = centre[j] + 0.4f * normal(rng);
      norm += static_cast<double>(row[j]) * row[j];
    }
    for (int j = 0; j < dim; ++j) row[j] = static_cast<float>(row[j] / std::sqrt(norm));
  }
  return out;
}

std::set<int64_t> Ids(const std::vector<Candidate>& candidates) {
  std::set<int64_t> ids;
  for (const Candidate& c : candidates) ids.insert(c.offer_index);
  return ids;
}

void ExpectBestFirst(const std::vector<Candidate>& got) {
  for (size_t i = 1; i < got.size(); ++i) {
    ASSERT_TRUE(got[i - 1].retrieval_score > got[i].retrieval_score ||
                (got[i - 1].retrieval_score == got[i].retrieval_score &&
                 got[i - 1].offer_index < got[i].offer_index))
        << "position " << i;
  }
}

TEST(FaissRetrieverTest, FlatScanIsExactTopK) {
  const int dim = 40;  // not a multiple of 8: the kernels' masked tail
  const int64_t rows = 3001;
  const std::vector<float> data = Clustered(rows, dim, 30, 1);
  IndexSpec spec;
  spec.type = "flat";
  absl::StatusOr<std::unique_ptr<FaissRetriever>> retriever =
      FaissRetriever::Create(spec, data, rows, dim, "");
  ASSERT_TRUE(retriever.ok()) << retriever.status();
  EXPECT_STREQ((*retriever)->search_path(), "scan-flat");
  const std::vector<float> queries = Clustered(20, dim, 7, 2);
  for (int q = 0; q < 20; ++q) {
    const float* query = queries.data() + q * dim;
    std::vector<std::pair<double, int64_t>> exact;
    for (int64_t i = 0; i < rows; ++i) {
      double dot = 0;
      for (int j = 0; j < dim; ++j) dot += static_cast<double>(query[j]) * data[i * dim + j];
      exact.emplace_back(-dot, i);
    }
    std::sort(exact.begin(), exact.end());
    for (int k : {1, 200, 5000}) {
      std::vector<Candidate> got;
      ASSERT_TRUE((*retriever)->Search(absl::MakeConstSpan(query, dim), k, &got).ok());
      ASSERT_EQ(got.size(), static_cast<size_t>(std::min<int64_t>(k, rows)));
      ExpectBestFirst(got);
      for (size_t i = 0; i < got.size(); ++i) {
        // Rank by rank, the score equals the exact one up to float rounding (so an id can
        // differ only where two exact scores are that close).
        ASSERT_NEAR(got[i].retrieval_score, -exact[i].first, 1e-5) << "query " << q << " rank " << i;
      }
    }
  }
}

TEST(FaissRetrieverTest, IvfScanMatchesFaissSearchOnTheSameIndex) {
  const int dim = 64;
  const int64_t rows = 20000;
  const std::vector<float> data = Clustered(rows, dim, 200, 3);
  // A prebuilt IVF-flat index, as make_bundles writes one; FAISS's own search is the reference.
  faiss::IndexFlatIP quantizer(dim);
  faiss::IndexIVFFlat index(&quantizer, dim, 100, faiss::METRIC_INNER_PRODUCT);
  index.cp.seed = 7;
  index.train(rows, data.data());
  index.add(rows, data.data());
  char path[] = "/tmp/offerd_ivf_XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  faiss::write_index(&index, path);

  const std::vector<float> queries = Clustered(50, dim, 13, 4);
  for (int nprobe : {1, 8, 100}) {
    IndexSpec spec;
    spec.type = "ivf";
    spec.ivf_nprobe = nprobe;
    absl::StatusOr<std::unique_ptr<FaissRetriever>> retriever =
        FaissRetriever::Create(spec, data, rows, dim, path);
    ASSERT_TRUE(retriever.ok()) << retriever.status();
    EXPECT_STREQ((*retriever)->search_path(), "scan-ivf");
    index.nprobe = nprobe;
    size_t same = 0, total = 0;
    for (int q = 0; q < 50; ++q) {
      const float* query = queries.data() + q * dim;
      const int k = 200;
      std::vector<float> distances(k);
      std::vector<faiss::Index::idx_t> labels(k);
      index.search(1, query, k, distances.data(), labels.data());
      std::vector<Candidate> want;
      for (int i = 0; i < k; ++i) {
        if (labels[i] >= 0) want.push_back(Candidate{static_cast<int32_t>(labels[i]), distances[i]});
      }
      std::vector<Candidate> got;
      ASSERT_TRUE((*retriever)->Search(absl::MakeConstSpan(query, dim), k, &got).ok());
      ExpectBestFirst(got);
      ASSERT_EQ(got.size(), want.size()) << "nprobe " << nprobe << " query " << q;
      for (size_t i = 0; i < got.size(); ++i) {
        ASSERT_NEAR(got[i].retrieval_score, want[i].retrieval_score, 1e-5)
            << "nprobe " << nprobe << " query " << q << " rank " << i;
      }
      const std::set<int64_t> a = Ids(got), b = Ids(want);
      std::vector<int64_t> common;
      std::set_intersection(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(common));
      same += common.size();
      total += want.size();
    }
    // The same lists are probed and the same vectors kept; only equal-to-rounding scores at
    // the K-th place can swap.
    EXPECT_GE(static_cast<double>(same) / total, 0.999) << "nprobe " << nprobe;
  }
  std::remove(path);
}

TEST(FaissRetrieverTest, HnswKeepsFaissSearch) {
  const int dim = 16;
  const std::vector<float> data = Clustered(500, dim, 10, 5);
  IndexSpec spec;
  spec.type = "hnsw";
  absl::StatusOr<std::unique_ptr<FaissRetriever>> retriever =
      FaissRetriever::Create(spec, data, 500, dim, "");
  ASSERT_TRUE(retriever.ok()) << retriever.status();
  EXPECT_STREQ((*retriever)->search_path(), "faiss");
  std::vector<Candidate> got;
  ASSERT_TRUE((*retriever)->Search(absl::MakeConstSpan(data.data(), dim), 10, &got).ok());
  ASSERT_EQ(got.size(), 10u);
  EXPECT_EQ(got[0].offer_index, 0);  // a stored vector finds itself first
}

}  // namespace
}  // namespace offerd
