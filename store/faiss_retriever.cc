#include "store/faiss_retriever.h"

#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/impl/FaissException.h>
#include <faiss/index_io.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <exception>

#include "absl/strings/str_cat.h"

namespace offerd {
namespace {

using idx_t = faiss::Index::idx_t;

// OpenMP thread counts are per thread: a gRPC worker does not inherit omp_set_num_threads
// from main. A single-query search gains nothing from threads and loses a lot to their
// wake-ups, so every thread that searches pins itself to one OpenMP thread once.
void UseOneOpenMpThreadOnThisThread() {
  thread_local bool done = false;
  if (!done) {
    omp_set_num_threads(1);
    done = true;
  }
}

}  // namespace

FaissRetriever::FaissRetriever(std::unique_ptr<faiss::Index> index, IndexSpec spec, int dim,
                               int64_t rows)
    : index_(std::move(index)), spec_(std::move(spec)), dim_(dim), rows_(rows) {}

FaissRetriever::~FaissRetriever() = default;

absl::StatusOr<std::unique_ptr<FaissRetriever>> FaissRetriever::Create(
    const IndexSpec& spec, const std::vector<float>& embeddings, int64_t rows, int dim,
    const std::string& index_path) {
  if (static_cast<int64_t>(embeddings.size()) != rows * dim) {
    return absl::InvalidArgumentError(absl::StrCat("index: ", embeddings.size(),
                                                   " values for ", rows, " x ", dim));
  }
  return Create(
      spec, rows, dim,
      [&](int64_t first, int64_t count, float* out) {
        std::copy(embeddings.begin() + first * dim, embeddings.begin() + (first + count) * dim,
                  out);
        return absl::OkStatus();
      },
      index_path);
}

absl::StatusOr<std::unique_ptr<FaissRetriever>> FaissRetriever::Create(
    const IndexSpec& spec, int64_t rows, int dim, const RowSource& source,
    const std::string& index_path) {
  UseOneOpenMpThreadOnThisThread();
  if (rows <= 0 || dim <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("index: need rows, dim > 0; got ", rows, " x ", dim));
  }
  // Vectors are added in chunks so that building never holds a second full copy.
  constexpr int64_t kChunkRows = 8192;
  std::vector<float> chunk;
  const auto add_all = [&](faiss::Index* index) -> absl::Status {
    chunk.resize(static_cast<size_t>(std::min(kChunkRows, rows) * dim));
    for (int64_t first = 0; first < rows; first += kChunkRows) {
      const int64_t count = std::min(kChunkRows, rows - first);
      if (absl::Status s = source(first, count, chunk.data()); !s.ok()) return s;
      index->add(count, chunk.data());
    }
    return absl::OkStatus();
  };

  std::unique_ptr<faiss::Index> index;
  try {
    if (!index_path.empty()) {
      index.reset(faiss::read_index(index_path.c_str()));
      if (index->d != dim || index->ntotal != rows) {
        return absl::InvalidArgumentError(
            absl::StrCat(index_path, ": prebuilt index holds ", index->ntotal, " vectors of ",
                         index->d, " dimensions, the bundle has ", rows, " of ", dim));
      }
      if (index->metric_type != faiss::METRIC_INNER_PRODUCT) {
        return absl::InvalidArgumentError(
            absl::StrCat(index_path, ": prebuilt index must use inner product"));
      }
      const bool known = dynamic_cast<const faiss::IndexFlat*>(index.get()) != nullptr ||
                         dynamic_cast<const faiss::IndexIVF*>(index.get()) != nullptr ||
                         dynamic_cast<const faiss::IndexHNSW*>(index.get()) != nullptr;
      if (!known) {
        return absl::InvalidArgumentError(
            absl::StrCat(index_path, ": unsupported index class (flat, IVF or HNSW only)"));
      }
      // FAISS 1.7.3's HNSW search reads the beam width from the index, not from
      // SearchParametersHNSW, so the manifest's ef_search is set here, while the index is
      // still private to this load (a built index gets it below).
      if (auto* hnsw = dynamic_cast<faiss::IndexHNSW*>(index.get()); hnsw != nullptr) {
        hnsw->hnsw.efSearch = std::max(1, spec.hnsw_ef_search);
      }
    } else if (spec.type == "flat") {
      index = std::make_unique<faiss::IndexFlatIP>(dim);
      if (absl::Status s = add_all(index.get()); !s.ok()) return s;
    } else if (spec.type == "ivf") {
      int nlist = spec.ivf_nlist > 0
                      ? spec.ivf_nlist
                      : std::max(1, static_cast<int>(4 * std::sqrt(static_cast<double>(rows))));
      nlist = static_cast<int>(std::min<int64_t>(nlist, rows));
      auto quantizer = std::make_unique<faiss::IndexFlatIP>(dim);
      auto ivf = std::make_unique<faiss::IndexIVFFlat>(quantizer.get(), dim, nlist,
                                                       faiss::METRIC_INNER_PRODUCT);
      ivf->own_fields = true;
      quantizer.release();
      ivf->cp.seed = 1234;                  // deterministic k-means
      ivf->cp.min_points_per_centroid = 1;  // silence FAISS's stderr warning; nlist is ours
      // Train on an evenly strided sample: k-means subsamples to max_points_per_centroid
      // anyway, and the sample keeps the memory of a load bounded.
      const int64_t sample_rows =
          std::min<int64_t>(rows, static_cast<int64_t>(nlist) * ivf->cp.max_points_per_centroid);
      std::vector<float> sample(static_cast<size_t>(sample_rows * dim));
      for (int64_t i = 0; i < sample_rows; ++i) {
        const int64_t row = i * rows / sample_rows;
        if (absl::Status s = source(row, 1, sample.data() + i * dim); !s.ok()) return s;
      }
      ivf->train(sample_rows, sample.data());
      sample = std::vector<float>();
      if (absl::Status s = add_all(ivf.get()); !s.ok()) return s;
      ivf->nprobe = static_cast<size_t>(std::max(1, spec.ivf_nprobe));
      index = std::move(ivf);
    } else if (spec.type == "hnsw") {
      auto hnsw = std::make_unique<faiss::IndexHNSWFlat>(dim, std::max(2, spec.hnsw_m),
                                                         faiss::METRIC_INNER_PRODUCT);
      hnsw->hnsw.efConstruction = std::max(1, spec.hnsw_ef_construction);
      hnsw->hnsw.efSearch = std::max(1, spec.hnsw_ef_search);
      if (absl::Status s = add_all(hnsw.get()); !s.ok()) return s;
      index = std::move(hnsw);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("index: unknown type \"", spec.type, "\" (flat, ivf or hnsw)"));
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(
        index_path.empty() ? absl::StrCat("index (", spec.type, ")") : index_path,
        ": FAISS error: ", e.what()));
  }
  // A prebuilt index decides its own type; searches use parameters that fit it.
  IndexSpec effective = spec;
  if (dynamic_cast<const faiss::IndexIVF*>(index.get()) != nullptr) {
    effective.type = "ivf";
  } else if (dynamic_cast<const faiss::IndexHNSW*>(index.get()) != nullptr) {
    effective.type = "hnsw";
  } else {
    effective.type = "flat";
  }
  return std::unique_ptr<FaissRetriever>(
      new FaissRetriever(std::move(index), std::move(effective), dim, rows));
}

int64_t FaissRetriever::memory_bytes() const {
  return rows_ * dim_ * static_cast<int64_t>(sizeof(float));
}

absl::Status FaissRetriever::Search(absl::Span<const float> query, int k,
                                    std::vector<Candidate>* out) const {
  out->clear();
  if (static_cast<int>(query.size()) != dim_) {
    return absl::InvalidArgumentError(
        absl::StrCat("query has ", query.size(), " dimensions, index has ", dim_));
  }
  if (k <= 0) return absl::OkStatus();
  k = static_cast<int>(std::min<int64_t>(k, rows_));
  UseOneOpenMpThreadOnThisThread();
  // Per-thread scratch: no allocation per request once warmed up.
  thread_local std::vector<float> distances;
  thread_local std::vector<idx_t> labels;
  distances.resize(k);
  labels.resize(k);
  try {
    if (spec_.type == "ivf") {
      faiss::SearchParametersIVF params;
      params.nprobe = static_cast<size_t>(std::max(1, spec_.ivf_nprobe));
      index_->search(1, query.data(), k, distances.data(), labels.data(), &params);
    } else if (spec_.type == "hnsw") {
      faiss::SearchParametersHNSW params;
      params.efSearch = std::max(spec_.hnsw_ef_search, k);
      index_->search(1, query.data(), k, distances.data(), labels.data(), &params);
    } else {
      index_->search(1, query.data(), k, distances.data(), labels.data());
    }
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("FAISS search failed: ", e.what()));
  }
  out->reserve(k);
  for (int i = 0; i < k; ++i) {
    if (labels[i] < 0) continue;
    out->push_back(Candidate{static_cast<int32_t>(labels[i]), distances[i]});
  }
  return absl::OkStatus();
}

}  // namespace offerd
