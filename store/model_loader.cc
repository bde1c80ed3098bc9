#include "store/model_loader.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "core/offer_features.h"
#include "store/json_util.h"
#include "store/npy.h"

namespace offerd {

using json_util::FieldError;
using json_util::json;

namespace {

absl::StatusOr<ModelSection> ParseSectionName(const std::string& name) {
  if (name == "user") return ModelSection::kUser;
  if (name == "purchases") return ModelSection::kPurchases;
  if (name == "context") return ModelSection::kContext;
  if (name == "offer") return ModelSection::kOffer;
  if (name == "retrieval") return ModelSection::kRetrieval;
  return absl::InvalidArgumentError(absl::StrCat("unknown input section \"", name, "\""));
}

absl::Status ParseSections(const json& inputs, const std::string& where,
                           const FeatureSchema& schema, ModelSections* sections) {
  if (!inputs.is_object()) return FieldError(where, "must be an object of sections");
  for (auto it = inputs.begin(); it != inputs.end(); ++it) {
    absl::StatusOr<ModelSection> section = ParseSectionName(it.key());
    if (!section.ok()) return FieldError(where, section.status().message());
    const std::string at = absl::StrCat(where, ".", it.key());
    if (*section == ModelSection::kUser) {
      std::string source, schema_id;
      absl::Status s = json_util::GetString(*it, "source", true, &source);
      if (s.ok()) s = json_util::GetString(*it, "feature_schema_id", true, &schema_id);
      if (!s.ok()) return FieldError(at, s.message());
      if (source != "feature_schema") return FieldError(at, "source must be \"feature_schema\"");
      if (schema_id != schema.id) {
        return FieldError(at, absl::StrCat("feature_schema_id ", schema_id,
                                           " differs from the manifest's feature_schema.id ",
                                           schema.id));
      }
      absl::StatusOr<SectionEncoder> encoder = SectionEncoder::Create(schema.features);
      if (!encoder.ok()) return FieldError(at, encoder.status().message());
      sections->user = std::move(*encoder);
      sections->has_user = true;
      continue;
    }
    std::vector<FeatureSpec> features;
    auto list = it->find("features");
    if (list == it->end()) return FieldError(at + ".features", "missing");
    if (absl::Status s = json_util::ParseFeatureList(*list, at + ".features", &features); !s.ok()) {
      return s;
    }
    switch (*section) {
      case ModelSection::kPurchases: {
        absl::StatusOr<PurchaseSectionEncoder> e = PurchaseSectionEncoder::Create(features);
        if (!e.ok()) return FieldError(at, e.status().message());
        sections->purchases = std::move(*e);
        sections->has_purchases = true;
        break;
      }
      case ModelSection::kContext: {
        absl::StatusOr<ContextSectionEncoder> e = ContextSectionEncoder::Create(features);
        if (!e.ok()) return FieldError(at, e.status().message());
        sections->context = std::move(*e);
        sections->has_context = true;
        break;
      }
      case ModelSection::kOffer: {
        absl::StatusOr<SectionEncoder> e = SectionEncoder::Create(features);
        if (!e.ok()) return FieldError(at, e.status().message());
        if (absl::Status s = ValidateOfferSection(*e); !s.ok()) return FieldError(at, s.message());
        sections->offer = std::move(*e);
        sections->has_offer = true;
        break;
      }
      case ModelSection::kRetrieval: {
        if (features.size() != 1 || features[0].name != "retrieval_score" ||
            features[0].kind != FeatureSpec::Kind::kNumeric) {
          return FieldError(at, "must hold exactly one numeric feature named retrieval_score");
        }
        absl::StatusOr<SectionEncoder> e = SectionEncoder::Create(features);
        if (!e.ok()) return FieldError(at, e.status().message());
        sections->retrieval = std::move(*e);
        sections->has_retrieval = true;
        break;
      }
      case ModelSection::kUser:
        break;
    }
  }
  return absl::OkStatus();
}

// Where weight files come from: the bundle directory, restricted to the manifest's listed
// (checksummed) files.
struct WeightSource {
  const std::string& bundle_dir;
  const std::function<bool(const std::string&)>& is_listed;
};

absl::StatusOr<std::vector<float>> ReadWeights(const WeightSource& source, const std::string& file,
                                               const std::vector<int64_t>& shape) {
  if (file.empty() || file.find("..") != std::string::npos || file[0] == '/') {
    return absl::InvalidArgumentError(absl::StrCat("weight file \"", file, "\" must be a relative path"));
  }
  if (!source.is_listed(file)) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": not listed (with its sha256) in the manifest's files"));
  }
  absl::StatusOr<NpyFloatArray> array = ReadNpyFloat32(absl::StrCat(source.bundle_dir, "/", file));
  if (!array.ok()) {
    return absl::Status(array.status().code(), absl::StrCat(file, ": ", array.status().message()));
  }
  if (array->shape != shape) {
    std::string got, want;
    for (int64_t d : array->shape) absl::StrAppend(&got, got.empty() ? "" : ",", d);
    for (int64_t d : shape) absl::StrAppend(&want, want.empty() ? "" : ",", d);
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": shape (", got, ") must be (", want, ")"));
  }
  for (float x : array->data) {
    if (!std::isfinite(x)) return absl::InvalidArgumentError(absl::StrCat(file, ": contains NaN or Inf"));
  }
  return std::move(array->data);
}

absl::StatusOr<MlpHead> ParseHead(const json& spec, const std::string& where,
                                  const WeightSource& source) {
  if (!spec.is_object()) return FieldError(where, "must be an object");
  MlpHead head;
  std::string type;
  if (absl::Status s = json_util::GetString(spec, "type", true, &type); !s.ok()) {
    return FieldError(where, s.message());
  }
  if (type != "mlp") return FieldError(where, absl::StrCat("type must be \"mlp\", got \"", type, "\""));
  std::vector<std::string> inputs;
  if (absl::Status s = json_util::GetStringList(spec, "inputs", &inputs); !s.ok()) {
    return FieldError(where, s.message());
  }
  for (const std::string& name : inputs) {
    absl::StatusOr<ModelSection> section = ParseSectionName(name);
    if (!section.ok()) return FieldError(where + ".inputs", section.status().message());
    head.inputs.push_back(*section);
  }
  auto layers = spec.find("layers");
  if (layers == spec.end() || !layers->is_array() || layers->empty()) {
    return FieldError(where + ".layers", "missing or empty");
  }
  std::vector<DenseLayer> dense;
  for (size_t i = 0; i < layers->size(); ++i) {
    const json& l = (*layers)[i];
    const std::string at = absl::StrCat(where, ".layers[", i, "]");
    int64_t in = 0, out = 0;
    std::string activation, weight, bias;
    absl::Status s = json_util::GetInt(l, "in", true, &in);
    if (s.ok()) s = json_util::GetInt(l, "out", true, &out);
    if (s.ok()) s = json_util::GetString(l, "activation", true, &activation);
    if (s.ok()) s = json_util::GetString(l, "weight", true, &weight);
    if (s.ok()) s = json_util::GetString(l, "bias", true, &bias);
    if (!s.ok()) return FieldError(at, s.message());
    if (in < 1 || out < 1 || in > 65536 || out > 65536) return FieldError(at, "in/out must be 1..65536");
    DenseLayer layer;
    layer.in = static_cast<int>(in);
    layer.out = static_cast<int>(out);
    absl::StatusOr<Activation> act = ParseActivation(activation);
    if (!act.ok()) return FieldError(at, act.status().message());
    layer.activation = *act;
    absl::StatusOr<std::vector<float>> w = ReadWeights(source, weight, {out, in});
    if (!w.ok()) return FieldError(at, w.status().message());
    absl::StatusOr<std::vector<float>> b = ReadWeights(source, bias, {out});
    if (!b.ok()) return FieldError(at, b.status().message());
    layer.weight = std::move(*w);
    layer.bias = std::move(*b);
    dense.push_back(std::move(layer));
  }
  absl::StatusOr<Mlp> mlp = Mlp::Create(std::move(dense));
  if (!mlp.ok()) return FieldError(where, mlp.status().message());
  head.mlp = std::move(*mlp);
  int64_t input_dim = 0, output_dim = 0;
  if (spec.contains("input_dim")) {
    if (absl::Status s = json_util::GetInt(spec, "input_dim", true, &input_dim); !s.ok()) return s;
    if (input_dim != head.mlp.input_dim()) {
      return FieldError(where, absl::StrCat("input_dim ", input_dim, " differs from the first layer's ",
                                            head.mlp.input_dim()));
    }
  }
  if (spec.contains("output_dim")) {
    if (absl::Status s = json_util::GetInt(spec, "output_dim", true, &output_dim); !s.ok()) return s;
    if (output_dim != head.mlp.output_dim()) {
      return FieldError(where, absl::StrCat("output_dim ", output_dim, " differs from the last layer's ",
                                            head.mlp.output_dim()));
    }
  }
  return head;
}

absl::Status ParseUplift(const json& spec, const WeightSource& source,
                         const FeatureSchema& schema, const std::vector<Offer>& offers,
                         UpliftModel* model) {
  const std::string where = "models.uplift";
  auto inputs = spec.find("inputs");
  if (inputs == spec.end()) return FieldError(where + ".inputs", "missing");
  if (absl::Status s = ParseSections(*inputs, where + ".inputs", schema, &model->sections); !s.ok()) {
    return s;
  }
  auto heads = spec.find("heads");
  if (heads == spec.end() || !heads->is_object() || !heads->contains("p0") || !heads->contains("p1")) {
    return FieldError(where + ".heads", "must hold p0 and p1");
  }
  absl::StatusOr<MlpHead> p0 = ParseHead((*heads)["p0"], where + ".heads.p0", source);
  if (!p0.ok()) return p0.status();
  absl::StatusOr<MlpHead> p1 = ParseHead((*heads)["p1"], where + ".heads.p1", source);
  if (!p1.ok()) return p1.status();
  model->p0 = std::move(*p0);
  model->p1 = std::move(*p1);
  for (const MlpHead* head : {&model->p0, &model->p1}) {
    if (head->mlp.output_dim() != 1) return FieldError(where, "p0 and p1 must have output_dim 1");
  }
  if (absl::Status s = ValidateHead("p0", model->p0, model->sections); !s.ok()) {
    return FieldError(where, s.message());
  }
  if (absl::Status s = ValidateHead("p1", model->p1, model->sections); !s.ok()) {
    return FieldError(where, s.message());
  }
  for (ModelSection section : model->p0.inputs) {
    if (section == ModelSection::kOffer || section == ModelSection::kRetrieval) {
      return FieldError(where, "p0 must not read the offer or retrieval section");
    }
  }
  {  // The retrieval section, when read, comes after the offer section.
    const std::vector<ModelSection>& in = model->p1.inputs;
    auto r = std::find(in.begin(), in.end(), ModelSection::kRetrieval);
    auto o = std::find(in.begin(), in.end(), ModelSection::kOffer);
    if (r != in.end() && (o == in.end() || r < o)) {
      return FieldError(where, "p1 reads the retrieval section only after the offer section");
    }
  }
  auto thresholds = spec.find("segment_thresholds");
  if (thresholds != spec.end()) {
    absl::Status s = json_util::GetDouble(*thresholds, "uplift", false, &model->segment_thresholds.uplift);
    if (s.ok()) s = json_util::GetDouble(*thresholds, "response", false, &model->segment_thresholds.response);
    if (!s.ok()) return FieldError(where + ".segment_thresholds", s.message());
  }
  PlanUpliftSplit(model);
  if (model->sections.has_offer && model->p1_split) {
    // Each offer's share of p1's first layer, from the catalog encoded a chunk at a time: the
    // encoded rows (229 floats per offer for the trained heads) never exist all at once.
    constexpr size_t kChunkOffers = 4096;
    if (absl::Status s = ValidateOfferSection(model->sections.offer); !s.ok()) {
      return FieldError(where + ".inputs.offer", s.message());
    }
    model->offer_first_layer.reserve(offers.size() *
                                     static_cast<size_t>(model->p1.mlp.first_layer_width()));
    for (size_t first = 0; first < offers.size(); first += kChunkOffers) {
      const size_t count = std::min(kChunkOffers, offers.size() - first);
      absl::StatusOr<std::vector<float>> encoded = EncodeOfferCatalog(
          model->sections.offer, absl::MakeConstSpan(offers).subspan(first, count));
      if (!encoded.ok()) return FieldError(where + ".inputs.offer", encoded.status().message());
      AppendOfferShares(model, *encoded);
    }
  } else if (model->sections.has_offer) {
    absl::StatusOr<std::vector<float>> encoded = EncodeOfferCatalog(model->sections.offer, offers);
    if (!encoded.ok()) return FieldError(where + ".inputs.offer", encoded.status().message());
    model->offer_features = std::move(*encoded);
  }
  return absl::OkStatus();
}

absl::Status ParseUserTower(const json& spec, const WeightSource& source,
                            const FeatureSchema& schema, UserTowerModel* model) {
  const std::string where = "models.user_tower";
  auto inputs = spec.find("inputs");
  if (inputs == spec.end()) return FieldError(where + ".inputs", "missing");
  if (absl::Status s = ParseSections(*inputs, where + ".inputs", schema, &model->sections); !s.ok()) {
    return s;
  }
  if (model->sections.has_offer || model->sections.has_retrieval) {
    return FieldError(where, "the user tower cannot read the offer or retrieval section");
  }
  auto heads = spec.find("heads");
  if (heads == spec.end() || !heads->is_object() || !heads->contains("embedding")) {
    return FieldError(where + ".heads", "must hold embedding");
  }
  absl::StatusOr<MlpHead> head = ParseHead((*heads)["embedding"], where + ".heads.embedding", source);
  if (!head.ok()) return head.status();
  model->embedding = std::move(*head);
  return ValidateHead("embedding", model->embedding, model->sections);
}

// Raw values of a golden case's section object, in section order.
std::vector<RawFeatureValue> RawValues(const SectionEncoder& section, const json& values,
                                       std::vector<std::string>* text_storage) {
  std::vector<RawFeatureValue> raw(static_cast<size_t>(section.num_features()));
  text_storage->clear();
  text_storage->reserve(raw.size());
  if (!values.is_object()) return raw;
  for (int i = 0; i < section.num_features(); ++i) {
    const FeatureSpec& spec = section.features()[i];
    auto it = values.find(spec.name);
    if (it == values.end() || it->is_null()) continue;
    if (spec.kind == FeatureSpec::Kind::kNumeric && it->is_number()) {
      raw[i] = RawFeatureValue::Numeric(it->get<double>());
    } else if (spec.kind == FeatureSpec::Kind::kCategorical && it->is_string()) {
      text_storage->push_back(it->get<std::string>());
      raw[i] = RawFeatureValue::Categorical(text_storage->back());
    }
  }
  return raw;
}

double Number(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_number()) return std::nan("");
  return it->get<double>();
}

std::string Text(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// Encodes the sections of one golden case into `buffers` and returns spans into them.
absl::StatusOr<EncodedSections> EncodeGoldenInputs(const ModelSections& sections, const json& inputs,
                                                   std::vector<std::vector<float>>* buffers) {
  buffers->assign(4, {});
  EncodedSections out;
  std::vector<std::string> storage;
  const json empty = json::object();
  const auto section_of = [&](const char* name) -> const json& {
    auto it = inputs.find(name);
    return it == inputs.end() ? empty : *it;
  };
  if (sections.has_user) {
    (*buffers)[0].resize(static_cast<size_t>(sections.user.width()));
    std::vector<RawFeatureValue> raw = RawValues(sections.user, section_of("user"), &storage);
    sections.user.Encode(raw, absl::MakeSpan((*buffers)[0]));
    out.user = (*buffers)[0];
  }
  if (sections.has_purchases) {
    const json& p = section_of("purchases");
    PurchaseFeatureValues values;
    values.has_purchases = Number(p, "has_purchases");
    values.repeat_days = Number(p, "repeat_days");
    values.days_since_first = Number(p, "days_since_first");
    values.days_since_last = Number(p, "days_since_last");
    values.repeat_spend_mean = Number(p, "repeat_spend_mean");
    (*buffers)[1].resize(static_cast<size_t>(sections.purchases.width()));
    sections.purchases.EncodeValues(values, absl::MakeSpan((*buffers)[1]));
    out.purchases = (*buffers)[1];
  }
  if (sections.has_context) {
    const json& c = section_of("context");
    const std::string channel = Text(c, "channel"), device = Text(c, "device"),
                      page = Text(c, "page"), locale = Text(c, "locale"),
                      country = Text(c, "country");
    std::vector<std::string> names, values;
    for (auto it = c.begin(); it != c.end(); ++it) {
      if (ContextFieldOf(it.key()) != ContextField::kAttribute || !it->is_string()) continue;
      names.push_back(it.key());
      values.push_back(it->get<std::string>());
    }
    std::vector<ContextAttribute> attributes;
    for (size_t i = 0; i < names.size(); ++i) attributes.push_back({names[i], values[i]});
    RequestContextView view{channel, device, page, locale, country, attributes};
    (*buffers)[2].resize(static_cast<size_t>(sections.context.width()));
    sections.context.Encode(view, absl::MakeSpan((*buffers)[2]));
    out.context = (*buffers)[2];
  }
  if (sections.has_offer) {
    const json& o = section_of("offer");
    Offer offer;
    offer.offer_id = Text(o, "offer_id");
    offer.category = Text(o, "category");
    offer.type = Text(o, "type");
    offer.margin = Number(o, "margin");
    offer.cost = Number(o, "cost");
    (*buffers)[3].resize(static_cast<size_t>(sections.offer.width()));
    if (absl::Status s = EncodeOfferSection(sections.offer, offer, absl::MakeSpan((*buffers)[3]));
        !s.ok()) {
      return s;
    }
    out.offer = (*buffers)[3];
  }
  return out;
}

absl::Status Compare(const std::string& where, double got, double want, double rtol, double atol,
                     double* max_relative_error) {
  const double error = std::fabs(got - want);
  if (want != 0) *max_relative_error = std::max(*max_relative_error, error / std::fabs(want));
  if (!(error <= atol + rtol * std::fabs(want))) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": C++ computes ", got, ", Python wrote ", want, " (|diff| ", error,
                     " > atol ", atol, " + rtol ", rtol, " * |want|)"));
  }
  return absl::OkStatus();
}

absl::Status VerifyGoldenJson(const BundleModels& models, const json& golden,
                              double* max_relative_error) {
  if (!golden.is_object() || Text(golden, "format") != "offerd-golden") {
    return absl::InvalidArgumentError("format must be \"offerd-golden\"");
  }
  auto entries = golden.find("models");
  if (entries == golden.end() || !entries->is_object()) return FieldError("models", "missing");
  std::vector<std::vector<float>> buffers;
  for (auto it = entries->begin(); it != entries->end(); ++it) {
    const std::string& name = it.key();
    double rtol = 1e-5, atol = 1e-7;
    json_util::GetDouble(*it, "rtol", false, &rtol).IgnoreError();
    json_util::GetDouble(*it, "atol", false, &atol).IgnoreError();
    rtol = std::min(rtol, 1e-5);  // a bundle cannot loosen the contract
    atol = std::min(atol, 1e-5);  // absolute floor for outputs near 0 (embedding components)
    auto cases = it->find("cases");
    if (cases == it->end() || !cases->is_array()) return FieldError(name + ".cases", "missing");
    for (size_t i = 0; i < cases->size(); ++i) {
      const json& c = (*cases)[i];
      const std::string where = absl::StrCat(name, ".cases[", i, "]");
      auto inputs = c.find("inputs");
      auto outputs = c.find("outputs");
      if (inputs == c.end() || outputs == c.end()) return FieldError(where, "needs inputs and outputs");
      if (name == "uplift") {
        if (!models.uplift) return FieldError(where, "golden cases for a model the bundle lacks");
        absl::StatusOr<EncodedSections> encoded =
            EncodeGoldenInputs(models.uplift->sections, *inputs, &buffers);
        if (!encoded.ok()) return FieldError(where, encoded.status().message());
        UpliftEvaluator evaluator;
        evaluator.Begin(*models.uplift, *encoded);
        if (absl::Status s = Compare(where + ".p0", evaluator.p0(), Number(*outputs, "p0"), rtol,
                                     atol, max_relative_error);
            !s.ok()) {
          return s;
        }
        if (outputs->contains("p1")) {
          auto retrieval = inputs->find("retrieval");
          const double score =
              retrieval != inputs->end() ? Number(*retrieval, "retrieval_score") : std::nan("");
          const double p1 = evaluator.P1ForEncodedOffer(encoded->offer, score);
          if (absl::Status s = Compare(where + ".p1", p1, Number(*outputs, "p1"), rtol, atol,
                                       max_relative_error);
              !s.ok()) {
            return s;
          }
        }
      } else if (name == "user_tower") {
        if (!models.user_tower) return FieldError(where, "golden cases for a model the bundle lacks");
        absl::StatusOr<EncodedSections> encoded =
            EncodeGoldenInputs(models.user_tower->sections, *inputs, &buffers);
        if (!encoded.ok()) return FieldError(where, encoded.status().message());
        auto want = outputs->find("embedding");
        if (want == outputs->end() || !want->is_array()) {
          return FieldError(where, "outputs.embedding missing");
        }
        std::vector<float> input, scratch, embedding;
        // The golden outputs are the MLP's, before the service's L2 normalisation.
        UserTowerForward(*models.user_tower, *encoded, &input, &scratch, &embedding);
        if (want->size() != embedding.size()) {
          return FieldError(where, absl::StrCat("embedding has ", want->size(), " values, the tower outputs ",
                                                embedding.size()));
        }
        for (size_t k = 0; k < embedding.size(); ++k) {
          if (absl::Status s = Compare(absl::StrCat(where, ".embedding[", k, "]"), embedding[k],
                                       (*want)[k].get<double>(), rtol, atol,
                                       max_relative_error);
              !s.ok()) {
            return s;
          }
        }
      }
      // Golden cases of models this server does not run are ignored.
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<BundleModels> LoadBundleModels(absl::string_view models_json,
                                              const std::string& bundle_dir,
                                              const std::function<bool(const std::string&)>& is_listed,
                                              const FeatureSchema& schema,
                                              const std::vector<Offer>& offers) {
  BundleModels models;
  const WeightSource source{bundle_dir, is_listed};
  if (models_json.empty()) return models;
  json root = json::parse(models_json.begin(), models_json.end(), nullptr, false);
  if (root.is_discarded() || !root.is_object()) return FieldError("models", "must be an object");
  try {
    if (root.contains("uplift")) {
      UpliftModel uplift;
      if (absl::Status s = ParseUplift(root["uplift"], source, schema, offers, &uplift); !s.ok()) {
        return s;
      }
      models.uplift = std::move(uplift);
    }
    if (root.contains("user_tower")) {
      UserTowerModel tower;
      if (absl::Status s = ParseUserTower(root["user_tower"], source, schema, &tower); !s.ok()) {
        return s;
      }
      models.user_tower = std::move(tower);
    }
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("models: malformed: ", e.what()));
  }
  return models;
}

absl::Status VerifyGoldenCases(const BundleModels& models, absl::string_view golden_json,
                               double* max_relative_error) {
  *max_relative_error = 0;
  json golden = json::parse(golden_json.begin(), golden_json.end(), nullptr, false);
  if (golden.is_discarded()) return absl::InvalidArgumentError("not valid JSON");
  try {
    return VerifyGoldenJson(models, golden, max_relative_error);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("malformed golden cases: ", e.what()));
  }
}

}  // namespace offerd
