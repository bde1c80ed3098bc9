#ifndef OFFERD_SERVER_WORKER_POOL_H_
#define OFFERD_SERVER_WORKER_POOL_H_

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace offerd {

// A fixed set of threads running submitted tasks in FIFO order.
//
// Why offerd has one: one thread reads every OfferService call (AsyncFrontend), and while it
// computes a call it reads none, so new calls would wait inside gRPC, before any of our code
// runs, where no admission bound can see them (measured: past capacity every call waited until
// its deadline). Handing the work to this pool returns that thread at once, so every call
// reaches admission control immediately and the queue it waits in is ours: bounded, and with
// its waiting time known (see OfferServiceImpl).
//
// Thread safety: all methods may be called from any thread. Tasks must not throw.
class WorkerPool {
 public:
  // `threads` >= 1 workers; `init` (optional) runs first on each worker thread (per-thread
  // settings such as the OpenMP thread count).
  explicit WorkerPool(int threads, std::function<void()> init = nullptr);
  ~WorkerPool();  // Stop()

  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Queues `task`; false (task dropped, not run) once Stop() has begun.
  bool Submit(std::function<void()> task);

  // Runs every task already queued, then joins the workers. Idempotent; call it from one
  // controlling thread (the destructor counts as one).
  void Stop();

  // Tasks queued and not yet started.
  size_t queued() const;
  int threads() const { return static_cast<int>(workers_.size()); }

 private:
  void Run(const std::function<void()>& init);

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;  // guarded by mu_
  bool stopping_ = false;                    // guarded by mu_
  std::vector<std::thread> workers_;
};

}  // namespace offerd

#endif  // OFFERD_SERVER_WORKER_POOL_H_
