#ifndef OFFERD_SERVER_REQUEST_VALIDATION_H_
#define OFFERD_SERVER_REQUEST_VALIDATION_H_

#include <cstdint>

#include "absl/status/status.h"
#include "offerd/v1/offer_service.pb.h"

namespace offerd {

// INVALID_ARGUMENT naming the field when `request` breaks a limit of core/request_limits.h.
absl::Status ValidateRecommendRequest(const v1::RecommendRequest& request);

// INVALID_ARGUMENT naming the field when `event` is malformed. `now_ms` bounds timestamps.
absl::Status ValidateEvent(const v1::Event& event, int64_t now_ms);

}  // namespace offerd

#endif  // OFFERD_SERVER_REQUEST_VALIDATION_H_
