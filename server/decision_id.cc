#include "server/decision_id.h"

#include <array>
#include <cstdint>
#include <random>

namespace offerd {

std::string NewDecisionId() {
  // Per-thread Mersenne Twister seeded with 256 bits from the operating system's entropy
  // (std::random_device reads getrandom/urandom), so threads, restarts and replicas draw
  // independent streams without sharing state.
  thread_local std::mt19937_64 gen = [] {
    std::random_device entropy;
    std::array<std::uint32_t, 8> seed;
    for (auto& word : seed) word = entropy();
    std::seed_seq sequence(seed.begin(), seed.end());
    return std::mt19937_64(sequence);
  }();
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id(32, '0');
  for (int half = 0; half < 2; ++half) {
    uint64_t bits = gen();
    for (int i = 0; i < 16; ++i) {
      id[half * 16 + i] = kHex[bits & 0xf];
      bits >>= 4;
    }
  }
  return id;
}

}  // namespace offerd
