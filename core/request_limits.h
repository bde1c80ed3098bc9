#ifndef OFFERD_CORE_REQUEST_LIMITS_H_
#define OFFERD_CORE_REQUEST_LIMITS_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace offerd {

// Request limits of the public API (ARCHITECTURE.md, "Request limits"). A request breaking
// one gets INVALID_ARGUMENT naming the field.
inline constexpr size_t kMaxUserIdBytes = 256;
inline constexpr size_t kMaxOfferIdBytes = 128;
inline constexpr size_t kMaxRequestIdBytes = 128;
inline constexpr int32_t kMaxNumOffers = 100;
inline constexpr size_t kMaxContextAttributes = 64;
inline constexpr size_t kMaxAttributeBytes = 256;
inline constexpr size_t kMaxChannelBytes = 64;
inline constexpr size_t kMaxDeviceBytes = 64;
inline constexpr size_t kMaxPageBytes = 128;
inline constexpr size_t kMaxLocaleBytes = 64;
inline constexpr size_t kMaxCountryBytes = 8;
inline constexpr size_t kMaxEventsPerReport = 1000;
inline constexpr int64_t kMaxFutureSkewMs = 24LL * 3600 * 1000;
inline constexpr size_t kMaxDecisionIdBytes = 64;

// OK when min_bytes <= value.size() <= max_bytes; otherwise INVALID_ARGUMENT
// "<field>: must be <min>..<max> bytes, got <n>".
absl::Status CheckLength(absl::string_view field, absl::string_view value, size_t min_bytes,
                         size_t max_bytes);

// OK when 1 <= num_offers <= kMaxNumOffers.
absl::Status CheckNumOffers(int64_t num_offers);

// OK when timestamp_ms is 0 (meaning "now") or not more than kMaxFutureSkewMs after now_ms,
// and not negative.
absl::Status CheckTimestamp(absl::string_view field, int64_t timestamp_ms, int64_t now_ms);

}  // namespace offerd

#endif  // OFFERD_CORE_REQUEST_LIMITS_H_
