#include "benchmarks/latency_histogram.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

namespace offerd::bench {
namespace {

TEST(LatencyHistogramTest, SmallValuesAreExact) {
  LatencyHistogram h;
  for (int v = 1; v <= 100; ++v) h.Record(v);
  EXPECT_EQ(h.count(), 100);
  EXPECT_EQ(h.min(), 1);
  EXPECT_EQ(h.max(), 100);
  EXPECT_EQ(h.ValueAtQuantile(0.5), 50);
  EXPECT_EQ(h.ValueAtQuantile(0.99), 99);
  EXPECT_EQ(h.ValueAtQuantile(1.0), 100);
  EXPECT_DOUBLE_EQ(h.mean(), 50.5);
}

TEST(LatencyHistogramTest, BucketsTileTheRangeWithoutGaps) {
  for (int b = 1; b < 2000; ++b) {
    EXPECT_EQ(LatencyHistogram::BucketLowest(b), LatencyHistogram::BucketHighest(b - 1) + 1) << b;
    EXPECT_EQ(LatencyHistogram::BucketOf(LatencyHistogram::BucketLowest(b)), b);
    EXPECT_EQ(LatencyHistogram::BucketOf(LatencyHistogram::BucketHighest(b)), b);
  }
}

TEST(LatencyHistogramTest, QuantilesWithinRelativePrecisionOfExactOnes) {
  std::mt19937_64 rng(3);
  std::lognormal_distribution<double> latency_ns(13.0, 1.2);  // ~0.4 ms median, long tail
  LatencyHistogram h;
  std::vector<int64_t> values;
  for (int i = 0; i < 100000; ++i) {
    values.push_back(static_cast<int64_t>(latency_ns(rng)));
    h.Record(values.back());
  }
  std::sort(values.begin(), values.end());
  for (double q : {0.5, 0.9, 0.99, 0.999}) {
    const int64_t exact = values[static_cast<size_t>(q * values.size()) - 1];
    const int64_t got = h.ValueAtQuantile(q);
    EXPECT_GE(got, exact) << q;  // the bucket's upper bound: never optimistic
    EXPECT_LE(got, exact + exact / 64 + 1) << q;
  }
  EXPECT_EQ(h.ValueAtQuantile(1.0), values.back());
}

TEST(LatencyHistogramTest, MergeEqualsRecordingEverythingInOne) {
  LatencyHistogram a, b, all;
  for (int64_t v = 0; v < 5000000; v += 997) {
    ((v / 997) % 2 ? a : b).Record(v);
    all.Record(v);
  }
  a.Merge(b);
  EXPECT_EQ(a.count(), all.count());
  EXPECT_EQ(a.min(), all.min());
  EXPECT_EQ(a.max(), all.max());
  for (double q : {0.1, 0.5, 0.99}) EXPECT_EQ(a.ValueAtQuantile(q), all.ValueAtQuantile(q));
}

TEST(LatencyHistogramTest, EmptyAndHugeValues) {
  LatencyHistogram h;
  EXPECT_EQ(h.ValueAtQuantile(0.99), 0);
  h.Record(-5);
  h.Record(int64_t{1} << 62);
  EXPECT_EQ(h.min(), 0);
  EXPECT_EQ(h.ValueAtQuantile(1.0), int64_t{1} << 62);
}

}  // namespace
}  // namespace offerd::bench
