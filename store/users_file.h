#ifndef OFFERD_STORE_USERS_FILE_H_
#define OFFERD_STORE_USERS_FILE_H_

#include <cstdint>
#include <functional>
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

// Reads a whole users.jsonl file: the header, then `on_user` for every user line in file
// order (blank lines are skipped; line numbers count from 1). Returns the header. Errors name
// the file and line ("users.jsonl:4: user_id: must be 1..256 bytes"); NOT_FOUND when the file
// cannot be opened; an error from `on_user` stops the read and is returned unchanged.
// `parse_threads` > 1 parses batches of lines on that many threads (JSON parsing is most of
// the cost); `on_user` is still called on the calling thread, in file order, and the error
// reported is the one of the first bad line, as with one thread.
using UserLineFn = std::function<absl::Status(int64_t line_number, UserLine user)>;
absl::StatusOr<UsersFileHeader> ReadUsersFile(const std::string& path, const UserLineFn& on_user,
                                              int parse_threads = 1);

}  // namespace offerd

#endif  // OFFERD_STORE_USERS_FILE_H_
