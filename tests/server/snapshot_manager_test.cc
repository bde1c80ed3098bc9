#include "server/snapshot_manager.h"

#include <atomic>
#include <condition_variable>
#include <future>
#include <mutex>
#include <filesystem>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>

#include "tests/test_util/bundle_writer.h"
#include "tests/test_util/temp_dir.h"

namespace offerd {
namespace {

using testing::TempDir;
using testing::TestWorld;

class SnapshotManagerTest : public ::testing::Test {
 protected:
  std::unique_ptr<SnapshotManager> Create(SnapshotManager::Options options = {}) {
    options.snapshot_root = tmp_.path();
    options.poll_interval = absl::ZeroDuration();  // tests poll explicitly
    absl::StatusOr<std::unique_ptr<SnapshotManager>> manager =
        SnapshotManager::Create(std::move(options), &clock_);
    EXPECT_TRUE(manager.ok()) << manager.status();
    return manager.ok() ? std::move(*manager) : nullptr;
  }
  static std::string Version(const SnapshotManager& m) {
    std::shared_ptr<const Bundle> b = m.Pin();
    return b ? b->version() : "";
  }
  void Corrupt(const std::string& version) {
    std::ofstream(tmp_.Join(version + "/MANIFEST.json")) << "{ not json";
  }

  TempDir tmp_;
  TestWorld world_;
  FakeClock clock_{1'790'000'000'000};
};

TEST_F(SnapshotManagerTest, RetiredBundleIsDestroyedOnTheLoaderThreadAfterItsLastRequest) {
  world_.PublishBundle(tmp_.path(), "v1");
  // Standard-library synchronisation in this test so ThreadSanitizer can check it.
  std::mutex mu;
  std::condition_variable destroyed_cv;
  std::vector<std::pair<std::string, std::thread::id>> destroyed;
  SnapshotManager::Options options;
  options.on_bundle_destroyed = [&](const std::string& version) {
    std::lock_guard<std::mutex> lock(mu);
    destroyed.push_back({version, std::this_thread::get_id()});
    destroyed_cv.notify_all();
  };
  std::unique_ptr<SnapshotManager> manager = Create(options);
  ASSERT_NE(manager, nullptr);

  // A "request" pins v1 and holds it while v2 is published.
  std::promise<void> pinned_promise, release_promise;
  std::future<void> pinned = pinned_promise.get_future(), release = release_promise.get_future();
  std::thread::id request_thread;
  std::thread request([&] {
    request_thread = std::this_thread::get_id();
    std::shared_ptr<const Bundle> bundle = manager->Pin("some-user");
    EXPECT_EQ(bundle->version(), "v1");
    pinned_promise.set_value();
    release.wait();
    bundle.reset();  // the last reference to v1 goes away on the request thread
  });
  pinned.wait();
  world_.PublishBundle(tmp_.path(), "v2");
  ASSERT_TRUE(manager->LoadVersion("v2").ok());
  EXPECT_EQ(Version(*manager), "v2");
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_TRUE(destroyed.empty()) << "v1 destroyed while a request still held it";
  }
  release_promise.set_value();
  request.join();
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(destroyed_cv.wait_for(lock, std::chrono::seconds(30),
                                      [&] { return !destroyed.empty(); }));
    EXPECT_EQ(destroyed[0].first, "v1");
    EXPECT_EQ(destroyed[0].second, manager->loader_thread_id());
    EXPECT_NE(destroyed[0].second, request_thread);
  }
}

TEST_F(SnapshotManagerTest, WatcherPublishesTheHighestValidVersionAndRemembersRejections) {
  world_.PublishBundle(tmp_.path(), "v1");
  std::unique_ptr<SnapshotManager> manager = Create();
  ASSERT_NE(manager, nullptr);
  world_.PublishBundle(tmp_.path(), "v2");
  manager->PollNow();
  EXPECT_EQ(Version(*manager), "v2");

  world_.PublishBundle(tmp_.path(), "v3");
  Corrupt("v3");
  manager->PollNow();
  EXPECT_EQ(Version(*manager), "v2");
  SnapshotManager::StatusSnapshot status = manager->Status();
  ASSERT_EQ(status.rejected.count("v3"), 1u);
  EXPECT_NE(status.rejected["v3"].error.find("MANIFEST.json: not valid JSON"), std::string::npos);
  const int64_t failed = status.loads_failed;

  // Not retried while its files are unchanged.
  manager->PollNow();
  manager->PollNow();
  EXPECT_EQ(manager->Status().loads_failed, failed);

  // Fixed files are retried and published.
  std::filesystem::remove_all(tmp_.Join("v3"));
  world_.PublishBundle(tmp_.path(), "v3");
  manager->PollNow();
  EXPECT_EQ(Version(*manager), "v3");
  status = manager->Status();
  EXPECT_EQ(status.rejected.count("v3"), 0u);
  EXPECT_EQ(status.previous->version, "v2");

  // Directories being written (.tmp-*) are ignored.
  std::filesystem::create_directories(tmp_.Join(".tmp-v9"));
  manager->PollNow();
  EXPECT_EQ(Version(*manager), "v3");
}

TEST_F(SnapshotManagerTest, PinsHoldAgainstTheWatcherAndAcrossRestarts) {
  world_.PublishBundle(tmp_.path(), "v1");
  world_.PublishBundle(tmp_.path(), "v2");
  std::unique_ptr<SnapshotManager> manager = Create();
  ASSERT_NE(manager, nullptr);
  EXPECT_EQ(Version(*manager), "v2");
  EXPECT_FALSE(manager->Rollback().ok());  // nothing to go back to yet

  ASSERT_TRUE(manager->LoadVersion("v1").ok());
  EXPECT_EQ(manager->Status().pinned_version, "v1");
  manager->PollNow();
  EXPECT_EQ(Version(*manager), "v1");  // the watcher does not undo an explicit load

  manager.reset();  // restart: the pin survives
  manager = Create();
  ASSERT_NE(manager, nullptr);
  EXPECT_EQ(Version(*manager), "v1");

  ASSERT_TRUE(manager->Unpin().ok());
  manager->PollNow();
  EXPECT_EQ(Version(*manager), "v2");

  absl::StatusOr<SnapshotManager::BundleInfo> back = manager->Rollback();
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->version, "v1");
  manager->PollNow();
  EXPECT_EQ(Version(*manager), "v1");  // a rollback is not undone by the next poll
  EXPECT_EQ(manager->Status().pinned_version, "v1");
}

TEST_F(SnapshotManagerTest, PinFileOutsideAReadOnlyBundleRootHoldsAcrossRestarts) {
  world_.PublishBundle(tmp_.path(), "v1");
  world_.PublishBundle(tmp_.path(), "v2");
  TempDir state;  // per-replica storage; the bundle root itself is never written
  SnapshotManager::Options options;
  options.pin_file = state.Join("PINNED");
  std::unique_ptr<SnapshotManager> manager = Create(options);
  ASSERT_NE(manager, nullptr);
  ASSERT_TRUE(manager->LoadVersion("v1").ok());
  EXPECT_TRUE(std::filesystem::exists(state.Join("PINNED")));
  EXPECT_FALSE(std::filesystem::exists(tmp_.Join("PINNED")));

  manager.reset();  // restart with the same pin file
  manager = Create(options);
  ASSERT_NE(manager, nullptr);
  EXPECT_EQ(Version(*manager), "v1");
  ASSERT_TRUE(manager->Unpin().ok());
  EXPECT_FALSE(std::filesystem::exists(state.Join("PINNED")));
  manager->PollNow();
  EXPECT_EQ(Version(*manager), "v2");
}

TEST_F(SnapshotManagerTest, ABadPinnedOrNewestBundleDoesNotStopStartup) {
  world_.PublishBundle(tmp_.path(), "v1");
  world_.PublishBundle(tmp_.path(), "v2");
  world_.PublishBundle(tmp_.path(), "v3");
  Corrupt("v3");
  std::ofstream(tmp_.Join("PINNED")) << "v2\n";
  Corrupt("v2");
  std::unique_ptr<SnapshotManager> manager = Create();
  ASSERT_NE(manager, nullptr);
  EXPECT_EQ(Version(*manager), "v1");
  EXPECT_EQ(manager->Status().rejected.size(), 2u);

  Corrupt("v1");
  SnapshotManager::Options options;
  options.snapshot_root = tmp_.path();
  absl::StatusOr<std::unique_ptr<SnapshotManager>> none = SnapshotManager::Create(options, &clock_);
  ASSERT_FALSE(none.ok());
  for (const char* v : {"bundle v1:", "bundle v2:", "bundle v3:"}) {
    EXPECT_NE(none.status().message().find(v), absl::string_view::npos) << none.status();
  }
}

TEST_F(SnapshotManagerTest, CanaryServesADeterministicFractionUntilPromoteOrRollback) {
  world_.PublishBundle(tmp_.path(), "v1");
  world_.PublishBundle(tmp_.path(), "v2");
  std::ofstream(tmp_.Join("PINNED")) << "v1\n";
  std::unique_ptr<SnapshotManager> manager = Create();
  ASSERT_NE(manager, nullptr);
  ASSERT_EQ(Version(*manager), "v1");
  EXPECT_FALSE(manager->LoadVersion("v2", 1.5).ok());
  ASSERT_TRUE(manager->LoadVersion("v2", 0.2).ok());
  EXPECT_FALSE(manager->LoadVersion("v2", 0.3).ok());  // one canary at a time

  constexpr int kUsers = 20000;
  int on_canary = 0;
  for (int i = 0; i < kUsers; ++i) {
    const std::string user = "user-" + std::to_string(i);
    const std::string v = manager->Pin(user)->version();
    on_canary += v == "v2";
    EXPECT_EQ(manager->Pin(user)->version(), v);  // sticky per user
  }
  // Binomial(20000, 0.2): sd = 56.6; allow 5 sd.
  EXPECT_NEAR(on_canary, 0.2 * kUsers, 5 * 56.6);
  EXPECT_EQ(Version(*manager), "v1");
  EXPECT_EQ(manager->Status().canary->version, "v2");

  ASSERT_TRUE(manager->Rollback().ok());  // drops the candidate
  EXPECT_FALSE(manager->Status().canary.has_value());
  for (int i = 0; i < 100; ++i) EXPECT_EQ(manager->Pin("u" + std::to_string(i))->version(), "v1");

  ASSERT_TRUE(manager->LoadVersion("v2", 0.5).ok());
  absl::StatusOr<SnapshotManager::BundleInfo> promoted = manager->Promote();
  ASSERT_TRUE(promoted.ok());
  for (int i = 0; i < 100; ++i) EXPECT_EQ(manager->Pin("u" + std::to_string(i))->version(), "v2");
  EXPECT_EQ(manager->Status().pinned_version, "v2");
  EXPECT_FALSE(manager->Promote().ok());
}

TEST_F(SnapshotManagerTest, RejectsVersionsOutsideTheRoot) {
  world_.PublishBundle(tmp_.path(), "v1");
  std::unique_ptr<SnapshotManager> manager = Create();
  ASSERT_NE(manager, nullptr);
  for (const char* bad : {"../v1", "/etc", ".tmp-v1", "", "a/b"}) {
    absl::StatusOr<SnapshotManager::BundleInfo> r = manager->LoadVersion(bad);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(Version(*manager), "v1");
}

}  // namespace
}  // namespace offerd
