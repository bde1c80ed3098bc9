#include "store/manifest.h"

#include <exception>

#include "store/json_util.h"

namespace offerd {

using json_util::FieldError;
using json_util::json;

namespace {

absl::Status ParseIndexSpec(const json& obj, IndexSpec* spec) {
  if (!obj.is_object()) return FieldError("index", "must be an object");
  absl::Status s = json_util::GetString(obj, "type", true, &spec->type);
  if (!s.ok()) return FieldError("index", s.message());
  if (spec->type != "flat" && spec->type != "ivf" && spec->type != "hnsw") {
    return FieldError("index.type", "must be flat, ivf or hnsw, got \"" + spec->type + "\"");
  }
  int64_t v;
  struct IntField {
    const char* key;
    int* dst;
    int64_t min, max;
  };
  const IntField fields[] = {{"nlist", &spec->ivf_nlist, 1, 1 << 20},
                             {"nprobe", &spec->ivf_nprobe, 1, 1 << 20},
                             {"M", &spec->hnsw_m, 2, 256},
                             {"ef_construction", &spec->hnsw_ef_construction, 1, 1 << 16},
                             {"ef_search", &spec->hnsw_ef_search, 1, 1 << 16}};
  for (const IntField& f : fields) {
    if (!obj.contains(f.key)) continue;
    s = json_util::GetInt(obj, f.key, true, &v);
    if (!s.ok()) return FieldError("index", s.message());
    if (v < f.min || v > f.max) {
      return FieldError(absl::StrCat("index.", f.key),
                        absl::StrCat("must be ", f.min, "..", f.max, ", got ", v));
    }
    *f.dst = static_cast<int>(v);
  }
  return json_util::GetString(obj, "file", false, &spec->file);
}

absl::StatusOr<BundleManifest> ParseManifestJson(const json& root) {
  if (!root.is_object()) return absl::InvalidArgumentError("not a JSON object");
  BundleManifest m;
  std::string format;
  absl::Status s = json_util::GetString(root, "format", true, &format);
  if (!s.ok()) return s;
  if (format != "offerd-bundle") return FieldError("format", "must be \"offerd-bundle\"");
  int64_t v = 0;
  if (s = json_util::GetInt(root, "format_version", true, &v); !s.ok()) return s;
  if (v != kBundleFormatVersion) {
    return FieldError("format_version",
                      absl::StrCat("unsupported ", v, " (this server reads ", kBundleFormatVersion, ")"));
  }
  m.format_version = static_cast<int>(v);
  if (s = json_util::GetString(root, "version", true, &m.version); !s.ok()) return s;
  if (s = json_util::GetString(root, "created_at", false, &m.created_at); !s.ok()) return s;
  if (s = json_util::GetInt(root, "embedding_dim", true, &v); !s.ok()) return s;
  if (v < 1 || v > kMaxEmbeddingDim) {
    return FieldError("embedding_dim", absl::StrCat("must be 1..", kMaxEmbeddingDim, ", got ", v));
  }
  m.embedding_dim = static_cast<int>(v);
  if (s = json_util::GetInt(root, "num_offers", true, &m.num_offers); !s.ok()) return s;
  if (m.num_offers < 1) return FieldError("num_offers", "must be >= 1");

  auto schema = root.find("feature_schema");
  if (schema == root.end()) return FieldError("feature_schema", "missing");
  if (s = json_util::ParseFeatureSchema(*schema, &m.feature_schema); !s.ok()) return s;

  auto index = root.find("index");
  if (index != root.end()) {
    if (s = ParseIndexSpec(*index, &m.index); !s.ok()) return s;
  }
  auto policy = root.find("policy");
  if (policy != root.end()) {
    if (!policy->is_object()) return FieldError("policy", "must be an object");
    if (policy->contains("retrieval_k")) {
      if (s = json_util::GetInt(*policy, "retrieval_k", true, &v); !s.ok()) {
        return FieldError("policy", s.message());
      }
      if (v < 1 || v > 10000) {
        return FieldError("policy.retrieval_k", absl::StrCat("must be 1..10000, got ", v));
      }
      m.policy.retrieval_k = static_cast<int>(v);
    }
  }
  auto files = root.find("files");
  if (files == root.end() || !files->is_object()) {
    return FieldError("files", "missing or not an object");
  }
  for (auto it = files->begin(); it != files->end(); ++it) {
    const std::string where = "files." + it.key();
    if (it.key().empty() || it.key().find("..") != std::string::npos || it.key()[0] == '/') {
      return FieldError(where, "file names must be relative paths inside the bundle");
    }
    if (!it->is_object()) return FieldError(where, "must be an object");
    BundleFileEntry entry;
    if (s = json_util::GetString(*it, "sha256", true, &entry.sha256); !s.ok()) {
      return FieldError(where, s.message());
    }
    if (entry.sha256.size() != 64 ||
        entry.sha256.find_first_not_of("0123456789abcdef") != std::string::npos) {
      return FieldError(where, "sha256 must be 64 lower-case hex digits");
    }
    if (s = json_util::GetInt(*it, "bytes", false, &entry.bytes); !s.ok()) {
      return FieldError(where, s.message());
    }
    m.files.emplace(it.key(), std::move(entry));
  }
  return m;
}

}  // namespace

absl::StatusOr<BundleManifest> ParseManifest(absl::string_view json_text) {
  json root = json::parse(json_text.begin(), json_text.end(), nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return absl::InvalidArgumentError("not valid JSON");
  try {
    return ParseManifestJson(root);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("malformed manifest: ", e.what()));
  }
}

absl::StatusOr<FeatureSchema> ParseFeatureSchemaJson(absl::string_view json_text) {
  json root = json::parse(json_text.begin(), json_text.end(), nullptr, false);
  if (root.is_discarded()) return absl::InvalidArgumentError("feature schema: not valid JSON");
  FeatureSchema schema;
  try {
    if (absl::Status s = json_util::ParseFeatureSchema(root, &schema); !s.ok()) return s;
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("malformed feature schema: ", e.what()));
  }
  return schema;
}

}  // namespace offerd
