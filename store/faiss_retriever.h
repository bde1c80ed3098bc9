#ifndef OFFERD_STORE_FAISS_RETRIEVER_H_
#define OFFERD_STORE_FAISS_RETRIEVER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/retriever.h"

namespace faiss {
struct Index;
struct IndexIVF;
}

namespace offerd {

// How to index a bundle's offer embeddings (MANIFEST.json "index"). Inner product throughout.
struct IndexSpec {
  std::string type = "flat";  // "flat", "ivf" or "hnsw"
  int ivf_nlist = 0;          // ivf: number of inverted lists; 0 = 4 * sqrt(num_offers)
  int ivf_nprobe = 16;        // ivf: lists probed per query
  int hnsw_m = 32;            // hnsw: graph degree
  int hnsw_ef_construction = 200;
  int hnsw_ef_search = 256;   // hnsw: search beam width
  std::string file;           // optional prebuilt FAISS index, relative to the bundle dir
};

// CandidateRetriever over a FAISS index. FAISS exceptions are caught here and returned as
// Status errors; nothing throws out of this class.
//
// Flat and IVF-flat indexes are searched by our own scan over FAISS's storage, with
// simd::Best()'s inner-product kernel (AVX2 + FMA at run time): Debian's FAISS is a generic
// x86-64 build whose distance loops are scalar. The scan probes the same lists and keeps the
// same top K as FAISS's search (up to float rounding of equal scores); ties are broken by the
// lower offer index, so results are deterministic. HNSW and other IVF encodings use FAISS.
//
// Thread safety: Search() is safe to call concurrently (it only reads the index and passes
// per-call search parameters; it never mutates shared index state).
class FaissRetriever final : public CandidateRetriever {
 public:
  // Reads rows [first, first + count) of the embedding matrix into `out` (count * dim floats).
  using RowSource = std::function<absl::Status(int64_t first, int64_t count, float* out)>;

  // Builds the index described by `spec` over `rows` L2-normalised embeddings of `dim`
  // dimensions pulled from `source` in chunks (the whole matrix is never held twice), or reads
  // `index_path` when non-empty (then it must hold `rows` vectors of `dim` dimensions and
  // `source` is not used). Errors name `index_path` or the index type.
  static absl::StatusOr<std::unique_ptr<FaissRetriever>> Create(const IndexSpec& spec,
                                                                int64_t rows, int dim,
                                                                const RowSource& source,
                                                                const std::string& index_path);

  // Convenience for in-memory matrices ([rows, dim] row-major).
  static absl::StatusOr<std::unique_ptr<FaissRetriever>> Create(const IndexSpec& spec,
                                                                const std::vector<float>& embeddings,
                                                                int64_t rows, int dim,
                                                                const std::string& index_path);
  ~FaissRetriever() override;

  absl::Status Search(absl::Span<const float> query, int k,
                      std::vector<Candidate>* out) const override;
  int dimension() const override { return dim_; }
  int64_t size() const override { return rows_; }
  const IndexSpec& spec() const { return spec_; }
  // Bytes held by the index's vector storage (the dominant share of a bundle's memory).
  int64_t memory_bytes() const;
  // How Search() runs: "scan-flat" or "scan-ivf" (our SIMD scan) or "faiss".
  const char* search_path() const;

 private:
  FaissRetriever(std::unique_ptr<faiss::Index> index, IndexSpec spec, int dim, int64_t rows);

  absl::Status ScanFlat(const float* query, int k, std::vector<Candidate>* out) const;
  absl::Status ScanIvf(const float* query, int k, std::vector<Candidate>* out) const;

  std::unique_ptr<faiss::Index> index_;
  IndexSpec spec_;
  // Set when our scan applies: the flat index's rows, or the IVF-flat index's centroids and
  // lists (owned by index_).
  const float* flat_rows_ = nullptr;
  const faiss::IndexIVF* ivf_ = nullptr;
  const float* ivf_centroids_ = nullptr;
  int dim_;
  int64_t rows_;
};

}  // namespace offerd

#endif  // OFFERD_STORE_FAISS_RETRIEVER_H_
