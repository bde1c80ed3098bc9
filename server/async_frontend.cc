#include "server/async_frontend.h"

#include <grpcpp/completion_queue.h>
#include <grpcpp/server_builder.h>
#include <grpcpp/server_context.h>
#include <grpcpp/support/async_stream.h>
#include <grpcpp/support/async_unary_call.h>
#include <grpcpp/version_info.h>

#include <vector>

// OfferCall and HealthWatchCall delete themselves when a request fails without waiting for the
// done tag, which gRPC 1.51 never delivers then (grpc/grpc#10136, a TODO in server_context.h).
// server.cc also calls grpc_get_poll_strategy_name(), exported but not in the installed
// headers. Re-check both before moving to another gRPC.
static_assert(GRPC_CPP_VERSION_MAJOR == 1 && GRPC_CPP_VERSION_MINOR == 51,
              "re-check OfferCall's and HealthWatchCall's done-tag handling, and "
              "grpc_get_poll_strategy_name() in server.cc, for this gRPC version");

namespace offerd {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

namespace {

// Calls kept requested from gRPC at all times, per method: a call that arrives while none is
// requested waits inside gRPC until the polling thread posts another.
constexpr int kRecommendRequests = 16;
constexpr int kReportEventsRequests = 8;
constexpr int kHealthCheckRequests = 4;
constexpr int kHealthWatchRequests = 2;

}  // namespace

// Every tag on the completion queue is an Operation; Proceed runs on the polling thread.
class Operation {
 public:
  virtual void Proceed(bool ok) = 0;

 protected:
  ~Operation() = default;
};

// A call's done tag (ServerContext::AsyncNotifyWhenDone): the call is over (replied to,
// cancelled by the client, past its deadline); tells its owner, on the polling thread.
template <typename Owner>
class DoneTag final : public Operation {
 public:
  explicit DoneTag(Owner* owner) : owner_(owner) {}
  void Proceed(bool /*ok*/) override { owner_->OnDone(); }

 private:
  Owner* const owner_;
};

// One unary OfferService call: requested, then handed to OfferServiceImpl, then replied to
// (from the polling thread or a worker), then deleted once gRPC has reported both the reply
// done and the call over (the done tag, which also tells a call still queued for a worker
// that its client cancelled: the worker then skips it).
template <typename Request, typename Response>
class OfferCall final : public Operation, public OfferServiceImpl::Call {
 public:
  using RequestFn = void (v1::OfferService::AsyncService::*)(
      grpc::ServerContext*, Request*, grpc::ServerAsyncResponseWriter<Response>*,
      grpc::CompletionQueue*, grpc::ServerCompletionQueue*, void*);
  using HandleFn = void (OfferServiceImpl::*)(OfferServiceImpl::Call*, const Request*,
                                              Response*);

  static void Listen(AsyncFrontend* frontend, RequestFn request_fn, HandleFn handle_fn) {
    auto* call = new OfferCall(frontend, request_fn, handle_fn);
    call->context_.AsyncNotifyWhenDone(&call->done_);
    (frontend->offer_service_.*request_fn)(&call->context_, &call->request_, &call->responder_,
                                          frontend->cq_.get(), frontend->cq_.get(), call);
  }

  void Proceed(bool ok) override {
    if (replied_) {  // the reply went out (or the call was gone)
      reply_done_ = true;
      MaybeDelete();
      return;
    }
    if (!ok) {
      // The server is shutting down: no call was delivered, hence no done tag to wait for
      // (gRPC 1.51 starts the done notification only for a delivered call, grpc/grpc#10136).
      delete this;
      return;
    }
    pending_done_ = true;
    Listen(frontend_, request_fn_, handle_fn_);  // keep a request posted for the next call
    // Set before handing over: the reply may be sent from a worker at once, and its tag comes
    // back to this thread, which is busy here until we return.
    replied_ = true;
    (frontend_->offers_->*handle_fn_)(this, &request_, &response_);
  }

  std::chrono::system_clock::time_point deadline() const override { return context_.deadline(); }

  // Runs on the polling thread, inside this call's Proceed: calls taken here find this one
  // admitted, so they go to the pool and never nest further.
  void BeforeInline() override { frontend_->TakeReadyEvents(); }

  void Reply(const grpc::Status& status) override {
    if (status.ok()) {
      responder_.Finish(response_, status, this);
    } else {
      responder_.FinishWithError(status, this);
    }
  }

  bool cancelled() const override { return cancelled_.load(std::memory_order_acquire); }

 private:
  friend class DoneTag<OfferCall>;

  OfferCall(AsyncFrontend* frontend, RequestFn request_fn, HandleFn handle_fn)
      : frontend_(frontend), request_fn_(request_fn), handle_fn_(handle_fn), done_(this) {}
  ~OfferCall() = default;

  // Polling thread, like every Proceed.
  void OnDone() {
    if (context_.IsCancelled()) {
      cancelled_.store(true, std::memory_order_release);
      frontend_->calls_cancelled_.fetch_add(1, std::memory_order_relaxed);
    }
    pending_done_ = false;
    MaybeDelete();
  }

  void MaybeDelete() {
    if (reply_done_ && !pending_done_) delete this;
  }

  AsyncFrontend* const frontend_;
  const RequestFn request_fn_;
  const HandleFn handle_fn_;
  grpc::ServerContext context_;
  Request request_;
  Response response_;
  grpc::ServerAsyncResponseWriter<Response> responder_{&context_};
  DoneTag<OfferCall> done_;
  bool replied_ = false;       // handed to OfferServiceImpl, which replies exactly once
  bool reply_done_ = false;    // the reply's tag came back
  bool pending_done_ = false;  // the done tag has yet to come back
  std::atomic<bool> cancelled_{false};  // read by the worker that runs the call
};

// grpc.health.v1.Health/Check, answered on the polling thread.
class HealthCheckCall final : public Operation {
 public:
  static void Listen(AsyncFrontend* frontend) {
    auto* call = new HealthCheckCall(frontend);
    frontend->health_service_.RequestCheck(&call->context_, &call->request_, &call->responder_,
                                           frontend->cq_.get(), frontend->cq_.get(), call);
  }

  void Proceed(bool ok) override {
    if (replied_ || !ok) {
      delete this;
      return;
    }
    Listen(frontend_);
    replied_ = true;
    HealthCheckResponse::ServingStatus status;
    if (!frontend_->StatusFor(request_.service(), &status)) {
      responder_.FinishWithError(
          grpc::Status(grpc::StatusCode::NOT_FOUND,
                       "unknown service \"" + request_.service() +
                           "\"; this port serves \"\" and \"offerd.v1.OfferService\""),
          this);
      return;
    }
    response_.set_status(status);
    responder_.Finish(response_, grpc::Status::OK, this);
  }

 private:
  explicit HealthCheckCall(AsyncFrontend* frontend) : frontend_(frontend) {}
  ~HealthCheckCall() = default;

  AsyncFrontend* const frontend_;
  grpc::ServerContext context_;
  HealthCheckRequest request_;
  HealthCheckResponse response_;
  grpc::ServerAsyncResponseWriter<HealthCheckResponse> responder_{&context_};
  bool replied_ = false;
};

// grpc.health.v1.Health/Watch: writes the status, then waits (parked in the front end's
// watcher set, no operation pending) until it changes; ends at shutdown or when a write fails
// (the client left).
class HealthWatchCall final : public Operation, public AsyncFrontend::Watcher {
 public:
  static void Listen(AsyncFrontend* frontend) {
    auto* call = new HealthWatchCall(frontend);
    // Tells a parked watcher that its client left. gRPC 1.51 delivers this tag only for a
    // call that was delivered (not when the request fails at shutdown).
    call->context_.AsyncNotifyWhenDone(&call->done_);
    frontend->health_service_.RequestWatch(&call->context_, &call->request_, &call->writer_,
                                           frontend->cq_.get(), frontend->cq_.get(), call);
  }

  void Proceed(bool ok) override {
    switch (state_) {
      case State::kRequested: {
        if (!ok) {
          // No call, hence no done tag to wait for: gRPC 1.51 starts the done notification
          // only for a delivered call (grpc/grpc#10136; checked at the top of this file).
          delete this;
          return;
        }
        pending_done_ = true;
        Listen(frontend_);
        {
          std::lock_guard<std::mutex> lock(frontend_->watchers_mu_);
          counted_ = frontend_->watch_calls_ < AsyncFrontend::kMaxWatchers;
          if (counted_) ++frontend_->watch_calls_;
        }
        if (!counted_) {
          End(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                           "too many Watch calls on this server; use Check"));
          return;
        }
        Write();
        return;
      }
      case State::kWriting:
        if (!ok) {  // the client left
          End(grpc::Status::CANCELLED);
          return;
        }
        AfterWrite();
        return;
      case State::kEnding:
        ended_ = true;
        MaybeDelete();
        return;
    }
  }

  // From the thread that changed the status; no write or finish of this call is pending.
  void Notify() override { AfterWrite(); }

 private:
  enum class State { kRequested, kWriting, kEnding };

  friend class DoneTag<HealthWatchCall>;

  explicit HealthWatchCall(AsyncFrontend* frontend) : frontend_(frontend), done_(this) {}
  ~HealthWatchCall() {
    if (counted_) {
      std::lock_guard<std::mutex> lock(frontend_->watchers_mu_);
      --frontend_->watch_calls_;
    }
  }

  HealthCheckResponse::ServingStatus Current() const {
    HealthCheckResponse::ServingStatus status;
    if (!frontend_->StatusFor(request_.service(), &status)) {
      status = HealthCheckResponse::SERVICE_UNKNOWN;
    }
    return status;
  }

  void Write() {
    state_ = State::kWriting;
    sent_ = Current();
    response_.set_status(sent_);
    writer_.Write(response_, this);
  }

  // Park until the next change, unless it already happened or the server is shutting down.
  void AfterWrite() {
    std::unique_lock<std::mutex> lock(frontend_->watchers_mu_);
    if (client_gone_) {  // OnDone ran while the write or a status change was under way
      lock.unlock();
      End(grpc::Status::CANCELLED);
      return;
    }
    if (Current() != sent_) {
      lock.unlock();
      Write();
      return;
    }
    if (frontend_->shutting_down()) {
      lock.unlock();
      End(grpc::Status(grpc::StatusCode::UNAVAILABLE, "server shutting down"));
      return;
    }
    frontend_->watchers_.insert(this);
  }

  void End(const grpc::Status& status) {
    state_ = State::kEnding;
    writer_.Finish(status, this);
  }

  // Polling thread. A parked watcher is ended now; one with a write or the finish pending
  // learns it from that operation's tag.
  void OnDone() {
    pending_done_ = false;
    bool parked = false;
    {
      std::lock_guard<std::mutex> lock(frontend_->watchers_mu_);
      client_gone_ = true;
      parked = frontend_->watchers_.erase(this) > 0;
    }
    if (parked) {
      End(grpc::Status::CANCELLED);
      return;
    }
    MaybeDelete();
  }

  // Deleted once its finish and its done tag have both come back.
  void MaybeDelete() {
    if (ended_ && !pending_done_) delete this;
  }

  AsyncFrontend* const frontend_;
  grpc::ServerContext context_;
  HealthCheckRequest request_;
  HealthCheckResponse response_;
  grpc::ServerAsyncWriter<HealthCheckResponse> writer_{&context_};
  DoneTag<HealthWatchCall> done_;
  State state_ = State::kRequested;
  HealthCheckResponse::ServingStatus sent_ = HealthCheckResponse::UNKNOWN;
  bool counted_ = false;
  bool client_gone_ = false;   // guarded by frontend_->watchers_mu_
  bool pending_done_ = false;  // the done tag has yet to come back
  bool ended_ = false;         // the finish tag came back
};

AsyncFrontend::~AsyncFrontend() { Shutdown(); }

void AsyncFrontend::Register(grpc::ServerBuilder* builder) {
  builder->RegisterService(&offer_service_);
  builder->RegisterService(&health_service_);
  cq_ = builder->AddCompletionQueue();
}

void AsyncFrontend::Start() {
  using RecommendCall = OfferCall<v1::RecommendRequest, v1::RecommendResponse>;
  using EventsCall = OfferCall<v1::ReportEventsRequest, v1::ReportEventsResponse>;
  for (int i = 0; i < kRecommendRequests; ++i) {
    RecommendCall::Listen(this, &v1::OfferService::AsyncService::RequestRecommend,
                          &OfferServiceImpl::Recommend);
  }
  for (int i = 0; i < kReportEventsRequests; ++i) {
    EventsCall::Listen(this, &v1::OfferService::AsyncService::RequestReportEvents,
                       &OfferServiceImpl::ReportEvents);
  }
  for (int i = 0; i < kHealthCheckRequests; ++i) HealthCheckCall::Listen(this);
  for (int i = 0; i < kHealthWatchRequests; ++i) HealthWatchCall::Listen(this);
  thread_ = std::thread([this] { Run(); });
}

void AsyncFrontend::Run() {
  void* tag = nullptr;
  bool ok = false;
  while (cq_->Next(&tag, &ok)) static_cast<Operation*>(tag)->Proceed(ok);
}

void AsyncFrontend::TakeReadyEvents() {
  // Bounded: under a flood the caller goes to the pool well before this.
  constexpr int kMaxEvents = 64;
  void* tag = nullptr;
  bool ok = false;
  for (int i = 0; i < kMaxEvents; ++i) {
    // A deadline in the past: one look at the queue and the sockets, no waiting.
    if (cq_->AsyncNext(&tag, &ok, gpr_inf_past(GPR_CLOCK_MONOTONIC)) !=
        grpc::CompletionQueue::GOT_EVENT) {
      return;
    }
    static_cast<Operation*>(tag)->Proceed(ok);
  }
}

bool AsyncFrontend::StatusFor(const std::string& service,
                              HealthCheckResponse::ServingStatus* status) const {
  if (!service.empty() && service != v1::OfferService::service_full_name()) return false;
  *status = serving_.load(std::memory_order_acquire) ? HealthCheckResponse::SERVING
                                                     : HealthCheckResponse::NOT_SERVING;
  return true;
}

void AsyncFrontend::ChangeStatus(const std::function<bool()>& change) {
  std::vector<Watcher*> parked;
  {
    std::lock_guard<std::mutex> lock(watchers_mu_);
    if (!change()) return;
    parked.assign(watchers_.begin(), watchers_.end());
    watchers_.clear();
  }
  for (Watcher* watcher : parked) watcher->Notify();
}

void AsyncFrontend::SetServing(bool serving) {
  ChangeStatus([&] { return !shutting_down() && serving_.exchange(serving) != serving; });
}

void AsyncFrontend::BeginShutdown() {
  // Each watcher writes NOT_SERVING (if it had not seen it) and then ends.
  ChangeStatus([this] {
    if (stopped_) return false;  // the queue is gone; so are the watchers
    shutting_down_.store(true, std::memory_order_release);
    serving_.store(false, std::memory_order_release);
    return true;
  });
}

void AsyncFrontend::Shutdown() {
  if (stopped_ || cq_ == nullptr) return;
  stopped_ = true;
  cq_->Shutdown();
  if (thread_.joinable()) {
    thread_.join();
  } else {
    Run();  // never started: drain here
  }
}

}  // namespace offerd
