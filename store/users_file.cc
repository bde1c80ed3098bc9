#include "store/users_file.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <fstream>
#include <limits>
#include <system_error>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "core/request_limits.h"
#include "store/json_util.h"

namespace offerd {

using json_util::FieldError;
using json_util::json;

namespace {

absl::Status ParsePurchases(const json& obj, PurchaseSummary* p) {
  if (!obj.is_object()) return FieldError("purchases", "must be an object");
  int64_t first = 0, last = 0, repeat = 0;
  absl::Status s = json_util::GetInt(obj, "first_purchase_day", true, &first);
  if (s.ok()) s = json_util::GetInt(obj, "last_purchase_day", true, &last);
  if (s.ok()) s = json_util::GetInt(obj, "repeat_days", true, &repeat);
  if (s.ok()) s = json_util::GetDouble(obj, "repeat_spend_sum", true, &p->repeat_spend_sum);
  if (!s.ok()) return FieldError("purchases", s.message());
  if (first < 0 || last < first || last > 1000000) {
    return FieldError("purchases", "need 0 <= first_purchase_day <= last_purchase_day");
  }
  if (repeat < 0 || repeat > last - first) {
    return FieldError("purchases.repeat_days",
                      "must be 0..(last_purchase_day - first_purchase_day)");
  }
  if (p->repeat_spend_sum < 0) return FieldError("purchases.repeat_spend_sum", "must be >= 0");
  p->first_purchase_day = static_cast<int32_t>(first);
  p->last_purchase_day = static_cast<int32_t>(last);
  p->repeat_days = static_cast<int32_t>(repeat);
  p->has_purchases = true;
  return absl::OkStatus();
}

absl::StatusOr<UserLine> ParseUserObject(const UsersFileHeader& header, const json& obj) {
  if (!obj.is_object()) return absl::InvalidArgumentError("not a JSON object");
  UserLine line;
  absl::Status s = json_util::GetString(obj, "user_id", true, &line.user_id);
  if (!s.ok()) return s;
  if (s = CheckLength("user_id", line.user_id, 1, kMaxUserIdBytes); !s.ok()) return s;
  line.record.feature_schema_id = header.feature_schema.id;

  static const json kEmpty = json::object();
  auto features_it = obj.find("features");
  const json& features = features_it == obj.end() ? kEmpty : *features_it;
  if (!features.is_object()) return FieldError("features", "must be an object");
  for (const FeatureSpec& spec : header.feature_schema.features) {
    auto it = features.find(spec.name);
    const bool missing = it == features.end() || it->is_null();
    if (spec.kind == FeatureSpec::Kind::kNumeric) {
      float v = std::numeric_limits<float>::quiet_NaN();
      if (!missing) {
        if (!it->is_number()) return FieldError("features." + spec.name, "must be a number");
        const double d = it->get<double>();
        if (!std::isfinite(d)) return FieldError("features." + spec.name, "must be finite");
        v = static_cast<float>(d);
      }
      line.record.numeric.push_back(v);
    } else {
      std::string v;
      if (!missing) {
        if (it->is_string()) {
          v = it->get<std::string>();
        } else if (it->is_number_integer() || it->is_boolean()) {
          v = it->dump();
        } else {
          return FieldError("features." + spec.name, "must be a string");
        }
      }
      line.record.categorical.push_back(std::move(v));
    }
  }
  auto embedding = obj.find("embedding");
  if (embedding != obj.end() && !embedding->is_null()) {
    if (!embedding->is_array() ||
        static_cast<int>(embedding->size()) != header.embedding_dim) {
      return FieldError("embedding", absl::StrCat("must be a list of ", header.embedding_dim,
                                                  " numbers"));
    }
    line.record.embedding.reserve(header.embedding_dim);
    for (const json& x : *embedding) {
      if (!x.is_number()) return FieldError("embedding", "must contain numbers only");
      const double d = x.get<double>();
      if (!std::isfinite(d)) return FieldError("embedding", "contains NaN or Inf");
      line.record.embedding.push_back(static_cast<float>(d));
    }
  }
  auto purchases = obj.find("purchases");
  if (purchases != obj.end() && !purchases->is_null()) {
    PurchaseSummary p;
    if (s = ParsePurchases(*purchases, &p); !s.ok()) return s;
    line.purchases = p;
  }
  return line;
}

}  // namespace

absl::StatusOr<UsersFileHeader> ParseUsersHeader(absl::string_view text) {
  json root = json::parse(text.begin(), text.end(), nullptr, false);
  if (root.is_discarded()) return absl::InvalidArgumentError("header: not valid JSON");
  try {
    auto header = root.find("header");
    if (!root.is_object() || header == root.end() || !header->is_object()) {
      return absl::InvalidArgumentError(
          "first line must be the header {\"header\": {\"format\": \"offerd-users\", ...}}");
    }
    std::string format;
    int64_t version = 0, dim = 0;
    absl::Status s = json_util::GetString(*header, "format", true, &format);
    if (s.ok()) s = json_util::GetInt(*header, "format_version", true, &version);
    if (s.ok()) s = json_util::GetInt(*header, "embedding_dim", true, &dim);
    if (!s.ok()) return FieldError("header", s.message());
    if (format != "offerd-users") return FieldError("header.format", "must be \"offerd-users\"");
    if (version != 1) return FieldError("header.format_version", "must be 1");
    if (dim < 0 || dim > 4096) return FieldError("header.embedding_dim", "must be 0..4096");
    UsersFileHeader out;
    out.embedding_dim = static_cast<int>(dim);
    auto schema = header->find("feature_schema");
    if (schema == header->end()) return FieldError("header.feature_schema", "missing");
    if (s = json_util::ParseFeatureSchema(*schema, &out.feature_schema); !s.ok()) {
      return FieldError("header", s.message());
    }
    return out;
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("header: ", e.what()));
  }
}

absl::StatusOr<UserLine> ParseUserLine(const UsersFileHeader& header, absl::string_view text) {
  json obj = json::parse(text.begin(), text.end(), nullptr, false);
  if (obj.is_discarded()) return absl::InvalidArgumentError("not valid JSON");
  try {
    return ParseUserObject(header, obj);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(e.what());
  }
}

absl::StatusOr<UsersFileHeader> ReadUsersFile(const std::string& path, const UserLineFn& on_user,
                                              int parse_threads) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::string line;
  int64_t line_number = 0;
  std::optional<UsersFileHeader> header;
  while (!header && std::getline(in, line)) {
    ++line_number;
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    absl::StatusOr<UsersFileHeader> parsed = ParseUsersHeader(line);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", line_number, ": ", parsed.status().message()));
    }
    header = std::move(*parsed);
  }
  if (in.bad()) return absl::UnavailableError(absl::StrCat(path, ": read error"));
  if (!header) return absl::InvalidArgumentError(absl::StrCat(path, ": empty file (no header)"));

  // Batches of lines: read here, parsed on `threads` threads (strided, so slow lines spread
  // out), handed to `on_user` here in file order. Buffers are reused across batches.
  const int threads = std::max(1, parse_threads);
  const size_t batch_size = threads == 1 ? 1 : 1024 * static_cast<size_t>(threads);
  std::vector<std::string> lines(batch_size);
  std::vector<int64_t> numbers(batch_size);
  std::vector<absl::StatusOr<UserLine>> parsed(batch_size);
  size_t count = 0;
  const auto parse_slice = [&](size_t first, size_t step) {
    for (size_t i = first; i < count; i += step) parsed[i] = ParseUserLine(*header, lines[i]);
  };
  const auto flush = [&]() -> absl::Status {
    if (threads == 1 || count < 2) {
      parse_slice(0, 1);
    } else {
      std::vector<std::thread> workers;
      for (int t = 1; t < threads; ++t) {
        try {
          workers.emplace_back(parse_slice, t, threads);
        } catch (const std::system_error&) {
          parse_slice(t, threads);  // no thread to spare: parse that slice here
        }
      }
      parse_slice(0, threads);
      for (std::thread& w : workers) w.join();
    }
    for (size_t i = 0; i < count; ++i) {
      if (!parsed[i].ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ":", numbers[i], ": ", parsed[i].status().message()));
      }
      if (absl::Status s = on_user(numbers[i], *std::move(parsed[i])); !s.ok()) return s;
    }
    count = 0;
    return absl::OkStatus();
  };
  while (std::getline(in, lines[count])) {
    ++line_number;
    if (absl::StripAsciiWhitespace(lines[count]).empty()) continue;
    numbers[count] = line_number;
    if (++count == batch_size) {
      if (absl::Status s = flush(); !s.ok()) return s;
    }
  }
  if (in.bad()) return absl::UnavailableError(absl::StrCat(path, ": read error"));
  if (absl::Status s = flush(); !s.ok()) return s;
  return *std::move(header);
}

}  // namespace offerd
