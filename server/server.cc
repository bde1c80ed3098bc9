#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "server/clock.h"
#include "server/event_applier.h"
#include "server/log.h"
#include "server/policy_config.h"
#include "server/recommender.h"
#include "server/services.h"
#include "server/snapshot_manager.h"
#include "store/rocksdb_store.h"

namespace offerd {

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

  RocksDbStore::Options store_options;
  store_options.path = options.db_path;
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
  snapshot_options.store_feature_schema_id = [store_ptr] { return store_ptr->feature_schema_id(); };
  snapshot_options.poll_interval = options.snapshot_poll_interval;
  absl::StatusOr<std::unique_ptr<SnapshotManager>> snapshots =
      SnapshotManager::Create(std::move(snapshot_options), clock);
  if (!snapshots.ok()) return snapshots.status();
  server->snapshots_ = std::move(*snapshots);

  Recommender::Options recommender_options;
  recommender_options.assignment = policy_config.assignment;
  recommender_options.global_overrides = policy_config.overrides;
  recommender_options.trust_client_time = options.trust_client_time;
  server->recommender_ = std::make_unique<Recommender>(server->snapshots_.get(), store_ptr, clock,
                                                       std::move(recommender_options));
  server->events_ = std::make_unique<EventApplier>(server->snapshots_.get(), store_ptr, clock,
                                                   options.trust_client_time);
  server->offer_service_ =
      std::make_unique<OfferServiceImpl>(server->recommender_.get(), server->events_.get());
  server->admin_service_ = std::make_unique<AdminServiceImpl>(
      server->snapshots_.get(), store_ptr, clock->NowMs());
  return server;
}

absl::Status OfferdServer::Start() {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  grpc::ServerBuilder builder;
  builder.AddListeningPort(options_.listen, grpc::InsecureServerCredentials(), &port_);
  builder.RegisterService(offer_service_.get());
  builder.SetMaxReceiveMessageSize(options_.max_receive_message_bytes);
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on --listen=", options_.listen));
  }

  grpc::ServerBuilder admin_builder;
  admin_builder.AddListeningPort(options_.admin_listen, grpc::InsecureServerCredentials(),
                                 &admin_port_);
  admin_builder.RegisterService(admin_service_.get());
  admin_server_ = admin_builder.BuildAndStart();
  if (admin_server_ == nullptr || admin_port_ == 0) {
    server_->Shutdown();
    return absl::UnavailableError(
        absl::StrCat("cannot listen on --admin_listen=", options_.admin_listen));
  }
  server_->GetHealthCheckService()->SetServingStatus(true);
  log::Info("serving", {{"listen", options_.listen},
                        {"port", port_},
                        {"admin_listen", options_.admin_listen},
                        {"admin_port", admin_port_}});
  return absl::OkStatus();
}

void OfferdServer::Shutdown(absl::Duration drain) {
  if (shut_down_) return;
  shut_down_ = true;
  if (server_ != nullptr) {
    server_->GetHealthCheckService()->SetServingStatus(false);
    server_->Shutdown(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(drain));
  }
  if (admin_server_ != nullptr) {
    admin_server_->Shutdown(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(drain));
  }
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
