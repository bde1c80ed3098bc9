#ifndef OFFERD_STORE_FILE_UTIL_H_
#define OFFERD_STORE_FILE_UTIL_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace offerd {

// Reads a whole file. NotFound when it does not exist; errors name the path.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

// Writes `contents` to `path` atomically (temp file + fsync + rename).
absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents);

// Lower-case hex sha256 of a file's contents, streamed; errors name the path.
absl::StatusOr<std::string> Sha256File(const std::string& path);

// Lower-case hex sha256 of a byte string.
std::string Sha256Hex(absl::string_view bytes);

}  // namespace offerd

#endif  // OFFERD_STORE_FILE_UTIL_H_
