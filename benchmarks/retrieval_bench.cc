// Retrieval stage: top-K inner-product search per index type and catalog size, on unit
// vectors drawn around clusters (shaped like trained embeddings, not uniform noise).
// Reports time per single-query search and recall@K against exact search.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <memory>
#include <random>
#include <set>
#include <vector>

#include "core/vector_math.h"
#include "store/faiss_retriever.h"

namespace offerd {
namespace {

constexpr int kDim = 64;
constexpr int kClusters = 64;
constexpr int kTopK = 200;

std::vector<float> ClusteredUnitVectors(int64_t rows, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> centers(kClusters * kDim);
  for (float& x : centers) x = normal(rng);
  std::vector<float> out(rows * kDim);
  std::uniform_int_distribution<int> pick(0, kClusters - 1);
  for (int64_t r = 0; r < rows; ++r) {
    const int c = pick(rng);
    for (int d = 0; d < kDim; ++d) out[r * kDim + d] = centers[c * kDim + d] + 0.35f * normal(rng);
    L2NormalizeInPlace(absl::MakeSpan(out.data() + r * kDim, kDim));
  }
  return out;
}

void BM_Retrieval(benchmark::State& state, IndexSpec spec) {
  const int64_t rows = state.range(0);
  const std::vector<float> embeddings = ClusteredUnitVectors(rows, 1);
  const std::vector<float> queries = ClusteredUnitVectors(256, 2);
  absl::StatusOr<std::unique_ptr<FaissRetriever>> index =
      FaissRetriever::Create(spec, embeddings, rows, kDim, "");
  absl::StatusOr<std::unique_ptr<FaissRetriever>> exact =
      FaissRetriever::Create(IndexSpec{}, embeddings, rows, kDim, "");
  if (!index.ok() || !exact.ok()) {
    state.SkipWithError("index build failed");
    return;
  }
  std::vector<Candidate> got, want;
  // Recall@K over the query set, outside the timed loop.
  double hits = 0, total = 0;
  for (int q = 0; q < 64; ++q) {
    absl::Span<const float> query = absl::MakeConstSpan(queries.data() + q * kDim, kDim);
    (void)(*index)->Search(query, kTopK, &got);
    (void)(*exact)->Search(query, kTopK, &want);
    std::set<int32_t> truth;
    for (const Candidate& c : want) truth.insert(c.offer_index);
    for (const Candidate& c : got) hits += truth.count(c.offer_index);
    total += want.size();
  }
  int q = 0;
  for (auto _ : state) {
    absl::Span<const float> query = absl::MakeConstSpan(queries.data() + (q++ % 256) * kDim, kDim);
    benchmark::DoNotOptimize((*index)->Search(query, kTopK, &got));
  }
  state.counters["recall_at_200"] = hits / total;
}

IndexSpec Flat() { return IndexSpec{}; }
IndexSpec Ivf(int nprobe) {
  IndexSpec s;
  s.type = "ivf";
  s.ivf_nprobe = nprobe;
  return s;
}
IndexSpec Hnsw(int ef) {
  IndexSpec s;
  s.type = "hnsw";
  s.hnsw_ef_search = ef;
  return s;
}

BENCHMARK_CAPTURE(BM_Retrieval, flat, Flat())->Arg(1000)->Arg(10000)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Retrieval, ivf_nprobe16, Ivf(16))->Arg(10000)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Retrieval, ivf_nprobe32, Ivf(32))->Arg(10000)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Retrieval, hnsw_ef256, Hnsw(256))->Arg(10000)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace offerd

BENCHMARK_MAIN();
