#include "server/request_validation.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/request_limits.h"

namespace offerd {

absl::Status ValidateRecommendRequest(const v1::RecommendRequest& request) {
  absl::Status s = CheckLength("user_id", request.user_id(), 1, kMaxUserIdBytes);
  if (!s.ok()) return s;
  if (s = CheckNumOffers(request.num_offers()); !s.ok()) return s;
  if (s = CheckLength("request_id", request.request_id(), 0, kMaxRequestIdBytes); !s.ok()) return s;
  const v1::Context& c = request.context();
  if (s = CheckLength("context.channel", c.channel(), 0, kMaxChannelBytes); !s.ok()) return s;
  if (s = CheckLength("context.device", c.device(), 0, kMaxDeviceBytes); !s.ok()) return s;
  if (s = CheckLength("context.page", c.page(), 0, kMaxPageBytes); !s.ok()) return s;
  if (s = CheckLength("context.locale", c.locale(), 0, kMaxLocaleBytes); !s.ok()) return s;
  if (s = CheckLength("context.country", c.country(), 0, kMaxCountryBytes); !s.ok()) return s;
  if (c.timestamp_ms() < 0) {
    return absl::InvalidArgumentError("context.timestamp_ms: must be >= 0");
  }
  if (c.attributes_size() > static_cast<int>(kMaxContextAttributes)) {
    return absl::InvalidArgumentError(absl::StrCat("context.attributes: at most ",
                                                   kMaxContextAttributes, " entries, got ",
                                                   c.attributes_size()));
  }
  for (const auto& [key, value] : c.attributes()) {
    if (key.empty() || key.size() > kMaxAttributeBytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "context.attributes: keys must be 1..", kMaxAttributeBytes, " bytes, got ", key.size()));
    }
    if (value.size() > kMaxAttributeBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("context.attributes[", key.substr(0, 64), "]: value must be at most ",
                       kMaxAttributeBytes, " bytes, got ", value.size()));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateEvent(const v1::Event& event, int64_t now_ms) {
  absl::Status s = CheckLength("user_id", event.user_id(), 1, kMaxUserIdBytes);
  if (!s.ok()) return s;
  if (!v1::EventType_IsValid(event.type()) || event.type() == v1::EVENT_TYPE_UNSPECIFIED) {
    return absl::InvalidArgumentError(
        "type: must be IMPRESSION, CLICK, REDEEM, DISMISS or PURCHASE");
  }
  if (event.type() == v1::PURCHASE) {
    if (s = CheckLength("offer_id", event.offer_id(), 0, kMaxOfferIdBytes); !s.ok()) return s;
    if (!std::isfinite(event.amount()) || event.amount() < 0) {
      return absl::InvalidArgumentError("amount: must be a finite number >= 0 for PURCHASE");
    }
  } else if (s = CheckLength("offer_id", event.offer_id(), 1, kMaxOfferIdBytes); !s.ok()) {
    return s;
  }
  if (s = CheckTimestamp("timestamp_ms", event.timestamp_ms(), now_ms); !s.ok()) return s;
  if (s = CheckLength("decision_id", event.decision_id(), 0, kMaxDecisionIdBytes); !s.ok()) {
    return s;
  }
  return absl::OkStatus();
}

}  // namespace offerd
