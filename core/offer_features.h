#ifndef OFFERD_CORE_OFFER_FEATURES_H_
#define OFFERD_CORE_OFFER_FEATURES_H_

#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/feature_encoder.h"
#include "core/offer.h"

namespace offerd {

// Encodes the `offer` section of one catalog row (docs/models-format.md): each feature reads
// the catalog field of the same name — `offer_id`, `category`, `type` (categorical) or
// `margin`, `cost` (numeric). Meant for load time (once per offer), hence the Status:
// InvalidArgument for any other name or a kind that does not match the field.
// REQUIRES out.size() >= encoder.width().
absl::Status EncodeOfferSection(const SectionEncoder& encoder, const Offer& offer,
                                absl::Span<float> out);

// OK when every feature of `encoder` names an offer field of the matching kind (what
// EncodeOfferSection requires); checks the section once, independently of any offer.
absl::Status ValidateOfferSection(const SectionEncoder& encoder);

// The whole catalog, row-major [offers.size(), encoder.width()], row i <-> offers[i].
absl::StatusOr<std::vector<float>> EncodeOfferCatalog(const SectionEncoder& encoder,
                                                      absl::Span<const Offer> offers);

}  // namespace offerd

#endif  // OFFERD_CORE_OFFER_FEATURES_H_
