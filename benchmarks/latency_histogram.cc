#include "benchmarks/latency_histogram.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace offerd::bench {
namespace {

// Values < 2^kLinearBits are exact; above, 2^(kLinearBits - 1) sub-buckets per power of two.
constexpr int kLinearBits = 7;
constexpr int kHalf = 1 << (kLinearBits - 1);  // 64 sub-buckets per octave
// Enough octaves for any int64_t.
constexpr int kNumBuckets = (64 - kLinearBits + 2) * kHalf;

int MostSignificantBit(uint64_t v) { return 63 - __builtin_clzll(v); }

}  // namespace

LatencyHistogram::LatencyHistogram() : counts_(kNumBuckets, 0) {}

int LatencyHistogram::BucketOf(int64_t value) {
  if (value < (1 << kLinearBits)) return static_cast<int>(std::max<int64_t>(value, 0));
  // shift >= 1 keeps the top kLinearBits - 1 bits below the leading one: v >> shift is in
  // [64, 128), and consecutive octaves continue the index without gaps.
  const int shift = MostSignificantBit(static_cast<uint64_t>(value)) - (kLinearBits - 1);
  return shift * kHalf + static_cast<int>(value >> shift);
}

int64_t LatencyHistogram::BucketLowest(int bucket) {
  if (bucket < (1 << kLinearBits)) return bucket;
  const int shift = bucket / kHalf - 1;
  return static_cast<int64_t>(bucket - shift * kHalf) << shift;
}

int64_t LatencyHistogram::BucketHighest(int bucket) {
  if (bucket < (1 << kLinearBits)) return bucket;
  const int shift = bucket / kHalf - 1;
  const uint64_t next = static_cast<uint64_t>(bucket - shift * kHalf + 1) << shift;
  return next - 1 > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
             ? std::numeric_limits<int64_t>::max()
             : static_cast<int64_t>(next - 1);
}

void LatencyHistogram::Record(int64_t value) {
  value = std::max<int64_t>(value, 0);
  ++counts_[BucketOf(value)];
  min_ = count_ == 0 ? value : std::min(min_, value);
  max_ = std::max(max_, value);
  ++count_;
  sum_ += value;
}

void LatencyHistogram::Merge(const LatencyHistogram& other) {
  if (other.count_ == 0) return;
  for (size_t i = 0; i < counts_.size(); ++i) counts_[i] += other.counts_[i];
  min_ = count_ == 0 ? other.min_ : std::min(min_, other.min_);
  max_ = std::max(max_, other.max_);
  count_ += other.count_;
  sum_ += other.sum_;
}

void LatencyHistogram::Reset() {
  std::fill(counts_.begin(), counts_.end(), 0);
  count_ = min_ = max_ = sum_ = 0;
}

int64_t LatencyHistogram::ValueAtQuantile(double q) const {
  if (count_ == 0) return 0;
  q = std::clamp(q, 0.0, 1.0);
  const int64_t rank = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(q * count_)));
  int64_t seen = 0;
  for (int b = 0; b < kNumBuckets; ++b) {
    seen += counts_[b];
    if (seen >= rank) return std::min(BucketHighest(b), max_);
  }
  return max_;
}

}  // namespace offerd::bench
