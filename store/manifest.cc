#include "store/manifest.h"

#include <cstdint>
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

absl::Status ParsePolicy(const json& obj, PolicyDefaults* policy) {
  if (!obj.is_object()) return FieldError("policy", "must be an object");
  int64_t v = 0;
  absl::Status s;
  if (obj.contains("retrieval_k")) {
    if (s = json_util::GetInt(obj, "retrieval_k", true, &v); !s.ok()) return FieldError("policy", s.message());
    if (v < 1 || v > 10000) {
      return FieldError("policy.retrieval_k", absl::StrCat("must be 1..10000, got ", v));
    }
    policy->retrieval_k = static_cast<int>(v);
  }
  PolicyParams& p = policy->params;
  struct DoubleField {
    const char* key;
    double* dst;
  };
  const DoubleField doubles[] = {{"beta", &p.beta},
                                 {"min_ev", &p.min_ev},
                                 {"epsilon", &p.epsilon},
                                 {"fatigue_decay", &p.fatigue_decay},
                                 {"segment_uplift_threshold", &p.segment_thresholds.uplift},
                                 {"segment_response_threshold", &p.segment_thresholds.response}};
  for (const DoubleField& f : doubles) {
    if (s = json_util::GetDouble(obj, f.key, false, f.dst); !s.ok()) return FieldError("policy", s.message());
  }
  struct IntField {
    const char* key;
    int64_t* dst64;
    int32_t* dst32;
  };
  const IntField ints[] = {{"max_per_category", nullptr, &p.max_per_category},
                           {"impression_window_seconds", &p.impression_window_seconds, nullptr},
                           {"max_impressions_per_window", nullptr, &p.max_impressions_per_window},
                           {"max_offers_per_day", nullptr, &p.max_offers_per_day},
                           {"dismiss_cooldown_seconds", &p.dismiss_cooldown_seconds, nullptr},
                           {"redeem_cooldown_seconds", &p.redeem_cooldown_seconds, nullptr}};
  for (const IntField& f : ints) {
    if (!obj.contains(f.key)) continue;
    if (s = json_util::GetInt(obj, f.key, true, &v); !s.ok()) return FieldError("policy", s.message());
    if (f.dst64) *f.dst64 = v;
    if (f.dst32) {
      if (v < INT32_MIN || v > INT32_MAX) return FieldError(absl::StrCat("policy.", f.key), "out of range");
      *f.dst32 = static_cast<int32_t>(v);
    }
  }
  if (s = ValidatePolicyParams(p); !s.ok()) return FieldError("policy", s.message());
  return absl::OkStatus();
}

absl::Status ParseClv(const json& obj, ClvSpec* clv) {
  if (!obj.is_object()) return FieldError("clv", "must be an object");
  struct Field {
    const char* key;
    double* dst;
    bool required;
  };
  const Field fields[] = {{"r", &clv->r, true},           {"alpha", &clv->alpha, true},
                          {"a", &clv->a, true},           {"b", &clv->b, true},
                          {"p", &clv->p, true},           {"q", &clv->q, true},
                          {"v", &clv->v, true},           {"horizon_weeks", &clv->horizon_weeks, false},
                          {"margin", &clv->margin, false},
                          {"annual_discount_rate", &clv->annual_discount_rate, false}};
  for (const Field& f : fields) {
    if (absl::Status s = json_util::GetDouble(obj, f.key, f.required, f.dst); !s.ok()) {
      return FieldError("clv", s.message());
    }
  }
  for (double x : {clv->r, clv->alpha, clv->a, clv->b, clv->p, clv->v}) {
    if (!(x > 0)) return FieldError("clv", "r, alpha, a, b, p, v must be > 0");
  }
  if (!(clv->q > 1)) return FieldError("clv.q", "must be > 1 (finite mean spend)");
  if (!(clv->horizon_weeks >= 0 && clv->horizon_weeks <= 520)) {
    return FieldError("clv.horizon_weeks", "must be 0..520");
  }
  if (!(clv->margin >= 0 && clv->margin <= 1)) return FieldError("clv.margin", "must be 0..1");
  if (!(clv->annual_discount_rate >= 0 && clv->annual_discount_rate < 10)) {
    return FieldError("clv.annual_discount_rate", "must be 0..10");
  }
  clv->present = true;
  return absl::OkStatus();
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
    if (s = ParsePolicy(*policy, &m.policy); !s.ok()) return s;
  }
  auto clv = root.find("clv");
  if (clv != root.end() && !clv->is_null()) {
    if (s = ParseClv(*clv, &m.clv); !s.ok()) return s;
  }
  auto models = root.find("models");
  if (models != root.end() && !models->is_null()) {
    if (!models->is_object()) return FieldError("models", "must be an object");
    if (!models->empty()) m.models_json = models->dump();
    for (auto it = models->begin(); it != models->end(); ++it) {
      std::string golden;
      if (it->is_object() && (s = json_util::GetString(*it, "golden", false, &golden)).ok() &&
          !golden.empty()) {
        if (!m.golden_file.empty() && m.golden_file != golden) {
          return FieldError("models", "all models must name the same golden file");
        }
        m.golden_file = golden;
      }
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
