// metrics_demo: a tiny process serving offerd's metrics endpoint with known
// data, for the end-to-end test that a real Prometheus scrapes it
// (tests/e2e/test_prometheus_scrape.py).
//
//   metrics_demo --port_file=PATH [--listen=127.0.0.1:0]
//
// Observes latencies spread evenly over [1 ms, 10 ms] into
// demo_request_duration_seconds{rpc="Recommend"} (about 10k observations a
// second), so the true p99 is 9.91 ms; writes the bound port to PATH once
// serving; exits 0 on SIGTERM/SIGINT.
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "server/http_server.h"
#include "server/metrics.h"

namespace {

int Run(int argc, char** argv) {
  std::string port_file;
  std::string listen = "127.0.0.1:0";
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (absl::ConsumePrefix(&arg, "--port_file=")) {
      port_file = std::string(arg);
    } else if (absl::ConsumePrefix(&arg, "--listen=")) {
      listen = std::string(arg);
    } else {
      std::fprintf(stderr, "usage: metrics_demo --port_file=PATH [--listen=HOST:PORT]\n");
      return 2;
    }
  }
  if (port_file.empty()) {
    std::fprintf(stderr, "metrics_demo: --port_file is required\n");
    return 2;
  }

  // Signals are taken by sigwait below; block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  offerd::MetricsRegistry registry;
  registry.AddProcessMetrics();
  offerd::Histogram& latency =
      registry
          .AddHistogram({"demo_request_duration_seconds", "Demo request latency.", {"rpc"}},
                        offerd::LatencyBucketsSeconds())
          .WithLabels({"Recommend"});
  offerd::Counter& requests =
      registry.AddCounter({"demo_requests_total", "Demo requests.", {"rpc", "code"}})
          .WithLabels({"Recommend", "OK"});

  std::atomic<bool> ready{false};
  offerd::HttpServer::Options options;
  options.listen_address = listen;
  options.readiness = [&ready]() -> absl::Status {
    return ready ? absl::OkStatus() : absl::UnavailableError("starting");
  };
  absl::StatusOr<std::unique_ptr<offerd::HttpServer>> server =
      offerd::HttpServer::Start(options, &registry);
  if (!server.ok()) {
    std::fprintf(stderr, "metrics_demo: %s\n", server.status().ToString().c_str());
    return 1;
  }

  std::atomic<bool> stop{false};
  std::thread load([&] {
    constexpr int kCycle = 1000;
    while (!stop) {
      for (int i = 0; i < kCycle; ++i) {
        latency.Observe(0.001 + 0.009 * i / (kCycle - 1));
        requests.Increment();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });

  const std::string tmp = port_file + ".tmp";
  std::ofstream(tmp) << (*server)->port();
  std::rename(tmp.c_str(), port_file.c_str());
  ready = true;
  std::fprintf(stderr, "metrics_demo: serving on port %d\n", (*server)->port());

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  stop = true;
  load.join();
  (*server)->Stop();
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Run(argc, argv); }
