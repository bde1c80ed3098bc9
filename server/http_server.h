#ifndef OFFERD_SERVER_HTTP_SERVER_H_
#define OFFERD_SERVER_HTTP_SERVER_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

struct mg_connection;
struct mg_context;

namespace offerd {

class MetricsRegistry;

// The operational HTTP endpoint (ARCHITECTURE.md --metrics_listen), over civetweb's C API:
//   GET /metrics  the registry's Prometheus text exposition (200)
//   GET /healthz  200 "ok" while the process is up (liveness)
//   GET /readyz   200 "ok" when Options::readiness returns OK, else 503 "not ready: <reason>"
//   other paths 404; other methods (HEAD included) 405 with "Allow: GET".
// Every response closes its connection (no keep-alive), so the small worker pool is never
// held by idle scrapers.
//
// Thread safety: requests are accepted and written on civetweb's worker threads; the work in
// between (exposition, readiness, logging) runs on the server's own handler threads, see
// http_server.cc for why. Stop() and the destructor may be called from any thread.
class HttpServer {
 public:
  struct Options {
    // "host:port". host: an IPv4 literal ("0.0.0.0" = every interface), a
    // bracketed IPv6 literal ("[::1]") or empty (every IPv4 interface). Port 0
    // picks a free port; read it back with port().
    std::string listen_address = "0.0.0.0:9464";
    // Worker threads; each serves one connection at a time.
    int num_threads = 2;
    // A request not fully received or sent within this time is dropped, so a
    // slow client cannot hold a worker for long. Milliseconds.
    int request_timeout_ms = 10000;
    // /readyz: OK = ready; otherwise 503 with the status message as the reason.
    // Null = always ready. Runs on one of the server's handler threads: must be
    // thread-safe and quick.
    std::function<absl::Status()> readiness;
  };

  // Binds `options.listen_address` and starts serving. `registry` is not owned
  // and must outlive the server. Errors: InvalidArgument for a malformed
  // address, Unavailable when the address cannot be bound (e.g. port in use);
  // the message names the address.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const Options& options,
                                                           const MetricsRegistry* registry);

  // Stops (see Stop()).
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The bound port (the chosen one when listen_address had port 0).
  int port() const { return port_; }

  // Stops accepting, waits for in-flight requests and joins the worker threads.
  // Idempotent.
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  class HandlerThreads;

  HttpServer(const Options& options, const MetricsRegistry* registry);
  static int HandleRequest(mg_connection* connection);
  static int LogMessage(const mg_connection* connection, const char* message);
  struct Response {
    int code = 200;
    std::string reason = "OK";
    std::string content_type = "text/plain; charset=utf-8";
    std::string body = "ok\n";
    std::string extra_headers;
  };
  int Serve(mg_connection* connection) const;
  // The response to `method` `path`; runs on a handler thread.
  void Handle(const std::string& method, const std::string& path, Response* out) const;
  // Opens and closes a connection to the listener, waking civetweb's accept loop.
  void WakeListener() const;

  const Options options_;
  const MetricsRegistry* const registry_;
  // Runs the work between reading a request and writing its response (see http_server.cc).
  // Joined by its destructor, after ~HttpServer() has stopped civetweb.
  std::unique_ptr<HandlerThreads> handlers_;
  int port_ = 0;
  std::string wake_host_;  // address literal to connect to for WakeListener()
  absl::Mutex mu_;
  mg_context* context_ ABSL_GUARDED_BY(mu_) = nullptr;
};

// Splits "host:port" as HttpServer accepts it into civetweb's listening_ports
// syntax. Exposed for tests.
absl::StatusOr<std::string> CivetwebListeningPorts(const std::string& listen_address);

}  // namespace offerd

#endif  // OFFERD_SERVER_HTTP_SERVER_H_
