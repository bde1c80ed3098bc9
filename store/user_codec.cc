#include "store/user_codec.h"

#include <cstdint>
#include <cstring>

namespace offerd {
namespace {

constexpr uint8_t kUserRecordV1 = 1;
constexpr uint8_t kPurchaseSummaryV1 = 1;
constexpr uint8_t kUserFatigueV1 = 1;

void PutI64(std::string* out, int64_t v) { out->append(reinterpret_cast<const char*>(&v), 8); }

void PutU32(std::string* out, uint32_t v) {
  char buf[4];
  for (int i = 0; i < 4; ++i) buf[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  out->append(buf, 4);
}

void PutBytes(std::string* out, absl::string_view s) {
  PutU32(out, static_cast<uint32_t>(s.size()));
  out->append(s.data(), s.size());
}

void PutFloats(std::string* out, const std::vector<float>& v) {
  PutU32(out, static_cast<uint32_t>(v.size()));
  out->append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

// Sequential reader over an encoded value; every Get fails once the input is exhausted.
class Reader {
 public:
  explicit Reader(absl::string_view in) : in_(in) {}
  bool GetU8(uint8_t* v) {
    if (in_.empty()) return false;
    *v = static_cast<uint8_t>(in_[0]);
    in_.remove_prefix(1);
    return true;
  }
  bool GetU32(uint32_t* v) {
    if (in_.size() < 4) return false;
    *v = 0;
    for (int i = 0; i < 4; ++i) *v |= static_cast<uint32_t>(static_cast<uint8_t>(in_[i])) << (8 * i);
    in_.remove_prefix(4);
    return true;
  }
  bool GetRaw(void* dst, size_t n) {
    if (in_.size() < n) return false;
    if (n == 0) return true;  // dst may be an empty vector's null data(): memcpy forbids it
    std::memcpy(dst, in_.data(), n);
    in_.remove_prefix(n);
    return true;
  }
  bool GetBytes(std::string* s) {
    uint32_t n;
    if (!GetU32(&n) || in_.size() < n) return false;
    s->assign(in_.data(), n);
    in_.remove_prefix(n);
    return true;
  }
  bool GetFloats(std::vector<float>* v) {
    uint32_t n;
    if (!GetU32(&n) || in_.size() / sizeof(float) < n) return false;
    v->resize(n);
    return GetRaw(v->data(), n * sizeof(float));
  }
  bool GetI64(int64_t* v) { return GetRaw(v, 8); }
  bool done() const { return in_.empty(); }

 private:
  absl::string_view in_;
};

}  // namespace

std::string EncodeUserRecord(const UserRecord& record) {
  std::string out;
  out.reserve(16 + record.feature_schema_id.size() +
              (record.embedding.size() + record.numeric.size()) * sizeof(float));
  out.push_back(static_cast<char>(kUserRecordV1));
  PutBytes(&out, record.feature_schema_id);
  PutFloats(&out, record.embedding);
  PutFloats(&out, record.numeric);
  PutU32(&out, static_cast<uint32_t>(record.categorical.size()));
  for (const std::string& c : record.categorical) PutBytes(&out, c);
  return out;
}

absl::StatusOr<UserRecord> DecodeUserRecord(absl::string_view bytes) {
  Reader in(bytes);
  uint8_t version;
  if (!in.GetU8(&version)) return absl::DataLossError("user record: empty value");
  if (version != kUserRecordV1) {
    return absl::DataLossError("user record: unknown encoding version " + std::to_string(version));
  }
  UserRecord record;
  uint32_t n_categorical;
  if (!in.GetBytes(&record.feature_schema_id) || !in.GetFloats(&record.embedding) ||
      !in.GetFloats(&record.numeric) || !in.GetU32(&n_categorical)) {
    return absl::DataLossError("user record: truncated");
  }
  if (n_categorical > bytes.size()) return absl::DataLossError("user record: truncated");
  record.categorical.resize(n_categorical);
  for (std::string& c : record.categorical) {
    if (!in.GetBytes(&c)) return absl::DataLossError("user record: truncated");
  }
  if (!in.done()) return absl::DataLossError("user record: trailing bytes");
  return record;
}

std::string EncodePurchaseSummary(const PurchaseSummary& summary) {
  std::string out;
  out.push_back(static_cast<char>(kPurchaseSummaryV1));
  PutU32(&out, static_cast<uint32_t>(summary.first_purchase_day));
  PutU32(&out, static_cast<uint32_t>(summary.last_purchase_day));
  PutU32(&out, static_cast<uint32_t>(summary.repeat_days));
  out.append(reinterpret_cast<const char*>(&summary.repeat_spend_sum), sizeof(double));
  out.push_back(summary.has_purchases ? 1 : 0);
  return out;
}

absl::StatusOr<PurchaseSummary> DecodePurchaseSummary(absl::string_view bytes) {
  Reader in(bytes);
  uint8_t version;
  if (!in.GetU8(&version) || version != kPurchaseSummaryV1) {
    return absl::DataLossError("purchase summary: unknown or missing encoding version");
  }
  PurchaseSummary s;
  uint32_t first, last, repeat;
  uint8_t has;
  if (!in.GetU32(&first) || !in.GetU32(&last) || !in.GetU32(&repeat) ||
      !in.GetRaw(&s.repeat_spend_sum, sizeof(double)) || !in.GetU8(&has) || !in.done()) {
    return absl::DataLossError("purchase summary: truncated or trailing bytes");
  }
  s.first_purchase_day = static_cast<int32_t>(first);
  s.last_purchase_day = static_cast<int32_t>(last);
  s.repeat_days = static_cast<int32_t>(repeat);
  s.has_purchases = has != 0;
  return s;
}

std::string EncodeUserFatigue(const UserFatigueRecord& record) {
  std::string out;
  out.push_back(static_cast<char>(kUserFatigueV1));
  PutU32(&out, static_cast<uint32_t>(record.shown_per_day.size()));
  for (const DayCount& d : record.shown_per_day) {
    PutU32(&out, static_cast<uint32_t>(d.day));
    PutU32(&out, static_cast<uint32_t>(d.count));
  }
  PutU32(&out, static_cast<uint32_t>(record.offers.size()));
  for (const OfferFatigueEntry& e : record.offers) {
    PutBytes(&out, e.offer_id);
    PutI64(&out, e.last_dismiss_ms);
    PutI64(&out, e.last_redeem_ms);
    PutU32(&out, static_cast<uint32_t>(e.impressions.size()));
    for (const ImpressionBucket& b : e.impressions) {
      PutI64(&out, b.hour);
      PutU32(&out, static_cast<uint32_t>(b.count));
    }
  }
  return out;
}

absl::StatusOr<UserFatigueRecord> DecodeUserFatigue(absl::string_view bytes) {
  Reader in(bytes);
  uint8_t version;
  if (!in.GetU8(&version) || version != kUserFatigueV1) {
    return absl::DataLossError("fatigue record: unknown or missing encoding version");
  }
  const auto truncated = [] { return absl::DataLossError("fatigue record: truncated"); };
  UserFatigueRecord record;
  uint32_t n;
  if (!in.GetU32(&n) || n > bytes.size()) return truncated();
  record.shown_per_day.resize(n);
  for (DayCount& d : record.shown_per_day) {
    uint32_t day, count;
    if (!in.GetU32(&day) || !in.GetU32(&count)) return truncated();
    d.day = static_cast<int32_t>(day);
    d.count = static_cast<int32_t>(count);
  }
  if (!in.GetU32(&n) || n > bytes.size()) return truncated();
  record.offers.resize(n);
  for (OfferFatigueEntry& e : record.offers) {
    uint32_t buckets;
    if (!in.GetBytes(&e.offer_id) || !in.GetI64(&e.last_dismiss_ms) ||
        !in.GetI64(&e.last_redeem_ms) || !in.GetU32(&buckets) || buckets > bytes.size()) {
      return truncated();
    }
    e.impressions.resize(buckets);
    for (ImpressionBucket& b : e.impressions) {
      uint32_t count;
      if (!in.GetI64(&b.hour) || !in.GetU32(&count)) return truncated();
      b.count = static_cast<int32_t>(count);
    }
  }
  if (!in.done()) return absl::DataLossError("fatigue record: trailing bytes");
  return record;
}

}  // namespace offerd
