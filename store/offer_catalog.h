#ifndef OFFERD_STORE_OFFER_CATALOG_H_
#define OFFERD_STORE_OFFER_CATALOG_H_

#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/offer.h"

namespace offerd {

// Parses offers.jsonl (docs/snapshot-format.md): one JSON object per line, blank lines
// ignored. Checks required fields, types, ranges and unique offer ids. Errors start with
// "line N: ".
absl::StatusOr<std::vector<Offer>> ParseOfferCatalog(absl::string_view jsonl);

}  // namespace offerd

#endif  // OFFERD_STORE_OFFER_CATALOG_H_
