#ifndef OFFERD_SERVER_LOG_H_
#define OFFERD_SERVER_LOG_H_

#include <cstdint>
#include <initializer_list>
#include <string>
#include <variant>

#include "absl/strings/string_view.h"

namespace offerd::log {

// Structured JSON logs: one line per event worth logging, written to stderr, e.g.
//   {"ts":"2026-11-23T07:00:00.123Z","level":"info","event":"bundle_loaded","version":"v1"}
// There is no log line per request by default.

enum class Level { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

struct Field {
  Field(const char* k, absl::string_view v) : key(k), value(std::string(v)) {}
  Field(const char* k, const std::string& v) : key(k), value(v) {}
  Field(const char* k, const char* v) : key(k), value(std::string(v)) {}
  Field(const char* k, int64_t v) : key(k), value(v) {}
  Field(const char* k, int v) : key(k), value(static_cast<int64_t>(v)) {}
  Field(const char* k, uint64_t v) : key(k), value(static_cast<int64_t>(v)) {}
  Field(const char* k, double v) : key(k), value(v) {}
  Field(const char* k, bool v) : key(k), value(v) {}

  const char* key;
  std::variant<std::string, int64_t, double, bool> value;
};

// Sets the minimum level written (default kInfo). Thread-safe.
void SetMinLevel(Level level);
// Parses "debug", "info", "warning" or "error".
bool ParseLevel(absl::string_view text, Level* level);

// Writes one JSON line if `level` is at least the minimum. Thread-safe; lines never
// interleave.
void Write(Level level, absl::string_view event, std::initializer_list<Field> fields = {});

inline void Info(absl::string_view event, std::initializer_list<Field> fields = {}) {
  Write(Level::kInfo, event, fields);
}
inline void Warning(absl::string_view event, std::initializer_list<Field> fields = {}) {
  Write(Level::kWarning, event, fields);
}
inline void Error(absl::string_view event, std::initializer_list<Field> fields = {}) {
  Write(Level::kError, event, fields);
}

// JSON string escaping (quotes included), exposed for tests.
std::string JsonQuote(absl::string_view s);

}  // namespace offerd::log

#endif  // OFFERD_SERVER_LOG_H_
