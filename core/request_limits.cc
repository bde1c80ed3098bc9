#include "core/request_limits.h"

#include "absl/strings/str_cat.h"

namespace offerd {

absl::Status CheckLength(absl::string_view field, absl::string_view value, size_t min_bytes,
                         size_t max_bytes) {
  if (value.size() < min_bytes || value.size() > max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": must be ", min_bytes, "..",
                                                   max_bytes, " bytes, got ", value.size()));
  }
  return absl::OkStatus();
}

absl::Status CheckNumOffers(int64_t num_offers) {
  if (num_offers < 1 || num_offers > kMaxNumOffers) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_offers: must be 1..", kMaxNumOffers, ", got ", num_offers));
  }
  return absl::OkStatus();
}

absl::Status CheckTimestamp(absl::string_view field, int64_t timestamp_ms, int64_t now_ms) {
  if (timestamp_ms < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": must be Unix milliseconds >= 0, got ", timestamp_ms));
  }
  if (timestamp_ms > now_ms + kMaxFutureSkewMs) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": ", timestamp_ms, " is more than one day in the future (now ",
                     now_ms, ")"));
  }
  return absl::OkStatus();
}

}  // namespace offerd
