#ifndef OFFERD_SERVER_ASYNC_FRONTEND_H_
#define OFFERD_SERVER_ASYNC_FRONTEND_H_

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_set>

#include "grpc/health/v1/health.grpc.pb.h"
#include "offerd/v1/offer_service.grpc.pb.h"
#include "server/services.h"

namespace grpc {
class ServerBuilder;
class ServerCompletionQueue;
}  // namespace grpc

namespace offerd {

// The public port's gRPC front end: offerd.v1.OfferService and grpc.health.v1.Health on gRPC's
// async API, driven by one thread of ours blocked on one completion queue.
//
// Why not gRPC's callback API (or its default health service, which uses it): gRPC 1.51 runs
// callback handlers on at least two threads polling one queue, and its epoll engine hands the
// polling role from thread to thread on every event, a futex wake and wait each time (4-7
// futex calls per call measured). On a VM where every wake-up is a trip through the
// hypervisor that more than doubled the server's CPU per Health check (150-210 µs against
// 55-90 µs here) and made its p99 2-5× worse at 1,000 calls/s. With a single thread polling, the
// thread that reads a call also admits it and, while it is alone, computes it (see
// OfferServiceImpl); calls that overlap go to the worker pool, whose threads send their own
// replies.
//
// That holds only while no other thread of the process waits inside gRPC's poller, so every
// other service must use queues that do not poll: see OfferdServer::Start (the admin server
// and reflection are synchronous services on a "hybrid" server).
//
// Health: Check answers SERVING / NOT_SERVING for "" and "offerd.v1.OfferService" (NOT_FOUND
// for other names); Watch streams the current status and every change, until the client
// leaves or the server shuts down (at most kMaxWatchers at once, RESOURCE_EXHAUSTED beyond).
//
// The polling thread is the process's only gRPC poller: while it computes a lone call inline
// (a fraction of a millisecond, or longer if RocksDB stalls a write) no socket is read, the
// admin port's included.
//
// Lifecycle: Register() before BuildAndStart(), Start() after it; at shutdown
// BeginShutdown(), then the server's Shutdown(), then the worker pool's Stop(), then
// Shutdown() here (the queue must outlive every reply a worker may still send). No operation
// starts on the queue after that: the server's Shutdown() returns only once every call has
// been released, even past its deadline, and the polling thread releases a call after the
// call's last operation (ServerTest.ACallHeldOnThePollingThreadPastTheDrainHoldsUpShutdown...).
class AsyncFrontend {
 public:
  static constexpr int kMaxWatchers = 1000;

  explicit AsyncFrontend(OfferServiceImpl* offers) : offers_(offers) {}
  ~AsyncFrontend();  // Shutdown()
  AsyncFrontend(const AsyncFrontend&) = delete;
  AsyncFrontend& operator=(const AsyncFrontend&) = delete;

  // Registers both services and this front end's completion queue.
  void Register(grpc::ServerBuilder* builder);
  // Posts the first call requests and starts the polling thread. Call once, after the
  // server was built.
  void Start();

  // Health status of the public port (NOT_SERVING until set). Thread-safe.
  void SetServing(bool serving);
  // Health NOT_SERVING, watchers told and ended; calls that arrive from now on are still
  // served until the server's Shutdown() stops them.
  void BeginShutdown();
  // Shuts the completion queue down, drains it and joins the thread. Idempotent.
  void Shutdown();

  // OfferService calls that gRPC reported cancelled (by the client, or past their deadline)
  // before they were replied to. Thread-safe.
  int64_t calls_cancelled() const { return calls_cancelled_.load(std::memory_order_relaxed); }

  // Watch calls alive (streaming, parked or ending). Thread-safe.
  int watch_calls() const {
    std::lock_guard<std::mutex> lock(watchers_mu_);
    return watch_calls_;
  }

  // What a Watch call registers while it waits for the next change (implementation detail).
  class Watcher {
   public:
    virtual void Notify() = 0;

   protected:
    ~Watcher() = default;
  };

 private:
  friend class HealthCheckCall;
  friend class HealthWatchCall;
  template <typename Request, typename Response>
  friend class OfferCall;

  void Run();
  // Processes the events already queued or ready to be read, without waiting (at most a
  // bounded number). Polling thread only.
  void TakeReadyEvents();
  // Health state for calls: the status to report, or false if `service` is unknown.
  bool StatusFor(const std::string& service,
                 grpc::health::v1::HealthCheckResponse::ServingStatus* status) const;
  bool shutting_down() const { return shutting_down_.load(std::memory_order_acquire); }
  // Runs `change` under the watcher lock; if it changed the status, notifies every parked
  // watcher (outside the lock).
  void ChangeStatus(const std::function<bool()>& change);

  OfferServiceImpl* const offers_;
  v1::OfferService::AsyncService offer_service_;
  grpc::health::v1::Health::AsyncService health_service_;
  std::unique_ptr<grpc::ServerCompletionQueue> cq_;
  std::thread thread_;
  std::atomic<bool> serving_{false};
  std::atomic<bool> shutting_down_{false};
  std::atomic<int64_t> calls_cancelled_{0};
  bool stopped_ = false;
  mutable std::mutex watchers_mu_;
  std::unordered_set<Watcher*> watchers_;  // guarded by watchers_mu_
  int watch_calls_ = 0;                    // guarded by watchers_mu_
};

}  // namespace offerd

#endif  // OFFERD_SERVER_ASYNC_FRONTEND_H_
