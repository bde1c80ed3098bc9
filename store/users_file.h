#ifndef OFFERD_STORE_USERS_FILE_H_
#define OFFERD_STORE_USERS_FILE_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/feature_schema.h"
#include "core/user.h"

namespace offerd {

// Header line of users.jsonl (docs/snapshot-format.md).
struct UsersFileHeader {
  FeatureSchema feature_schema;
  int embedding_dim = 0;
};

// One user line of users.jsonl, encoded against the header's schema.
struct UserLine {
  std::string user_id;
  UserRecord record;
  std::optional<PurchaseSummary> purchases;
};

absl::StatusOr<UsersFileHeader> ParseUsersHeader(absl::string_view line);

// Parses one user line. Numeric features become floats in schema order (missing -> NaN),
// categorical ones strings (missing -> ""). Errors say which field is wrong.
absl::StatusOr<UserLine> ParseUserLine(const UsersFileHeader& header, absl::string_view line);

}  // namespace offerd

#endif  // OFFERD_STORE_USERS_FILE_H_
