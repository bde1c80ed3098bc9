#include "store/log_records.h"

#include <charconv>
#include <cmath>
#include <cstring>

namespace offerd {
namespace {

// Length of the well-formed UTF-8 sequence starting at s[0] (s[0] >= 0x80), or 0 when it is
// not one (stray continuation byte, overlong form, surrogate, beyond U+10FFFF, truncated).
size_t Utf8SequenceLength(const unsigned char* s, size_t n) {
  const unsigned char c = s[0];
  auto cont = [&](size_t i) { return i < n && (s[i] & 0xC0) == 0x80; };
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (!cont(1) || !cont(2)) return 0;
    if (c == 0xE0 && s[1] < 0xA0) return 0;  // overlong
    if (c == 0xED && s[1] > 0x9F) return 0;  // UTF-16 surrogate
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    if (c == 0xF0 && s[1] < 0x90) return 0;  // overlong
    if (c == 0xF4 && s[1] > 0x8F) return 0;  // > U+10FFFF
    return 4;
  }
  return 0;
}

void AppendKey(absl::string_view key, std::string* out) {
  // Keys are fixed ASCII identifiers: no escaping needed.
  out->push_back('"');
  out->append(key.data(), key.size());
  out->append("\":");
}

void AppendStringField(absl::string_view key, absl::string_view value, std::string* out) {
  AppendKey(key, out);
  AppendJsonString(value, out);
}

void AppendNumberField(absl::string_view key, double value, std::string* out) {
  AppendKey(key, out);
  AppendJsonNumber(value, out);
}

void AppendIntField(absl::string_view key, int64_t value, std::string* out) {
  AppendKey(key, out);
  char buf[24];
  const auto result = std::to_chars(buf, buf + sizeof(buf), value);
  out->append(buf, result.ptr);
}

void AppendBoolField(absl::string_view key, bool value, std::string* out) {
  AppendKey(key, out);
  out->append(value ? "true" : "false");
}

}  // namespace

absl::string_view EventTypeName(EventKind kind) {
  switch (kind) {
    case EventKind::kImpression:
      return "IMPRESSION";
    case EventKind::kClick:
      return "CLICK";
    case EventKind::kRedeem:
      return "REDEEM";
    case EventKind::kDismiss:
      return "DISMISS";
    case EventKind::kPurchase:
      return "PURCHASE";
  }
  return "UNKNOWN";
}

void AppendJsonString(absl::string_view value, std::string* out) {
  static constexpr char kHex[] = "0123456789abcdef";
  out->push_back('"');
  const auto* s = reinterpret_cast<const unsigned char*>(value.data());
  const size_t n = value.size();
  size_t run_start = 0;  // bytes [run_start, i) are copied verbatim
  size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
      ++i;
      continue;
    }
    if (c >= 0x80) {
      const size_t len = Utf8SequenceLength(s + i, n - i);
      if (len > 0) {
        i += len;
        continue;
      }
    }
    out->append(value.data() + run_start, i - run_start);
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      case '\b':
        out->append("\\b");
        break;
      case '\f':
        out->append("\\f");
        break;
      default:
        if (c >= 0x80) {
          out->append("\\ufffd");  // invalid UTF-8 byte
        } else {
          const char escape[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 0xF]};
          out->append(escape, sizeof(escape));
        }
    }
    ++i;
    run_start = i;
  }
  out->append(value.data() + run_start, n - run_start);
  out->push_back('"');
}

void AppendJsonNumber(double value, std::string* out) {
  if (!std::isfinite(value)) {
    out->append("null");
    return;
  }
  char buf[32];
  const auto result = std::to_chars(buf, buf + sizeof(buf), value);
  out->append(buf, result.ptr);
}

void AppendJsonLine(const DecisionRecord& record, std::string* out) {
  out->append("{\"type\":\"decision\",");
  AppendStringField("decision_id", record.decision_id, out);
  out->push_back(',');
  AppendIntField("ts_ms", record.ts_ms, out);
  out->push_back(',');
  AppendStringField("user_id", record.user_id, out);
  out->push_back(',');
  AppendStringField("arm", record.arm, out);
  out->push_back(',');
  AppendBoolField("holdout", record.holdout, out);
  out->push_back(',');
  AppendStringField("snapshot_version", record.snapshot_version, out);
  out->push_back(',');
  AppendBoolField("canary", record.canary, out);
  out->push_back(',');
  AppendBoolField("degraded", record.degraded, out);
  out->append(",\"context\":{");
  AppendStringField("channel", record.context.channel, out);
  out->push_back(',');
  AppendStringField("device", record.context.device, out);
  out->push_back(',');
  AppendStringField("page", record.context.page, out);
  out->push_back(',');
  AppendStringField("country", record.context.country, out);
  out->append("},\"offers\":[");
  bool first = true;
  for (const OfferLogRecord& offer : record.offers) {
    if (!first) out->push_back(',');
    first = false;
    out->push_back('{');
    AppendStringField("offer_id", offer.offer_id, out);
    out->push_back(',');
    AppendIntField("rank", offer.rank, out);
    out->push_back(',');
    AppendNumberField("score", offer.score, out);
    out->push_back(',');
    AppendNumberField("propensity", offer.propensity, out);
    out->push_back(',');
    AppendBoolField("explored", offer.explored, out);
    out->push_back(',');
    AppendNumberField("p_treated", offer.p_treated, out);
    out->push_back(',');
    AppendNumberField("p_control", offer.p_control, out);
    out->push_back(',');
    AppendNumberField("uplift", offer.uplift, out);
    out->push_back(',');
    AppendNumberField("clv", offer.clv, out);
    out->push_back(',');
    AppendNumberField("expected_value", offer.expected_value, out);
    out->push_back(',');
    AppendNumberField("fatigue_multiplier", offer.fatigue_multiplier, out);
    out->push_back(',');
    AppendStringField("segment", offer.has_segment ? SegmentName(offer.segment) : "", out);
    out->push_back('}');
  }
  out->append("]}");
}

void AppendJsonLine(const EventRecord& record, std::string* out) {
  out->append("{\"type\":\"event\",");
  AppendIntField("ts_ms", record.ts_ms, out);
  out->push_back(',');
  AppendIntField("received_ms", record.received_ms, out);
  out->push_back(',');
  AppendStringField("user_id", record.user_id, out);
  out->push_back(',');
  AppendStringField("offer_id", record.offer_id, out);
  out->push_back(',');
  AppendStringField("event_type", EventTypeName(record.event_type), out);
  out->push_back(',');
  AppendStringField("decision_id", record.decision_id, out);
  out->push_back(',');
  AppendNumberField("amount", record.amount, out);
  out->push_back('}');
}

std::string ToJsonLine(const DecisionRecord& record) {
  std::string out;
  out.reserve(320 + 360 * record.offers.size());
  AppendJsonLine(record, &out);
  return out;
}

std::string ToJsonLine(const EventRecord& record) {
  std::string out;
  out.reserve(192);
  AppendJsonLine(record, &out);
  return out;
}

}  // namespace offerd
