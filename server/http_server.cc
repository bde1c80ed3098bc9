#include "server/http_server.h"

#include <arpa/inet.h>
#include <civetweb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "server/log.h"
#include "server/metrics.h"

namespace offerd {
namespace {

void InitCivetwebOnce() {
  // mg_init_library is not thread-safe and must run before the first mg_start;
  // without it civetweb initialises itself lazily on every mg_start ("legacy
  // init") and leaks.
  static const bool initialized = [] {
    mg_init_library(0);  // no TLS
    return true;
  }();
  (void)initialized;
}

void Respond(mg_connection* connection, int code, absl::string_view reason,
             absl::string_view content_type, absl::string_view body,
             absl::string_view extra_headers = "") {
  std::string response =
      absl::StrCat("HTTP/1.1 ", code, " ", reason, "\r\nContent-Type: ", content_type,
                   "\r\nContent-Length: ", body.size(),
                   "\r\nCache-Control: no-store\r\nConnection: close\r\n", extra_headers, "\r\n");
  response.append(body.data(), body.size());
  mg_write(connection, response.data(), response.size());
}

constexpr absl::string_view kPlainText = "text/plain; charset=utf-8";

// Where to connect to reach a listener on `listen_address` (already validated).
std::string WakeHost(absl::string_view listen_address) {
  absl::string_view host = listen_address.substr(0, listen_address.rfind(':'));
  if (host.empty() || host == "0.0.0.0") return "127.0.0.1";
  if (host.front() == '[') host = host.substr(1, host.size() - 2);
  if (host == "::") return "::1";
  return std::string(host);
}

}  // namespace

// Why civetweb's threads do not run our code: Debian builds civetweb with a fixed 100 KiB
// thread stack (USE_STACK_SIZE), and glibc carves each thread's static TLS out of the stack it
// was asked for. OpenBLAS (linked in by FAISS) alone has 60 KiB of TLS, so about 23 KiB
// remain, of which civetweb's request parsing uses 17 KiB: a scrape that reached a lazily
// bound symbol overflowed into the guard page and killed the process. So civetweb's threads
// only read the request line and write the response; everything in between runs here, on
// threads with the default stack. One handler thread per civetweb worker, so nothing queues
// that civetweb would not have queued itself.
class HttpServer::HandlerThreads {
 public:
  explicit HandlerThreads(int num_threads) {
    threads_.reserve(static_cast<size_t>(num_threads));
    for (int i = 0; i < num_threads; ++i) threads_.emplace_back([this] { Loop(); });
  }

  ~HandlerThreads() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    work_cv_.notify_all();
    for (std::thread& thread : threads_) thread.join();
  }

  // Runs `fn` on a handler thread and returns once it has run. After shutdown began (never
  // while civetweb still serves, see the member order in HttpServer) it runs `fn` inline.
  void Run(const std::function<void()>& fn) {
    Job job{&fn};
    std::unique_lock<std::mutex> lock(mu_);
    if (stopping_) {
      lock.unlock();
      fn();
      return;
    }
    jobs_.push_back(&job);
    work_cv_.notify_one();
    done_cv_.wait(lock, [&] { return job.done; });
  }

 private:
  struct Job {
    const std::function<void()>* fn;
    bool done = false;
  };

  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      work_cv_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping, and nothing left to run
      Job* job = jobs_.front();
      jobs_.pop_front();
      lock.unlock();
      (*job->fn)();
      lock.lock();
      job->done = true;
      done_cv_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  std::deque<Job*> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

absl::StatusOr<std::string> CivetwebListeningPorts(const std::string& listen_address) {
  const auto error = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics listen address '", listen_address, "': ", why));
  };
  const size_t colon = listen_address.rfind(':');
  if (colon == std::string::npos) return error("expected host:port");
  const absl::string_view host = absl::string_view(listen_address).substr(0, colon);
  const absl::string_view port_text = absl::string_view(listen_address).substr(colon + 1);
  int port = 0;
  if (port_text.empty() || port_text.size() > 5 ||
      port_text.find_first_not_of("0123456789") != absl::string_view::npos ||
      !absl::SimpleAtoi(port_text, &port) || port > 65535) {
    return error("the port must be a number in 0..65535");
  }
  if (host.empty()) return std::string(port_text);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    in6_addr address6;
    const std::string literal(host.substr(1, host.size() - 2));
    if (inet_pton(AF_INET6, literal.c_str(), &address6) != 1) {
      return error("the host is not an IPv6 literal");
    }
    return listen_address;
  }
  in_addr address4;
  if (inet_pton(AF_INET, std::string(host).c_str(), &address4) != 1) {
    return error("the host must be an IPv4 literal, a bracketed IPv6 literal, or empty");
  }
  return listen_address;
}

HttpServer::HttpServer(const Options& options, const MetricsRegistry* registry)
    : options_(options), registry_(registry) {}

HttpServer::~HttpServer() { Stop(); }

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const Options& options,
                                                              const MetricsRegistry* registry) {
  absl::StatusOr<std::string> ports = CivetwebListeningPorts(options.listen_address);
  if (!ports.ok()) return ports.status();
  if (registry == nullptr) return absl::InvalidArgumentError("HttpServer needs a registry");
  if (options.num_threads < 1 || options.request_timeout_ms < 1) {
    return absl::InvalidArgumentError("HttpServer: num_threads and request_timeout_ms must be > 0");
  }
  InitCivetwebOnce();

  std::unique_ptr<HttpServer> server(new HttpServer(options, registry));
  server->handlers_ = std::make_unique<HandlerThreads>(options.num_threads);
  // The first call of each function binds its symbol lazily, which itself needs stack: make
  // those first calls here, not on civetweb's threads.
  server->handlers_->Run([] {});
  const std::string num_threads = std::to_string(options.num_threads);
  const std::string timeout_ms = std::to_string(options.request_timeout_ms);
  const char* civetweb_options[] = {"listening_ports",
                                    ports->c_str(),
                                    "num_threads",
                                    num_threads.c_str(),
                                    "request_timeout_ms",
                                    timeout_ms.c_str(),
                                    "enable_keep_alive",
                                    "no",
                                    nullptr};
  mg_callbacks callbacks = {};
  callbacks.begin_request = &HttpServer::HandleRequest;
  callbacks.log_message = &HttpServer::LogMessage;
  mg_init_data init = {};
  init.callbacks = &callbacks;
  init.user_data = server.get();
  init.configuration_options = civetweb_options;
  char error_text[256] = "";
  unsigned error_code = 0;
  mg_error_data error = {};
  error.code = &error_code;
  error.text = error_text;
  error.text_buffer_size = sizeof(error_text);

  mg_context* context = mg_start2(&init, &error);
  if (context == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", options.listen_address, ": ",
                     error_text[0] != '\0' ? error_text : "civetweb failed to start"));
  }
  mg_server_port bound[4] = {};
  const int num_ports = mg_get_server_ports(context, 4, bound);
  if (num_ports < 1 || bound[0].port <= 0) {
    mg_stop(context);
    return absl::InternalError(
        absl::StrCat("cannot read the bound port of ", options.listen_address));
  }
  server->port_ = bound[0].port;
  server->wake_host_ = WakeHost(options.listen_address);
  absl::MutexLock lock(&server->mu_);
  server->context_ = context;
  return server;
}

void HttpServer::Stop() {
  mg_context* context;
  {
    absl::MutexLock lock(&mu_);
    context = std::exchange(context_, nullptr);
  }
  if (context == nullptr) return;
  // civetweb's listener thread polls its sockets with a 2 s timeout and only then sees the
  // stop flag, so mg_stop alone takes up to 2 s (every test and every shutdown would pay it).
  // Connecting to the listener wakes the poll at once; keep poking until mg_stop returns.
  std::atomic<bool> stopped{false};
  std::thread stopper([context, &stopped] {
    mg_stop(context);
    stopped = true;
  });
  while (!stopped) {
    WakeListener();
    for (int i = 0; i < 20 && !stopped; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  stopper.join();
}

void HttpServer::WakeListener() const {
  sockaddr_storage address = {};
  socklen_t length = 0;
  if (wake_host_.find(':') != std::string::npos) {
    auto* address6 = reinterpret_cast<sockaddr_in6*>(&address);
    address6->sin6_family = AF_INET6;
    address6->sin6_port = htons(static_cast<uint16_t>(port_));
    if (inet_pton(AF_INET6, wake_host_.c_str(), &address6->sin6_addr) != 1) return;
    length = sizeof(sockaddr_in6);
  } else {
    auto* address4 = reinterpret_cast<sockaddr_in*>(&address);
    address4->sin_family = AF_INET;
    address4->sin_port = htons(static_cast<uint16_t>(port_));
    if (inet_pton(AF_INET, wake_host_.c_str(), &address4->sin_addr) != 1) return;
    length = sizeof(sockaddr_in);
  }
  const int fd = socket(address.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return;
  // Non-blocking: a loopback connect completes or fails at once; either way, close.
  (void)connect(fd, reinterpret_cast<const sockaddr*>(&address), length);
  close(fd);
}

int HttpServer::HandleRequest(mg_connection* connection) {
  const mg_request_info* request = mg_get_request_info(connection);
  if (request == nullptr || request->user_data == nullptr) return 0;
  return static_cast<const HttpServer*>(request->user_data)->Serve(connection);
}

int HttpServer::LogMessage(const mg_connection* connection, const char* message) {
  const std::string text = message != nullptr ? message : "";
  const std::function<void()> write = [&] {
    log::Warning("http_server_message", {{"message", text}});
  };
  const mg_context* context = connection != nullptr ? mg_get_context(connection) : nullptr;
  const auto* server =
      context != nullptr ? static_cast<const HttpServer*>(mg_get_user_data(context)) : nullptr;
  if (server != nullptr && server->handlers_ != nullptr) {
    server->handlers_->Run(write);
  } else {
    write();
  }
  return 1;  // handled: civetweb writes nothing itself
}

int HttpServer::Serve(mg_connection* connection) const {
  const mg_request_info* request = mg_get_request_info(connection);
  const std::string method = request->request_method ? request->request_method : "";
  const std::string path = request->local_uri ? request->local_uri : "";
  Response response;
  handlers_->Run([&] {
    try {
      Handle(method, path, &response);
    } catch (const std::exception& e) {
      response = {500, "Internal Server Error", std::string(kPlainText),
                  absl::StrCat("internal error: ", e.what(), "\n"), ""};
    }
  });
  Respond(connection, response.code, response.reason, response.content_type, response.body,
          response.extra_headers);
  return response.code;
}

void HttpServer::Handle(const std::string& method, const std::string& path,
                        Response* out) const {
  const bool known = path == "/metrics" || path == "/healthz" || path == "/readyz";
  if (!known) {
    *out = {404, "Not Found", std::string(kPlainText), "not found\n", ""};
  } else if (method != "GET") {
    *out = {405, "Method Not Allowed", std::string(kPlainText), "method not allowed\n",
            "Allow: GET\r\n"};
  } else if (path == "/metrics") {
    *out = {200, "OK", std::string(kTextExpositionContentType), registry_->TextExposition(), ""};
  } else if (path == "/readyz" && options_.readiness) {
    if (const absl::Status ready = options_.readiness(); !ready.ok()) {
      *out = {503, "Service Unavailable", std::string(kPlainText),
              absl::StrCat("not ready: ", ready.message(), "\n"), ""};
    }
  }
}

}  // namespace offerd
