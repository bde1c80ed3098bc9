#ifndef OFFERD_BENCHMARKS_LATENCY_HISTOGRAM_H_
#define OFFERD_BENCHMARKS_LATENCY_HISTOGRAM_H_

#include <cstdint>
#include <vector>

namespace offerd::bench {

// A log-linear histogram of non-negative integer values (latencies in nanoseconds), in the
// spirit of HdrHistogram: values below 128 are counted exactly; above, every power-of-two range
// [2^e, 2^(e+1)) is split into 64 equal sub-buckets, so a reported value is within 1/64
// (1.6%) of the true one at any magnitude, with a fixed memory of a few thousand counters.
// Percentiles report the highest value of the bucket (conservative), clamped to the maximum
// seen.
//
// Thread safety: none; keep one per thread and Merge() them.
class LatencyHistogram {
 public:
  LatencyHistogram();

  // Counts `value` (negative values count as 0).
  void Record(int64_t value);
  // Adds every count of `other`.
  void Merge(const LatencyHistogram& other);
  void Reset();

  int64_t count() const { return count_; }
  int64_t min() const { return count_ == 0 ? 0 : min_; }
  int64_t max() const { return max_; }
  double mean() const { return count_ == 0 ? 0.0 : static_cast<double>(sum_) / count_; }
  // The value at quantile `q` in [0, 1]: the smallest bucket upper bound such that at least
  // q * count() values are at or below it. 0 when empty.
  int64_t ValueAtQuantile(double q) const;

  // Bucket layout, exposed for the unit test.
  static int BucketOf(int64_t value);
  static int64_t BucketLowest(int bucket);
  static int64_t BucketHighest(int bucket);

 private:
  std::vector<int64_t> counts_;
  int64_t count_ = 0;
  int64_t min_ = 0;
  int64_t max_ = 0;
  int64_t sum_ = 0;
};

}  // namespace offerd::bench

#endif  // OFFERD_BENCHMARKS_LATENCY_HISTOGRAM_H_
