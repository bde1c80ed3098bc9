#ifndef OFFERD_CORE_MODEL_H_
#define OFFERD_CORE_MODEL_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "core/context_features.h"
#include "core/expected_value.h"
#include "core/feature_encoder.h"
#include "core/mlp.h"
#include "core/purchase_features.h"

namespace offerd {

// The models a bundle ships (docs/models-format.md), as plain data ready to evaluate: input
// sections with their encoders, and MLP heads that concatenate sections in a listed order.
// Built once per bundle by store/model_loader; immutable afterwards.

// kRetrieval: one numeric feature `retrieval_score`, the candidate's inner product with the
// query embedding; only in p1, after the offer section.
enum class ModelSection { kUser, kPurchases, kContext, kOffer, kRetrieval };

struct MlpHead {
  std::vector<ModelSection> inputs;  // concatenation order
  Mlp mlp;
};

struct ModelSections {
  bool has_user = false, has_purchases = false, has_context = false, has_offer = false,
       has_retrieval = false;
  SectionEncoder user;                // encodes the stored UserRecord
  PurchaseSectionEncoder purchases;   // derived from PurchaseSummary + now_day
  ContextSectionEncoder context;      // from the request Context
  SectionEncoder offer;               // from the catalog row, encoded once per bundle
  SectionEncoder retrieval;           // the candidate's retrieval score (one numeric feature)

  int width(ModelSection section) const;
};

// One request's encoded sections (spans into caller-owned buffers; empty when absent).
struct EncodedSections {
  absl::Span<const float> user, purchases, context, offer, retrieval;
  absl::Span<const float> get(ModelSection section) const;
};

// The uplift model: p0 = P(convert | not shown) reads no offer section; p1 = P(convert |
// shown) per candidate.
struct UpliftModel {
  ModelSections sections;
  MlpHead p0;
  MlpHead p1;
  SegmentThresholds segment_thresholds;

  // How p1 splits (set by PlanUpliftSplit()). When its per-candidate inputs (the offer
  // section, then optionally the retrieval score) come last, the first layer over the other
  // sections is computed once per request, each catalog offer's share of the first layer once
  // per bundle, and a candidate costs an addition plus the hidden layers.
  bool p1_split = false;
  int p1_offer_column = 0;      // first column of the offer section in p1's input
  int p1_retrieval_column = -1;  // first column of the retrieval section; -1: not read

  // p1_split: offer o's contribution to p1's first-layer sums, W0[:, offer columns] . x_o
  // summed in double and rounded to float32 ([num_offers, p1 first_layer_width()]).
  std::vector<float> offer_first_layer;
  // Not split: the encoded offer section of every catalog row ([num_offers,
  // sections.offer.width()] row-major). Empty when split (the contributions replace it).
  std::vector<float> offer_features;
};

// Decides how p1 splits (p1_split and the column offsets), from the heads' inputs alone.
// REQUIRES heads validated (ValidateHead).
void PlanUpliftSplit(UpliftModel* model);

// For a split model: appends the first-layer shares of catalog rows encoded as the offer
// section (`encoded_rows`: [n, sections.offer.width()] row-major) to offer_first_layer. The
// loader feeds the catalog in chunks, so the encoded rows of a large catalog never exist all at
// once. REQUIRES model->p1_split.
void AppendOfferShares(UpliftModel* model, absl::Span<const float> encoded_rows);

// The two-tower user tower: the query embedding, L2-normalised by the caller.
struct UserTowerModel {
  ModelSections sections;
  MlpHead embedding;
};

// Checks that every head's inputs exist in `sections` and that their summed width equals the
// head's input_dim. InvalidArgument naming the head otherwise.
absl::Status ValidateHead(const char* name, const MlpHead& head, const ModelSections& sections);

// Concatenates the head's input sections into `out` (head.mlp.input_dim() floats).
void AssembleHeadInput(const MlpHead& head, const EncodedSections& sections, absl::Span<float> out);

// Evaluates the user tower's MLP on `sections` into `output` (before normalisation: what the
// golden cases hold). `input` and `scratch` are caller-owned buffers, resized as needed.
void UserTowerForward(const UserTowerModel& model, const EncodedSections& sections,
                      std::vector<float>* input, std::vector<float>* scratch,
                      std::vector<float>* output);

// Evaluates the user tower on `sections` and L2-normalises the result into `embedding`
// (resized to the head's output_dim). `input` and `scratch` are caller-owned buffers, resized
// as needed. Returns false when the output cannot be normalised (zero or not finite).
bool ComputeUserEmbedding(const UserTowerModel& model, const EncodedSections& sections,
                          std::vector<float>* input, std::vector<float>* scratch,
                          std::vector<float>* embedding);

// Per-request evaluation of an UpliftModel: p0 once, then p1 per candidate. When p1 splits
// (PlanUpliftSplit), the first layer over the per-request sections is computed once and
// each candidate costs its offer's precomputed share, its retrieval column and the hidden
// layers in float32 (Mlp::ForwardFromFirstLayerSums). Reuse one instance per thread: buffers
// grow once and are reused, so steady-state calls do not allocate.
class UpliftEvaluator {
 public:
  // Starts a request. `sections.offer` is ignored (set per candidate).
  void Begin(const UpliftModel& model, const EncodedSections& sections);
  double p0() const { return p0_; }
  // P(convert | shown offer `offer_index`), using the model's precomputed offer data;
  // `retrieval_score` feeds the retrieval section when the model has one.
  double P1(int32_t offer_index, double retrieval_score);
  // Asks the CPU to fetch what P1(offer_index, ...) will read; no effect on results.
  void PrefetchOffer(int32_t offer_index) const;
  // Same for an offer section encoded by the caller (golden cases): its first-layer share is
  // computed here exactly as AppendOfferShares() computes a catalog offer's, so the golden
  // cases check the arithmetic the service runs.
  double P1ForEncodedOffer(absl::Span<const float> encoded_offer, double retrieval_score);

 private:
  // p1 from an offer's first-layer share (split models).
  double P1FromOfferShare(const float* offer_share, double retrieval_score);

  const UpliftModel* model_ = nullptr;
  EncodedSections sections_;
  std::vector<float> retrieval_value_;
  double p0_ = 0;
  std::vector<float> input_, output_, scratch_, first_sums_, offer_share_;
  std::vector<double> partial_, sums_;
};

}  // namespace offerd

#endif  // OFFERD_CORE_MODEL_H_
