// offerd: the offer decision server. See README.md for flags and operations.
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <tuple>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/cli_help.h"
#include "server/clock.h"
#include "server/log.h"
#include "server/server.h"
#include "store/file_util.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:50051",
          "Address of the public port: OfferService, grpc.health.v1.Health, reflection. Port 0 "
          "picks a free port (see --port_file).");
ABSL_FLAG(std::string, admin_listen, "127.0.0.1:50052",
          "Address of the AdminService port (loopback by default).");
ABSL_FLAG(std::string, snapshot_root, "",
          "Directory holding snapshot bundles, one sub-directory per version. Required.");
ABSL_FLAG(bool, huge_pages, true,
          "After each bundle load, ask the kernel to back large heap mappings with transparent "
          "huge pages (madvise MADV_HUGEPAGE + MADV_COLLAPSE): fewer TLB misses on a large "
          "catalog, and less for kernel memory scanners to walk. Nothing happens when the "
          "kernel has no THP or its mode is 'never'.");
ABSL_FLAG(int64_t, snapshot_poll_ms, 5000,
          "How often the watcher looks for new bundle versions under --snapshot_root, "
          "milliseconds; 0 disables the watcher (AdminService.LoadSnapshot still works).");
ABSL_FLAG(std::string, db_path, "", "RocksDB directory (created when missing). Required.");
ABSL_FLAG(std::vector<std::string>, ingest, {},
          "users.jsonl file(s) to load into the store at startup, comma-separated.");
ABSL_FLAG(std::string, ingest_sst_dir, "",
          "When set, AdminService.IngestFeatures accepts SST files inside this directory only "
          "(offerctl ingest --sst_dir must point there). Empty: any absolute path.");
ABSL_FLAG(std::string, port_file, "",
          "When set, the bound public port is written to this file once serving.");
ABSL_FLAG(std::string, admin_port_file, "",
          "When set, the bound admin port is written to this file once serving.");
ABSL_FLAG(bool, trust_client_time, false,
          "Use client-supplied timestamps (replays and tests). Off: the server clock is used.");
ABSL_FLAG(std::string, policy_config, "",
          "JSON file with the holdout fraction, assignment salts, global policy overrides and "
          "experiment arms (see README). Empty: 5% holdout, no arms, bundle defaults.");
ABSL_FLAG(std::string, metrics_listen, "0.0.0.0:9464",
          "HTTP address of /metrics (Prometheus text 0.0.4), /healthz and /readyz; empty = off.");
ABSL_FLAG(std::string, log_dir, "",
          "Directory of the rotating decision and event logs (JSONL, docs/logs-format.md); "
          "empty = not written.");
ABSL_FLAG(std::string, admin_token_file, "",
          "File holding the bearer token every AdminService call must carry "
          "(authorization: Bearer <token>). Required when --admin_listen is not loopback.");
ABSL_FLAG(int32_t, max_in_flight, 256,
          "OfferService calls admitted at once (queued for a worker or running); beyond it "
          "calls fail fast with RESOURCE_EXHAUSTED.");
ABSL_FLAG(std::string, pin_file, "",
          "File that pins a bundle version (written by LoadSnapshot/Rollback, removed by "
          "Unpin); empty = <snapshot_root>/PINNED. Point it at writable per-replica storage "
          "when --snapshot_root is mounted read-only.");
ABSL_FLAG(int32_t, worker_threads, 0,
          "Threads that run OfferService calls (0 = one per core). One polling thread reads "
          "every call, admits it and hands it over (a lone call may run inline: "
          "--max_inline_calls), so overload is visible to admission control.");
ABSL_FLAG(int32_t, max_inline_calls, 1,
          "1 = an OfferService call alone in flight (none waiting for a worker) runs on the "
          "polling thread that received it, saving a hand-off to a worker; 0 = hand every "
          "call to a worker.");
ABSL_FLAG(double, max_queue_wait_ms, 50.0,
          "An admitted OfferService call that waited longer than this for a worker is shed "
          "with RESOURCE_EXHAUSTED: under overload, admitted calls keep a bounded latency.");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain for TLS on --listen.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key for TLS on --listen.");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle; when set, clients of --listen must present a certificate it signed "
          "(mTLS).");
ABSL_FLAG(double, degrade_below_ms, 2.0,
          "When less than this is left of a Recommend call's deadline, serve the cheap fallback "
          "ranking (eligible, uncapped cold-start candidates) and mark the response degraded.");
ABSL_FLAG(std::string, log_level, "info", "Minimum log level: debug, info, warning, error.");
ABSL_FLAG(double, drain_seconds, 10.0,
          "On SIGTERM/SIGINT, how long in-flight calls may take to finish.");

namespace {

constexpr char kUsage[] =
    "offerd: low-latency offer recommendation server.\n\n"
    "usage: offerd --snapshot_root=DIR --db_path=DIR [--ingest=users.jsonl] [flags]";

// True for 127.0.0.0/8, [::1] and localhost listen addresses.
bool IsLoopback(const std::string& address) {
  return absl::StartsWith(address, "127.") || absl::StartsWith(address, "[::1]:") ||
         absl::StartsWith(address, "localhost:");
}

int Fail(const std::string& message) {
  offerd::log::Error("fatal", {{"error", message}});
  std::fprintf(stderr, "offerd: %s\n", message.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (offerd::MaybePrintHelp(argc, argv, kUsage, "server/main.cc")) return 0;
  absl::SetProgramUsageMessage(kUsage);
  absl::ParseCommandLine(argc, argv);

  offerd::log::Level level;
  if (!offerd::log::ParseLevel(absl::GetFlag(FLAGS_log_level), &level)) {
    return Fail("--log_level must be debug, info, warning or error");
  }
  offerd::log::SetMinLevel(level);

  // Debian builds Abseil without NDEBUG, so every absl::Mutex lock (gRPC takes several per
  // call) also updates a process-wide lock-order graph behind one global spinlock. That is a
  // debugging aid, not something to pay for on every call in production.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);

  // Block the shutdown signals in every thread (gRPC's threads inherit this mask) so that
  // only the sigwait() below receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  offerd::SystemClock clock;
  offerd::OfferdServer::Options options;
  options.listen = absl::GetFlag(FLAGS_listen);
  options.admin_listen = absl::GetFlag(FLAGS_admin_listen);
  options.snapshot_root = absl::GetFlag(FLAGS_snapshot_root);
  options.pin_file = absl::GetFlag(FLAGS_pin_file);
  options.db_path = absl::GetFlag(FLAGS_db_path);
  options.ingest_files = absl::GetFlag(FLAGS_ingest);
  options.ingest_sst_dir = absl::GetFlag(FLAGS_ingest_sst_dir);
  options.trust_client_time = absl::GetFlag(FLAGS_trust_client_time);
  options.policy_config_path = absl::GetFlag(FLAGS_policy_config);
  options.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  options.log_dir = absl::GetFlag(FLAGS_log_dir);
  options.max_in_flight = absl::GetFlag(FLAGS_max_in_flight);
  options.degrade_below = absl::Milliseconds(absl::GetFlag(FLAGS_degrade_below_ms));
  if (options.max_in_flight < 1) return Fail("--max_in_flight must be >= 1");
  options.worker_threads = absl::GetFlag(FLAGS_worker_threads);
  if (options.worker_threads < 0 || options.worker_threads > 256) {
    return Fail("--worker_threads must be in [0, 256] (0 = one per core)");
  }
  options.max_inline_calls = absl::GetFlag(FLAGS_max_inline_calls);
  if (options.max_inline_calls < 0 || options.max_inline_calls > 1) {
    return Fail(
        "--max_inline_calls must be 0 or 1 (one thread receives every call; while it computes "
        "one, it cannot admit others)");
  }
  const double max_queue_wait_ms = absl::GetFlag(FLAGS_max_queue_wait_ms);
  if (!(max_queue_wait_ms > 0) || max_queue_wait_ms > 60000) {
    return Fail("--max_queue_wait_ms must be in (0, 60000]");
  }
  options.max_queue_wait = absl::Milliseconds(max_queue_wait_ms);
  if (const std::string token_file = absl::GetFlag(FLAGS_admin_token_file); !token_file.empty()) {
    absl::StatusOr<std::string> token = offerd::ReadFileToString(token_file);
    if (!token.ok()) return Fail(absl::StrCat("--admin_token_file: ", token.status().message()));
    options.admin_token = std::string(absl::StripAsciiWhitespace(*token));
    if (options.admin_token.size() < 16) {
      return Fail("--admin_token_file: the token must be at least 16 characters");
    }
  }
  const std::string tls_cert = absl::GetFlag(FLAGS_tls_cert), tls_key = absl::GetFlag(FLAGS_tls_key),
                    tls_client_ca = absl::GetFlag(FLAGS_tls_client_ca);
  if (tls_cert.empty() != tls_key.empty()) return Fail("--tls_cert and --tls_key go together");
  if (!tls_client_ca.empty() && tls_cert.empty()) return Fail("--tls_client_ca needs --tls_cert");
  for (const auto& [flag, path, out] :
       {std::tuple{"--tls_cert", tls_cert, &options.tls_cert_pem},
        std::tuple{"--tls_key", tls_key, &options.tls_key_pem},
        std::tuple{"--tls_client_ca", tls_client_ca, &options.tls_client_ca_pem}}) {
    if (path.empty()) continue;
    absl::StatusOr<std::string> pem = offerd::ReadFileToString(path);
    if (!pem.ok()) return Fail(absl::StrCat(flag, ": ", pem.status().message()));
    if (pem->find("-----BEGIN") == std::string::npos) {
      return Fail(absl::StrCat(flag, ": ", path, " is not a PEM file"));
    }
    *out = std::move(*pem);
  }
  if (options.admin_token.empty() && !IsLoopback(options.admin_listen)) {
    return Fail(absl::StrCat("--admin_listen=", options.admin_listen,
                             " is not a loopback address: set --admin_token_file"));
  }
  if (absl::GetFlag(FLAGS_snapshot_poll_ms) < 0) return Fail("--snapshot_poll_ms must be >= 0");
  options.snapshot_poll_interval = absl::Milliseconds(absl::GetFlag(FLAGS_snapshot_poll_ms));
  options.huge_pages = absl::GetFlag(FLAGS_huge_pages);

  absl::StatusOr<std::unique_ptr<offerd::OfferdServer>> server =
      offerd::OfferdServer::Create(options, &clock);
  if (!server.ok()) return Fail(std::string(server.status().message()));
  if (absl::Status s = (*server)->Start(); !s.ok()) return Fail(std::string(s.message()));

  for (const auto& [flag, port] : {std::pair{absl::GetFlag(FLAGS_port_file), (*server)->port()},
                                   std::pair{absl::GetFlag(FLAGS_admin_port_file),
                                             (*server)->admin_port()}}) {
    if (flag.empty()) continue;
    if (absl::Status s = offerd::WriteFileAtomically(flag, absl::StrCat(port, "\n")); !s.ok()) {
      (*server)->Shutdown(absl::ZeroDuration());
      return Fail(std::string(s.message()));
    }
  }

  int received = 0;
  sigwait(&signals, &received);
  offerd::log::Info("shutdown_requested", {{"signal", received == SIGTERM ? "SIGTERM" : "SIGINT"}});
  (*server)->Shutdown(absl::Seconds(absl::GetFlag(FLAGS_drain_seconds)));
  (*server)->Wait();
  return 0;
}
