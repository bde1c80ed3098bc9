#ifndef OFFERD_CORE_RANDOM_H_
#define OFFERD_CORE_RANDOM_H_

#include <cstdint>

namespace offerd {

// The splitmix64 finalizer (Steele, Lea, Flood 2014): a bijective 64-bit mixer.
inline uint64_t SplitMix64Mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// A small, fast, deterministic pseudo-random generator (splitmix64) for the policy's
// randomness, passed in explicitly so that core/ has no global state and tests can fix the
// seed. Not cryptographic. Not thread-safe: one per request.
class SplitMix64Rng {
 public:
  explicit SplitMix64Rng(uint64_t seed) : state_(seed) {}

  uint64_t Next() {
    state_ += 0x9e3779b97f4a7c15ULL;
    return SplitMix64Mix(state_);
  }

  // Uniform in [0, 1): the top 53 bits / 2^53.
  double UniformDouble() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

  // Uniform integer in [0, n), unbiased (rejection of the short last interval). REQUIRES n > 0.
  uint64_t UniformInt(uint64_t n) {
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n;  // a multiple of n
    uint64_t x;
    do {
      x = Next();
    } while (x >= limit);
    return x % n;
  }

 private:
  uint64_t state_;
};

}  // namespace offerd

#endif  // OFFERD_CORE_RANDOM_H_
