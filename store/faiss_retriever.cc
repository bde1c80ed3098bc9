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
#include <limits>
#include <typeinfo>

#include "absl/strings/str_cat.h"
#include "core/simd.h"

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

// Rows scored per kernel call (a cache-sized slice of scores); longer IVF lists are scanned
// in slices of this size.
constexpr int64_t kScanBlock = 1024;

// A scored row, and the ranking order: higher score first, then the lower id (a functor, so
// that the sorting algorithms inline it).
struct Hit {
  float score;
  int64_t id;
};
struct RanksBefore {
  bool operator()(const Hit& a, const Hit& b) const {
    return a.score > b.score || (a.score == b.score && a.id < b.id);
  }
};

// The best k hits of a scan. Hits at or above a threshold are buffered; when the buffer holds
// 2k, a selection keeps the best k and raises the threshold to the k-th score. Most rows then
// cost one comparison, and the whole scan is linear in the rows plus a few selections over 2k.
class TopK {
 public:
  void Reset(int k) {
    k_ = static_cast<size_t>(k);
    buffer_.clear();
    buffer_.reserve(2 * k_);
    threshold_ = -std::numeric_limits<float>::infinity();
  }
  // Offers rows [0, n) with these scores; row i's id is ids[i], or first_id + i without ids.
  // REQUIRES n <= kScanBlock.
  void PushAll(const simd::Kernels& kernels, const float* scores, const idx_t* ids,
               int64_t first_id, int64_t n) {
    // Only the rows at or above the threshold at the start of the block (a superset of those
    // that can still make the top k) are looked at one by one.
    const int64_t selected = kernels.indices_at_least(scores, n, threshold_, selected_);
    for (int64_t j = 0; j < selected; ++j) {
      const int32_t i = selected_[j];
      if (!(scores[i] >= threshold_)) continue;
      buffer_.push_back(Hit{scores[i], ids != nullptr ? ids[i] : first_id + i});
      if (buffer_.size() >= 2 * k_) Shrink();
    }
  }
  // Best first.
  void Drain(std::vector<Candidate>* out) {
    if (buffer_.size() > k_) Shrink();
    std::sort(buffer_.begin(), buffer_.end(), RanksBefore());
    out->reserve(buffer_.size());
    for (const Hit& hit : buffer_) {
      out->push_back(Candidate{static_cast<int32_t>(hit.id), hit.score});
    }
  }

 private:
  void Shrink() {
    std::nth_element(buffer_.begin(), buffer_.begin() + (k_ - 1), buffer_.end(), RanksBefore());
    buffer_.resize(k_);
    // The k-th best; a later hit with an equal score can still rank before it by id.
    threshold_ = buffer_[k_ - 1].score;
  }

  size_t k_ = 0;
  std::vector<Hit> buffer_;
  float threshold_ = 0;
  int32_t selected_[kScanBlock + 8];
};

}  // namespace

FaissRetriever::FaissRetriever(std::unique_ptr<faiss::Index> index, IndexSpec spec, int dim,
                               int64_t rows)
    : index_(std::move(index)), spec_(std::move(spec)), dim_(dim), rows_(rows) {
  // Our scan applies to exact-typed flat and IVF-flat inner-product indexes (not subclasses
  // such as IndexIVFFlatDedup, which store vectors differently).
  if (index_->metric_type != faiss::METRIC_INNER_PRODUCT) return;
  if (typeid(*index_) == typeid(faiss::IndexFlatIP) || typeid(*index_) == typeid(faiss::IndexFlat)) {
    flat_rows_ = static_cast<const faiss::IndexFlat*>(index_.get())->get_xb();
  } else if (typeid(*index_) == typeid(faiss::IndexIVFFlat)) {
    const auto* ivf = static_cast<const faiss::IndexIVFFlat*>(index_.get());
    const faiss::Index* quantizer = ivf->quantizer;
    if (quantizer != nullptr && quantizer->metric_type == faiss::METRIC_INNER_PRODUCT &&
        (typeid(*quantizer) == typeid(faiss::IndexFlatIP) ||
         typeid(*quantizer) == typeid(faiss::IndexFlat)) &&
        quantizer->ntotal == static_cast<idx_t>(ivf->nlist) && ivf->invlists != nullptr &&
        ivf->code_size == static_cast<size_t>(dim_) * sizeof(float)) {
      ivf_ = ivf;
      ivf_centroids_ = static_cast<const faiss::IndexFlat*>(quantizer)->get_xb();
    }
  }
}

const char* FaissRetriever::search_path() const {
  if (flat_rows_ != nullptr) return "scan-flat";
  if (ivf_ != nullptr) return "scan-ivf";
  return "faiss";
}

absl::Status FaissRetriever::ScanFlat(const float* query, int k,
                                      std::vector<Candidate>* out) const {
  const simd::Kernels& kernels = simd::Best();
  thread_local std::vector<float> scores;
  thread_local TopK top;
  scores.resize(static_cast<size_t>(std::min(kScanBlock, rows_)));
  top.Reset(k);
  for (int64_t first = 0; first < rows_; first += kScanBlock) {
    const int64_t n = std::min(kScanBlock, rows_ - first);
    kernels.inner_products(query, flat_rows_ + first * dim_, n, dim_, scores.data());
    top.PushAll(kernels, scores.data(), nullptr, first, n);
  }
  top.Drain(out);
  return absl::OkStatus();
}

absl::Status FaissRetriever::ScanIvf(const float* query, int k,
                                     std::vector<Candidate>* out) const {
  const simd::Kernels& kernels = simd::Best();
  const int64_t nlist = static_cast<int64_t>(ivf_->nlist);
  const int64_t nprobe = std::min<int64_t>(std::max(1, spec_.ivf_nprobe), nlist);
  thread_local std::vector<float> scores;
  thread_local std::vector<Hit> lists;
  thread_local TopK top;
  // The nprobe lists whose centroids score highest, as FAISS's coarse quantizer picks them.
  scores.resize(static_cast<size_t>(std::max(nlist, kScanBlock)));
  kernels.inner_products(query, ivf_centroids_, nlist, dim_, scores.data());
  lists.resize(static_cast<size_t>(nlist));
  for (int64_t l = 0; l < nlist; ++l) lists[l] = Hit{scores[l], l};
  std::nth_element(lists.begin(), lists.begin() + (nprobe - 1), lists.end(), RanksBefore());
  top.Reset(k);
  const faiss::InvertedLists& invlists = *ivf_->invlists;
  for (int64_t p = 0; p < nprobe; ++p) {
    const size_t list = static_cast<size_t>(lists[p].id);
    const int64_t n = static_cast<int64_t>(invlists.list_size(list));
    if (n == 0) continue;
    faiss::InvertedLists::ScopedCodes codes(&invlists, list);
    faiss::InvertedLists::ScopedIds ids(&invlists, list);
    const float* vectors = reinterpret_cast<const float*>(codes.get());
    for (int64_t first = 0; first < n; first += kScanBlock) {
      const int64_t count = std::min(kScanBlock, n - first);
      kernels.inner_products(query, vectors + first * dim_, count, dim_, scores.data());
      top.PushAll(kernels, scores.data(), ids.get() + first, 0, count);
    }
  }
  top.Drain(out);
  return absl::OkStatus();
}

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
  try {
    if (flat_rows_ != nullptr) return ScanFlat(query.data(), k, out);
    if (ivf_ != nullptr) return ScanIvf(query.data(), k, out);
  } catch (const std::exception& e) {  // an on-disk inverted list can throw while mapping
    return absl::InternalError(absl::StrCat("index scan failed: ", e.what()));
  }
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
