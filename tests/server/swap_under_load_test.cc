// Hot swap under load: client threads call Recommend continuously through real channels while
// bundles are swapped many times, by the watcher and by AdminService.LoadSnapshot. No call may
// fail and no client may see versions go backwards.
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include <gtest/gtest.h>

#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "offerd/v1/admin_service.grpc.pb.h"
#include "offerd/v1/offer_service.grpc.pb.h"
#include "server/clock.h"
#include "server/recommender.h"
#include "store/rocksdb_store.h"
#include "server/server.h"
#include "server/snapshot_manager.h"
#include "tests/test_util/bundle_writer.h"
#include "tests/test_util/temp_dir.h"

namespace offerd {
namespace {

using testing::TempDir;
using testing::TestWorld;

struct ClientReport {
  int64_t ok = 0;
  int64_t failed = 0;
  int64_t backwards = 0;
  std::string first_error;
  std::set<std::string> versions;
};

TEST(SwapUnderLoadTest, NoFailedCallsAndVersionsNeverGoBackwards) {
  TempDir tmp;
  TestWorld world;
  world.num_offers = 400;
  world.dim = 16;
  std::filesystem::create_directories(tmp.Join("snapshots"));
  world.PublishBundle(tmp.Join("snapshots"), "v01");
  world.WriteUsers(tmp.Join("users.jsonl"));

  OfferdServer::Options options;
  options.listen = "127.0.0.1:0";
  options.admin_listen = "127.0.0.1:0";
  options.snapshot_root = tmp.Join("snapshots");
  options.db_path = tmp.Join("db");
  options.ingest_files = {tmp.Join("users.jsonl")};
  options.snapshot_poll_interval = absl::Milliseconds(10);
  // Zero failed calls is the assertion: on two shared cores a loading bundle may hold a worker
  // for a while, which must not count as overload here.
  options.max_queue_wait = absl::Seconds(30);
  testing::WriteGreedyPolicyConfig(tmp.Join("policy.json"));
  options.policy_config_path = tmp.Join("policy.json");
  SystemClock clock;
  absl::StatusOr<std::unique_ptr<OfferdServer>> server = OfferdServer::Create(options, &clock);
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE((*server)->Start().ok());
  const std::string addr = "127.0.0.1:" + std::to_string((*server)->port());

  constexpr int kClients = 4;
  std::atomic<bool> stop{false};
  std::vector<ClientReport> reports(kClients);
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      grpc::ChannelArguments args;
      args.SetInt("grpc.channel_id", c);  // one connection per client
      auto stub = v1::OfferService::NewStub(
          grpc::CreateCustomChannel(addr, grpc::InsecureChannelCredentials(), args));
      ClientReport& report = reports[c];
      std::string last;
      for (int i = 0; !stop.load(); ++i) {
        v1::RecommendRequest request;
        // Known (first 20) and unknown users; many of them, so fatigue caps rarely bind.
        request.set_user_id(world.UserId((i * kClients + c) % 5000));
        request.set_num_offers(5);
        v1::RecommendResponse response;
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
        grpc::Status status = stub->Recommend(&context, request, &response);
        if (!status.ok()) {
          if (report.failed++ == 0) report.first_error = status.error_message();
          continue;
        }
        ++report.ok;
        if (response.snapshot_version() < last) ++report.backwards;
        last = response.snapshot_version();
        report.versions.insert(last);
      }
    });
  }

  auto admin = v1::AdminService::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string((*server)->admin_port()), grpc::InsecureChannelCredentials()));
  constexpr int kSwaps = 12;
  for (int i = 2; i <= kSwaps + 1; ++i) {
    const std::string version = absl::StrFormat("v%02d", i);
    TestWorld next = world;
    next.seed = 100 + i;
    next.PublishBundle(tmp.Join("snapshots"), version);
    if (i % 2 == 0) {
      // Explicit load (pins), then unpin so the watcher continues from there.
      grpc::ClientContext context;
      v1::LoadSnapshotRequest request;
      request.set_version(version);
      v1::LoadSnapshotResponse response;
      ASSERT_TRUE(admin->LoadSnapshot(&context, request, &response).ok());
      grpc::ClientContext unpin_context;
      v1::UnpinResponse unpinned;
      ASSERT_TRUE(admin->Unpin(&unpin_context, v1::UnpinRequest(), &unpinned).ok());
    } else {
      // The watcher picks it up: wait for it with a deadline.
      const absl::Time deadline = absl::Now() + absl::Seconds(30);
      while ((*server)->snapshots()->Pin()->version() != version && absl::Now() < deadline) {
        absl::SleepFor(absl::Milliseconds(5));
      }
      ASSERT_EQ((*server)->snapshots()->Pin()->version(), version);
    }
  }
  // Let every client make calls on the last bundle too.
  std::vector<int64_t> calls_at_end(kClients);
  for (int c = 0; c < kClients; ++c) calls_at_end[c] = reports[c].ok;
  absl::SleepFor(absl::Milliseconds(200));
  stop = true;
  for (std::thread& t : clients) t.join();
  (*server)->Shutdown(absl::Seconds(5));

  int64_t total = 0;
  std::set<std::string> seen;
  for (const ClientReport& r : reports) {
    EXPECT_EQ(r.failed, 0) << r.first_error;
    EXPECT_EQ(r.backwards, 0);
    EXPECT_GT(r.ok, 0);
    total += r.ok;
    seen.insert(r.versions.begin(), r.versions.end());
  }
  EXPECT_GE(seen.size(), 3u) << "clients should have been served by several bundles";
  const SnapshotManager::StatusSnapshot status = (*server)->snapshots()->Status();
  EXPECT_GE(status.loads_ok, kSwaps + 1);  // the watcher may also load an admin-loaded version
  EXPECT_EQ(status.loads_failed, 0);
  RecordProperty("recommend_calls", static_cast<int>(total));
}

}  // namespace
}  // namespace offerd

namespace offerd {
namespace {

// The same swap-under-load, in process: threads call the Recommender directly while the
// watcher and explicit loads swap bundles, without the gRPC transport in between.
TEST(SwapUnderLoadInProcessTest, NoFailedCallsAndVersionsNeverGoBackwards) {
  testing::TempDir tmp;
  testing::TestWorld world;
  world.num_offers = 300;
  world.dim = 16;
  std::filesystem::create_directories(tmp.Join("snapshots"));
  world.PublishBundle(tmp.Join("snapshots"), "v01");
  world.WriteUsers(tmp.Join("users.jsonl"));
  RocksDbStore::Options store_options;
  store_options.path = tmp.Join("db");
  absl::StatusOr<std::unique_ptr<RocksDbStore>> store = RocksDbStore::Open(store_options);
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->IngestUsersFile(tmp.Join("users.jsonl")).ok());
  SystemClock clock;
  SnapshotManager::Options snapshot_options;
  snapshot_options.snapshot_root = tmp.Join("snapshots");
  snapshot_options.poll_interval = absl::Milliseconds(5);
  absl::StatusOr<std::unique_ptr<SnapshotManager>> snapshots =
      SnapshotManager::Create(snapshot_options, &clock);
  ASSERT_TRUE(snapshots.ok()) << snapshots.status();
  Recommender::Options options;
  options.assignment.holdout_fraction = 0;
  Recommender recommender(snapshots->get(), store->get(), &clock, options);

  constexpr int kThreads = 4;
  std::atomic<bool> stop{false};
  std::vector<ClientReport> reports(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::string last;
      for (int i = 0; !stop.load(); ++i) {
        v1::RecommendRequest request;
        request.set_user_id(world.UserId((i * kThreads + t) % 3000));
        request.set_num_offers(3);
        v1::RecommendResponse response;
        absl::Status status = recommender.Recommend(request, &response);
        if (!status.ok()) {
          if (reports[t].failed++ == 0) reports[t].first_error = std::string(status.message());
          continue;
        }
        ++reports[t].ok;
        if (response.snapshot_version() < last) ++reports[t].backwards;
        last = response.snapshot_version();
      }
    });
  }
  for (int i = 2; i <= 9; ++i) {
    const std::string version = absl::StrFormat("v%02d", i);
    testing::TestWorld next = world;
    next.seed = 200 + i;
    next.PublishBundle(tmp.Join("snapshots"), version);
    if (i % 2 == 0) {
      ASSERT_TRUE((*snapshots)->LoadVersion(version).ok());
      ASSERT_TRUE((*snapshots)->Unpin().ok());
    } else {
      const absl::Time deadline = absl::Now() + absl::Seconds(60);
      while ((*snapshots)->Pin()->version() != version && absl::Now() < deadline) {
        absl::SleepFor(absl::Milliseconds(2));
      }
      ASSERT_EQ((*snapshots)->Pin()->version(), version);
    }
  }
  stop = true;
  for (std::thread& t : threads) t.join();
  for (const ClientReport& r : reports) {
    EXPECT_EQ(r.failed, 0) << r.first_error;
    EXPECT_EQ(r.backwards, 0);
    EXPECT_GT(r.ok, 0);
  }
}

}  // namespace
}  // namespace offerd
