#ifndef OFFERD_SERVER_SERVER_H_
#define OFFERD_SERVER_SERVER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace grpc {
class Server;
class ServerCompletionQueue;
}  // namespace grpc

namespace offerd {

class AdminServiceImpl;
class AsyncFrontend;
class Clock;
class EventApplier;
class HttpServer;
class JsonlLogWriter;
class MetricsRegistry;
class ServerMetrics;
class OfferServiceImpl;
class WorkerPool;
class Recommender;
class RocksDbStore;
class SnapshotManager;

// The whole offerd process minus flag parsing and signals: opens the store, ingests user
// features, loads the newest valid bundle, and serves OfferService (+ health, reflection) and
// AdminService on their own listeners.
//
// Thread safety: Start/Shutdown/Wait are called from one controlling thread.
class OfferdServer {
 public:
  struct Options {
    std::string listen = "0.0.0.0:50051";          // OfferService + health + reflection
    std::string admin_listen = "127.0.0.1:50052";  // AdminService
    std::string snapshot_root;                     // required
    std::string pin_file;                          // "" = <snapshot_root>/PINNED
    std::string db_path;                           // required
    std::vector<std::string> ingest_files;         // users.jsonl files to ingest at startup
    std::string ingest_sst_dir;  // IngestFeatures reads SST files only under it; "" = anywhere
    bool trust_client_time = false;
    std::string policy_config_path;  // --policy_config; "" = defaults (holdout 5%, no arms)
    std::string metrics_listen;      // /metrics, /healthz, /readyz; "" = no HTTP endpoint
    std::string log_dir;             // decision and event logs; "" = not written
    std::string admin_token;         // required on admin calls when non-empty
    int max_in_flight = 256;         // OfferService calls beyond this are shed
    // Threads running OfferService calls (0 = one per core); the front end's polling thread
    // admits them (and runs a lone call inline, see max_inline_calls).
    int worker_threads = 0;
    // An admitted call that waited longer than this for a worker is shed.
    absl::Duration max_queue_wait = absl::Milliseconds(50);
    // OfferServiceImpl's inline fast path: 1 = a call alone in flight runs on the front end's
    // polling thread; 0 = every call is handed to a worker.
    int max_inline_calls = 1;
    absl::Duration degrade_below = absl::Milliseconds(2);  // see Recommender::Options
    // TLS on the public port: PEM certificate chain and key (both or neither); with a client
    // CA, clients must present a certificate it signed (mTLS).
    std::string tls_cert_pem, tls_key_pem, tls_client_ca_pem;
    absl::Duration snapshot_poll_interval = absl::Seconds(5);  // zero = no watcher
    // After each bundle load, back large heap mappings with huge pages (AdviseHugePages()).
    bool huge_pages = false;
    int max_receive_message_bytes = 4 << 20;
  };

  // Opens the store, ingests, loads a bundle. Errors: unusable db path, bad ingest file, no
  // valid bundle (the message lists each rejected bundle and why).
  static absl::StatusOr<std::unique_ptr<OfferdServer>> Create(const Options& options,
                                                              const Clock* clock);
  ~OfferdServer();

  // Binds both listeners and starts serving. Error when a port cannot be bound.
  absl::Status Start();

  // Bound ports (useful with port 0). Valid after Start().
  int port() const { return port_; }
  int admin_port() const { return admin_port_; }
  int metrics_port() const;

  // Health -> NOT_SERVING, stop accepting, let in-flight calls finish for at most `drain`,
  // then flush the store. Idempotent.
  void Shutdown(absl::Duration drain);

  // Blocks until Shutdown() has completed.
  void Wait();

  SnapshotManager* snapshots() { return snapshots_.get(); }
  RocksDbStore* store() { return store_.get(); }
  const MetricsRegistry& metrics_registry() const { return *registry_; }

 private:
  OfferdServer() = default;

  Options options_;
  const Clock* clock_ = nullptr;
  std::unique_ptr<MetricsRegistry> registry_;
  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<RocksDbStore> store_;
  std::unique_ptr<JsonlLogWriter> decision_log_;
  std::unique_ptr<JsonlLogWriter> event_log_;
  std::unique_ptr<SnapshotManager> snapshots_;
  std::unique_ptr<Recommender> recommender_;
  std::unique_ptr<EventApplier> events_;
  std::unique_ptr<WorkerPool> workers_;  // outlives the gRPC server's shutdown
  std::unique_ptr<OfferServiceImpl> offer_service_;
  std::unique_ptr<AdminServiceImpl> admin_service_;
  std::unique_ptr<AsyncFrontend> frontend_;  // outlives server_ (its queue is server_'s)
  std::unique_ptr<grpc::Server> server_;
  // Never polled: it makes the admin server "hybrid", so that its synchronous threads wait
  // without polling (see Start()). Outlives admin_server_.
  std::unique_ptr<grpc::ServerCompletionQueue> admin_idle_cq_;
  std::unique_ptr<grpc::Server> admin_server_;
  std::unique_ptr<HttpServer> http_;
  std::atomic<bool> ready_{false};
  int port_ = 0;
  int admin_port_ = 0;
  bool shut_down_ = false;
};

}  // namespace offerd

#endif  // OFFERD_SERVER_SERVER_H_
