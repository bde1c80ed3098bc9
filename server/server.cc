#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/simd.h"
#include "server/async_frontend.h"
#include "server/clock.h"
#include "server/event_applier.h"
#include "server/log.h"
#include "server/http_server.h"
#include "server/metrics.h"
#include "server/policy_config.h"
#include "server/server_metrics.h"
#include "store/jsonl_log.h"
#include "store/log_records.h"
#include "server/recommender.h"
#include "server/services.h"
#include "server/snapshot_manager.h"
#include "server/worker_pool.h"
#include "store/rocksdb_store.h"

// gRPC's own, exported by libgrpc but not in its installed headers (gRPC 1.51, pinned in
// async_frontend.cc): the name of the polling engine the process runs, once gRPC is initialised.
const char* grpc_get_poll_strategy_name();

namespace offerd {
namespace {

// One decision-log line (docs/logs-format.md) from the request, the response and its info.
std::string DecisionLogLine(const v1::RecommendRequest& request,
                            const v1::RecommendResponse& response, const DecisionInfo& info) {
  DecisionRecord record;
  record.decision_id = response.decision_id();
  record.ts_ms = info.now_ms;
  record.user_id = request.user_id();
  record.arm = response.arm();
  record.holdout = response.holdout();
  record.snapshot_version = response.snapshot_version();
  record.canary = info.canary;
  record.degraded = response.degraded();
  record.context = {request.context().channel(), request.context().device(),
                    request.context().page(), request.context().country()};
  record.offers.reserve(static_cast<size_t>(response.offers_size()));
  for (const v1::ScoredOffer& o : response.offers()) {
    OfferLogRecord r;
    r.offer_id = o.offer_id();
    r.rank = o.rank();
    r.score = o.score();
    r.propensity = o.propensity();
    r.explored = o.explanation().explored();
    r.p_treated = o.explanation().p_treated();
    r.p_control = o.explanation().p_control();
    r.uplift = o.explanation().uplift();
    r.clv = o.explanation().clv();
    r.expected_value = o.explanation().expected_value();
    r.fatigue_multiplier = o.explanation().fatigue_multiplier();
    r.has_segment = false;
    for (Segment seg : {Segment::kPersuadable, Segment::kSureThing, Segment::kLostCause,
                        Segment::kSleepingDog}) {
      if (SegmentName(seg) == o.explanation().segment()) {
        r.segment = seg;
        r.has_segment = true;
      }
    }
    record.offers.push_back(r);
  }
  return ToJsonLine(record);
}

}  // namespace

OfferdServer::~OfferdServer() { Shutdown(absl::Seconds(1)); }

absl::StatusOr<std::unique_ptr<OfferdServer>> OfferdServer::Create(const Options& options,
                                                                   const Clock* clock) {
  if (options.snapshot_root.empty()) {
    return absl::InvalidArgumentError("--snapshot_root is required");
  }
  if (options.db_path.empty()) return absl::InvalidArgumentError("--db_path is required");
  auto server = std::unique_ptr<OfferdServer>(new OfferdServer());
  server->options_ = options;
  server->clock_ = clock;
  server->registry_ = std::make_unique<MetricsRegistry>(MetricsRegistry::Options());
  server->metrics_ = std::make_unique<ServerMetrics>(server->registry_.get());
  if (!options.log_dir.empty()) {
    for (auto [prefix, writer] : {std::pair{"decisions", &server->decision_log_},
                                  std::pair{"events", &server->event_log_}}) {
      JsonlLogWriter::Options log_options;
      log_options.directory = options.log_dir;
      log_options.file_prefix = prefix;
      absl::StatusOr<std::unique_ptr<JsonlLogWriter>> log = JsonlLogWriter::Create(log_options);
      if (!log.ok()) return log.status();
      *writer = std::move(*log);
    }
  }

  RocksDbStore::Options store_options;
  store_options.path = options.db_path;
  store_options.sst_ingest_directory = options.ingest_sst_dir;
  // Fatigue state expires by the clock that records it (an injected clock in tests and
  // replays), not by the wall clock. The clock outlives the server, hence the store.
  store_options.now_ms = [clock] { return clock->NowMs(); };
  absl::StatusOr<std::unique_ptr<RocksDbStore>> store = RocksDbStore::Open(store_options);
  if (!store.ok()) return store.status();
  server->store_ = std::move(*store);
  log::Info("store_opened", {{"path", options.db_path},
                             {"users_estimate", server->store_->ApproximateUserCount()}});

  for (const std::string& file : options.ingest_files) {
    absl::StatusOr<RocksDbStore::IngestStats> stats = server->store_->IngestUsersFile(file);
    if (!stats.ok()) return stats.status();
    log::Info("users_ingested", {{"file", file},
                                 {"users", stats->users},
                                 {"with_embedding", stats->with_embedding},
                                 {"with_purchases", stats->with_purchases},
                                 {"seconds", stats->seconds},
                                 {"feature_schema_id", server->store_->feature_schema_id()}});
  }

  PolicyConfig policy_config;
  if (!options.policy_config_path.empty()) {
    absl::StatusOr<PolicyConfig> loaded = LoadPolicyConfig(options.policy_config_path);
    if (!loaded.ok()) return loaded.status();
    policy_config = std::move(*loaded);
  }

  RocksDbStore* store_ptr = server->store_.get();
  SnapshotManager::Options snapshot_options;
  snapshot_options.canary_salt = policy_config.assignment.canary_salt;
  snapshot_options.snapshot_root = options.snapshot_root;
  snapshot_options.pin_file = options.pin_file;
  snapshot_options.store_feature_schema_id = [store_ptr] { return store_ptr->feature_schema_id(); };
  snapshot_options.poll_interval = options.snapshot_poll_interval;
  snapshot_options.huge_pages = options.huge_pages;
  absl::StatusOr<std::unique_ptr<SnapshotManager>> snapshots =
      SnapshotManager::Create(std::move(snapshot_options), clock);
  if (!snapshots.ok()) return snapshots.status();
  server->snapshots_ = std::move(*snapshots);

  Recommender::Options recommender_options;
  recommender_options.assignment = policy_config.assignment;
  recommender_options.global_overrides = policy_config.overrides;
  recommender_options.trust_client_time = options.trust_client_time;
  recommender_options.metrics = server->metrics_.get();
  recommender_options.degrade_below = options.degrade_below;
  if (JsonlLogWriter* log = server->decision_log_.get(); log != nullptr) {
    recommender_options.on_decision = [log](const v1::RecommendRequest& request,
                                            const v1::RecommendResponse& response,
                                            const DecisionInfo& info) {
      log->TryAppend(DecisionLogLine(request, response, info));
    };
  }
  server->recommender_ = std::make_unique<Recommender>(server->snapshots_.get(), store_ptr, clock,
                                                       std::move(recommender_options));
  server->events_ = std::make_unique<EventApplier>(server->snapshots_.get(), store_ptr, clock,
                                                   options.trust_client_time,
                                                   server->metrics_.get(), server->event_log_.get());
  const int worker_threads =
      options.worker_threads > 0
          ? options.worker_threads
          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  server->workers_ = std::make_unique<WorkerPool>(worker_threads);
  OfferServiceImpl::Options service_options;
  service_options.max_in_flight = options.max_in_flight;
  service_options.pool = server->workers_.get();
  service_options.max_queue_wait = options.max_queue_wait;
  service_options.max_inline = options.max_inline_calls;
  server->offer_service_ = std::make_unique<OfferServiceImpl>(
      server->recommender_.get(), server->events_.get(), server->metrics_.get(), service_options);
  server->admin_service_ = std::make_unique<AdminServiceImpl>(
      server->snapshots_.get(), store_ptr, clock, clock->NowMs(), options.admin_token);
  server->frontend_ = std::make_unique<AsyncFrontend>(server->offer_service_.get());
  server->metrics_->WatchState(server->snapshots_.get(), store_ptr, clock,
                               server->decision_log_.get(), server->event_log_.get());
  return server;
}

// Threads: the public port is served by AsyncFrontend's one polling thread (see
// server/async_frontend.h for why one). gRPC's epoll engine has one poller at a time for the
// whole process and hands that role to any other thread waiting in a polling queue, so no
// other thread may wait in one: gRPC's default health service (callback API, two threads of
// its own) is replaced by the front end's, and the synchronous services (reflection here,
// AdminService on the admin server) run on "hybrid" servers, whose synchronous threads gRPC
// gives non-polling queues when the server also has a polled async queue. The public server
// has the front end's; the admin server gets one that is never polled (admin_idle_cq_), and
// its connections are read by the front end's thread like every other socket (which needs
// gRPC's epoll1 engine, with its one epoll set for the process: Start() refuses another, be it
// set by GRPC_POLL_STRATEGY or gRPC's own fallback when epoll1 cannot start).
// Measured at 1,000 calls/s: 0.1 futex calls per Recommend instead of 4.3, and 40% less server
// CPU per Recommend.
absl::Status OfferdServer::Start() {
  grpc::EnableDefaultHealthCheckService(false);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (!options_.tls_cert_pem.empty()) {
    grpc::SslServerCredentialsOptions ssl(
        options_.tls_client_ca_pem.empty()
            ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
            : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    ssl.pem_key_cert_pairs.push_back({options_.tls_key_pem, options_.tls_cert_pem});
    ssl.pem_root_certs = options_.tls_client_ca_pem;
    credentials = grpc::SslServerCredentials(ssl);
  }
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options_.listen, credentials, &port_);
  frontend_->Register(&builder);
  builder.SetMaxReceiveMessageSize(options_.max_receive_message_bytes);
  builder.SetMaxSendMessageSize(options_.max_receive_message_bytes);
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on --listen=", options_.listen));
  }
  frontend_->Start();
  if (const char* engine = grpc_get_poll_strategy_name();
      engine == nullptr || std::strcmp(engine, "epoll1") != 0) {
    Shutdown(absl::Seconds(1));
    const char* env = std::getenv("GRPC_POLL_STRATEGY");
    return absl::FailedPreconditionError(absl::StrCat(
        "gRPC runs its \"", engine == nullptr ? "unknown" : engine, "\" polling engine",
        env != nullptr ? absl::StrCat(" (GRPC_POLL_STRATEGY=", env, ")") : "",
        ": offerd needs epoll1, whose one epoll set lets the front end's thread read every "
        "port (unset GRPC_POLL_STRATEGY or set it to epoll1)"));
  }

  grpc::ServerBuilder admin_builder;
  admin_builder.AddListeningPort(options_.admin_listen, grpc::InsecureServerCredentials(),
                                 &admin_port_);
  admin_builder.RegisterService(admin_service_.get());
  admin_idle_cq_ = admin_builder.AddCompletionQueue();
  admin_server_ = admin_builder.BuildAndStart();
  if (admin_server_ == nullptr || admin_port_ == 0) {
    Shutdown(absl::Seconds(1));
    return absl::UnavailableError(
        absl::StrCat("cannot listen on --admin_listen=", options_.admin_listen));
  }
  if (!options_.metrics_listen.empty()) {
    HttpServer::Options http_options;
    http_options.listen_address = options_.metrics_listen;
    http_options.readiness = [this]() -> absl::Status {
      if (!ready_.load()) return absl::UnavailableError("starting or shutting down");
      if (snapshots_->Pin() == nullptr) return absl::UnavailableError("no bundle loaded");
      return absl::OkStatus();
    };
    absl::StatusOr<std::unique_ptr<HttpServer>> http = HttpServer::Start(http_options, registry_.get());
    if (!http.ok()) {
      Shutdown(absl::Seconds(1));
      return http.status();
    }
    http_ = std::move(*http);
  }
  frontend_->SetServing(true);
  ready_ = true;
  if (const char* simd_cap = std::getenv("OFFERD_SIMD");
      simd_cap != nullptr && std::strcmp(simd_cap, "avx2") != 0 &&
      std::strcmp(simd_cap, "generic") != 0) {
    log::Warning("simd_override_ignored",
                 {{"OFFERD_SIMD", simd_cap}, {"accepted", "avx2, generic"},
                  {"simd", simd::Best().name}});
  }
  log::Info("serving", {{"listen", options_.listen},
                        {"port", port_},
                        {"metrics_port", metrics_port()},
                        {"admin_listen", options_.admin_listen},
                        {"admin_port", admin_port_},
                        {"simd", simd::Best().name}});
  return absl::OkStatus();
}

int OfferdServer::metrics_port() const { return http_ ? http_->port() : 0; }

void OfferdServer::Shutdown(absl::Duration drain) {
  if (shut_down_) return;
  shut_down_ = true;
  ready_ = false;
  if (frontend_ != nullptr) frontend_->BeginShutdown();
  if (server_ != nullptr) {
    server_->Shutdown(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(drain));
  }
  if (admin_server_ != nullptr) {
    admin_server_->Shutdown(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(drain));
  }
  if (admin_idle_cq_ != nullptr) {
    admin_idle_cq_->Shutdown();
    void* tag = nullptr;
    bool ok = false;
    while (admin_idle_cq_->Next(&tag, &ok)) {
    }
  }
  // Every call has finished (gRPC's Shutdown waits for them), so the workers are idle; the
  // front end's queue stays open until they have stopped, since they send replies through it.
  if (workers_ != nullptr) workers_->Stop();
  if (frontend_ != nullptr) frontend_->Shutdown();
  for (JsonlLogWriter* log : {decision_log_.get(), event_log_.get()}) {
    if (log == nullptr) continue;
    if (absl::Status s = log->Close(); !s.ok()) {
      log::Error("log_close_failed", {{"error", std::string(s.message())}});
    }
  }
  if (http_ != nullptr) http_->Stop();
  if (store_ != nullptr) {
    if (absl::Status s = store_->Flush(); !s.ok()) {
      log::Error("store_flush_failed", {{"error", std::string(s.message())}});
    }
  }
  log::Info("stopped");
}

void OfferdServer::Wait() {
  if (server_ != nullptr) server_->Wait();
  if (admin_server_ != nullptr) admin_server_->Wait();
}

}  // namespace offerd
