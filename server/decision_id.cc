#include "server/decision_id.h"

#include <cstdint>

#include "absl/random/random.h"

namespace offerd {

std::string NewDecisionId() {
  thread_local absl::BitGen gen;  // seeded from OS entropy per thread
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id(32, '0');
  for (int half = 0; half < 2; ++half) {
    uint64_t bits = absl::Uniform<uint64_t>(gen);
    for (int i = 0; i < 16; ++i) {
      id[half * 16 + i] = kHex[bits & 0xf];
      bits >>= 4;
    }
  }
  return id;
}

}  // namespace offerd
