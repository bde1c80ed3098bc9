#include "store/rocksdb_store.h"

#include <cmath>
#include <atomic>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "store/user_codec.h"
#include "tests/test_util/bundle_writer.h"
#include "tests/test_util/temp_dir.h"
#include "tests/test_util/wait_for.h"

namespace offerd {
namespace {

using testing::TempDir;
using testing::TestWorld;
using testing::WaitFor;

std::unique_ptr<RocksDbStore> OpenStore(const std::string& path) {
  RocksDbStore::Options options;
  options.path = path;
  absl::StatusOr<std::unique_ptr<RocksDbStore>> store = RocksDbStore::Open(options);
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? std::move(*store) : nullptr;
}

// Joins a writer thread caught in stopped writes, resuming them first, also when an assertion
// failed before the test did so itself.
struct JoinAfterResume {
  std::thread& thread;
  RocksDbStore* store;
  ~JoinAfterResume() {
    if (thread.joinable()) {
      (void)store->ResumeWritesForTesting();
      thread.join();
    }
  }
};

class RocksDbStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    world_.WriteUsers(tmp_.Join("users.jsonl"));
    store_ = OpenStore(tmp_.Join("db"));
    ASSERT_NE(store_, nullptr);
  }
  TempDir tmp_;
  TestWorld world_;
  std::unique_ptr<RocksDbStore> store_;
};

TEST_F(RocksDbStoreTest, IngestThenLookup) {
  EXPECT_EQ(store_->feature_schema_id(), "");
  absl::StatusOr<RocksDbStore::IngestStats> stats = store_->IngestUsersFile(tmp_.Join("users.jsonl"));
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->users, 20);
  EXPECT_EQ(stats->with_embedding, 20);
  EXPECT_EQ(store_->feature_schema_id(), world_.schema_id);

  absl::StatusOr<std::optional<UserRecord>> user = store_->GetUser("u00004");
  ASSERT_TRUE(user.ok());
  ASSERT_TRUE(user->has_value());
  EXPECT_EQ((*user)->embedding, world_.UserEmbedding(4));
  ASSERT_EQ((*user)->numeric.size(), 1u);
  EXPECT_FLOAT_EQ((*user)->numeric[0], 24.0f);
  EXPECT_EQ((*user)->categorical, (std::vector<std::string>{"silver"}));

  absl::StatusOr<std::optional<PurchaseSummary>> purchases = store_->GetPurchases("u00004");
  ASSERT_TRUE(purchases.ok());
  ASSERT_TRUE(purchases->has_value());
  EXPECT_EQ((*purchases)->last_purchase_day, 20004);
  EXPECT_EQ((*purchases)->repeat_days, 2);
}

TEST_F(RocksDbStoreTest, UnknownUserIsNotAnError) {
  absl::StatusOr<std::optional<UserRecord>> user = store_->GetUser("nobody");
  ASSERT_TRUE(user.ok());
  EXPECT_FALSE(user->has_value());
  absl::StatusOr<std::optional<PurchaseSummary>> purchases = store_->GetPurchases("nobody");
  ASSERT_TRUE(purchases.ok());
  EXPECT_FALSE(purchases->has_value());
}

TEST_F(RocksDbStoreTest, BadIngestFileWritesNothing) {
  ASSERT_TRUE(store_->IngestUsersFile(tmp_.Join("users.jsonl")).ok());
  // A second file whose third user line is broken: nothing of it may land.
  TestWorld other = world_;
  other.schema_id = "schema-2";
  other.WriteUsers(tmp_.Join("bad.jsonl"));
  std::string text;
  {
    std::ifstream in(tmp_.Join("bad.jsonl"));
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  size_t line_start = 0;
  for (int i = 0; i < 3; ++i) line_start = text.find('\n', line_start) + 1;
  text.insert(line_start, "{\"user_id\": \"\"}\n");
  std::ofstream(tmp_.Join("bad.jsonl")) << text;

  absl::StatusOr<RocksDbStore::IngestStats> stats = store_->IngestUsersFile(tmp_.Join("bad.jsonl"));
  ASSERT_FALSE(stats.ok());
  EXPECT_NE(stats.status().message().find("bad.jsonl:4: user_id: must be 1..256 bytes"),
            absl::string_view::npos)
      << stats.status();
  EXPECT_EQ(store_->feature_schema_id(), world_.schema_id);  // unchanged
  EXPECT_TRUE((*store_->GetUser("u00001"))->feature_schema_id == world_.schema_id);

  EXPECT_EQ(store_->IngestUsersFile(tmp_.Join("missing.jsonl")).status().code(),
            absl::StatusCode::kNotFound);
  std::ofstream(tmp_.Join("empty.jsonl")) << "";
  EXPECT_NE(store_->IngestUsersFile(tmp_.Join("empty.jsonl")).status().message().find("empty"),
            absl::string_view::npos);
}

TEST_F(RocksDbStoreTest, EventsAreCountedOncePerDecision) {
  constexpr int64_t kNow = 1'790'000'000'000;
  UserEvent impression{"u1", "o0001", EventKind::kImpression, kNow, "d1", 0};
  UserEvent again = impression;
  UserEvent other_system{"u1", "o0001", EventKind::kImpression, kNow + 1000, "", 0};
  absl::StatusOr<RocksDbStore::ApplyStats> stats =
      store_->ApplyEvents({impression, again, other_system});
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->applied, 2);
  EXPECT_EQ(stats->duplicates, 1);
  stats = store_->ApplyEvents({impression});
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->duplicates, 1);
  absl::StatusOr<UserFatigueRecord> fatigue = store_->GetUserFatigue("u1");
  ASSERT_TRUE(fatigue.ok());
  EXPECT_EQ(ImpressionsInWindow(*fatigue->Find("o0001"), kNow + 2000, 3600), 2);
  EXPECT_EQ(DayStateOf(*fatigue, kNow).offers_served_today, 2);
}

TEST_F(RocksDbStoreTest, ServedOffersCountAtDecisionTimeAndTheirImpressionDoesNotCountTwice) {
  constexpr int64_t kNow = 1'790'000'000'000;
  ASSERT_TRUE(store_
                  ->DecideAndRecord("u1", "dec-1", kNow,
                                    [](const UserFatigueRecord& f, std::vector<std::string>* out) {
                                      EXPECT_TRUE(f.empty());
                                      *out = {"o1", "o2"};
                                      return absl::OkStatus();
                                    })
                  .ok());
  // The client reports the impressions of that decision, and one shown elsewhere.
  absl::StatusOr<RocksDbStore::ApplyStats> stats = store_->ApplyEvents(
      {{"u1", "o1", EventKind::kImpression, kNow + 5, "dec-1", 0},
       {"u1", "o2", EventKind::kImpression, kNow + 5, "dec-1", 0},
       {"u1", "o1", EventKind::kImpression, kNow + 9, "", 0}});
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->duplicates, 2);
  absl::StatusOr<UserFatigueRecord> fatigue = store_->GetUserFatigue("u1");
  ASSERT_TRUE(fatigue.ok());
  EXPECT_EQ(ImpressionsInWindow(*fatigue->Find("o1"), kNow + 10, 3600), 2);
  EXPECT_EQ(ImpressionsInWindow(*fatigue->Find("o2"), kNow + 10, 3600), 1);
  EXPECT_EQ(DayStateOf(*fatigue, kNow).offers_served_today, 3);
}

TEST_F(RocksDbStoreTest, ConcurrentDecisionsNeverExceedACap) {
  constexpr int64_t kNow = 1'790'000'000'000;
  constexpr int kCap = 5;
  std::vector<std::thread> threads;
  std::atomic<int> served{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        const std::string decision = absl::StrCat("d", t, "-", i);
        ASSERT_TRUE(store_
                        ->DecideAndRecord("hot-user", decision, kNow,
                                          [&](const UserFatigueRecord& f,
                                              std::vector<std::string>* out) {
                                            const OfferFatigueEntry* e = f.Find("o1");
                                            const int shown =
                                                e ? ImpressionsInWindow(*e, kNow, 86400) : 0;
                                            if (shown < kCap) {
                                              out->push_back("o1");
                                              ++served;
                                            }
                                            return absl::OkStatus();
                                          })
                        .ok());
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(served.load(), kCap);
  EXPECT_EQ(ImpressionsInWindow(*store_->GetUserFatigue("hot-user")->Find("o1"), kNow, 86400),
            kCap);
}

TEST_F(RocksDbStoreTest, AStalledWriteFailsAtOnceWithNothingWrittenOrWaitsWhenAllowed) {
  constexpr int64_t kNow = 1'790'000'000'000;
  const auto serve_o1 = [](const UserFatigueRecord&, std::vector<std::string>* out) {
    *out = {"o1"};
    return absl::OkStatus();
  };
  ASSERT_TRUE(store_->StopWritesForTesting().ok());

  absl::Status decided = store_->DecideAndRecord("u1", "dec-1", kNow, serve_o1, OnWriteStall::kFail);
  EXPECT_TRUE(IsWriteStalled(decided)) << decided;
  EXPECT_EQ(decided.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(decided.message().find("fatigue write: write stalled"), absl::string_view::npos)
      << decided;
  absl::StatusOr<RocksDbStore::ApplyStats> applied = store_->ApplyEvents(
      {{"u1", "o2", EventKind::kDismiss, kNow, "dec-0", 0}}, OnWriteStall::kFail);
  EXPECT_TRUE(IsWriteStalled(applied.status())) << applied.status();
  ASSERT_TRUE(store_->GetUserFatigue("u1").ok());
  EXPECT_TRUE(store_->GetUserFatigue("u1")->empty());  // nothing of either was recorded

  // A write allowed to wait waits, and is taken once RocksDB catches up.
  absl::Status waited = absl::UnknownError("not run");
  std::atomic<bool> at_write{false}, returned{false};
  std::thread writer([&] {
    waited = store_->DecideAndRecord("u1", "dec-2", kNow,
                                     [&](const UserFatigueRecord& f, std::vector<std::string>* out) {
                                       at_write = true;
                                       return serve_o1(f, out);
                                     });
    returned = true;
  });
  JoinAfterResume join{writer, store_.get()};
  ASSERT_TRUE(WaitFor([&] { return at_write.load(); }));  // it has decided, and is at its write
  EXPECT_FALSE(returned) << "a write was taken while RocksDB stopped writes";
  ASSERT_TRUE(store_->ResumeWritesForTesting().ok());
  writer.join();
  EXPECT_TRUE(returned);
  EXPECT_TRUE(waited.ok()) << waited;
  // And without a stall, a write that may not wait is an ordinary write.
  applied = store_->ApplyEvents({{"u1", "o2", EventKind::kDismiss, kNow, "dec-0", 0}},
                                OnWriteStall::kFail);
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(applied->applied, 1);
  absl::StatusOr<UserFatigueRecord> fatigue = store_->GetUserFatigue("u1");
  ASSERT_TRUE(fatigue.ok());
  ASSERT_NE(fatigue->Find("o1"), nullptr);
  EXPECT_EQ(ImpressionsInWindow(*fatigue->Find("o1"), kNow, 3600), 1);
  ASSERT_NE(fatigue->Find("o2"), nullptr);
  EXPECT_FALSE(IsWriteStalled(absl::UnavailableError("fatigue write: write stalled")));
}

TEST_F(RocksDbStoreTest, AWriteThatMayNotWaitDoesNotWaitForAnotherWritersLocks) {
  constexpr int64_t kNow = 1'790'000'000'000;
  ASSERT_TRUE(store_->StopWritesForTesting().ok());
  // A writer allowed to wait blocks in RocksDB holding the events lock and u1's lock.
  absl::Status waited = absl::UnknownError("not run");
  std::thread writer([&] {
    waited = store_->ApplyEvents({{"u1", "o1", EventKind::kDismiss, kNow, "", 0}}).status();
  });
  JoinAfterResume join{writer, store_.get()};
  const auto fails_because = [&](absl::string_view why, const auto& write) {
    return WaitFor([&] {
      const absl::Status s = write();
      EXPECT_TRUE(IsWriteStalled(s)) << s;  // never waits, never writes
      return s.message().find(why) != absl::string_view::npos;
    });
  };
  EXPECT_TRUE(fails_because("another writer holds the events lock", [&] {
    return store_->ApplyEvents({{"u2", "o1", EventKind::kDismiss, kNow, "", 0}}, OnWriteStall::kFail)
        .status();
  }));
  EXPECT_TRUE(fails_because("another writer holds the user's lock", [&] {
    return store_->DecideAndRecord(
        "u1", "dec-1", kNow,
        [](const UserFatigueRecord&, std::vector<std::string>* out) {
          *out = {"o2"};
          return absl::OkStatus();
        },
        OnWriteStall::kFail);
  }));
  ASSERT_TRUE(store_->ResumeWritesForTesting().ok());
  writer.join();
  EXPECT_TRUE(waited.ok()) << waited;
  EXPECT_EQ(store_->GetUserFatigue("u1")->Find("o2"), nullptr);
  EXPECT_TRUE(store_->GetUserFatigue("u2")->empty());
}

TEST_F(RocksDbStoreTest, RedeemUsesBudgetAndOverridesPersist) {
  ASSERT_TRUE(store_->ApplyEvents({{"u1", "o7", EventKind::kRedeem, 5000, "", 0},
                                   {"u2", "o7", EventKind::kRedeem, 6000, "", 0}})
                  .ok());
  EXPECT_EQ(store_->GetOfferRuntime("o7").redemptions, 2);
  EXPECT_EQ(store_->GetUserFatigue("u1")->Find("o7")->last_redeem_ms, 5000);
  ASSERT_TRUE(store_->SetOfferOverride("o7", true, 10).ok());
  EXPECT_FALSE(store_->SetOfferOverride("o7", std::nullopt, -5).ok());
  store_.reset();
  store_ = OpenStore(tmp_.Join("db"));
  const OfferRuntime runtime = store_->GetOfferRuntime("o7");
  EXPECT_TRUE(runtime.paused);
  EXPECT_EQ(runtime.budget_override, 10);
  EXPECT_EQ(runtime.redemptions, 2);
  ASSERT_TRUE(store_->SetOfferOverride("o7", false, -1).ok());
  EXPECT_FALSE(store_->GetOfferRuntime("o7").budget_override.has_value());
  EXPECT_FALSE(store_->GetOfferRuntime("o7").paused);
}

TEST_F(RocksDbStoreTest, BatchRuntimeLookupMatchesOneByOne) {
  const std::vector<absl::string_view> ids = {"o7", "o8", "o7", "unknown"};
  std::vector<OfferRuntime> out(ids.size());
  out[1].paused = true;  // overwritten with the defaults while nothing is stored
  store_->GetOfferRuntimes(ids, absl::MakeSpan(out));
  for (const OfferRuntime& runtime : out) {
    EXPECT_FALSE(runtime.paused);
    EXPECT_EQ(runtime.redemptions, 0);
    EXPECT_FALSE(runtime.budget_override.has_value());
  }
  ASSERT_TRUE(store_->ApplyEvents({{"u1", "o7", EventKind::kRedeem, 5000, "", 0}}).ok());
  ASSERT_TRUE(store_->SetOfferOverride("o8", true, 3).ok());
  store_->GetOfferRuntimes(ids, absl::MakeSpan(out));
  for (size_t i = 0; i < ids.size(); ++i) {
    const OfferRuntime one = store_->GetOfferRuntime(ids[i]);
    EXPECT_EQ(out[i].paused, one.paused) << ids[i];
    EXPECT_EQ(out[i].redemptions, one.redemptions) << ids[i];
    EXPECT_EQ(out[i].budget_override, one.budget_override) << ids[i];
  }
  EXPECT_EQ(out[0].redemptions, 1);
  EXPECT_EQ(out[2].redemptions, 1);
  EXPECT_TRUE(out[1].paused);
  EXPECT_EQ(out[1].budget_override, 3);
  EXPECT_EQ(out[3].redemptions, 0);
}

TEST_F(RocksDbStoreTest, ForgetUserErasesEverything) {
  ASSERT_TRUE(store_->IngestUsersFile(tmp_.Join("users.jsonl")).ok());
  ASSERT_TRUE(store_->ApplyEvents({{"u00003", "o1", EventKind::kImpression, 5, "dx", 0},
                                   {"u00003", "", EventKind::kPurchase, 86'400'000LL * 20100, "", 9}})
                  .ok());
  ASSERT_TRUE(store_->ForgetUser("u00003").ok());
  EXPECT_FALSE(store_->GetUser("u00003")->has_value());
  EXPECT_FALSE(store_->GetPurchases("u00003")->has_value());
  EXPECT_TRUE(store_->GetUserFatigue("u00003")->empty());
  // The dedupe marker went too: the same decision's impression counts again.
  EXPECT_EQ(store_->ApplyEvents({{"u00003", "o1", EventKind::kImpression, 5, "dx", 0}})->duplicates, 0);
  EXPECT_TRUE(store_->GetUser("u00004")->has_value());  // others untouched
}

TEST(RocksDbStoreCompactionTest, ExpiredFatigueStateIsDroppedByCompaction) {
  TempDir tmp;
  std::atomic<int64_t> now{1'790'000'000'000};
  RocksDbStore::Options options;
  options.path = tmp.Join("db");
  options.fatigue_retention_seconds = 3600;
  options.now_ms = [&] { return now.load(); };
  absl::StatusOr<std::unique_ptr<RocksDbStore>> store = RocksDbStore::Open(options);
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->ApplyEvents({{"u1", "o1", EventKind::kImpression, now, "d1", 0}}).ok());
  ASSERT_TRUE((*store)->Flush().ok());
  now += 3LL * 24 * 3600 * 1000;  // past the retention and the day
  ASSERT_TRUE((*store)->CompactFatigueForTesting().ok());
  EXPECT_TRUE((*store)->GetUserFatigue("u1")->empty());
  // The dedupe marker expired too.
  EXPECT_EQ((*store)->ApplyEvents({{"u1", "o1", EventKind::kImpression, now, "d1", 0}})->duplicates, 0);
}

TEST_F(RocksDbStoreTest, PurchasesMergeWithTheOfflineBaseAndSurviveReingest) {
  ASSERT_TRUE(store_->IngestUsersFile(tmp_.Join("users.jsonl")).ok());
  // u00004: base last day 20004, repeat 2, spend 20.
  constexpr int64_t kDay = 86'400'000;
  std::vector<UserEvent> events = {
      {"u00004", "", EventKind::kPurchase, 20003 * kDay + 5, "", 99.0},  // covered by base
      {"u00004", "", EventKind::kPurchase, 20010 * kDay + 5, "", 30.0},
      {"u00004", "", EventKind::kPurchase, 20010 * kDay + 9, "", 5.0},   // same day
      {"u00004", "", EventKind::kPurchase, 20012 * kDay, "", 7.5},
      {"fresh", "", EventKind::kPurchase, 20100 * kDay, "", 12.0},
      {"fresh", "", EventKind::kPurchase, 20105 * kDay, "", 8.0}};
  ASSERT_TRUE(store_->ApplyEvents(events).ok());
  auto check = [&] {
    absl::StatusOr<std::optional<PurchaseSummary>> p = store_->GetPurchases("u00004");
    ASSERT_TRUE(p.ok() && p->has_value());
    EXPECT_EQ((*p)->repeat_days, 4);
    EXPECT_EQ((*p)->last_purchase_day, 20012);
    EXPECT_DOUBLE_EQ((*p)->repeat_spend_sum, 20.0 + 35.0 + 7.5);
  };
  check();
  absl::StatusOr<std::optional<PurchaseSummary>> fresh = store_->GetPurchases("fresh");
  ASSERT_TRUE(fresh.ok() && fresh->has_value());
  EXPECT_EQ((*fresh)->first_purchase_day, 20100);
  EXPECT_EQ((*fresh)->repeat_days, 1);
  EXPECT_DOUBLE_EQ((*fresh)->repeat_spend_sum, 8.0);
  // A new ingest replaces the base but keeps the online delta.
  ASSERT_TRUE(store_->IngestUsersFile(tmp_.Join("users.jsonl")).ok());
  check();
}

TEST_F(RocksDbStoreTest, StatePersistsAcrossReopen) {
  ASSERT_TRUE(store_->IngestUsersFile(tmp_.Join("users.jsonl")).ok());
  ASSERT_TRUE(store_->ApplyEvents({{"u1", "o1", EventKind::kDismiss, 5, "", 0}}).ok());
  store_.reset();
  store_ = OpenStore(tmp_.Join("db"));
  ASSERT_NE(store_, nullptr);
  EXPECT_TRUE((*store_->GetUser("u00002")).has_value());
  EXPECT_EQ(store_->GetUserFatigue("u1")->Find("o1")->last_dismiss_ms, 5);
  EXPECT_EQ(store_->feature_schema_id(), world_.schema_id);
}

TEST(RocksDbStoreOpenTest, UnusablePathIsAClearError) {
  TempDir tmp;
  std::ofstream(tmp.Join("file")) << "not a directory";
  RocksDbStore::Options options;
  options.path = tmp.Join("file");
  absl::StatusOr<std::unique_ptr<RocksDbStore>> store = RocksDbStore::Open(options);
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find("cannot open database at"), absl::string_view::npos);
  options.path = "";
  EXPECT_EQ(RocksDbStore::Open(options).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(UserCodecTest, RoundTripAndCorruption) {
  UserRecord r;
  r.feature_schema_id = "s";
  r.embedding = {1, 2};
  r.numeric = {std::nanf(""), 3};
  r.categorical = {"a", ""};
  const std::string bytes = EncodeUserRecord(r);
  absl::StatusOr<UserRecord> back = DecodeUserRecord(bytes);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->embedding, r.embedding);
  EXPECT_TRUE(std::isnan(back->numeric[0]));
  EXPECT_EQ(back->categorical, r.categorical);
  EXPECT_FALSE(DecodeUserRecord(bytes.substr(0, bytes.size() - 1)).ok());
  EXPECT_FALSE(DecodeUserRecord(bytes + "x").ok());
  EXPECT_FALSE(DecodeUserRecord("").ok());
}

}  // namespace
}  // namespace offerd
