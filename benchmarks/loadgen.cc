// Open-loop gRPC load generator for offerd.
//
//   build/bin/loadgen --target=127.0.0.1:50051 --users_file=users.jsonl
//       --rates=200,1000,max --rpcs=health,recommend [--duration_s=5] [--out=FILE.json]
//
// For every offered rate and every RPC kind in --rpcs (in that order, so the floor runs under
// the same conditions right before Recommend), one step: --warmup_s unrecorded, then
// --duration_s recorded. Requests are issued on a fixed schedule (request i is *intended* at
// start + i / rate) whatever the server does, and latency is measured from the intended send
// time, so a stalled server or a late client shows up in the percentiles instead of silently
// lowering the offered load (no coordinated omission). Rate "max" is a closed loop keeping
// --max_window calls in flight: it measures throughput, its latencies are from the actual send.
//
// RPC kinds: `health` (grpc.health.v1.Health/Check: the floor — what any call costs on this
// server, transport and client), `recommend` (skewed request mix below). With
// --events_ratio > 0, that share of answered Recommend calls is followed by a ReportEvents of
// their impressions (and a click on the first offer for one in five), timed separately.
//
// Request mix: user ids drawn from --users_file with a Zipf(--zipf_s) popularity over a
// shuffled order, plus --unknown_fraction of never-seen users; channel, device, country and
// num_offers drawn from fixed weights.
//
// Prints one JSON object (also to --out): per step the offered and achieved rate, latency
// percentiles (ms; OK calls only), errors by status code, the client's CPU (getrusage) and, with
// --server_pid, the server's CPU (/proc); each recommend step also carries its ratios to the
// health step at the same offered rate.
#include <grpcpp/create_channel.h>
#include <grpcpp/grpcpp.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "benchmarks/latency_histogram.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "offerd/v1/offer_service.grpc.pb.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051", "offerd address");
ABSL_FLAG(std::string, rates, "100,500", "comma-separated offered rates (requests/s) or 'max'");
ABSL_FLAG(std::string, rpcs, "health,recommend", "comma-separated: health, recommend");
ABSL_FLAG(double, duration_s, 5, "recorded seconds per step");
ABSL_FLAG(double, warmup_s, 1, "unrecorded seconds before each step");
ABSL_FLAG(int, channels, 4, "gRPC channels (separate connections), used round-robin");
ABSL_FLAG(int, cq_threads, 1, "completion-queue threads");
ABSL_FLAG(int, max_window, 64, "calls in flight in 'max' (closed-loop) steps");
ABSL_FLAG(int, max_outstanding, 20000, "open loop: the sender waits beyond this many in flight");
ABSL_FLAG(int, deadline_ms, 1000, "per-call deadline");
ABSL_FLAG(std::string, users_file, "", "users.jsonl (known user ids); empty = u0..u999");
ABSL_FLAG(double, zipf_s, 0.9, "Zipf exponent of user popularity");
ABSL_FLAG(double, unknown_fraction, 0.1, "share of requests from users not in --users_file");
ABSL_FLAG(double, events_ratio, 0, "share of answered Recommend calls followed by ReportEvents");
ABSL_FLAG(int, server_pid, 0, "offerd's pid: also report its CPU per step");
ABSL_FLAG(std::string, label, "", "copied into the JSON");
ABSL_FLAG(std::string, out, "", "also write the JSON here");
ABSL_FLAG(uint64_t, seed, 1, "request-mix seed");

namespace offerd::bench {
namespace {

using Clock = std::chrono::steady_clock;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

double CpuSecondsOfSelf() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_utime.tv_sec + usage.ru_utime.tv_usec * 1e-6 + usage.ru_stime.tv_sec +
         usage.ru_stime.tv_usec * 1e-6;
}

// utime + stime of another process from /proc/<pid>/stat; -1 when unreadable.
double CpuSecondsOfPid(int pid) {
  if (pid <= 0) return -1;
  std::ifstream in(absl::StrFormat("/proc/%d/stat", pid));
  std::string line;
  if (!std::getline(in, line)) return -1;
  // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return -1;
  std::vector<std::string> fields = absl::StrSplit(line.substr(close + 2), ' ');
  int64_t utime = 0, stime = 0;
  if (fields.size() < 13 || !absl::SimpleAtoi(fields[11], &utime) ||
      !absl::SimpleAtoi(fields[12], &stime)) {
    return -1;
  }
  return static_cast<double>(utime + stime) / sysconf(_SC_CLK_TCK);
}

enum class RpcKind { kHealth, kRecommend, kEvents };

const char* RpcName(RpcKind kind) {
  switch (kind) {
    case RpcKind::kHealth:
      return "health";
    case RpcKind::kRecommend:
      return "recommend";
    case RpcKind::kEvents:
      return "report_events";
  }
  return "?";
}

// The skewed request mix. Not thread-safe: one per issuing thread.
class RequestMix {
 public:
  RequestMix(std::vector<std::string> users, double zipf_s, double unknown_fraction,
             uint64_t seed)
      : users_(std::move(users)), unknown_fraction_(unknown_fraction), rng_(seed) {
    std::shuffle(users_.begin(), users_.end(), rng_);  // popularity independent of file order
    cdf_.reserve(users_.size());
    double total = 0;
    for (size_t rank = 1; rank <= users_.size(); ++rank) {
      total += 1.0 / std::pow(static_cast<double>(rank), zipf_s);
      cdf_.push_back(total);
    }
    for (double& c : cdf_) c /= total;
  }

  void Fill(v1::RecommendRequest* request) {
    if (uniform_(rng_) < unknown_fraction_ || users_.empty()) {
      request->set_user_id(absl::StrFormat("anon-%016x", rng_()));
    } else {
      const size_t i =
          std::lower_bound(cdf_.begin(), cdf_.end(), uniform_(rng_)) - cdf_.begin();
      request->set_user_id(users_[std::min(i, users_.size() - 1)]);
    }
    static constexpr const char* kChannels[] = {"web", "web", "app", "app", "app", "email", "push"};
    static constexpr const char* kDevices[] = {"ios", "android", "desktop"};
    static constexpr const char* kCountries[] = {"US", "US", "US", "GB", "DE", "FR", "CA", ""};
    static constexpr const char* kPages[] = {"home", "home", "checkout", "rewards"};
    static constexpr int kNumOffers[] = {3, 5, 5, 5, 10};
    v1::Context* context = request->mutable_context();
    context->set_channel(Pick(kChannels));
    context->set_device(Pick(kDevices));
    context->set_country(Pick(kCountries));
    context->set_page(Pick(kPages));
    request->set_num_offers(Pick(kNumOffers));
  }

  bool Chance(double p) { return uniform_(rng_) < p; }

 private:
  template <typename T, size_t N>
  T Pick(const T (&options)[N]) {
    return options[rng_() % N];
  }

  std::vector<std::string> users_;
  std::vector<double> cdf_;
  const double unknown_fraction_;
  std::mt19937_64 rng_;
  std::uniform_real_distribution<double> uniform_{0.0, 1.0};
};

// Results of one RPC kind within a step, merged over completion threads.
struct Tally {
  LatencyHistogram latency_ns;  // OK calls
  std::map<std::string, int64_t> errors;
  int64_t ok = 0;
  int64_t last_completion_ns = 0;
  void Merge(const Tally& other) {
    latency_ns.Merge(other.latency_ns);
    for (const auto& [code, n] : other.errors) errors[code] += n;
    ok += other.ok;
    last_completion_ns = std::max(last_completion_ns, other.last_completion_ns);
  }
};

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::OK: return "OK";
    case grpc::CANCELLED: return "CANCELLED";
    case grpc::UNKNOWN: return "UNKNOWN";
    case grpc::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::NOT_FOUND: return "NOT_FOUND";
    case grpc::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::INTERNAL: return "INTERNAL";
    case grpc::UNAVAILABLE: return "UNAVAILABLE";
    default: return "OTHER";
  }
}

// One call in flight. Owned by itself: deleted by the completion thread that sees it finish.
struct Call {
  RpcKind kind;
  int64_t intended_ns = 0;  // latency is measured from here
  bool recorded = false;    // inside the recorded window
  bool closed_loop = false;  // a completion issues the next call
  grpc::ClientContext context;
  grpc::Status status;
  grpc::health::v1::HealthCheckResponse health;
  v1::RecommendRequest recommend_request;
  v1::RecommendResponse recommend;
  v1::ReportEventsResponse events;
  std::unique_ptr<grpc::ClientAsyncResponseReader<grpc::health::v1::HealthCheckResponse>> health_rpc;
  std::unique_ptr<grpc::ClientAsyncResponseReader<v1::RecommendResponse>> recommend_rpc;
  std::unique_ptr<grpc::ClientAsyncResponseReader<v1::ReportEventsResponse>> events_rpc;
};

class LoadGenerator {
 public:
  LoadGenerator(const std::string& target, int channels, int cq_threads,
                std::vector<std::string> users)
      : users_(std::move(users)) {
    for (int c = 0; c < channels; ++c) {
      grpc::ChannelArguments args;
      args.SetInt("grpc.channel_id", c);  // distinct args: a separate connection per channel
      std::shared_ptr<grpc::Channel> channel =
          grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
      offer_stubs_.push_back(v1::OfferService::NewStub(channel));
      health_stubs_.push_back(grpc::health::v1::Health::NewStub(channel));
    }
    for (int t = 0; t < cq_threads; ++t) {
      cqs_.push_back(std::make_unique<grpc::CompletionQueue>());
      tallies_.emplace_back();
    }
    for (int t = 0; t < cq_threads; ++t) {
      pollers_.emplace_back([this, t] { Poll(t); });
    }
  }

  ~LoadGenerator() {
    for (auto& cq : cqs_) cq->Shutdown();
    for (std::thread& t : pollers_) t.join();
  }

  // Runs one step; returns its JSON (without vs_floor ratios).
  nlohmann::json RunStep(RpcKind kind, double rate, double warmup_s, double duration_s) {
    const bool closed_loop = rate <= 0;
    const int64_t warmup_ns = static_cast<int64_t>(warmup_s * 1e9);
    const int64_t duration_ns = static_cast<int64_t>(duration_s * 1e9);
    kind_ = kind;
    stop_issuing_.store(false);
    const int64_t start_ns = NowNs() + 1000000;  // 1 ms to get going
    window_start_ns_ = start_ns + warmup_ns;
    window_end_ns_ = window_start_ns_ + duration_ns;
    for (int t = 0; t < static_cast<int>(tallies_.size()); ++t) {
      std::lock_guard<std::mutex> lock(tally_mu_[t % kTallyLocks]);
      tallies_[t] = PerKind();
    }
    sent_recorded_.store(0);
    late_sends_.store(0);

    double cpu_start = 0, server_cpu_start = 0;
    int64_t cpu_start_ns = 0;
    bool cpu_started = false;
    const auto start_cpu = [&] {
      cpu_start = CpuSecondsOfSelf();
      server_cpu_start = CpuSecondsOfPid(server_pid_);
      cpu_start_ns = NowNs();
      cpu_started = true;
    };

    RequestMix& mix = *sender_mix_;
    if (closed_loop) {
      while (NowNs() < start_ns) std::this_thread::sleep_for(std::chrono::microseconds(100));
      for (int i = 0; i < window_; ++i) Issue(kind, NowNs(), /*closed_loop=*/true, &mix);
      while (NowNs() < window_start_ns_) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      start_cpu();
      while (NowNs() < window_end_ns_) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      stop_issuing_.store(true);
    } else {
      const double period_ns = 1e9 / rate;
      for (int64_t i = 0;; ++i) {
        const int64_t intended = start_ns + static_cast<int64_t>(i * period_ns);
        if (intended >= window_end_ns_) break;
        int64_t now = NowNs();
        if (now < intended) {
          std::this_thread::sleep_for(std::chrono::nanoseconds(intended - now));
          now = NowNs();
        }
        if (!cpu_started && intended >= window_start_ns_) start_cpu();
        // Beyond the bound the sender waits; the wait still counts in these calls' latency.
        while (in_flight_.load(std::memory_order_relaxed) >= max_outstanding_) {
          std::this_thread::sleep_for(std::chrono::microseconds(50));
        }
        if (now - intended > 1000000 && intended >= window_start_ns_) late_sends_.fetch_add(1);
        Issue(kind, intended, /*closed_loop=*/false, &mix);
      }
      stop_issuing_.store(true);
    }
    // Let every call finish (deadlines bound this).
    while (in_flight_.load() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    const double wall_s = (NowNs() - cpu_start_ns) * 1e-9;
    const double cpu_s = CpuSecondsOfSelf() - cpu_start;
    const double server_cpu_end = CpuSecondsOfPid(server_pid_);

    PerKind all;
    for (int t = 0; t < static_cast<int>(tallies_.size()); ++t) {
      std::lock_guard<std::mutex> lock(tally_mu_[t % kTallyLocks]);
      all.main.Merge(tallies_[t].main);
      all.events.Merge(tallies_[t].events);
    }
    nlohmann::json step = TallyJson(kind, all.main, duration_s);
    step["offered_rps"] = closed_loop ? nlohmann::json("max") : nlohmann::json(rate);
    if (closed_loop) step["window"] = window_;
    step["sent"] = sent_recorded_.load();
    step["late_sends_over_1ms"] = late_sends_.load();
    const int64_t calls = all.main.ok + ErrorCount(all.main) + all.events.ok + ErrorCount(all.events);
    step["client_cpu_cores"] = cpu_s / wall_s;
    step["client_cpu_us_per_call"] = calls > 0 ? cpu_s * 1e6 / calls : 0.0;
    if (server_cpu_start >= 0 && server_cpu_end >= 0) {
      step["server_cpu_cores"] = (server_cpu_end - server_cpu_start) / wall_s;
      step["server_cpu_us_per_call"] =
          calls > 0 ? (server_cpu_end - server_cpu_start) * 1e6 / calls : 0.0;
    }
    if (all.events.ok + ErrorCount(all.events) > 0) {
      step["report_events"] = TallyJson(RpcKind::kEvents, all.events, duration_s);
    }
    return step;
  }

  void set_window(int window) { window_ = window; }
  void set_max_outstanding(int n) { max_outstanding_ = n; }
  void set_deadline_ms(int ms) { deadline_ms_ = ms; }
  void set_events_ratio(double r) { events_ratio_ = r; }
  void set_server_pid(int pid) { server_pid_ = pid; }
  void set_mix(double zipf_s, double unknown_fraction, uint64_t seed) {
    sender_mix_ = std::make_unique<RequestMix>(users_, zipf_s, unknown_fraction, seed);
    for (size_t t = 0; t < cqs_.size(); ++t) {
      poller_mix_.push_back(
          std::make_unique<RequestMix>(users_, zipf_s, unknown_fraction, seed + 1 + t));
    }
  }

 private:
  struct PerKind {
    Tally main;    // the step's RPC
    Tally events;  // ReportEvents following Recommend
  };
  static constexpr int kTallyLocks = 8;

  static int64_t ErrorCount(const Tally& t) {
    int64_t n = 0;
    for (const auto& [code, count] : t.errors) n += count;
    return n;
  }

  nlohmann::json TallyJson(RpcKind kind, const Tally& t, double duration_s) const {
    const LatencyHistogram& h = t.latency_ns;
    const double span_s =
        t.last_completion_ns > window_start_ns_
            ? std::max(duration_s, (t.last_completion_ns - window_start_ns_) * 1e-9)
            : duration_s;
    nlohmann::json latency = {{"p50", h.ValueAtQuantile(0.50) / 1e6},
                              {"p90", h.ValueAtQuantile(0.90) / 1e6},
                              {"p99", h.ValueAtQuantile(0.99) / 1e6},
                              {"p999", h.ValueAtQuantile(0.999) / 1e6},
                              {"max", h.max() / 1e6},
                              {"mean", h.mean() / 1e6}};
    return {{"rpc", RpcName(kind)},
            {"ok", t.ok},
            {"errors", t.errors},
            {"achieved_rps", t.ok / span_s},
            {"latency_ms", latency}};
  }

  size_t NextIndex() { return next_.fetch_add(1, std::memory_order_relaxed); }

  void Issue(RpcKind kind, int64_t intended_ns, bool closed_loop, RequestMix* mix) {
    const size_t i = NextIndex();
    auto* call = new Call;
    call->kind = kind;
    call->intended_ns = intended_ns;
    call->closed_loop = closed_loop;
    call->recorded = intended_ns >= window_start_ns_ && intended_ns < window_end_ns_;
    if (call->recorded && kind != RpcKind::kEvents) sent_recorded_.fetch_add(1);
    call->context.set_deadline(std::chrono::system_clock::now() +
                               std::chrono::milliseconds(deadline_ms_));
    grpc::CompletionQueue* cq = cqs_[i % cqs_.size()].get();
    const size_t channel = i % offer_stubs_.size();
    in_flight_.fetch_add(1, std::memory_order_relaxed);
    switch (kind) {
      case RpcKind::kHealth: {
        grpc::health::v1::HealthCheckRequest request;
        call->health_rpc = health_stubs_[channel]->PrepareAsyncCheck(&call->context, request, cq);
        call->health_rpc->StartCall();
        call->health_rpc->Finish(&call->health, &call->status, call);
        break;
      }
      case RpcKind::kRecommend: {
        mix->Fill(&call->recommend_request);
        call->recommend_rpc =
            offer_stubs_[channel]->PrepareAsyncRecommend(&call->context, call->recommend_request, cq);
        call->recommend_rpc->StartCall();
        call->recommend_rpc->Finish(&call->recommend, &call->status, call);
        break;
      }
      case RpcKind::kEvents:
        break;  // built by IssueEvents
    }
  }

  // The impressions of an answered Recommend (and a click on the first offer, one in five).
  void IssueEvents(const Call& answered, RequestMix* mix) {
    v1::ReportEventsRequest request;
    for (const v1::ScoredOffer& offer : answered.recommend.offers()) {
      v1::Event* e = request.add_events();
      e->set_user_id(answered.recommend_request.user_id());
      e->set_offer_id(offer.offer_id());
      e->set_type(v1::IMPRESSION);
      e->set_decision_id(answered.recommend.decision_id());
    }
    if (request.events_size() == 0) return;
    if (mix->Chance(0.2)) {
      v1::Event click = request.events(0);
      click.set_type(v1::CLICK);
      *request.add_events() = click;
    }
    const size_t i = NextIndex();
    auto* call = new Call;
    call->kind = RpcKind::kEvents;
    call->intended_ns = NowNs();
    call->recorded = answered.recorded;
    call->context.set_deadline(std::chrono::system_clock::now() +
                               std::chrono::milliseconds(deadline_ms_));
    in_flight_.fetch_add(1, std::memory_order_relaxed);
    call->events_rpc = offer_stubs_[i % offer_stubs_.size()]->PrepareAsyncReportEvents(
        &call->context, request, cqs_[i % cqs_.size()].get());
    call->events_rpc->StartCall();
    call->events_rpc->Finish(&call->events, &call->status, call);
  }

  void Poll(int t) {
    void* tag = nullptr;
    bool ok = false;
    while (cqs_[t]->Next(&tag, &ok)) {
      std::unique_ptr<Call> call(static_cast<Call*>(tag));
      const int64_t now = NowNs();
      if (call->recorded) {
        std::lock_guard<std::mutex> lock(tally_mu_[t % kTallyLocks]);
        Tally& tally = call->kind == RpcKind::kEvents ? tallies_[t].events : tallies_[t].main;
        if (call->status.ok()) {
          tally.latency_ns.Record(now - call->intended_ns);
          ++tally.ok;
        } else {
          ++tally.errors[CodeName(call->status.error_code())];
        }
        tally.last_completion_ns = std::max(tally.last_completion_ns, now);
      }
      if (call->kind == RpcKind::kRecommend && call->status.ok() && events_ratio_ > 0 &&
          !stop_issuing_.load() && poller_mix_[t]->Chance(events_ratio_)) {
        IssueEvents(*call, poller_mix_[t].get());
      }
      if (call->closed_loop && !stop_issuing_.load()) {
        Issue(kind_, NowNs(), /*closed_loop=*/true, poller_mix_[t].get());
      }
      in_flight_.fetch_sub(1, std::memory_order_relaxed);
    }
  }

  const std::vector<std::string> users_;
  std::vector<std::unique_ptr<v1::OfferService::Stub>> offer_stubs_;
  std::vector<std::unique_ptr<grpc::health::v1::Health::Stub>> health_stubs_;
  std::vector<std::unique_ptr<grpc::CompletionQueue>> cqs_;
  std::vector<std::thread> pollers_;
  std::unique_ptr<RequestMix> sender_mix_;
  std::vector<std::unique_ptr<RequestMix>> poller_mix_;  // one per completion thread
  std::mutex tally_mu_[kTallyLocks];
  std::vector<PerKind> tallies_;  // one per completion thread, guarded by tally_mu_[t % 8]

  std::atomic<RpcKind> kind_{RpcKind::kHealth};
  std::atomic<bool> stop_issuing_{false};
  std::atomic<int64_t> window_start_ns_{0}, window_end_ns_{0};
  std::atomic<size_t> next_{0};
  std::atomic<int64_t> in_flight_{0};
  std::atomic<int64_t> sent_recorded_{0}, late_sends_{0};
  int window_ = 64;
  int max_outstanding_ = 20000;
  int deadline_ms_ = 1000;
  double events_ratio_ = 0;
  int server_pid_ = 0;
};

std::vector<std::string> ReadUserIds(const std::string& path) {
  std::vector<std::string> users;
  if (path.empty()) {
    for (int i = 0; i < 1000; ++i) users.push_back(absl::StrFormat("u%d", i));
    return users;
  }
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    // Each user line starts with {"user_id": "..."; the header line has no user_id.
    const size_t key = line.find("\"user_id\"");
    if (key == std::string::npos || key > 16) continue;
    const size_t open = line.find('"', line.find(':', key) + 1);
    const size_t close = line.find('"', open + 1);
    if (open == std::string::npos || close == std::string::npos) continue;
    users.push_back(line.substr(open + 1, close - open - 1));
  }
  return users;
}

// Ratios of a Recommend step to the health (floor) step at the same offered rate.
nlohmann::json VsFloor(const nlohmann::json& step, const nlohmann::json& floor) {
  nlohmann::json ratios;
  for (const char* q : {"p50", "p90", "p99", "p999", "max"}) {
    const double f = floor["latency_ms"][q].get<double>();
    ratios[std::string(q) + "_ratio"] = f > 0 ? step["latency_ms"][q].get<double>() / f : 0.0;
  }
  const double f = floor["achieved_rps"].get<double>();
  ratios["achieved_rps_ratio"] = f > 0 ? step["achieved_rps"].get<double>() / f : 0.0;
  return ratios;
}

int Run() {
  prctl(PR_SET_TIMERSLACK, 1000UL);  // 1 µs: the sender's sleeps wake close to the schedule
  std::vector<RpcKind> kinds;
  for (absl::string_view name : absl::StrSplit(absl::GetFlag(FLAGS_rpcs), ',')) {
    if (name == "health") {
      kinds.push_back(RpcKind::kHealth);
    } else if (name == "recommend") {
      kinds.push_back(RpcKind::kRecommend);
    } else {
      std::fprintf(stderr, "loadgen: unknown rpc '%s' (health, recommend)\n",
                   std::string(name).c_str());
      return 2;
    }
  }
  std::vector<double> rates;  // <= 0 means "max"
  for (absl::string_view r : absl::StrSplit(absl::GetFlag(FLAGS_rates), ',')) {
    double rate = 0;
    if (r == "max") {
      rates.push_back(0);
    } else if (absl::SimpleAtod(r, &rate) && rate > 0) {
      rates.push_back(rate);
    } else {
      std::fprintf(stderr, "loadgen: bad rate '%s'\n", std::string(r).c_str());
      return 2;
    }
  }
  std::vector<std::string> users = ReadUserIds(absl::GetFlag(FLAGS_users_file));
  if (users.empty()) {
    std::fprintf(stderr, "loadgen: no user ids in %s\n", absl::GetFlag(FLAGS_users_file).c_str());
    return 2;
  }
  LoadGenerator generator(absl::GetFlag(FLAGS_target), std::max(1, absl::GetFlag(FLAGS_channels)),
                          std::max(1, absl::GetFlag(FLAGS_cq_threads)), users);
  generator.set_window(std::max(1, absl::GetFlag(FLAGS_max_window)));
  generator.set_max_outstanding(std::max(1, absl::GetFlag(FLAGS_max_outstanding)));
  generator.set_deadline_ms(absl::GetFlag(FLAGS_deadline_ms));
  generator.set_events_ratio(absl::GetFlag(FLAGS_events_ratio));
  generator.set_server_pid(absl::GetFlag(FLAGS_server_pid));
  generator.set_mix(absl::GetFlag(FLAGS_zipf_s), absl::GetFlag(FLAGS_unknown_fraction),
                    absl::GetFlag(FLAGS_seed));

  nlohmann::json steps = nlohmann::json::array();
  for (double rate : rates) {
    nlohmann::json floor;
    for (RpcKind kind : kinds) {
      nlohmann::json step = generator.RunStep(kind, rate, absl::GetFlag(FLAGS_warmup_s),
                                              absl::GetFlag(FLAGS_duration_s));
      if (kind == RpcKind::kHealth) floor = step;
      if (kind == RpcKind::kRecommend && !floor.is_null()) step["vs_floor"] = VsFloor(step, floor);
      std::fprintf(stderr, "loadgen: %-9s offered %-6s achieved %8.0f/s p50 %.3f p99 %.3f ms\n",
                   RpcName(kind), step["offered_rps"].dump().c_str(),
                   step["achieved_rps"].get<double>(), step["latency_ms"]["p50"].get<double>(),
                   step["latency_ms"]["p99"].get<double>());
      steps.push_back(std::move(step));
    }
  }
  nlohmann::json out = {
      {"tool", "offerd loadgen (C++ async gRPC client, open loop)"},
      {"label", absl::GetFlag(FLAGS_label)},
      {"target", absl::GetFlag(FLAGS_target)},
      {"channels", absl::GetFlag(FLAGS_channels)},
      {"cq_threads", absl::GetFlag(FLAGS_cq_threads)},
      {"duration_s", absl::GetFlag(FLAGS_duration_s)},
      {"warmup_s", absl::GetFlag(FLAGS_warmup_s)},
      {"deadline_ms", absl::GetFlag(FLAGS_deadline_ms)},
      {"mix", {{"known_users", users.size()}, {"zipf_s", absl::GetFlag(FLAGS_zipf_s)},
               {"unknown_fraction", absl::GetFlag(FLAGS_unknown_fraction)},
               {"events_ratio", absl::GetFlag(FLAGS_events_ratio)}}},
      {"latency_note", "ms from each request's intended send time; OK calls only"},
      {"steps", steps}};
  std::printf("%s\n", out.dump(2).c_str());
  if (!absl::GetFlag(FLAGS_out).empty()) std::ofstream(absl::GetFlag(FLAGS_out)) << out.dump(2);
  return 0;
}

}  // namespace
}  // namespace offerd::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  // As in offerd: Debian's Abseil otherwise tracks lock order on every absl::Mutex lock, and
  // gRPC's client takes several per call; that would be our own jitter in the figures.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  return offerd::bench::Run();
}
