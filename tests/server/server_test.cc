// In-process integration test: the real server on loopback port 0, called through real
// gRPC channels.
#include "server/server.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include <pthread.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "absl/cleanup/cleanup.h"
#include "core/vector_math.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "offerd/v1/admin_service.grpc.pb.h"
#include "offerd/v1/offer_service.grpc.pb.h"
#include "server/clock.h"
#include "server/metrics.h"
#include "server/snapshot_manager.h"
#include "store/rocksdb_store.h"
#include "tests/test_util/bundle_writer.h"
#include "tests/test_util/temp_dir.h"
#include "tests/test_util/wait_for.h"

namespace offerd {
namespace {

using testing::TempDir;
using testing::TestWorld;
using testing::WaitFor;

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::filesystem::create_directories(tmp_.Join("snapshots"));
    world_.WriteBundle(tmp_.Join("snapshots"), "20261101T000000Z");
    world_.WriteUsers(tmp_.Join("users.jsonl"));
    options_.listen = "127.0.0.1:0";
    options_.admin_listen = "127.0.0.1:0";
    options_.snapshot_root = tmp_.Join("snapshots");
    options_.db_path = tmp_.Join("db");
    options_.ingest_files = {tmp_.Join("users.jsonl")};
    testing::WriteGreedyPolicyConfig(tmp_.Join("policy.json"));
    options_.policy_config_path = tmp_.Join("policy.json");
  }

  void StartServer() {
    absl::StatusOr<std::unique_ptr<OfferdServer>> server = OfferdServer::Create(options_, &clock_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    ASSERT_TRUE(server_->Start().ok());
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()),
                                   grpc::InsecureChannelCredentials());
    admin_channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->admin_port()),
                                         grpc::InsecureChannelCredentials());
    stub_ = v1::OfferService::NewStub(channel_);
    admin_ = v1::AdminService::NewStub(admin_channel_);
  }

  void TearDown() override {
    if (server_) server_->Shutdown(absl::Seconds(1));
  }

  grpc::Status Recommend(const v1::RecommendRequest& request, v1::RecommendResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return stub_->Recommend(&context, request, response);
  }

  v1::RecommendRequest Request(const std::string& user, int n) {
    v1::RecommendRequest request;
    request.set_user_id(user);
    request.set_num_offers(n);
    request.mutable_context()->set_channel("web");
    return request;
  }

  TempDir tmp_;
  TestWorld world_;
  FakeClock clock_{1'790'000'000'000};
  OfferdServer::Options options_;
  std::unique_ptr<OfferdServer> server_;
  std::shared_ptr<grpc::Channel> channel_, admin_channel_;
  std::unique_ptr<v1::OfferService::Stub> stub_;
  std::unique_ptr<v1::AdminService::Stub> admin_;
};

TEST_F(ServerTest, RecommendReturnsTheExactTopNForAKnownUser) {
  StartServer();
  v1::RecommendRequest request = Request("u00003", 5);
  request.set_explain(true);
  v1::RecommendResponse response;
  ASSERT_TRUE(Recommend(request, &response).ok());
  EXPECT_EQ(response.snapshot_version(), "20261101T000000Z");
  EXPECT_FALSE(response.cold_start());
  EXPECT_EQ(response.decision_id().size(), 32u);
  ASSERT_EQ(response.offers_size(), 5);

  // Brute-force the expected top 5 from the same embeddings.
  const std::vector<float> emb = world_.OfferEmbeddings();
  const std::vector<float> user = world_.UserEmbedding(3);
  std::vector<std::pair<double, int>> scored;
  for (int i = 0; i < world_.num_offers; ++i) {
    scored.push_back({-Dot(user, absl::MakeConstSpan(emb.data() + i * world_.dim, world_.dim)), i});
  }
  std::sort(scored.begin(), scored.end());
  for (int r = 0; r < 5; ++r) {
    EXPECT_EQ(response.offers(r).offer_id(), world_.OfferId(scored[r].second)) << "rank " << r;
    EXPECT_EQ(response.offers(r).rank(), r + 1);
    EXPECT_NEAR(response.offers(r).explanation().retrieval_score(), -scored[r].first, 1e-5);
    EXPECT_DOUBLE_EQ(response.offers(r).propensity(), 1.0);
  }
}

TEST_F(ServerTest, ShortDeadlineGetsTheDegradedFallback) {
  options_.degrade_below = absl::Seconds(30);  // every call with a 10 s deadline degrades
  StartServer();
  v1::RecommendRequest request = Request("u00003", 4);
  request.set_explain(true);
  v1::RecommendResponse response;
  ASSERT_TRUE(Recommend(request, &response).ok());
  EXPECT_TRUE(response.degraded());
  EXPECT_TRUE(response.cold_start());
  EXPECT_EQ(response.offers_size(), 4);
  // A call without a deadline ranks fully.
  grpc::ClientContext context;
  v1::RecommendResponse full;
  ASSERT_TRUE(stub_->Recommend(&context, request, &full).ok());
  EXPECT_FALSE(full.degraded());
  EXPECT_FALSE(full.cold_start());
}

TEST_F(ServerTest, UnknownUserGetsColdStartOffers) {
  StartServer();
  v1::RecommendResponse response;
  ASSERT_TRUE(Recommend(Request("someone-new", 3), &response).ok());
  EXPECT_TRUE(response.cold_start());
  EXPECT_EQ(response.offers_size(), 3);
}

TEST_F(ServerTest, DecisionIdsAreUnique) {
  StartServer();
  std::set<std::string> ids;
  for (int i = 0; i < 50; ++i) {
    v1::RecommendResponse response;
    ASSERT_TRUE(Recommend(Request("u00001", 1), &response).ok());
    ids.insert(response.decision_id());
  }
  EXPECT_EQ(ids.size(), 50u);
}

TEST_F(ServerTest, BadInputIsInvalidArgumentNamingTheField) {
  StartServer();
  struct Case {
    std::function<void(v1::RecommendRequest*)> mutate;
    std::string field;
  };
  const std::vector<Case> cases = {
      {[](v1::RecommendRequest* r) { r->set_user_id(""); }, "user_id"},
      {[](v1::RecommendRequest* r) { r->set_user_id(std::string(257, 'u')); }, "user_id"},
      {[](v1::RecommendRequest* r) { r->set_num_offers(0); }, "num_offers"},
      {[](v1::RecommendRequest* r) { r->set_num_offers(101); }, "num_offers"},
      {[](v1::RecommendRequest* r) {
         for (int i = 0; i < 65; ++i) (*r->mutable_context()->mutable_attributes())["k" + std::to_string(i)] = "v";
       },
       "context.attributes"},
      {[](v1::RecommendRequest* r) {
         (*r->mutable_context()->mutable_attributes())["k"] = std::string(257, 'v');
       },
       "context.attributes"},
  };
  for (const Case& c : cases) {
    v1::RecommendRequest request = Request("u00001", 3);
    c.mutate(&request);
    v1::RecommendResponse response;
    grpc::Status status = Recommend(request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.field;
    EXPECT_NE(status.error_message().find(c.field), std::string::npos) << status.error_message();
  }
}

TEST_F(ServerTest, HealthServesAndAdminReportsStatus) {
  StartServer();
  auto health = grpc::health::v1::Health::NewStub(channel_);
  grpc::ClientContext context;
  grpc::health::v1::HealthCheckRequest request;
  grpc::health::v1::HealthCheckResponse response;
  ASSERT_TRUE(health->Check(&context, request, &response).ok());
  EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);

  grpc::ClientContext admin_context;
  v1::GetStatusResponse status;
  ASSERT_TRUE(admin_->GetStatus(&admin_context, v1::GetStatusRequest(), &status).ok());
  EXPECT_EQ(status.current().version(), "20261101T000000Z");
  EXPECT_EQ(status.current().num_offers(), 50);
  EXPECT_EQ(status.store_feature_schema_id(), world_.schema_id);
  EXPECT_GT(status.users_estimate(), 0);
}

TEST_F(ServerTest, AdminLoadRejectsBadBundlesAndKeepsServingThenRollsBack) {
  StartServer();
  // A corrupt newer bundle: its rejection is reported and serving continues.
  const std::string bad = world_.WriteBundle(tmp_.Join("snapshots"), "20261102T000000Z");
  std::ofstream(bad + "/MANIFEST.json") << "not json";
  {
    grpc::ClientContext context;
    v1::LoadSnapshotRequest request;
    request.set_version("20261102T000000Z");
    v1::LoadSnapshotResponse response;
    grpc::Status status = admin_->LoadSnapshot(&context, request, &response);
    EXPECT_FALSE(status.ok());
    EXPECT_NE(status.error_message().find("MANIFEST.json: not valid JSON"), std::string::npos)
        << status.error_message();
  }
  v1::RecommendResponse response;
  ASSERT_TRUE(Recommend(Request("u00001", 2), &response).ok());
  EXPECT_EQ(response.snapshot_version(), "20261101T000000Z");
  {
    grpc::ClientContext context;
    v1::LoadSnapshotRequest request;
    request.set_version("../../etc");
    v1::LoadSnapshotResponse load;
    EXPECT_EQ(admin_->LoadSnapshot(&context, request, &load).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  // A good newer bundle, then a rollback to the first.
  TestWorld other = world_;
  other.seed = 99;
  other.WriteBundle(tmp_.Join("snapshots"), "20261103T000000Z");
  {
    grpc::ClientContext context;
    v1::LoadSnapshotRequest request;
    request.set_version("20261103T000000Z");
    v1::LoadSnapshotResponse load;
    ASSERT_TRUE(admin_->LoadSnapshot(&context, request, &load).ok());
    EXPECT_EQ(load.version(), "20261103T000000Z");
  }
  ASSERT_TRUE(Recommend(Request("u00001", 2), &response).ok());
  EXPECT_EQ(response.snapshot_version(), "20261103T000000Z");
  {
    grpc::ClientContext context;
    v1::RollbackResponse rollback;
    ASSERT_TRUE(admin_->Rollback(&context, v1::RollbackRequest(), &rollback).ok());
    EXPECT_EQ(rollback.version(), "20261101T000000Z");
    EXPECT_EQ(rollback.previous_version(), "20261103T000000Z");
  }
  ASSERT_TRUE(Recommend(Request("u00001", 2), &response).ok());
  EXPECT_EQ(response.snapshot_version(), "20261101T000000Z");

  grpc::ClientContext context;
  v1::GetStatusResponse status;
  ASSERT_TRUE(admin_->GetStatus(&context, v1::GetStatusRequest(), &status).ok());
  ASSERT_EQ(status.rejected_size(), 1);
  EXPECT_EQ(status.rejected(0).version(), "20261102T000000Z");
}

TEST_F(ServerTest, StartupSkipsABadNewestBundle) {
  const std::string bad = world_.WriteBundle(tmp_.Join("snapshots"), "20261109T000000Z");
  std::filesystem::remove(bad + "/offer_embeddings.npy");
  StartServer();
  v1::RecommendResponse response;
  ASSERT_TRUE(Recommend(Request("u00001", 2), &response).ok());
  EXPECT_EQ(response.snapshot_version(), "20261101T000000Z");
  const SnapshotManager::StatusSnapshot status = server_->snapshots()->Status();
  ASSERT_EQ(status.rejected.count("20261109T000000Z"), 1u);
  EXPECT_NE(status.rejected.at("20261109T000000Z").error.find("offer_embeddings.npy"),
            std::string::npos);
}

TEST_F(ServerTest, NoValidBundleFailsCreateWithEveryReason) {
  std::filesystem::remove(tmp_.Join("snapshots/20261101T000000Z/offers.jsonl"));
  absl::StatusOr<std::unique_ptr<OfferdServer>> server = OfferdServer::Create(options_, &clock_);
  ASSERT_FALSE(server.ok());
  EXPECT_NE(server.status().message().find("bundle 20261101T000000Z: offers.jsonl"),
            absl::string_view::npos)
      << server.status();
}

TEST_F(ServerTest, ReportEventsAcceptsValidAndExplainsRejected) {
  StartServer();
  v1::ReportEventsRequest request;
  auto add = [&](const std::string& user, const std::string& offer, v1::EventType type) {
    v1::Event* e = request.add_events();
    e->set_user_id(user);
    e->set_offer_id(offer);
    e->set_type(type);
    e->set_decision_id("d-1");
    return e;
  };
  add("u00001", "o0001", v1::IMPRESSION);
  add("u00001", "o0001", v1::IMPRESSION);  // duplicate of the first
  add("u00001", "no-such-offer", v1::CLICK);
  add("", "o0001", v1::CLICK);
  add("u00001", "o0002", v1::EVENT_TYPE_UNSPECIFIED);
  add("u00001", "", v1::PURCHASE)->set_amount(-1);
  add("u00001", "o0003", v1::DISMISS)->set_timestamp_ms(clock_.NowMs() + 2 * 86'400'000LL);
  add("u00001", "", v1::PURCHASE)->set_amount(12.5);

  grpc::ClientContext context;
  v1::ReportEventsResponse response;
  ASSERT_TRUE(stub_->ReportEvents(&context, request, &response).ok());
  EXPECT_EQ(response.accepted(), 3);
  EXPECT_EQ(response.duplicates(), 1);
  ASSERT_EQ(response.rejected_size(), 5);
  EXPECT_EQ(response.rejected(0).index(), 2);
  EXPECT_NE(response.rejected(0).reason().find("unknown offer"), std::string::npos);
  EXPECT_NE(response.rejected(1).reason().find("user_id"), std::string::npos);
  EXPECT_NE(response.rejected(2).reason().find("type"), std::string::npos);
  EXPECT_NE(response.rejected(3).reason().find("amount"), std::string::npos);
  EXPECT_NE(response.rejected(4).reason().find("future"), std::string::npos);
  absl::StatusOr<UserFatigueRecord> fatigue = server_->store()->GetUserFatigue("u00001");
  ASSERT_TRUE(fatigue.ok());
  ASSERT_NE(fatigue->Find("o0001"), nullptr);
  EXPECT_EQ(ImpressionsInWindow(*fatigue->Find("o0001"), clock_.NowMs(), 3600), 1);

  grpc::ClientContext empty_context;
  EXPECT_EQ(stub_->ReportEvents(&empty_context, v1::ReportEventsRequest(), &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ServerTest, FatigueExpiresByTheServersClockNotTheWallClock) {
  // A year ahead of the wall clock: by the wall clock the impression below never expires.
  constexpr int64_t kDayMs = 86'400'000;
  const int64_t wall_ms = absl::ToUnixMillis(absl::Now());
  clock_.SetMs(wall_ms + 365 * kDayMs);
  StartServer();
  v1::ReportEventsRequest request;
  v1::Event* e = request.add_events();
  e->set_user_id("u00001");
  e->set_offer_id("o0001");
  e->set_type(v1::IMPRESSION);
  e->set_decision_id("d-expiry");
  grpc::ClientContext context;
  v1::ReportEventsResponse response;
  ASSERT_TRUE(stub_->ReportEvents(&context, request, &response).ok());
  ASSERT_EQ(response.accepted(), 1);
  RocksDbStore* store = server_->store();
  ASSERT_TRUE(store->Flush().ok());

  ASSERT_TRUE(store->CompactFatigueForTesting().ok());
  ASSERT_NE(store->GetUserFatigue("u00001")->Find("o0001"), nullptr) << "expired too early";

  clock_.AdvanceMs(91 * kDayMs);  // past the 90-day retention, by the server's clock
  ASSERT_TRUE(store->CompactFatigueForTesting().ok());
  EXPECT_TRUE(store->GetUserFatigue("u00001")->empty());
}


// A call alone in flight runs on the front end's only polling thread. A RocksDB write stall
// must not stop that thread: the call is handed to a worker, which waits for RocksDB, while
// the polling thread keeps answering; the call then completes and is recorded once.
TEST_F(ServerTest, AWriteStallIsWaitedForByAWorkerNotByThePollingThread) {
  StartServer();
  auto health = grpc::health::v1::Health::NewStub(channel_);
  const auto handoffs = [&](int n) {
    return server_->metrics_registry().TextExposition().find(
               "\nofferd_dispatched_total{path=\"inline_stalled\"} " + std::to_string(n) +
               "\n") !=
           std::string::npos;
  };
  ASSERT_TRUE(handoffs(0));
  // Runs `start` (which starts one call and sets `done` when it ends) while writes are stopped.
  const auto during_stall = [&](int handoffs_after, const std::function<void(std::atomic<bool>*)>& start) {
    ASSERT_TRUE(server_->store()->StopWritesForTesting().ok());
    struct ResumeOnFailure {  // a failed assertion must not leave the store stopped
      RocksDbStore* store;
      bool resumed = false;
      ~ResumeOnFailure() {
        if (!resumed) (void)store->ResumeWritesForTesting();
      }
    } resume{server_->store()};
    std::atomic<bool> done{false};
    start(&done);
    ASSERT_TRUE(WaitFor([&] { return handoffs(handoffs_after); }));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    grpc::health::v1::HealthCheckResponse response;
    ASSERT_TRUE(health->Check(&context, grpc::health::v1::HealthCheckRequest(), &response).ok());
    EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);
    EXPECT_FALSE(done.load());  // its worker still waits for RocksDB
    resume.resumed = true;
    ASSERT_TRUE(server_->store()->ResumeWritesForTesting().ok());
    ASSERT_TRUE(WaitFor([&] { return done.load(); }));
  };

  v1::ReportEventsRequest events;
  v1::Event* dismiss = events.add_events();
  dismiss->set_user_id("u00001");
  dismiss->set_offer_id("o0001");
  dismiss->set_type(v1::DISMISS);
  dismiss->set_decision_id("d-1");
  v1::ReportEventsResponse events_response;
  grpc::Status events_status;
  grpc::ClientContext events_context;
  during_stall(1, [&](std::atomic<bool>* done) {
    stub_->async()->ReportEvents(&events_context, &events, &events_response,
                                 [&, done](grpc::Status s) {
                                   events_status = std::move(s);
                                   *done = true;
                                 });
  });
  ASSERT_TRUE(events_status.ok()) << events_status.error_message();
  EXPECT_EQ(events_response.accepted(), 1);
  EXPECT_EQ(events_response.duplicates(), 0);

  v1::RecommendRequest request = Request("u00003", 3);
  v1::RecommendResponse response;
  grpc::Status status;
  grpc::ClientContext context;
  during_stall(2, [&](std::atomic<bool>* done) {
    stub_->async()->Recommend(&context, &request, &response, [&, done](grpc::Status s) {
      status = std::move(s);
      *done = true;
    });
  });
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.offers_size(), 3);
  absl::StatusOr<UserFatigueRecord> fatigue = server_->store()->GetUserFatigue("u00003");
  ASSERT_TRUE(fatigue.ok());
  for (const v1::ScoredOffer& offer : response.offers()) {
    ASSERT_NE(fatigue->Find(offer.offer_id()), nullptr) << offer.offer_id();
    EXPECT_EQ(ImpressionsInWindow(*fatigue->Find(offer.offer_id()), clock_.NowMs(), 3600), 1)
        << offer.offer_id() << " was recorded by the stalled inline run too";
  }
  EXPECT_EQ(DayStateOf(*fatigue, clock_.NowMs()).offers_served_today, 3);
}

}  // namespace
}  // namespace offerd

namespace offerd {
namespace {

// A clock whose next reading, once armed, waits until opened: holds a call on the thread
// that computes it. RocksDB's threads (its compaction filter reads the clock) are never held.
class GateClock final : public Clock {
 public:
  int64_t NowMs() const override {
    char name[16] = {};
    pthread_getname_np(pthread_self(), name, sizeof(name));
    if (std::strncmp(name, "rocksdb:", 8) != 0 && armed_.exchange(false)) {
      std::unique_lock<std::mutex> lock(mu_);
      held_ = true;
      cv_.notify_all();
      cv_.wait(lock, [this] { return open_; });
    }
    return 1'790'000'000'000;
  }
  void Arm() { armed_ = true; }
  bool WaitHeld() const {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [this] { return held_; });
  }
  void Open() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }

 private:
  mutable std::atomic<bool> armed_{false};
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  mutable bool held_ = false;
  bool open_ = false;
};

// The front end's queue may only shut down once no thread can start an operation on it. A
// call computed on the polling thread past the drain deadline must therefore hold up the
// shutdown: gRPC's server shutdown waits for every call to be released, and the call is
// released on the polling thread after its reply. If the order in OfferdServer::Shutdown
// changed, the reply below would go to a queue already shut down.
TEST_F(ServerTest, ACallHeldOnThePollingThreadPastTheDrainHoldsUpShutdownUntilItEnds) {
  GateClock clock;
  options_.snapshot_poll_interval = absl::ZeroDuration();
  absl::StatusOr<std::unique_ptr<OfferdServer>> server = OfferdServer::Create(options_, &clock);
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE((*server)->Start().ok());
  auto stub = v1::OfferService::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string((*server)->port()), grpc::InsecureChannelCredentials()));
  clock.Arm();
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  v1::RecommendRequest request = Request("u00003", 3);
  v1::RecommendResponse response;
  std::atomic<bool> done{false};
  grpc::Status status;
  stub->async()->Recommend(&context, &request, &response, [&](grpc::Status s) {
    status = std::move(s);
    done = true;
  });
  std::thread stopper;
  absl::Cleanup on_failure = [&] {  // a failed assertion must not leave the call held
    clock.Open();
    context.TryCancel();
    if (stopper.joinable()) stopper.join();
    WaitFor([&] { return done.load(); });
  };
  ASSERT_TRUE(clock.WaitHeld());  // the call is alone, so inline: the polling thread is held
  std::atomic<bool> stopped{false};
  stopper = std::thread([&] {
    (*server)->Shutdown(absl::Milliseconds(20));
    stopped = true;
  });
  // Well past the drain deadline (a wait that can only make the check below pass late, never
  // fail wrongly): the shutdown is still waiting for the held call.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(stopped.load());
  clock.Open();
  stopper.join();
  ASSERT_TRUE(WaitFor([&] { return done.load(); }));
  EXPECT_FALSE(status.ok());  // cancelled by the drain: the client sees the server go away
}

}  // namespace
}  // namespace offerd
