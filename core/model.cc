#include "core/model.h"

#include <algorithm>
#include <cassert>

#include "absl/strings/str_cat.h"
#include "core/prefetch.h"
#include "core/vector_math.h"

namespace offerd {

int ModelSections::width(ModelSection section) const {
  switch (section) {
    case ModelSection::kUser:
      return has_user ? user.width() : -1;
    case ModelSection::kPurchases:
      return has_purchases ? purchases.width() : -1;
    case ModelSection::kContext:
      return has_context ? context.width() : -1;
    case ModelSection::kOffer:
      return has_offer ? offer.width() : -1;
    case ModelSection::kRetrieval:
      return has_retrieval ? retrieval.width() : -1;
  }
  return -1;
}

absl::Span<const float> EncodedSections::get(ModelSection section) const {
  switch (section) {
    case ModelSection::kUser:
      return user;
    case ModelSection::kPurchases:
      return purchases;
    case ModelSection::kContext:
      return context;
    case ModelSection::kOffer:
      return offer;
    case ModelSection::kRetrieval:
      return retrieval;
  }
  return {};
}

absl::Status ValidateHead(const char* name, const MlpHead& head, const ModelSections& sections) {
  if (absl::Status s = head.mlp.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("head ", name, ": ", s.message()));
  }
  int width = 0;
  for (ModelSection section : head.inputs) {
    const int w = sections.width(section);
    if (w < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("head ", name, ": reads a section the model does not define"));
    }
    width += w;
  }
  if (width != head.mlp.input_dim()) {
    return absl::InvalidArgumentError(absl::StrCat("head ", name, ": its inputs encode to ", width,
                                                   " columns, the first layer takes ",
                                                   head.mlp.input_dim()));
  }
  return absl::OkStatus();
}

void AssembleHeadInput(const MlpHead& head, const EncodedSections& sections,
                       absl::Span<float> out) {
  size_t at = 0;
  for (ModelSection section : head.inputs) {
    absl::Span<const float> part = sections.get(section);
    std::copy(part.begin(), part.end(), out.begin() + at);
    at += part.size();
  }
}

void UserTowerForward(const UserTowerModel& model, const EncodedSections& sections,
                      std::vector<float>* input, std::vector<float>* scratch,
                      std::vector<float>* output) {
  const Mlp& mlp = model.embedding.mlp;
  input->resize(static_cast<size_t>(mlp.input_dim()));
  scratch->resize(static_cast<size_t>(mlp.scratch_size()));
  output->resize(static_cast<size_t>(mlp.output_dim()));
  AssembleHeadInput(model.embedding, sections, absl::MakeSpan(*input));
  mlp.Forward(*input, absl::MakeSpan(*output), absl::MakeSpan(*scratch));
}

bool ComputeUserEmbedding(const UserTowerModel& model, const EncodedSections& sections,
                          std::vector<float>* input, std::vector<float>* scratch,
                          std::vector<float>* embedding) {
  UserTowerForward(model, sections, input, scratch, embedding);
  return L2NormalizeInPlace(absl::MakeSpan(*embedding));
}

void PlanUpliftSplit(UpliftModel* model) {
  const std::vector<ModelSection>& in = model->p1.inputs;
  model->p1_split = false;
  model->p1_offer_column = 0;
  model->p1_retrieval_column = -1;
  // Split when the inputs end in [offer] or [offer, retrieval] and neither appears earlier.
  size_t offer_at = in.size();
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == ModelSection::kOffer) offer_at = i;
  }
  const int offer_width = model->sections.has_offer ? model->sections.offer.width() : 0;
  if (offer_at == in.size() || offer_width <= 0) return;
  for (size_t i = 0; i < offer_at; ++i) {
    if (in[i] == ModelSection::kRetrieval) return;
  }
  const size_t tail = in.size() - offer_at;
  if (tail > 2 || (tail == 2 && in[offer_at + 1] != ModelSection::kRetrieval)) return;
  int column = 0;
  for (size_t i = 0; i < offer_at; ++i) column += model->sections.width(in[i]);
  model->p1_offer_column = column;
  if (tail == 2) model->p1_retrieval_column = column + offer_width;
  model->p1_split = true;
}

void AppendOfferShares(UpliftModel* model, absl::Span<const float> encoded_rows) {
  assert(model->p1_split);
  const Mlp& mlp = model->p1.mlp;
  const size_t offer_width = static_cast<size_t>(model->sections.offer.width());
  const size_t width = static_cast<size_t>(mlp.first_layer_width());
  const size_t offers = encoded_rows.size() / offer_width;
  std::vector<double> sums(width);
  for (size_t o = 0; o < offers; ++o) {
    std::fill(sums.begin(), sums.end(), 0.0);
    mlp.AccumulateFirstLayer(model->p1_offer_column,
                             encoded_rows.subspan(o * offer_width, offer_width),
                             absl::MakeSpan(sums));
    for (size_t r = 0; r < width; ++r) {
      model->offer_first_layer.push_back(static_cast<float>(sums[r]));
    }
  }
}

void UpliftEvaluator::Begin(const UpliftModel& model, const EncodedSections& sections) {
  model_ = &model;
  sections_ = sections;
  const size_t max_input =
      static_cast<size_t>(std::max(model.p0.mlp.input_dim(), model.p1.mlp.input_dim()));
  input_.resize(max_input);
  output_.resize(1);
  scratch_.resize(static_cast<size_t>(
      std::max(model.p0.mlp.scratch_size(), model.p1.mlp.scratch_size())));

  // p0, once.
  AssembleHeadInput(model.p0, sections_,
                    absl::MakeSpan(input_.data(), static_cast<size_t>(model.p0.mlp.input_dim())));
  model.p0.mlp.Forward(absl::MakeConstSpan(input_.data(), model.p0.mlp.input_dim()),
                       absl::MakeSpan(output_), absl::MakeSpan(scratch_));
  p0_ = output_[0];

  retrieval_value_.resize(static_cast<size_t>(
      model.sections.has_retrieval ? model.sections.retrieval.width() : 0));
  if (!model.p1_split) return;
  // p1's first layer over the sections before the offer, once.
  const std::vector<ModelSection>& in = model.p1.inputs;
  size_t at = 0;
  for (size_t i = 0; i < in.size() && in[i] != ModelSection::kOffer; ++i) {
    absl::Span<const float> part = sections_.get(in[i]);
    std::copy(part.begin(), part.end(), input_.begin() + at);
    at += part.size();
  }
  const size_t width = static_cast<size_t>(model.p1.mlp.first_layer_width());
  partial_.resize(width);
  sums_.resize(width);
  first_sums_.resize(width);
  offer_share_.resize(width);
  model.p1.mlp.FirstLayerPartial(absl::MakeConstSpan(input_.data(), at), absl::MakeSpan(partial_));
}

double UpliftEvaluator::P1FromOfferShare(const float* offer_share, double retrieval_score) {
  const UpliftModel& model = *model_;
  const size_t width = partial_.size();
  for (size_t r = 0; r < width; ++r) sums_[r] = partial_[r] + static_cast<double>(offer_share[r]);
  if (model.p1_retrieval_column >= 0) {
    const RawFeatureValue raw = RawFeatureValue::Numeric(retrieval_score);
    model.sections.retrieval.Encode(absl::MakeConstSpan(&raw, 1), absl::MakeSpan(retrieval_value_));
    model.p1.mlp.AccumulateFirstLayer(model.p1_retrieval_column, retrieval_value_,
                                      absl::MakeSpan(sums_));
  }
  for (size_t r = 0; r < width; ++r) first_sums_[r] = static_cast<float>(sums_[r]);
  model.p1.mlp.ForwardFromFirstLayerSums(absl::MakeSpan(first_sums_), absl::MakeSpan(output_),
                                         absl::MakeSpan(scratch_));
  return output_[0];
}

double UpliftEvaluator::P1(int32_t offer_index, double retrieval_score) {
  const UpliftModel& model = *model_;
  if (model.p1_split) {
    return P1FromOfferShare(model.offer_first_layer.data() +
                                static_cast<size_t>(offer_index) * partial_.size(),
                            retrieval_score);
  }
  const int offer_width = model.sections.offer.width();
  return P1ForEncodedOffer(
      absl::MakeConstSpan(
          model.offer_features.data() + static_cast<size_t>(offer_index) * offer_width,
          static_cast<size_t>(offer_width)),
      retrieval_score);
}

void UpliftEvaluator::PrefetchOffer(int32_t offer_index) const {
  const UpliftModel& model = *model_;
  const float* row;
  size_t width;
  if (model.p1_split) {
    width = partial_.size();
    row = model.offer_first_layer.data();
  } else {
    width = static_cast<size_t>(model.sections.offer.width());
    row = model.offer_features.data();
  }
  PrefetchBytes(row + static_cast<size_t>(offer_index) * width, width * sizeof(float));
}

double UpliftEvaluator::P1ForEncodedOffer(absl::Span<const float> offer, double retrieval_score) {
  const UpliftModel& model = *model_;
  if (model.p1_split) {
    // The same sums and rounding as AppendOfferShares() for a catalog offer.
    std::fill(sums_.begin(), sums_.end(), 0.0);
    model.p1.mlp.AccumulateFirstLayer(model.p1_offer_column, offer, absl::MakeSpan(sums_));
    for (size_t r = 0; r < sums_.size(); ++r) offer_share_[r] = static_cast<float>(sums_[r]);
    return P1FromOfferShare(offer_share_.data(), retrieval_score);
  }
  absl::Span<const float> retrieval;
  if (model.sections.has_retrieval) {
    const RawFeatureValue raw = RawFeatureValue::Numeric(retrieval_score);
    model.sections.retrieval.Encode(absl::MakeConstSpan(&raw, 1), absl::MakeSpan(retrieval_value_));
    retrieval = retrieval_value_;
  }
  EncodedSections with_offer = sections_;
  with_offer.offer = offer;
  with_offer.retrieval = retrieval;
  AssembleHeadInput(model.p1, with_offer,
                    absl::MakeSpan(input_.data(), static_cast<size_t>(model.p1.mlp.input_dim())));
  model.p1.mlp.Forward(absl::MakeConstSpan(input_.data(), model.p1.mlp.input_dim()),
                       absl::MakeSpan(output_), absl::MakeSpan(scratch_));
  return output_[0];
}

}  // namespace offerd
