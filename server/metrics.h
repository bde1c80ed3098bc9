#ifndef OFFERD_SERVER_METRICS_H_
#define OFFERD_SERVER_METRICS_H_

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/casts.h"
#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"

namespace offerd {

// offerd's Prometheus metrics: a registry of metric families registered once at startup,
// exposed in the Prometheus text format 0.0.4 (served by HttpServer, server/http_server.h).
//
// Usage:
//   MetricsRegistry registry;
//   HistogramFamily& latency = registry.AddHistogram(
//       {"offerd_request_duration_seconds", "Request latency.", {"rpc", "code"}},
//       LatencyBucketsSeconds());
//   Histogram& ok = latency.WithLabels({"Recommend", "OK"});  // once; keep the reference
//   ok.Observe(0.0042);                                        // hot path: lock-free
//
// Conventions enforced at registration (a bad name is a programming error, found at startup):
//  - metric names match [a-zA-Z_][a-zA-Z0-9_]* (colons are reserved for recording rules);
//    label names match [a-zA-Z_][a-zA-Z0-9_]* and do not start with "__";
//  - counter names end in "_total", other names do not; names carry their unit
//    ("_seconds", "_bytes"), which the registry cannot check;
//  - help text is non-empty; a histogram may not use the label "le";
//  - no two families expose the same sample name (a histogram "x" also owns "x_bucket",
//    "x_sum" and "x_count").
//
// Label sets are bounded: a family holds at most Options::max_series_per_family series.
// Past that, a new label set is refused and its observations go to one overflow series whose
// label values are all kOverflowLabelValue; every refusal is counted in
// offerd_metrics_label_sets_dropped_total{family="<name>"}. A client sending unbounded label
// values therefore costs bounded memory.

enum class MetricType { kCounter, kGauge, kHistogram };

// Label value of the series that absorbs observations of refused label sets.
inline constexpr absl::string_view kOverflowLabelValue = "__overflow__";

// Content-Type of MetricsRegistry::TextExposition().
inline constexpr absl::string_view kTextExpositionContentType =
    "text/plain; version=0.0.4; charset=utf-8";

// What every family is registered with.
struct MetricInfo {
  MetricInfo(std::string name, std::string help, std::vector<std::string> label_names = {})
      : name(std::move(name)), help(std::move(help)), label_names(std::move(label_names)) {}

  std::string name;                      // e.g. "offerd_request_duration_seconds"
  std::string help;                      // one line, non-empty
  std::vector<std::string> label_names;  // fixed for the family's life; may be empty
};

namespace metrics_internal {

// A block of 64-bit atomic cells, one copy ("shard") per group of threads, each
// shard on its own cache lines. A thread always writes the same shard (assigned
// round-robin on first use), so threads on different cores rarely touch the
// same cache line; readers sum the shards.
class ShardedCells {
 public:
  explicit ShardedCells(size_t cells_per_shard);
  ShardedCells(const ShardedCells&) = delete;
  ShardedCells& operator=(const ShardedCells&) = delete;

  // The calling thread's copy of cell `cell`.
  std::atomic<uint64_t>& Local(size_t cell) {
    const size_t line = ThreadShard() * lines_per_shard_ + cell / kCellsPerLine;
    return lines_[line].cells[cell % kCellsPerLine];
  }
  // Sums over shards, reading each cell as an integer / as a double's bits.
  uint64_t SumInteger(size_t cell) const;
  double SumDouble(size_t cell) const;

  // Number of shards per ShardedCells in this process (a power of two, 4..16).
  static size_t NumShards();

 private:
  static constexpr size_t kCellsPerLine = 8;
  struct alignas(64) Line {
    std::atomic<uint64_t> cells[kCellsPerLine];
  };
  // Round-robin over threads, fixed for a thread's life.
  static size_t NextThreadShard();
  static size_t ThreadShard() {
    static thread_local const size_t shard = NextThreadShard();
    return shard;
  }

  size_t lines_per_shard_;
  std::unique_ptr<Line[]> lines_;
};

// Adds `delta` to a double stored as its bit pattern (relaxed CAS loop).
inline void AtomicAddDouble(std::atomic<uint64_t>& bits, double delta) {
  uint64_t old_bits = bits.load(std::memory_order_relaxed);
  while (!bits.compare_exchange_weak(
      old_bits, absl::bit_cast<uint64_t>(absl::bit_cast<double>(old_bits) + delta),
      std::memory_order_relaxed, std::memory_order_relaxed)) {
  }
}

class FamilyBase;
class CallbackFamily;

}  // namespace metrics_internal

// A monotonically increasing value. Thread-safe and lock-free.
class Counter {
 public:
  // Adds `amount`. REQUIRES amount >= 0; negative and NaN amounts are ignored.
  // Cost: one relaxed CAS on a cache line private to this thread's shard.
  void Increment(double amount = 1.0) {
    if (!(amount >= 0)) return;
    metrics_internal::AtomicAddDouble(cells_.Local(0), amount);
  }
  // The sum over shards (scrapes and tests; not for the hot path).
  double Value() const { return cells_.SumDouble(0); }

 private:
  friend class metrics_internal::FamilyBase;
  Counter() : cells_(1) {}
  metrics_internal::ShardedCells cells_;
};

// A value that goes up and down. Thread-safe and lock-free. Not sharded (Set
// must be exact): a gauge updated on every request by several cores is cheaper
// as a callback gauge reading a value the owner already keeps.
class Gauge {
 public:
  void Set(double value) {
    bits_.store(absl::bit_cast<uint64_t>(value), std::memory_order_relaxed);
  }
  void Increment(double amount = 1.0) { metrics_internal::AtomicAddDouble(bits_, amount); }
  void Decrement(double amount = 1.0) { metrics_internal::AtomicAddDouble(bits_, -amount); }
  double Value() const { return absl::bit_cast<double>(bits_.load(std::memory_order_relaxed)); }

 private:
  friend class metrics_internal::FamilyBase;
  Gauge() = default;
  std::atomic<uint64_t> bits_{0};  // the bits of 0.0
};

// Counts observations into fixed buckets (upper bounds inclusive, as
// Prometheus's "le") and sums them. Thread-safe and lock-free.
class Histogram {
 public:
  // Records `value`. NaN is ignored (it would poison _sum forever). Cost: a
  // binary search of the bounds, one relaxed fetch_add and one relaxed CAS on
  // this thread's shard.
  void Observe(double value) {
    if (value != value) return;  // NaN
    const size_t bucket = BucketIndex(value);
    cells_.Local(bucket).fetch_add(1, std::memory_order_relaxed);
    metrics_internal::AtomicAddDouble(cells_.Local(sum_cell_), value);
  }

  // A point-in-time view, summed over shards.
  struct Snapshot {
    std::vector<double> upper_bounds;         // finite bounds; +Inf is implied last
    std::vector<uint64_t> cumulative_counts;  // upper_bounds.size() + 1 entries (last = +Inf)
    double sum = 0;
    uint64_t count = 0;  // == cumulative_counts.back()
  };
  Snapshot Collect() const;

  // Index of the bucket `value` falls in: the first bound >= value, or
  // bounds.size() (+Inf).
  size_t BucketIndex(double value) const {
    return static_cast<size_t>(
        std::lower_bound(upper_bounds_->begin(), upper_bounds_->end(), value) -
        upper_bounds_->begin());
  }

 private:
  friend class metrics_internal::FamilyBase;
  explicit Histogram(const std::vector<double>* upper_bounds);

  const std::vector<double>* upper_bounds_;  // owned by the family
  size_t sum_cell_;                          // cells: [0, n] bucket counts, [n + 1] sum bits
  metrics_internal::ShardedCells cells_;
};

namespace metrics_internal {

// Orders label-value lists; transparent so lookups need no allocation.
struct LabelValuesLess {
  using is_transparent = void;
  template <typename A, typename B>
  bool operator()(const A& a, const B& b) const {
    return std::lexicographical_compare(
        a.begin(), a.end(), b.begin(), b.end(),
        [](absl::string_view x, absl::string_view y) { return x < y; });
  }
};

// What the registry needs from any family.
class Exposable {
 public:
  virtual ~Exposable() = default;
  // Appends HELP, TYPE and sample lines; nothing when the family has no series.
  virtual void AppendText(std::string* out) const = 0;
  virtual const MetricInfo& info() const = 0;
  virtual uint64_t dropped_label_sets() const = 0;
};

// A family of one metric type with a bounded set of labelled series.
class FamilyBase : public Exposable {
 public:
  ~FamilyBase() override;
  void AppendText(std::string* out) const override ABSL_LOCKS_EXCLUDED(mu_);
  const MetricInfo& info() const override { return info_; }
  uint64_t dropped_label_sets() const override { return dropped_.load(std::memory_order_relaxed); }
  size_t num_series() const ABSL_LOCKS_EXCLUDED(mu_);

 protected:
  FamilyBase(MetricType type, MetricInfo info, std::vector<double> upper_bounds, size_t max_series);
  // Returns the series for `label_values`, creating it (or using the overflow
  // series).
  void* GetOrCreate(absl::Span<const absl::string_view> label_values) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Series;
  Series* FindLocked(absl::Span<const absl::string_view> label_values) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  Series* InsertLocked(std::vector<std::string> label_values) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const MetricType type_;
  const MetricInfo info_;
  const std::vector<double> upper_bounds_;  // histograms only
  const size_t max_series_;
  std::atomic<uint64_t> dropped_{0};
  mutable absl::Mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<Series>, LabelValuesLess> series_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace metrics_internal

// A registered family of counters, gauges or histograms.
//
// WithLabels() takes the family's lock (shared when the series exists): call it
// once per label set (at startup, or when a new label value first appears) and
// keep the reference, which stays valid as long as the registry. The
// reference's methods are lock-free.
template <typename Metric>
class Family final : public metrics_internal::FamilyBase {
 public:
  // The series for `label_values`, one per label name in registration order;
  // created on first use. Invalid UTF-8 in a value is replaced by U+FFFD. A
  // wrong number of values, or a new label set once the family is full, yields
  // the overflow series (and is counted). Thread-safe.
  Metric& WithLabels(absl::Span<const absl::string_view> label_values) {
    return *static_cast<Metric*>(GetOrCreate(label_values));
  }
  Metric& WithLabels(std::initializer_list<absl::string_view> label_values) {
    return WithLabels(absl::MakeConstSpan(label_values.begin(), label_values.size()));
  }
  // The series of a family without labels.
  Metric& Get() { return WithLabels(absl::Span<const absl::string_view>()); }

 private:
  friend class MetricsRegistry;
  Family(MetricType type, MetricInfo info, std::vector<double> upper_bounds, size_t max_series)
      : FamilyBase(type, std::move(info), std::move(upper_bounds), max_series) {}
};

using CounterFamily = Family<Counter>;
using GaugeFamily = Family<Gauge>;
using HistogramFamily = Family<Histogram>;

// Receives the samples of a callback family during a scrape.
class SampleWriter {
 public:
  // One sample; `label_values` has one value per label name (none for an
  // unlabelled family). Beyond the family's series bound, or with a wrong
  // number of values, the sample is dropped and counted.
  void Add(std::initializer_list<absl::string_view> label_values, double value);
  void Add(absl::Span<const absl::string_view> label_values, double value);
  // The sample of an unlabelled family.
  void Add(double value) { Add(absl::Span<const absl::string_view>(), value); }

 private:
  friend class metrics_internal::CallbackFamily;
  SampleWriter(const metrics_internal::CallbackFamily* family, std::string* out)
      : family_(family), out_(out) {}
  const metrics_internal::CallbackFamily* family_;
  std::string* out_;
  size_t written_ = 0;
  size_t dropped_ = 0;
};

using CollectCallback = std::function<void(SampleWriter&)>;

// Keeps a callback family's callback registered; destroying (or Reset()ting)
// the handle unregisters it, waiting for a scrape that is running it, so the
// callback may capture objects that die with the handle's owner. The family's
// name stays reserved; with no callback it exposes nothing. A handle must not outlive the
// registry that returned it.
class [[nodiscard]] CallbackHandle {
 public:
  CallbackHandle() = default;
  CallbackHandle(CallbackHandle&& other) noexcept;
  CallbackHandle& operator=(CallbackHandle&& other) noexcept;
  ~CallbackHandle() { Reset(); }
  void Reset();

 private:
  friend class MetricsRegistry;
  explicit CallbackHandle(metrics_internal::CallbackFamily* family) : family_(family) {}
  metrics_internal::CallbackFamily* family_ = nullptr;
};

// Owns every metric family of the process and renders the text exposition.
//
// Thread safety: all methods are thread-safe. Registration is meant for
// startup; scrapes (TextExposition) may run concurrently with observations and
// with each other. Families live as long as the registry.
class MetricsRegistry {
 public:
  struct Options {
    // Series per family, not counting the overflow series.
    size_t max_series_per_family = 1000;
  };

  MetricsRegistry() : MetricsRegistry(Options()) {}
  explicit MetricsRegistry(const Options& options);
  ~MetricsRegistry();
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // Registration. Errors (InvalidArgument / AlreadyExists) name the metric and
  // the rule broken: invalid name, counter without "_total", duplicate sample
  // name, unsorted or non-finite buckets, "le" label on a histogram, empty
  // help.
  absl::StatusOr<CounterFamily*> TryAddCounter(const MetricInfo& info) ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<GaugeFamily*> TryAddGauge(const MetricInfo& info) ABSL_LOCKS_EXCLUDED(mu_);
  // `upper_bounds`: strictly increasing, finite; a trailing +Inf is accepted
  // and implied anyway. See ExponentialBuckets() and LatencyBucketsSeconds().
  absl::StatusOr<HistogramFamily*> TryAddHistogram(const MetricInfo& info,
                                                   std::vector<double> upper_bounds)
      ABSL_LOCKS_EXCLUDED(mu_);
  // A counter or gauge family whose samples `collect` writes at every scrape,
  // on the scraping thread. `collect` must be thread-safe, quick (it runs
  // inside the scrape), and must not call this registry.
  absl::StatusOr<CallbackHandle> TryAddCallback(const MetricInfo& info, MetricType type,
                                                CollectCallback collect) ABSL_LOCKS_EXCLUDED(mu_);

  // The same, aborting the process with "metrics: cannot register '<name>':
  // <reason>" on error. For startup code, where a bad name is a bug to fix
  // before shipping.
  CounterFamily& AddCounter(const MetricInfo& info);
  GaugeFamily& AddGauge(const MetricInfo& info);
  HistogramFamily& AddHistogram(const MetricInfo& info, std::vector<double> upper_bounds);
  CallbackHandle AddCallback(const MetricInfo& info, MetricType type, CollectCallback collect);
  // Unlabelled callback gauge / counter: `value` is read at every scrape.
  CallbackHandle AddCallbackGauge(const MetricInfo& info, std::function<double()> value);
  CallbackHandle AddCallbackCounter(const MetricInfo& info, std::function<double()> value);

  // Registers the standard process metrics, read from /proc at scrape time:
  // process_cpu_seconds_total, process_resident_memory_bytes,
  // process_virtual_memory_bytes, process_open_fds, process_max_fds,
  // process_start_time_seconds, process_threads. Aborts if called twice on one
  // registry.
  void AddProcessMetrics();

  // Every family with at least one series, sorted by name, then
  // offerd_metrics_label_sets_dropped_total for every labelled family; in the
  // Prometheus text format 0.0.4 (kTextExpositionContentType).
  std::string TextExposition() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  absl::Status ReserveNamesLocked(const MetricInfo& info, MetricType type)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  mutable absl::Mutex mu_;
  // Sorted by name; never removed, so pointers handed out stay valid.
  std::map<std::string, std::unique_ptr<metrics_internal::Exposable>> families_
      ABSL_GUARDED_BY(mu_);
  std::set<std::string, std::less<>> reserved_names_ ABSL_GUARDED_BY(mu_);
  std::vector<CallbackHandle> process_metrics_ ABSL_GUARDED_BY(mu_);
};

// Bucket helpers. Upper bounds in the unit of the metric (seconds for
// durations). `count` bounds start, start*factor, ...; REQUIRES start > 0,
// factor > 1, count >= 1.
std::vector<double> ExponentialBuckets(double start, double factor, int count);
// `count` bounds start, start+width, ...; REQUIRES width > 0, count >= 1.
std::vector<double> LinearBuckets(double start, double width, int count);
// Request/stage latencies of a low-latency service: 100 µs to 10 s in 1-2.5-5
// steps.
std::vector<double> LatencyBucketsSeconds();

// Exposition helpers, exposed for tests.
// A sample value as Prometheus parses it: "+Inf", "-Inf", "NaN", integers up to
// 2^53 without exponent or fraction ("3", "1000000"), otherwise the shortest
// text that round-trips.
std::string FormatMetricValue(double value);
// Label value escaping: backslash, double quote and newline.
std::string EscapeLabelValue(absl::string_view value);
absl::Status ValidateMetricName(absl::string_view name);
absl::Status ValidateLabelName(absl::string_view name);

}  // namespace offerd

#endif  // OFFERD_SERVER_METRICS_H_
