// The worker pool and the admission control built on it: overload is refused at once, and an
// admitted call that waited too long for a worker is shed instead of being answered late.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "grpc/health/v1/health.grpc.pb.h"
#include "server/async_frontend.h"
#include "server/services.h"
#include "server/worker_pool.h"
#include "tests/test_util/wait_for.h"

namespace offerd {
namespace {

using testing::WaitFor;

// A gate that holds worker threads until opened.
class Gate {
 public:
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return open_; });
  }
  void Open() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

TEST(WorkerPoolTest, RunsTasksInOrderOnOneWorker) {
  WorkerPool pool(1);
  std::mutex mu;
  std::vector<int> order;
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(pool.Submit([&, i] {
      std::lock_guard<std::mutex> lock(mu);
      order.push_back(i);
    }));
  }
  pool.Stop();
  ASSERT_EQ(order.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(order[i], i);
}

TEST(WorkerPoolTest, StopRunsEveryQueuedTaskThenRefusesNewOnes) {
  Gate gate;
  std::atomic<int> ran{0};
  WorkerPool pool(2);
  for (int i = 0; i < 2; ++i) pool.Submit([&] { gate.Wait(); ++ran; });
  for (int i = 0; i < 10; ++i) pool.Submit([&] { ++ran; });
  ASSERT_TRUE(WaitFor([&] { return pool.queued() == 10; }));
  std::thread stopper([&] { pool.Stop(); });
  gate.Open();
  stopper.join();
  EXPECT_EQ(ran.load(), 12);
  EXPECT_FALSE(pool.Submit([&] { ++ran; }));
  EXPECT_EQ(ran.load(), 12);
}

TEST(WorkerPoolTest, InitRunsOnEveryWorkerThread) {
  std::atomic<int> inits{0};
  WorkerPool pool(3, [&] { ++inits; });
  pool.Stop();
  EXPECT_EQ(inits.load(), 3);
}

struct AsyncCall {
  grpc::ClientContext context;
  v1::RecommendRequest request;
  v1::RecommendResponse response;
  grpc::Status status;
  std::atomic<bool> done{false};
};

void StartCall(v1::OfferService::Stub* stub, AsyncCall* call) {
  call->request.set_user_id("u1");
  call->request.set_num_offers(3);
  call->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  stub->async()->Recommend(&call->context, &call->request, &call->response,
                           [call](grpc::Status status) {
                             call->status = std::move(status);
                             call->done = true;
                           });
}

// An OfferService on a real loopback gRPC server whose worker pool the test controls. The
// recommender is never reached: every call here is refused before it would run.
class AdmissionTest : public ::testing::Test {
 protected:
  void StartServer(int max_in_flight, absl::Duration max_queue_wait) {
    pool_ = std::make_unique<WorkerPool>(1);
    OfferServiceImpl::Options options;
    options.max_in_flight = max_in_flight;
    options.pool = pool_.get();
    options.max_queue_wait = max_queue_wait;
    options.max_inline = 0;  // a lone call would reach the null recommender
    service_ = std::make_unique<OfferServiceImpl>(nullptr, nullptr, &metrics_, options);
    frontend_ = std::make_unique<AsyncFrontend>(service_.get());
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    frontend_->Register(&builder);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    frontend_->Start();
    channel_ =
        grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials());
    stub_ = v1::OfferService::NewStub(channel_);
  }

  void TearDown() override {
    gate_.Open();
    if (frontend_) frontend_->BeginShutdown();
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
    if (pool_) pool_->Stop();
    if (frontend_) frontend_->Shutdown();
  }

  // Occupies the only worker until gate_ opens.
  void BlockWorker() {
    pool_->Submit([this] { gate_.Wait(); });
    ASSERT_TRUE(WaitFor([&] { return pool_->queued() == 0; }));
  }

  // Starts `call` and waits until it is queued behind the blocked worker.
  void StartQueuedCall(AsyncCall* call) {
    BlockWorker();
    StartCall(stub_.get(), call);
    ASSERT_TRUE(WaitFor([&] { return pool_->queued() == 1; }));
  }

  Gate gate_;
  MetricsRegistry registry_;
  ServerMetrics metrics_{&registry_};
  std::unique_ptr<WorkerPool> pool_;
  std::unique_ptr<OfferServiceImpl> service_;
  std::unique_ptr<AsyncFrontend> frontend_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::OfferService::Stub> stub_;
};

TEST_F(AdmissionTest, BeyondMaxInFlightCallsFailFastWhileAdmittedOnesWait) {
  // A 1 ms queue limit: the two admitted calls are shed when the worker frees up (the
  // recommender is never reached).
  StartServer(/*max_in_flight=*/2, absl::Milliseconds(1));
  BlockWorker();
  AsyncCall first, second;
  StartCall(stub_.get(), &first);
  StartCall(stub_.get(), &second);
  ASSERT_TRUE(WaitFor([&] { return pool_->queued() == 2; }));

  // The worker is busy and two calls are admitted: a third is refused at once, even though
  // the front end's thread is free.
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  v1::RecommendRequest request;
  request.set_user_id("u2");
  v1::RecommendResponse response;
  const auto t0 = std::chrono::steady_clock::now();
  grpc::Status status = stub_->Recommend(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(status.error_message().find("calls in flight"), std::string::npos)
      << status.error_message();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  EXPECT_FALSE(first.done.load());
  EXPECT_FALSE(second.done.load());
  std::this_thread::sleep_for(std::chrono::milliseconds(5));  // past the 1 ms limit
  gate_.Open();
  ASSERT_TRUE(WaitFor([&] { return first.done.load() && second.done.load(); }));
  EXPECT_EQ(first.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(second.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST_F(AdmissionTest, CallThatWaitedTooLongForAWorkerIsShed) {
  StartServer(/*max_in_flight=*/8, absl::Milliseconds(1));
  AsyncCall call;
  ASSERT_NO_FATAL_FAILURE(StartQueuedCall(&call));
  // Make sure it has waited past the 1 ms limit before a worker frees up.
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  gate_.Open();
  ASSERT_TRUE(WaitFor([&] { return call.done.load(); }));
  EXPECT_EQ(call.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(call.status.error_message().find("for a worker"), std::string::npos)
      << call.status.error_message();
}

TEST_F(AdmissionTest, CallWhoseDeadlinePassedWhileQueuedIsNotWorkedOn) {
  StartServer(/*max_in_flight=*/8, absl::Seconds(30));
  BlockWorker();
  AsyncCall call;
  call.request.set_user_id("u1");
  call.context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
  stub_->async()->Recommend(&call.context, &call.request, &call.response,
                            [&call](grpc::Status status) {
                              call.status = std::move(status);
                              call.done = true;
                            });
  const auto deadline = call.context.deadline();
  ASSERT_TRUE(WaitFor([&] { return call.done.load(); }));  // the client's deadline fires
  EXPECT_EQ(call.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  // The server's copy of the deadline is the client's remaining time counted from arrival, a
  // little later than the client's: wait until it has certainly passed too.
  ASSERT_TRUE(WaitFor([&] {
    return std::chrono::system_clock::now() > deadline + std::chrono::milliseconds(100);
  }));
  // The queued call then reaches the worker with its deadline gone; had it been worked on,
  // the null recommender would have crashed this test.
  gate_.Open();
  ASSERT_TRUE(WaitFor([&] { return pool_->queued() == 0; }));
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
}

// A hedged request answered by another replica, or a client that gave up: once the client
// cancels a call that waits for a worker, the worker skips it (the recommender here is null, so
// working on it would crash).
TEST_F(AdmissionTest, CallCancelledWhileQueuedIsNotWorkedOn) {
  StartServer(/*max_in_flight=*/4, absl::Seconds(60));
  AsyncCall call;
  ASSERT_NO_FATAL_FAILURE(StartQueuedCall(&call));
  call.context.TryCancel();
  ASSERT_TRUE(WaitFor([&] { return call.done.load(); }));
  EXPECT_EQ(call.status.error_code(), grpc::StatusCode::CANCELLED);
  ASSERT_TRUE(WaitFor([&] { return frontend_->calls_cancelled() == 1; }));
  EXPECT_EQ(metrics_.shed_cancelled().Value(), 0);
  gate_.Open();
  ASSERT_TRUE(WaitFor([&] { return metrics_.shed_cancelled().Value() == 1; }));
  EXPECT_EQ(metrics_.shed_queue_timeout().Value(), 0);
  EXPECT_EQ(metrics_.shed_deadline().Value(), 0);
  EXPECT_TRUE(WaitFor([&] { return metrics_.in_flight().Value() == 0; }));  // counted out
}

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

TEST_F(AdmissionTest, HealthCheckAnswersTheKnownServicesOnly) {
  StartServer(/*max_in_flight=*/8, absl::Milliseconds(50));
  auto health = grpc::health::v1::Health::NewStub(channel_);
  for (bool serving : {false, true}) {
    frontend_->SetServing(serving);
    for (const char* service : {"", "offerd.v1.OfferService"}) {
      grpc::ClientContext context;
      HealthCheckRequest request;
      request.set_service(service);
      HealthCheckResponse response;
      ASSERT_TRUE(health->Check(&context, request, &response).ok()) << service;
      EXPECT_EQ(response.status(),
                serving ? HealthCheckResponse::SERVING : HealthCheckResponse::NOT_SERVING);
    }
  }
  grpc::ClientContext context;
  HealthCheckRequest request;
  request.set_service("no.such.Service");
  HealthCheckResponse response;
  EXPECT_EQ(health->Check(&context, request, &response).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

// A Watch streams every change; a client that leaves while its watcher waits for the next
// change is noticed at once (gRPC's done notification), so watchers do not pile up.
TEST_F(AdmissionTest, HealthWatchStreamsChangesAndIsReleasedWhenTheClientLeaves) {
  StartServer(/*max_in_flight=*/8, absl::Milliseconds(50));
  frontend_->SetServing(true);
  auto health = grpc::health::v1::Health::NewStub(channel_);
  grpc::ClientContext context;
  HealthCheckRequest request;
  std::unique_ptr<grpc::ClientReader<HealthCheckResponse>> stream =
      health->Watch(&context, request);
  HealthCheckResponse response;
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::SERVING);
  frontend_->SetServing(false);
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_EQ(response.status(), HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(frontend_->watch_calls(), 1);
  // The watcher is parked (no change pending); the client leaves.
  context.TryCancel();
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(WaitFor([&] { return frontend_->watch_calls() == 0; }));
}

}  // namespace
}  // namespace offerd
