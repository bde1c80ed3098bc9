#ifndef OFFERD_CORE_OFFER_H_
#define OFFERD_CORE_OFFER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace offerd {

// Per-offer fatigue overrides from the catalog; unset fields use the policy defaults.
struct OfferCaps {
  std::optional<int32_t> max_impressions;
  std::optional<int64_t> window_seconds;
  std::optional<int64_t> dismiss_cooldown_seconds;
  std::optional<int64_t> redeem_cooldown_seconds;
};

// One row of a bundle's offer catalog (docs/snapshot-format.md, offers.jsonl). Immutable once
// the bundle is published. Money is in the catalog's currency units.
struct Offer {
  std::string offer_id;
  std::string category;
  std::string type;
  std::string title;
  double margin = 0.0;  // expected margin of a conversion, >= 0
  double cost = 0.0;    // cost of a redemption, >= 0
  int64_t active_from_ms = 0;  // Unix ms; 0 = unbounded
  int64_t active_to_ms = 0;    // Unix ms; 0 = unbounded
  std::vector<std::string> channels;   // empty = any
  std::vector<std::string> countries;  // empty = any
  std::vector<std::string> audiences;  // empty = any
  std::optional<int64_t> budget;       // redemptions allowed; nullopt = unlimited
  OfferCaps caps;
};

}  // namespace offerd

#endif  // OFFERD_CORE_OFFER_H_
