// Metrics registry, text exposition and the operational HTTP endpoint.
#include "server/metrics.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <limits>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "server/http_server.h"
#include "tests/test_util/temp_dir.h"

namespace offerd {
namespace {

using ::testing::HasSubstr;

// ---------------------------------------------------------------------------------------
// Helpers.

// The value of the sample line `series` ("name{labels}") in an exposition; NaN
// if absent.
double SampleValue(const std::string& exposition, absl::string_view series) {
  for (absl::string_view line : absl::StrSplit(exposition, '\n')) {
    if (absl::ConsumePrefix(&line, series) && absl::ConsumePrefix(&line, " ")) {
      double value;
      if (line == "+Inf") return std::numeric_limits<double>::infinity();
      if (absl::SimpleAtod(line, &value)) return value;
    }
  }
  return std::nan("");
}

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
};

// A minimal HTTP/1.1 client over a blocking loopback socket (the server closes
// after each response). Fails the test (and returns status 0) on a socket
// error.
HttpResponse HttpRequest(int port, absl::string_view method, absl::string_view path) {
  HttpResponse response;
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  EXPECT_GE(fd, 0);
  if (fd < 0) return response;
  timeval timeout = {10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    ADD_FAILURE() << "connect to port " << port << " failed: " << std::strerror(errno);
    close(fd);
    return response;
  }
  const std::string request = absl::StrCat(method, " ", path,
                                           " HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                           "Content-Length: 0\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(send(fd, request.data(), request.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(request.size()));
  std::string raw;
  char buffer[4096];
  ssize_t n;
  while ((n = recv(fd, buffer, sizeof(buffer), 0)) > 0) raw.append(buffer, n);
  close(fd);
  const size_t end_of_head = raw.find("\r\n\r\n");
  if (end_of_head == std::string::npos) {
    ADD_FAILURE() << "no HTTP response head in: " << raw;
    return response;
  }
  std::vector<std::string> lines = absl::StrSplit(raw.substr(0, end_of_head), "\r\n");
  std::vector<std::string> status_line = absl::StrSplit(lines[0], ' ');
  EXPECT_TRUE(status_line.size() >= 2 && absl::SimpleAtoi(status_line[1], &response.status))
      << lines[0];
  for (size_t i = 1; i < lines.size(); ++i) {
    const size_t colon = lines[i].find(':');
    if (colon == std::string::npos) continue;
    response.headers[absl::AsciiStrToLower(lines[i].substr(0, colon))] =
        std::string(absl::StripAsciiWhitespace(lines[i].substr(colon + 1)));
  }
  response.body = raw.substr(end_of_head + 4);
  return response;
}

// A port nothing listens on... yet: bound by the returned socket, which keeps
// it in use.
int BindListeningSocket(int* port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  EXPECT_EQ(listen(fd, 1), 0);
  socklen_t length = sizeof(address);
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  *port = ntohs(address.sin_port);
  return fd;
}

// ---------------------------------------------------------------------------------------
// Formatting and names.

TEST(MetricsFormatTest, ValuesParseInPrometheusWithoutExponentNoiseForIntegers) {
  EXPECT_EQ(FormatMetricValue(0), "0");
  EXPECT_EQ(FormatMetricValue(-0.0), "0");
  EXPECT_EQ(FormatMetricValue(3), "3");
  EXPECT_EQ(FormatMetricValue(-42), "-42");
  EXPECT_EQ(FormatMetricValue(1e6), "1000000");
  EXPECT_EQ(FormatMetricValue(9007199254740992.0), "9007199254740992");
  EXPECT_EQ(FormatMetricValue(1e20), "1e+20");
  EXPECT_EQ(FormatMetricValue(0.1), "0.1");
  EXPECT_EQ(FormatMetricValue(0.00025), "0.00025");
  EXPECT_EQ(FormatMetricValue(0.0001), "0.0001");
  EXPECT_EQ(FormatMetricValue(0.000015), "1.5e-05");
  EXPECT_EQ(FormatMetricValue(123456789012.5), "123456789012.5");
  EXPECT_EQ(FormatMetricValue(2.5), "2.5");
  EXPECT_EQ(FormatMetricValue(1e-7), "1e-07");
  EXPECT_EQ(FormatMetricValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatMetricValue(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(FormatMetricValue(std::nan("")), "NaN");
  // Shortest round-trip text: parsing it back gives the same double.
  for (double v : {0.1 + 0.2, 1.0 / 3.0, 123456.789, 5e-324, 1.7976931348623157e308}) {
    double parsed = 0;
    ASSERT_TRUE(absl::SimpleAtod(FormatMetricValue(v), &parsed)) << FormatMetricValue(v);
    EXPECT_EQ(parsed, v) << FormatMetricValue(v);
  }
}

TEST(MetricsFormatTest, LabelValuesEscapeBackslashQuoteAndNewline) {
  EXPECT_EQ(EscapeLabelValue("plain"), "plain");
  EXPECT_EQ(EscapeLabelValue("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
  EXPECT_EQ(EscapeLabelValue("tab\tstays"), "tab\tstays");
}

TEST(MetricsNamesTest, ValidatesMetricAndLabelNamesAgainstThePrometheusGrammar) {
  for (const char* name : {"a", "_x", "offerd_request_duration_seconds", "A9_b"}) {
    EXPECT_TRUE(ValidateMetricName(name).ok()) << name;
    EXPECT_TRUE(ValidateLabelName(name).ok()) << name;
  }
  for (const char* name : {"", "9a", "a-b", "a.b", "a b", "é"}) {
    EXPECT_FALSE(ValidateMetricName(name).ok()) << name;
    EXPECT_FALSE(ValidateLabelName(name).ok()) << name;
  }
  EXPECT_THAT(std::string(ValidateMetricName("rule:x").message()), HasSubstr("recording"));
  EXPECT_FALSE(ValidateLabelName("__reserved").ok());
  EXPECT_FALSE(ValidateLabelName("a:b").ok());
}

TEST(MetricsRegistryTest, RegistrationErrorsNameTheMetricAndTheRule) {
  MetricsRegistry registry;
  const auto message = [](const absl::Status& status) { return std::string(status.message()); };
  EXPECT_THAT(message(registry.TryAddCounter({"requests", "help"}).status()),
              HasSubstr("must end in _total"));
  EXPECT_THAT(message(registry.TryAddGauge({"queue_total", "help"}).status()),
              HasSubstr("only counters"));
  EXPECT_THAT(message(registry.TryAddGauge({"queue_count", "help"}).status()),
              HasSubstr("reserved"));
  EXPECT_THAT(message(registry.TryAddGauge({"bad-name", "help"}).status()),
              HasSubstr("'bad-name'"));
  EXPECT_THAT(message(registry.TryAddGauge({"no_help_bytes", ""}).status()), HasSubstr("help"));
  EXPECT_THAT(message(registry.TryAddGauge({"g_bytes", "help", {"a", "a"}}).status()),
              HasSubstr("duplicate label"));
  EXPECT_THAT(message(registry.TryAddGauge({"g_bytes", "help", {"__a"}}).status()),
              HasSubstr("'__a'"));
  EXPECT_THAT(message(registry.TryAddHistogram({"h_seconds", "help", {"le"}}, {1}).status()),
              HasSubstr("'le'"));
  EXPECT_THAT(message(registry.TryAddHistogram({"h_seconds", "help"}, {2, 1}).status()),
              HasSubstr("increase"));
  EXPECT_THAT(message(registry.TryAddHistogram({"h_seconds", "help"}, {1, 1}).status()),
              HasSubstr("increase"));
  EXPECT_THAT(message(registry.TryAddHistogram({"h_seconds", "help"}, {std::nan("")}).status()),
              HasSubstr("not finite"));
  EXPECT_THAT(
      message(
          registry.TryAddCallback({"c_bytes", "help"}, MetricType::kHistogram, [](SampleWriter&) {})
              .status()),
      HasSubstr("counters or gauges"));

  ASSERT_TRUE(registry.TryAddHistogram({"latency_seconds", "help"}, {1}).ok());
  // A histogram owns its _bucket/_sum/_count names; all duplicates are refused.
  EXPECT_EQ(registry.TryAddHistogram({"latency_seconds", "help"}, {1}).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(registry.TryAddGauge({"latency_seconds", "help"}).status().code(),
            absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(registry.TryAddCounter({"requests_total", "help"}).ok());
  EXPECT_EQ(registry.TryAddCounter({"requests_total", "other help"}).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(
      registry.TryAddCounter({"offerd_metrics_label_sets_dropped_total", "h"}).status().code(),
      absl::StatusCode::kAlreadyExists);
  // A trailing +Inf bound is accepted (and implied anyway).
  absl::StatusOr<HistogramFamily*> with_inf = registry.TryAddHistogram(
      {"with_inf_seconds", "help"}, {0.5, std::numeric_limits<double>::infinity()});
  ASSERT_TRUE(with_inf.ok());
  EXPECT_EQ((*with_inf)->Get().Collect().upper_bounds, std::vector<double>({0.5}));
}

TEST(MetricsRegistryDeathTest, AddAbortsAtStartupWithTheName) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        MetricsRegistry registry;
        registry.AddCounter({"offerd_requests", "Requests."});
      },
      "metrics: cannot register 'offerd_requests': .*_total");
}

// ---------------------------------------------------------------------------------------
// Exposition.

TEST(MetricsExpositionTest, GoldenTextForEveryTypeWithLabelsAndEscaping) {
  MetricsRegistry registry;
  CounterFamily& requests = registry.AddCounter(
      {"demo_requests_total", "Requests by rpc and code.\nSecond \\ line.", {"rpc", "code"}});
  requests.WithLabels({"Recommend", "OK"}).Increment(3);
  requests.WithLabels({"Recommend", "INTERNAL"}).Increment();
  requests.WithLabels({"Report\"Events\\", "multi\nline"}).Increment(0.5);
  GaugeFamily& bundle_age = registry.AddGauge({"demo_bundle_age_seconds", "Bundle age."});
  bundle_age.Get().Set(1234.5);
  GaugeFamily& in_flight = registry.AddGauge({"demo_in_flight", "In flight.", {"rpc"}});
  in_flight.WithLabels({"Recommend"}).Increment(2);
  in_flight.WithLabels({"Recommend"}).Decrement();
  HistogramFamily& latency = registry.AddHistogram(
      {"demo_request_duration_seconds", "Latency.", {"rpc"}}, {0.005, 0.01, 1});
  Histogram& recommend = latency.WithLabels({"Recommend"});
  recommend.Observe(0.001);
  recommend.Observe(0.005);  // on a bound: counted in that bucket (le = "less or equal")
  recommend.Observe(0.5);
  recommend.Observe(7);
  // A labelled family with no series exposes nothing at all.
  registry.AddCounter({"demo_unused_total", "Never used.", {"kind"}});
  registry.AddCounter({"demo_unlabelled_total", "Always exposed, from 0."});

  const std::string expected = R"(# HELP demo_bundle_age_seconds Bundle age.
# TYPE demo_bundle_age_seconds gauge
demo_bundle_age_seconds 1234.5
# HELP demo_in_flight In flight.
# TYPE demo_in_flight gauge
demo_in_flight{rpc="Recommend"} 1
# HELP demo_request_duration_seconds Latency.
# TYPE demo_request_duration_seconds histogram
demo_request_duration_seconds_bucket{rpc="Recommend",le="0.005"} 2
demo_request_duration_seconds_bucket{rpc="Recommend",le="0.01"} 2
demo_request_duration_seconds_bucket{rpc="Recommend",le="1"} 3
demo_request_duration_seconds_bucket{rpc="Recommend",le="+Inf"} 4
demo_request_duration_seconds_sum{rpc="Recommend"} 7.506
demo_request_duration_seconds_count{rpc="Recommend"} 4
# HELP demo_requests_total Requests by rpc and code.\nSecond \\ line.
# TYPE demo_requests_total counter
demo_requests_total{rpc="Recommend",code="INTERNAL"} 1
demo_requests_total{rpc="Recommend",code="OK"} 3
demo_requests_total{rpc="Report\"Events\\",code="multi\nline"} 0.5
# HELP demo_unlabelled_total Always exposed, from 0.
# TYPE demo_unlabelled_total counter
demo_unlabelled_total 0
# HELP offerd_metrics_label_sets_dropped_total Label sets refused because a metric family reached its series limit (their observations went to the __overflow__ series).
# TYPE offerd_metrics_label_sets_dropped_total counter
offerd_metrics_label_sets_dropped_total{family="demo_in_flight"} 0
offerd_metrics_label_sets_dropped_total{family="demo_request_duration_seconds"} 0
offerd_metrics_label_sets_dropped_total{family="demo_requests_total"} 0
offerd_metrics_label_sets_dropped_total{family="demo_unused_total"} 0
)";
  EXPECT_EQ(registry.TextExposition(), expected);
}

TEST(MetricsExpositionTest, InvalidUtf8LabelValuesAreReplacedSoScrapesStayParseable) {
  MetricsRegistry registry;
  CounterFamily& family = registry.AddCounter({"utf8_total", "help", {"v"}});
  Counter& bad = family.WithLabels({"ok\xff\xc0\xafé"});
  bad.Increment();
  // The same raw value finds the same series.
  EXPECT_EQ(&family.WithLabels({"ok\xff\xc0\xafé"}), &bad);
  EXPECT_THAT(registry.TextExposition(),
              HasSubstr("utf8_total{v=\"ok\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBDé\"} 1\n"));
}

// ---------------------------------------------------------------------------------------
// Histograms and buckets.

TEST(HistogramTest, BucketsAreUpperInclusiveCumulativeWithInfSumAndCount) {
  MetricsRegistry registry;
  Histogram& h = registry.AddHistogram({"h_seconds", "help"}, {1, 2, 4}).Get();
  EXPECT_EQ(h.BucketIndex(-5), 0u);
  EXPECT_EQ(h.BucketIndex(1), 0u);
  EXPECT_EQ(h.BucketIndex(1.0000001), 1u);
  EXPECT_EQ(h.BucketIndex(4), 2u);
  EXPECT_EQ(h.BucketIndex(4.5), 3u);
  EXPECT_EQ(h.BucketIndex(std::numeric_limits<double>::infinity()), 3u);
  for (double v : {0.5, 1.0, 1.5, 2.0, 3.0, 100.0}) h.Observe(v);
  h.Observe(std::nan(""));  // ignored
  const Histogram::Snapshot s = h.Collect();
  EXPECT_EQ(s.upper_bounds, std::vector<double>({1, 2, 4}));
  EXPECT_EQ(s.cumulative_counts, std::vector<uint64_t>({2, 4, 5, 6}));
  EXPECT_EQ(s.count, 6u);
  EXPECT_DOUBLE_EQ(s.sum, 108.0);
}

TEST(HistogramTest, BucketHelpers) {
  EXPECT_EQ(ExponentialBuckets(0.001, 2, 4), std::vector<double>({0.001, 0.002, 0.004, 0.008}));
  EXPECT_EQ(LinearBuckets(0, 0.25, 4), std::vector<double>({0, 0.25, 0.5, 0.75}));
  EXPECT_TRUE(ExponentialBuckets(0, 2, 3).empty());
  EXPECT_TRUE(ExponentialBuckets(1, 1, 3).empty());
  const std::vector<double> latency = LatencyBucketsSeconds();
  ASSERT_GE(latency.size(), 10u);
  EXPECT_EQ(latency.front(), 0.0001);
  EXPECT_EQ(latency.back(), 10);
  for (size_t i = 1; i < latency.size(); ++i) EXPECT_LT(latency[i - 1], latency[i]);
  // The helpers' output is always accepted by the registry.
  MetricsRegistry registry;
  EXPECT_TRUE(registry.TryAddHistogram({"a_seconds", "h"}, latency).ok());
  EXPECT_TRUE(registry.TryAddHistogram({"b_seconds", "h"}, ExponentialBuckets(1e-4, 1.5, 30)).ok());
}

// ---------------------------------------------------------------------------------------
// Concurrency.

TEST(MetricsConcurrencyTest, IncrementsFromManyThreadsSumExactly) {
  MetricsRegistry registry;
  Counter& counter = registry.AddCounter({"c_total", "help"}).Get();
  Gauge& gauge = registry.AddGauge({"g", "help"}).Get();
  Histogram& histogram = registry.AddHistogram({"h_seconds", "help"}, {0.5, 1.5}).Get();
  constexpr int kThreads = 6;
  constexpr int kPerThread = 200000;
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      while (!go.load()) std::this_thread::yield();
      for (int i = 0; i < kPerThread; ++i) {
        counter.Increment();
        gauge.Increment(2);
        gauge.Decrement();
        histogram.Observe((i + t) % 2 == 0 ? 1.0 : 2.0);
      }
    });
  }
  // Scrapes concurrent with the writers see monotonically growing counters.
  std::thread scraper([&] {
    double last = 0;
    while (!go.load()) std::this_thread::yield();
    for (int i = 0; i < 50; ++i) {
      const double now = SampleValue(registry.TextExposition(), "c_total");
      EXPECT_GE(now, last);
      last = now;
    }
  });
  go.store(true);
  for (std::thread& thread : threads) thread.join();
  scraper.join();
  constexpr double kTotal = static_cast<double>(kThreads) * kPerThread;
  EXPECT_EQ(counter.Value(), kTotal);
  EXPECT_EQ(gauge.Value(), kTotal);
  const Histogram::Snapshot s = histogram.Collect();
  EXPECT_EQ(s.count, static_cast<uint64_t>(kTotal));
  EXPECT_EQ(s.cumulative_counts, std::vector<uint64_t>({0, static_cast<uint64_t>(kTotal / 2),
                                                        static_cast<uint64_t>(kTotal)}));
  EXPECT_EQ(s.sum,
            kTotal / 2 * 1.0 + kTotal / 2 * 2.0);  // integers: exact in a double
}

TEST(MetricsConcurrencyTest, ConcurrentLookupsOfNewLabelSetsAgreeOnOneSeries) {
  MetricsRegistry registry;
  CounterFamily& family = registry.AddCounter({"lookups_total", "help", {"k"}});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) family.WithLabels({std::to_string(i % 50)}).Increment();
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(family.num_series(), 50u);
  for (int k = 0; k < 50; ++k) EXPECT_EQ(family.WithLabels({std::to_string(k)}).Value(), 160);
}

// ---------------------------------------------------------------------------------------
// Bounded label sets.

TEST(MetricsLabelBoundTest, NewLabelSetsBeyondTheBoundGoToOneOverflowSeriesAndAreCounted) {
  MetricsRegistry::Options options;
  options.max_series_per_family = 3;
  MetricsRegistry registry(options);
  CounterFamily& family = registry.AddCounter({"by_user_total", "help", {"user", "kind"}});
  Counter& a = family.WithLabels({"a", "x"});
  family.WithLabels({"b", "x"}).Increment();
  family.WithLabels({"c", "x"}).Increment();
  a.Increment();
  // Full: every new label set lands in the overflow series.
  for (int i = 0; i < 1000; ++i) family.WithLabels({absl::StrCat("user", i), "x"}).Increment();
  // A wrong number of label values does too (a bug, but never a crash on the
  // hot path).
  family.WithLabels({"only-one"}).Increment();
  // Existing series keep working.
  EXPECT_EQ(&family.WithLabels({"a", "x"}), &a);
  EXPECT_EQ(family.num_series(), 4u);  // 3 + overflow

  const std::string text = registry.TextExposition();
  EXPECT_EQ(SampleValue(text, "by_user_total{user=\"__overflow__\",kind=\"__overflow__\"}"), 1001);
  EXPECT_EQ(SampleValue(text, "by_user_total{user=\"a\",kind=\"x\"}"), 1);
  EXPECT_EQ(SampleValue(text, "offerd_metrics_label_sets_dropped_total{family=\"by_user_total\"}"),
            1001);
  EXPECT_FALSE(absl::StrContains(text, "user999"));
}

TEST(MetricsLabelBoundTest, DefaultBoundIsAThousandSeries) {
  MetricsRegistry registry;
  HistogramFamily& family =
      registry.AddHistogram({"per_key_seconds", "help", {"key"}}, LatencyBucketsSeconds());
  for (int i = 0; i < 5000; ++i) family.WithLabels({std::to_string(i)}).Observe(0.001);
  EXPECT_EQ(family.num_series(), 1001u);
  EXPECT_EQ(family.dropped_label_sets(), 4000u);
  EXPECT_EQ(family.WithLabels({std::string(kOverflowLabelValue)}).Collect().count, 4000u);
}

// ---------------------------------------------------------------------------------------
// Callback metrics.

TEST(MetricsCallbackTest, EvaluatedAtScrapeTimeUntilTheHandleGoes) {
  MetricsRegistry::Options options;
  options.max_series_per_family = 2;
  MetricsRegistry registry(options);
  std::atomic<int> queue_depth{3};
  CallbackHandle depth = registry.AddCallbackGauge(
      {"demo_queue_depth", "Queue depth."}, [&] { return static_cast<double>(queue_depth); });
  CallbackHandle reads =
      registry.AddCallbackCounter({"demo_reads_total", "Reads."}, [] { return 7.0; });
  CallbackHandle per_cf =
      registry.AddCallback({"demo_sst_bytes", "SST bytes per column family.", {"cf"}},
                           MetricType::kGauge, [](SampleWriter& out) {
                             out.Add({"users"}, 1024);
                             out.Add({"fatigue"}, 2048);
                             out.Add({"offers"}, 1);  // beyond the bound of 2: dropped and counted
                             out.Add({"a", "b"}, 1);  // wrong arity: dropped and counted
                           });
  CallbackHandle empty = registry.AddCallback({"demo_nothing", "Writes nothing."},
                                              MetricType::kGauge, [](SampleWriter&) {});

  std::string text = registry.TextExposition();
  EXPECT_EQ(SampleValue(text, "demo_queue_depth"), 3);
  EXPECT_THAT(text, HasSubstr("# TYPE demo_reads_total counter\ndemo_reads_total 7\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE demo_sst_bytes gauge\n"
                              "demo_sst_bytes{cf=\"users\"} 1024\n"
                              "demo_sst_bytes{cf=\"fatigue\"} 2048\n#"));
  EXPECT_EQ(SampleValue(text, "offerd_metrics_label_sets_dropped_total{family=\"demo_sst_bytes\"}"),
            2);
  EXPECT_FALSE(absl::StrContains(text, "demo_nothing"));

  queue_depth = 11;
  EXPECT_EQ(SampleValue(registry.TextExposition(), "demo_queue_depth"), 11);

  depth.Reset();
  per_cf = CallbackHandle();  // move-assigning also unregisters the old callback
  text = registry.TextExposition();
  EXPECT_FALSE(absl::StrContains(text, "demo_queue_depth"));
  EXPECT_FALSE(absl::StrContains(text, "demo_sst_bytes{"));
  EXPECT_TRUE(absl::StrContains(text, "demo_reads_total 7"));
  // The name stays reserved.
  EXPECT_FALSE(registry.TryAddGauge({"demo_queue_depth", "again"}).ok());
}

TEST(MetricsCallbackTest, UnregisteringWaitsForARunningScrape) {
  MetricsRegistry registry;
  std::atomic<bool> in_callback{false};
  std::atomic<bool> release{false};
  std::atomic<bool> callback_finished{false};
  std::atomic<bool> reset_returned{false};
  CallbackHandle handle = registry.AddCallbackGauge({"slow_gauge", "help"}, [&] {
    in_callback = true;
    while (!release) std::this_thread::yield();
    callback_finished = true;
    return 1.0;
  });
  std::thread scrape([&] { registry.TextExposition(); });
  while (!in_callback) std::this_thread::yield();
  std::thread unregister([&] {
    handle.Reset();
    reset_returned = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(reset_returned);  // still waiting for the scrape running the callback
  release = true;
  unregister.join();
  scrape.join();
  EXPECT_TRUE(callback_finished);
  EXPECT_TRUE(reset_returned);
  EXPECT_FALSE(absl::StrContains(registry.TextExposition(), "slow_gauge"));
}

// ---------------------------------------------------------------------------------------
// Process metrics.

TEST(ProcessMetricsTest, PresentAndSane) {
  MetricsRegistry registry;
  registry.AddProcessMetrics();
  std::string text = registry.TextExposition();
  const double rss = SampleValue(text, "process_resident_memory_bytes");
  const double vsize = SampleValue(text, "process_virtual_memory_bytes");
  const double cpu = SampleValue(text, "process_cpu_seconds_total");
  const double open_fds = SampleValue(text, "process_open_fds");
  const double max_fds = SampleValue(text, "process_max_fds");
  const double start = SampleValue(text, "process_start_time_seconds");
  const double threads = SampleValue(text, "process_threads");
  EXPECT_GT(rss, 1 << 20);
  EXPECT_GE(vsize, rss);
  EXPECT_GE(cpu, 0);
  EXPECT_GE(open_fds, 3);  // stdin, stdout, stderr
  EXPECT_GE(max_fds, open_fds);
  const double now = static_cast<double>(std::time(nullptr));
  EXPECT_LE(start, now + 2);
  EXPECT_GT(start, now - 3600);  // this test process started recently
  EXPECT_GE(threads, 1);
  EXPECT_THAT(text, HasSubstr("# TYPE process_cpu_seconds_total counter\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE process_resident_memory_bytes gauge\n"));

  // Read at scrape time: a new descriptor and a new thread show up in the next
  // scrape.
  const int fd = open("/dev/null", O_RDONLY);
  std::atomic<bool> stop{false};
  std::thread extra([&] {
    while (!stop) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  text = registry.TextExposition();
  EXPECT_EQ(SampleValue(text, "process_open_fds"), open_fds + 1);
  EXPECT_EQ(SampleValue(text, "process_threads"), threads + 1);
  stop = true;
  extra.join();
  close(fd);
  // Burning CPU moves the CPU counter.
  volatile double sink = 0;
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(100);
  while (std::chrono::steady_clock::now() < until) sink = sink + std::sqrt(sink + 1);
  EXPECT_GT(SampleValue(registry.TextExposition(), "process_cpu_seconds_total"), cpu);
}

// ---------------------------------------------------------------------------------------
// HTTP server.

TEST(HttpServerAddressTest, AcceptsLiteralsAndRejectsTheRestNamingTheAddress) {
  EXPECT_EQ(*CivetwebListeningPorts("0.0.0.0:9464"), "0.0.0.0:9464");
  EXPECT_EQ(*CivetwebListeningPorts("127.0.0.1:0"), "127.0.0.1:0");
  EXPECT_EQ(*CivetwebListeningPorts(":9464"), "9464");
  EXPECT_EQ(*CivetwebListeningPorts("[::1]:9464"), "[::1]:9464");
  for (const char* bad : {"9464", "localhost:9464", "1.2.3.4:", "1.2.3.4:65536", "1.2.3.4:-1",
                          "1.2.3.4:80,8080", "1.2.3.4:80s", "[zz]:1", "1.2.3:80"}) {
    absl::StatusOr<std::string> ports = CivetwebListeningPorts(bad);
    ASSERT_FALSE(ports.ok()) << bad;
    EXPECT_EQ(ports.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(ports.status().message()), HasSubstr(bad));
  }
}

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    registry_.AddCounter({"demo_requests_total", "Requests.", {"rpc"}})
        .WithLabels({"Recommend"})
        .Increment(5);
    HttpServer::Options options;
    options.listen_address = "127.0.0.1:0";
    options.readiness = [this]() -> absl::Status {
      if (ready_) return absl::OkStatus();
      return absl::UnavailableError("no bundle loaded");
    };
    absl::StatusOr<std::unique_ptr<HttpServer>> server = HttpServer::Start(options, &registry_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }

  MetricsRegistry registry_;
  std::atomic<bool> ready_{false};
  std::unique_ptr<HttpServer> server_;
};

TEST_F(HttpServerTest, ServesMetricsHealthAndReadinessOnAPickedPort) {
  ASSERT_GT(server_->port(), 0);

  HttpResponse metrics = HttpRequest(server_->port(), "GET", "/metrics");
  EXPECT_EQ(metrics.status, 200);
  EXPECT_EQ(metrics.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(metrics.headers["content-length"], std::to_string(metrics.body.size()));
  EXPECT_EQ(metrics.body, registry_.TextExposition());
  EXPECT_THAT(metrics.body, HasSubstr("demo_requests_total{rpc=\"Recommend\"} 5\n"));
  // Query strings do not matter.
  EXPECT_EQ(HttpRequest(server_->port(), "GET", "/metrics?x=1").status, 200);

  HttpResponse health = HttpRequest(server_->port(), "GET", "/healthz");
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(health.body, "ok\n");

  HttpResponse not_ready = HttpRequest(server_->port(), "GET", "/readyz");
  EXPECT_EQ(not_ready.status, 503);
  EXPECT_EQ(not_ready.body, "not ready: no bundle loaded\n");
  ready_ = true;
  HttpResponse ready = HttpRequest(server_->port(), "GET", "/readyz");
  EXPECT_EQ(ready.status, 200);
  EXPECT_EQ(ready.body, "ok\n");
  ready_ = false;
  EXPECT_EQ(HttpRequest(server_->port(), "GET", "/readyz").status, 503);
}

TEST_F(HttpServerTest, UnknownPaths404AndOtherMethods405) {
  for (const char* path : {"/", "/metrics/", "/nope", "/healthz/x"}) {
    EXPECT_EQ(HttpRequest(server_->port(), "GET", path).status, 404) << path;
  }
  for (const char* method : {"POST", "PUT", "DELETE", "HEAD"}) {
    HttpResponse response = HttpRequest(server_->port(), method, "/metrics");
    EXPECT_EQ(response.status, 405) << method;
    EXPECT_EQ(response.headers["allow"], "GET") << method;
  }
}

TEST_F(HttpServerTest, ServesConcurrentClientsWithTwoWorkers) {
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&] {
      for (int i = 0; i < 25; ++i)
        ok += HttpRequest(server_->port(), "GET", "/metrics").status == 200;
    });
  }
  for (std::thread& client : clients) client.join();
  EXPECT_EQ(ok, 100);
}

// Uses `bytes` of stack, page by page, so that the compiler cannot drop it.
__attribute__((noinline)) double UseStack(size_t bytes) {
  constexpr size_t kChunk = 4096;
  if (bytes < kChunk) return 1;
  volatile char page[kChunk];
  page[0] = static_cast<char>(bytes);
  page[kChunk - 1] = page[0];
  return UseStack(bytes - kChunk) + page[kChunk - 1] * 0.0;
}

// civetweb's threads have a fixed 100 KiB stack, less the process's static TLS (60 KiB more
// in offerd, for OpenBLAS): a scrape whose callbacks went deeper than that used to kill the
// process. Callbacks now run on the server's own threads, with an ordinary stack.
TEST_F(HttpServerTest, ScrapeCallbacksRunOnAFullSizeStack) {
  CallbackHandle deep = registry_.AddCallbackGauge({"demo_deep_stack", "Needs 512 KiB of stack."},
                                                   [] { return UseStack(512 * 1024); });
  HttpResponse metrics = HttpRequest(server_->port(), "GET", "/metrics");
  EXPECT_EQ(metrics.status, 200);
  EXPECT_THAT(metrics.body, HasSubstr("demo_deep_stack 1\n"));
}

TEST_F(HttpServerTest, AThrowingScrapeIs500AndTheServerKeepsServing) {
  CallbackHandle broken = registry_.AddCallbackGauge(
      {"demo_broken", "Throws."}, []() -> double { throw std::runtime_error("disk gone"); });
  HttpResponse metrics = HttpRequest(server_->port(), "GET", "/metrics");
  EXPECT_EQ(metrics.status, 500);
  EXPECT_EQ(metrics.body, "internal error: disk gone\n");
  broken.Reset();
  EXPECT_EQ(HttpRequest(server_->port(), "GET", "/metrics").status, 200);
  EXPECT_EQ(HttpRequest(server_->port(), "GET", "/healthz").status, 200);
}

TEST_F(HttpServerTest, PortInUseIsAnErrorNamingTheAddress) {
  const std::string address = absl::StrCat("127.0.0.1:", server_->port());
  HttpServer::Options options;
  options.listen_address = address;
  absl::StatusOr<std::unique_ptr<HttpServer>> second = HttpServer::Start(options, &registry_);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(second.status().message()), HasSubstr(address));

  // Also for a port held by another socket.
  int port = 0;
  const int fd = BindListeningSocket(&port);
  options.listen_address = absl::StrCat("127.0.0.1:", port);
  second = HttpServer::Start(options, &registry_);
  close(fd);
  ASSERT_FALSE(second.ok());
  EXPECT_THAT(std::string(second.status().message()), HasSubstr(options.listen_address));

  options.listen_address = "not-an-address";
  EXPECT_EQ(HttpServer::Start(options, &registry_).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(HttpServerTest, StopIsIdempotentAndClosesThePort) {
  const int port = server_->port();
  server_->Stop();
  server_->Stop();
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_NE(connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  close(fd);
  // And the port can be served again.
  HttpServer::Options options;
  options.listen_address = absl::StrCat("127.0.0.1:", port);
  absl::StatusOr<std::unique_ptr<HttpServer>> again = HttpServer::Start(options, &registry_);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(HttpRequest(port, "GET", "/healthz").status, 200);
}

TEST_F(HttpServerTest, LeavesSigchldAloneSoChildProcessesCanBeWaitedFor) {
  struct sigaction action = {};
  ASSERT_EQ(sigaction(SIGCHLD, nullptr, &action), 0);
  EXPECT_NE(action.sa_handler, SIG_IGN);
}

// ---------------------------------------------------------------------------------------
// promtool: the real Prometheus linter and parser on a real scrape.

std::string FindPromtool() {
  const char* path = std::getenv("PATH");
  for (absl::string_view dir : absl::StrSplit(path ? path : "", ':', absl::SkipEmpty())) {
    const std::string candidate = absl::StrCat(dir, "/promtool");
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return access("/usr/bin/promtool", X_OK) == 0 ? "/usr/bin/promtool" : "";
}

TEST(PromtoolTest, CheckMetricsAcceptsARealScrape) {
  const std::string promtool = FindPromtool();
  ASSERT_FALSE(promtool.empty()) << "promtool not found on PATH or /usr/bin: "
                                    "run scripts/install-deps.sh (package "
                                    "prometheus)";

  MetricsRegistry::Options options;
  options.max_series_per_family = 2;
  MetricsRegistry registry(options);
  registry.AddProcessMetrics();
  CounterFamily& requests =
      registry.AddCounter({"offerd_requests_total", "Requests by rpc and code.", {"rpc", "code"}});
  requests.WithLabels({"Recommend", "OK"}).Increment(41);
  requests.WithLabels({"Recommend", "quote\" back\\slash\nnewline"}).Increment();
  requests.WithLabels({"ReportEvents", "OK"}).Increment();  // overflow
  HistogramFamily& latency = registry.AddHistogram(
      {"offerd_request_duration_seconds", "Request latency.", {"rpc"}}, LatencyBucketsSeconds());
  for (int i = 0; i < 1000; ++i) latency.WithLabels({"Recommend"}).Observe(i * 1e-5);
  registry.AddGauge({"offerd_bundle_age_seconds", "Age of the serving bundle."}).Get().Set(12.5);
  CallbackHandle depth = registry.AddCallbackGauge(
      {"offerd_log_queue_depth", "Entries waiting in the log queue."}, [] { return 3.0; });
  CallbackHandle utf8 =
      registry.AddCallback({"offerd_bad_utf8", "Gauge with an invalid UTF-8 label value.", {"v"}},
                           MetricType::kGauge, [](SampleWriter& out) { out.Add({"\xff"}, 1); });

  HttpServer::Options http;
  http.listen_address = "127.0.0.1:0";
  absl::StatusOr<std::unique_ptr<HttpServer>> server = HttpServer::Start(http, &registry);
  ASSERT_TRUE(server.ok()) << server.status();
  HttpResponse scrape = HttpRequest((*server)->port(), "GET", "/metrics");
  ASSERT_EQ(scrape.status, 200);

  testing::TempDir tmp;
  const std::string input = tmp.Join("scrape.txt");
  const std::string output = tmp.Join("promtool.out");
  std::ofstream(input) << scrape.body;
  const std::string command =
      absl::StrCat(promtool, " check metrics < ", input, " > ", output, " 2>&1");
  const int status = std::system(command.c_str());
  std::ifstream in(output);
  const std::string report((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_TRUE(WIFEXITED(status)) << command;
  EXPECT_EQ(WEXITSTATUS(status), 0) << report << "\n--- scrape:\n" << scrape.body;
  EXPECT_EQ(report, "") << "\n--- scrape:\n" << scrape.body;
  // promtool does parse: garbage is refused (guards against a check that passes
  // vacuously).
  std::ofstream(input) << "offerd_x{a=\"unterminated} 1\n";
  EXPECT_NE(std::system(command.c_str()), 0);
}

}  // namespace
}  // namespace offerd
