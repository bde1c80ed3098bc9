#include "store/offer_catalog.h"

#include <exception>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/request_limits.h"
#include "store/json_util.h"

namespace offerd {

using json_util::json;

namespace {

absl::Status ParseCaps(const json& obj, OfferCaps* caps) {
  if (!obj.is_object()) return json_util::FieldError("caps", "must be an object");
  int64_t v;
  if (obj.contains("max_impressions")) {
    if (absl::Status s = json_util::GetInt(obj, "max_impressions", true, &v); !s.ok()) return s;
    if (v < 0) return json_util::FieldError("caps.max_impressions", "must be >= 0");
    caps->max_impressions = static_cast<int32_t>(v);
  }
  struct {
    const char* key;
    std::optional<int64_t>* dst;
  } const seconds[] = {{"window_seconds", &caps->window_seconds},
                       {"dismiss_cooldown_seconds", &caps->dismiss_cooldown_seconds},
                       {"redeem_cooldown_seconds", &caps->redeem_cooldown_seconds}};
  for (const auto& f : seconds) {
    if (!obj.contains(f.key)) continue;
    if (absl::Status s = json_util::GetInt(obj, f.key, true, &v); !s.ok()) return s;
    if (v < 0) return json_util::FieldError(absl::StrCat("caps.", f.key), "must be >= 0");
    *f.dst = v;
  }
  return absl::OkStatus();
}

absl::Status ParseOffer(const json& obj, Offer* offer) {
  if (!obj.is_object()) return absl::InvalidArgumentError("not a JSON object");
  absl::Status s = json_util::GetString(obj, "offer_id", true, &offer->offer_id);
  if (!s.ok()) return s;
  if (s = CheckLength("offer_id", offer->offer_id, 1, kMaxOfferIdBytes); !s.ok()) return s;
  if (s = json_util::GetString(obj, "category", false, &offer->category); !s.ok()) return s;
  if (s = json_util::GetString(obj, "type", false, &offer->type); !s.ok()) return s;
  if (s = json_util::GetString(obj, "title", false, &offer->title); !s.ok()) return s;
  if (s = json_util::GetDouble(obj, "margin", true, &offer->margin); !s.ok()) return s;
  if (s = json_util::GetDouble(obj, "cost", true, &offer->cost); !s.ok()) return s;
  if (offer->margin < 0) return json_util::FieldError("margin", "must be >= 0");
  if (offer->cost < 0) return json_util::FieldError("cost", "must be >= 0");
  if (s = json_util::GetInt(obj, "active_from_ms", false, &offer->active_from_ms); !s.ok()) return s;
  if (s = json_util::GetInt(obj, "active_to_ms", false, &offer->active_to_ms); !s.ok()) return s;
  if (offer->active_from_ms < 0 || offer->active_to_ms < 0) {
    return json_util::FieldError("active_from_ms/active_to_ms", "must be >= 0");
  }
  if (offer->active_to_ms != 0 && offer->active_to_ms < offer->active_from_ms) {
    return json_util::FieldError("active_to_ms", "must not be before active_from_ms");
  }
  if (s = json_util::GetStringList(obj, "channels", &offer->channels); !s.ok()) return s;
  if (s = json_util::GetStringList(obj, "countries", &offer->countries); !s.ok()) return s;
  if (s = json_util::GetStringList(obj, "audiences", &offer->audiences); !s.ok()) return s;
  if (obj.contains("budget") && !obj["budget"].is_null()) {
    int64_t budget = 0;
    if (s = json_util::GetInt(obj, "budget", true, &budget); !s.ok()) return s;
    if (budget < 0) return json_util::FieldError("budget", "must be >= 0 or null");
    offer->budget = budget;
  }
  if (obj.contains("caps") && !obj["caps"].is_null()) {
    if (s = ParseCaps(obj["caps"], &offer->caps); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<Offer>> ParseOfferCatalog(absl::string_view jsonl) {
  std::vector<Offer> offers;
  absl::flat_hash_set<std::string> seen;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(jsonl, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    json obj = json::parse(line.begin(), line.end(), nullptr, false);
    if (obj.is_discarded()) {
      return absl::InvalidArgumentError(absl::StrCat("line ", line_number, ": not valid JSON"));
    }
    Offer offer;
    absl::Status s;
    try {
      s = ParseOffer(obj, &offer);
    } catch (const std::exception& e) {
      s = absl::InvalidArgumentError(e.what());
    }
    if (!s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("line ", line_number, ": ", s.message()));
    }
    if (!seen.insert(offer.offer_id).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", line_number, ": duplicate offer_id \"", offer.offer_id, "\""));
    }
    offers.push_back(std::move(offer));
  }
  return offers;
}

}  // namespace offerd
