#ifndef OFFERD_SERVER_CLI_HELP_H_
#define OFFERD_SERVER_CLI_HELP_H_

#include <string>

#include "absl/strings/string_view.h"

namespace offerd {

// Abseil 20220623's built-in --help exits with status 1. Our binaries answer --help / -h
// themselves: when argv asks for help, print `usage` and the flags defined in source files
// whose path contains `flag_file_substring`, and return true (the caller exits 0).
bool MaybePrintHelp(int argc, char** argv, absl::string_view usage,
                    absl::string_view flag_file_substring);

}  // namespace offerd

#endif  // OFFERD_SERVER_CLI_HELP_H_
