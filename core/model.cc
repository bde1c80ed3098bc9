#include "core/model.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
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

  // p1's per-request prefix: everything before the per-candidate sections (offer, then
  // retrieval), when those come last.
  const std::vector<ModelSection>& in = model.p1.inputs;
  size_t suffix_begin = in.size();
  while (suffix_begin > 0 && (in[suffix_begin - 1] == ModelSection::kOffer ||
                              in[suffix_begin - 1] == ModelSection::kRetrieval)) {
    --suffix_begin;
  }
  split_ = true;
  for (size_t i = 0; i < suffix_begin; ++i) {
    split_ &= in[i] != ModelSection::kOffer && in[i] != ModelSection::kRetrieval;
  }
  suffix_width_ = 0;
  for (size_t i = suffix_begin; i < in.size(); ++i) suffix_width_ += model.sections.width(in[i]);
  suffix_begin_ = suffix_begin;
  if (split_) {
    prefix_width_ = model.p1.mlp.input_dim() - suffix_width_;
    size_t at = 0;
    for (size_t i = 0; i < suffix_begin; ++i) {
      absl::Span<const float> part = sections_.get(in[i]);
      std::copy(part.begin(), part.end(), input_.begin() + at);
      at += part.size();
    }
    partial_.resize(static_cast<size_t>(model.p1.mlp.first_layer_width()));
    model.p1.mlp.FirstLayerPartial(absl::MakeConstSpan(input_.data(), prefix_width_),
                                   absl::MakeSpan(partial_));
  }
  retrieval_value_.resize(static_cast<size_t>(
      model.sections.has_retrieval ? model.sections.retrieval.width() : 0));
}

double UpliftEvaluator::P1(int32_t offer_index, double retrieval_score) {
  const int offer_width = model_->sections.offer.width();
  return P1ForEncodedOffer(
      absl::MakeConstSpan(
          model_->offer_features.data() + static_cast<size_t>(offer_index) * offer_width,
          static_cast<size_t>(offer_width)),
      retrieval_score);
}

double UpliftEvaluator::P1ForEncodedOffer(absl::Span<const float> offer, double retrieval_score) {
  const UpliftModel& model = *model_;
  absl::Span<const float> retrieval;
  if (model.sections.has_retrieval) {
    const RawFeatureValue raw = RawFeatureValue::Numeric(retrieval_score);
    model.sections.retrieval.Encode(absl::MakeConstSpan(&raw, 1), absl::MakeSpan(retrieval_value_));
    retrieval = retrieval_value_;
  }
  const std::vector<ModelSection>& in = model.p1.inputs;
  if (split_) {
    suffix_.resize(static_cast<size_t>(suffix_width_));
    size_t at = 0;
    for (size_t i = suffix_begin_; i < in.size(); ++i) {
      absl::Span<const float> part = in[i] == ModelSection::kOffer ? offer : retrieval;
      std::copy(part.begin(), part.end(), suffix_.begin() + at);
      at += part.size();
    }
    model.p1.mlp.ForwardFromPartial(partial_, prefix_width_, suffix_, absl::MakeSpan(output_),
                                    absl::MakeSpan(scratch_));
  } else {
    EncodedSections with_offer = sections_;
    with_offer.offer = offer;
    with_offer.retrieval = retrieval;
    AssembleHeadInput(model.p1, with_offer,
                      absl::MakeSpan(input_.data(), static_cast<size_t>(model.p1.mlp.input_dim())));
    model.p1.mlp.Forward(absl::MakeConstSpan(input_.data(), model.p1.mlp.input_dim()),
                         absl::MakeSpan(output_), absl::MakeSpan(scratch_));
  }
  return output_[0];
}

}  // namespace offerd
