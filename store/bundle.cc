#include "store/bundle.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "core/vector_math.h"
#include "store/faiss_retriever.h"
#include "store/file_util.h"
#include "store/npy.h"
#include "store/offer_catalog.h"

namespace offerd {
namespace {

constexpr char kManifestFile[] = "MANIFEST.json";
constexpr char kCatalogFile[] = "offers.jsonl";
constexpr char kEmbeddingsFile[] = "offer_embeddings.npy";
constexpr double kUnitNormTolerance = 1e-3;

}  // namespace

bool IsValidBundleVersion(absl::string_view version) {
  if (version.empty() || version.size() > 128 || version[0] == '.') return false;
  for (char c : version) {
    const bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

absl::StatusOr<std::vector<std::string>> ListBundleVersions(const std::string& snapshot_root) {
  std::error_code ec;
  std::filesystem::directory_iterator it(snapshot_root, ec);
  if (ec) {
    return absl::NotFoundError(
        absl::StrCat("snapshot root ", snapshot_root, ": ", ec.message()));
  }
  std::vector<std::string> versions;
  for (const auto& entry : it) {
    const std::string name = entry.path().filename().string();
    if (!IsValidBundleVersion(name)) continue;
    if (!entry.is_directory(ec)) continue;
    versions.push_back(name);
  }
  std::sort(versions.begin(), versions.end(), std::greater<>());
  return versions;
}

std::optional<int32_t> Bundle::FindOffer(absl::string_view offer_id) const {
  auto it = offer_index_.find(offer_id);
  if (it == offer_index_.end()) return std::nullopt;
  return it->second;
}

absl::StatusOr<std::shared_ptr<const Bundle>> Bundle::Load(const std::string& dir,
                                                           const LoadOptions& options) {
  std::filesystem::path dir_path(dir);
  if (!dir_path.has_filename()) dir_path = dir_path.parent_path();  // "root/v1/" -> "root/v1"
  const std::string dir_name = dir_path.filename().string();
  const auto fail = [&](absl::string_view file, const absl::Status& status) {
    return absl::Status(status.code(), absl::StrCat("bundle ", dir_name, ": ", file, ": ",
                                                    status.message()));
  };
  const auto path_of = [&](absl::string_view file) { return absl::StrCat(dir, "/", file); };

  auto bundle = std::shared_ptr<Bundle>(new Bundle());

  // 1. Manifest.
  absl::StatusOr<std::string> manifest_text = ReadFileToString(path_of(kManifestFile));
  if (!manifest_text.ok()) {
    return fail(kManifestFile, absl::Status(manifest_text.status().code(), "cannot read"));
  }
  absl::StatusOr<BundleManifest> manifest = ParseManifest(*manifest_text);
  if (!manifest.ok()) return fail(kManifestFile, manifest.status());
  bundle->manifest_ = std::move(*manifest);
  const BundleManifest& m = bundle->manifest_;
  if (m.version != dir_name) {
    return fail(kManifestFile,
                absl::InvalidArgumentError(absl::StrCat("version \"", m.version,
                                                        "\" does not match the directory name")));
  }
  for (const char* required : {kCatalogFile, kEmbeddingsFile}) {
    if (m.files.find(required) == m.files.end()) {
      return fail(kManifestFile, absl::InvalidArgumentError(
                                     absl::StrCat("files: ", required, " is not listed")));
    }
  }
  if (!m.index.file.empty() && m.files.find(m.index.file) == m.files.end()) {
    return fail(kManifestFile, absl::InvalidArgumentError(absl::StrCat(
                                   "index.file ", m.index.file, " is not listed in files")));
  }

  // 2. Checksums of every listed file, before parsing any of them.
  for (const auto& [file, entry] : m.files) {
    struct stat st;
    if (::stat(path_of(file).c_str(), &st) != 0) {
      return fail(file, absl::NotFoundError("listed in the manifest but missing"));
    }
    if (entry.bytes > 0 && st.st_size != entry.bytes) {
      return fail(file, absl::DataLossError(absl::StrCat("size is ", st.st_size,
                                                         " bytes, manifest says ", entry.bytes)));
    }
    absl::StatusOr<std::string> digest = Sha256File(path_of(file));
    if (!digest.ok()) return fail(file, digest.status());
    if (*digest != entry.sha256) {
      return fail(file, absl::DataLossError(absl::StrCat("sha256 mismatch: file has ", *digest,
                                                         ", manifest says ", entry.sha256)));
    }
  }

  // 3. Feature schema against the stored user features.
  if (!options.expected_feature_schema_id.empty() &&
      m.feature_schema.id != options.expected_feature_schema_id) {
    return fail(kManifestFile,
                absl::FailedPreconditionError(absl::StrCat(
                    "feature_schema.id ", m.feature_schema.id,
                    " differs from the stored user features' schema ",
                    options.expected_feature_schema_id, "; re-ingest the user features")));
  }

  // 4. Catalog.
  absl::StatusOr<std::string> catalog_text = ReadFileToString(path_of(kCatalogFile));
  if (!catalog_text.ok()) return fail(kCatalogFile, catalog_text.status());
  absl::StatusOr<std::vector<Offer>> offers = ParseOfferCatalog(*catalog_text);
  if (!offers.ok()) return fail(kCatalogFile, offers.status());
  if (static_cast<int64_t>(offers->size()) != m.num_offers) {
    return fail(kCatalogFile, absl::InvalidArgumentError(absl::StrCat(
                                  "has ", offers->size(), " offers, manifest num_offers is ",
                                  m.num_offers)));
  }
  bundle->offers_ = std::move(*offers);
  bundle->offer_index_.reserve(bundle->offers_.size());
  for (size_t i = 0; i < bundle->offers_.size(); ++i) {
    bundle->offer_index_.emplace(bundle->offers_[i].offer_id, static_cast<int32_t>(i));
  }

  // 5. Models and their golden cases: C++ must reproduce what Python computed.
  absl::StatusOr<BundleModels> models = LoadBundleModels(
      m.models_json, dir, [&m](const std::string& file) { return m.files.count(file) > 0; },
      m.feature_schema, bundle->offers_);
  if (!models.ok()) return fail(kManifestFile, models.status());
  bundle->models_ = std::move(*models);
  if (!m.golden_file.empty()) {
    if (m.files.count(m.golden_file) == 0) {
      return fail(kManifestFile, absl::InvalidArgumentError(absl::StrCat(
                                     "golden file ", m.golden_file, " is not listed in files")));
    }
    absl::StatusOr<std::string> golden = ReadFileToString(path_of(m.golden_file));
    if (!golden.ok()) return fail(m.golden_file, golden.status());
    if (absl::Status s = VerifyGoldenCases(bundle->models_, *golden,
                                           &bundle->golden_max_relative_error_);
        !s.ok()) {
      return fail(m.golden_file, s);
    }
  } else if (bundle->models_.uplift || bundle->models_.user_tower) {
    return fail(kManifestFile, absl::InvalidArgumentError(
                                   "models without golden cases: the loader cannot check that "
                                   "it computes what Python computed"));
  }

  // 6. Embeddings, streamed: one validation pass (shape, NaN/Inf, unit norm, mean for cold
  // start, warm-up sample), then the index pulls the rows again chunk by chunk. The matrix is
  // never held in memory next to the index's own copy.
  absl::StatusOr<std::unique_ptr<NpyFloat32Reader>> npy =
      NpyFloat32Reader::Open(path_of(kEmbeddingsFile));
  if (!npy.ok()) {
    // The reader's message starts with the path; keep only the reason.
    std::string reason(npy.status().message());
    const std::string prefix = path_of(kEmbeddingsFile) + ": ";
    if (reason.rfind(prefix, 0) == 0) reason = reason.substr(prefix.size());
    return fail(kEmbeddingsFile, absl::Status(npy.status().code(), reason));
  }
  const NpyFloat32Reader& reader = **npy;
  const int dim = m.embedding_dim;
  if (reader.shape().size() != 2 || reader.rows() != m.num_offers || reader.cols() != dim) {
    std::string shape = "(";
    for (int64_t d : reader.shape()) absl::StrAppend(&shape, d, ",");
    shape += ")";
    return fail(kEmbeddingsFile, absl::InvalidArgumentError(absl::StrCat(
                                     "shape ", shape, " must be (num_offers=", m.num_offers,
                                     ", embedding_dim=", m.embedding_dim, ")")));
  }
  {
    constexpr int64_t kChunkRows = 8192;
    constexpr int kWarmupQueries = 64;
    const int64_t warmup_stride = std::max<int64_t>(1, m.num_offers / kWarmupQueries);
    std::vector<double> sum(dim, 0.0);
    std::vector<float> chunk(static_cast<size_t>(std::min(kChunkRows, m.num_offers) * dim));
    for (int64_t first = 0; first < m.num_offers; first += kChunkRows) {
      const int64_t count = std::min(kChunkRows, m.num_offers - first);
      if (absl::Status s = reader.ReadRows(first, count, chunk.data()); !s.ok()) {
        return fail(kEmbeddingsFile, s);
      }
      for (int64_t i = 0; i < count; ++i) {
        const int64_t row = first + i;
        absl::Span<const float> v = absl::MakeConstSpan(chunk.data() + i * dim, dim);
        if (!AllFinite(v)) {
          return fail(kEmbeddingsFile, absl::InvalidArgumentError(absl::StrCat(
                                           "row ", row, " (offer ", bundle->offers_[row].offer_id,
                                           ") contains NaN or Inf")));
        }
        const double norm = L2Norm(v);
        if (std::fabs(norm - 1.0) > kUnitNormTolerance) {
          return fail(kEmbeddingsFile, absl::InvalidArgumentError(absl::StrCat(
                                           "row ", row, " (offer ", bundle->offers_[row].offer_id,
                                           ") has L2 norm ", norm, ", rows must be unit-norm")));
        }
        for (int c = 0; c < dim; ++c) sum[c] += v[c];
        if (row % warmup_stride == 0 &&
            static_cast<int>(bundle->warmup_queries_.size()) < kWarmupQueries) {
          bundle->warmup_queries_.emplace_back(v.begin(), v.end());
        }
      }
    }
    // Cold-start query: the normalised mean offer embedding (the first offer's direction if
    // the embeddings cancel out exactly).
    bundle->cold_start_query_.resize(dim);
    for (int c = 0; c < dim; ++c) {
      bundle->cold_start_query_[c] = static_cast<float>(sum[c] / m.num_offers);
    }
    if (!L2NormalizeInPlace(absl::MakeSpan(bundle->cold_start_query_))) {
      bundle->cold_start_query_ = bundle->warmup_queries_.front();
    }
  }

  // 7. Index.
  const std::string index_path = m.index.file.empty() ? "" : path_of(m.index.file);
  absl::StatusOr<std::unique_ptr<FaissRetriever>> retriever = FaissRetriever::Create(
      m.index, m.num_offers, dim,
      [&reader](int64_t first, int64_t count, float* out) {
        return reader.ReadRows(first, count, out);
      },
      index_path);
  if (!retriever.ok()) {
    return fail(m.index.file.empty() ? std::string("index") : m.index.file, retriever.status());
  }
  bundle->memory_bytes_ = (*retriever)->memory_bytes() +
                          static_cast<int64_t>(bundle->offers_.size()) * 256;
  bundle->retriever_ = std::move(*retriever);
  if (absl::Status s = bundle->retriever_->Search(
          bundle->cold_start_query_, std::max(m.policy.retrieval_k, 100),
          &bundle->fallback_candidates_);
      !s.ok()) {
    return fail("index", s);
  }
  return std::shared_ptr<const Bundle>(std::move(bundle));
}

}  // namespace offerd
