// Bulk load by SST ingestion: WriteUsersSst (offerctl's side), ValidateUsersSst and
// RocksDbStore::IngestSst (offerd's side).
#include "store/users_sst.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>

#include <gtest/gtest.h>
#include <rocksdb/options.h>
#include <rocksdb/sst_file_writer.h>
#include <rocksdb/table_properties.h>

#include "absl/strings/match.h"
#include "core/event.h"
#include "store/rocksdb_layout.h"
#include "store/rocksdb_store.h"
#include "store/user_codec.h"
#include "tests/test_util/bundle_writer.h"
#include "tests/test_util/temp_dir.h"

namespace offerd {
namespace {

using testing::TempDir;
using testing::TestWorld;

constexpr int64_t kDayMs = 86'400'000;

std::unique_ptr<RocksDbStore> OpenStore(const std::string& path,
                                        const std::string& sst_ingest_directory = "") {
  RocksDbStore::Options options;
  options.path = path;
  options.sst_ingest_directory = sst_ingest_directory;
  absl::StatusOr<std::unique_ptr<RocksDbStore>> store = RocksDbStore::Open(options);
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? std::move(*store) : nullptr;
}

void WriteText(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

// Writes an SST stamped like WriteUsersSst's files but with whatever entries a test wants
// (the file a buggy or hostile writer could produce).
class StampCollector final : public rocksdb::TablePropertiesCollector {
 public:
  StampCollector(std::string cf, std::string schema)
      : cf_(std::move(cf)), schema_(std::move(schema)) {}
  rocksdb::Status AddUserKey(const rocksdb::Slice&, const rocksdb::Slice&, rocksdb::EntryType,
                             rocksdb::SequenceNumber, uint64_t) override {
    return rocksdb::Status::OK();
  }
  rocksdb::Status Finish(rocksdb::UserCollectedProperties* p) override {
    *p = GetReadableProperties();
    return rocksdb::Status::OK();
  }
  rocksdb::UserCollectedProperties GetReadableProperties() const override {
    return {{kSstPropertyFormat, "1"},
            {kSstPropertyColumnFamily, cf_},
            {kSstPropertyFeatureSchemaId, schema_}};
  }
  const char* Name() const override { return "test.StampCollector"; }

 private:
  std::string cf_, schema_;
};

class StampFactory final : public rocksdb::TablePropertiesCollectorFactory {
 public:
  StampFactory(std::string cf, std::string schema)
      : cf_(std::move(cf)), schema_(std::move(schema)) {}
  rocksdb::TablePropertiesCollector* CreateTablePropertiesCollector(
      rocksdb::TablePropertiesCollectorFactory::Context) override {
    return new StampCollector(cf_, schema_);
  }
  const char* Name() const override { return "test.StampFactory"; }

 private:
  std::string cf_, schema_;
};

// `stamp_cf` empty: no offerd properties at all.
void WriteRawSst(const std::string& path, const std::string& stamp_cf, const std::string& schema,
                 const std::vector<std::pair<std::string, std::string>>& sorted_entries) {
  rocksdb::Options options;
  if (!stamp_cf.empty()) {
    options.table_properties_collector_factories.push_back(
        std::make_shared<StampFactory>(stamp_cf, schema));
  }
  rocksdb::SstFileWriter writer(rocksdb::EnvOptions(), options);
  ASSERT_TRUE(writer.Open(path).ok());
  for (const auto& [key, value] : sorted_entries) ASSERT_TRUE(writer.Put(key, value).ok());
  ASSERT_TRUE(writer.Finish().ok());
}

class UsersSstTest : public ::testing::Test {
 protected:
  void SetUp() override {
    world_.WriteUsers(tmp_.Join("users.jsonl"));
    store_ = OpenStore(tmp_.Join("db"));
    ASSERT_NE(store_, nullptr);
  }

  // users.jsonl -> SST files under tmp/<dir>; returns the request that ingests them.
  RocksDbStore::SstIngestRequest Write(const std::string& users_file, const std::string& dir) {
    WriteUsersSstOptions options;
    options.directory = tmp_.Join(dir);
    absl::StatusOr<WriteUsersSstResult> written = WriteUsersSst(users_file, options);
    EXPECT_TRUE(written.ok()) << written.status();
    RocksDbStore::SstIngestRequest request;
    if (!written.ok()) return request;
    request.paths = written->paths;
    request.feature_schema_id = written->feature_schema_id;
    return request;
  }

  TempDir tmp_;
  TestWorld world_;
  std::unique_ptr<RocksDbStore> store_;
};

TEST_F(UsersSstTest, IngestedUsersReadBackLikeTheJsonlIngest) {
  WriteUsersSstOptions options;
  options.directory = tmp_.Join("sst");
  absl::StatusOr<WriteUsersSstResult> written = WriteUsersSst(tmp_.Join("users.jsonl"), options);
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(written->users, 20);
  EXPECT_EQ(written->with_embedding, 20);
  EXPECT_EQ(written->with_purchases, 20);
  EXPECT_EQ(written->feature_schema_id, world_.schema_id);
  ASSERT_EQ(written->paths.size(), 2u);
  EXPECT_EQ(written->paths[0], tmp_.Join("sst/users-000001.sst"));
  EXPECT_EQ(written->paths[1], tmp_.Join("sst/purchases-000001.sst"));

  RocksDbStore::SstIngestRequest request;
  request.paths = written->paths;
  request.feature_schema_id = written->feature_schema_id;
  absl::StatusOr<RocksDbStore::SstIngestStats> stats = store_->IngestSst(request);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->users, 20);
  EXPECT_EQ(stats->purchase_records, 20);
  EXPECT_EQ(stats->files, 2);
  EXPECT_EQ(stats->previous_feature_schema_id, "");
  EXPECT_EQ(store_->feature_schema_id(), world_.schema_id);
  // The staging directory is gone; the caller's files are untouched (theirs to delete).
  EXPECT_FALSE(std::filesystem::exists(tmp_.Join("db/ingest-staging")));
  EXPECT_TRUE(std::filesystem::exists(written->paths[0]));

  std::unique_ptr<RocksDbStore> reference = OpenStore(tmp_.Join("reference-db"));
  ASSERT_TRUE(reference->IngestUsersFile(tmp_.Join("users.jsonl")).ok());
  for (int i = 0; i < world_.num_users; ++i) {
    const std::string id = world_.UserId(i);
    absl::StatusOr<std::optional<UserRecord>> got = store_->GetUser(id);
    absl::StatusOr<std::optional<UserRecord>> want = reference->GetUser(id);
    ASSERT_TRUE(got.ok() && got->has_value()) << id;
    EXPECT_EQ(EncodeUserRecord(**got), EncodeUserRecord(**want)) << id;
    absl::StatusOr<std::optional<PurchaseSummary>> p = store_->GetPurchases(id);
    absl::StatusOr<std::optional<PurchaseSummary>> q = reference->GetPurchases(id);
    ASSERT_TRUE(p.ok() && p->has_value() && q.ok() && q->has_value()) << id;
    EXPECT_EQ(EncodePurchaseSummary(**p), EncodePurchaseSummary(**q)) << id;
  }
  EXPECT_EQ((*store_->GetUser("u00004"))->embedding, world_.UserEmbedding(4));

  // Survives a restart (the ingestion is in the MANIFEST, not only in memory).
  store_.reset();
  store_ = OpenStore(tmp_.Join("db"));
  EXPECT_TRUE((*store_->GetUser("u00004")).has_value());
  EXPECT_EQ(store_->feature_schema_id(), world_.schema_id);
}

TEST_F(UsersSstTest, IngestKeepsOnlinePurchasesAndClearsDroppedBases) {
  ASSERT_TRUE(store_->IngestSst(Write(tmp_.Join("users.jsonl"), "first")).ok());
  // u00004: base last day 20004, 2 repeat days, spend 20; then two online purchase days.
  std::vector<UserEvent> events = {{"u00004", "", EventKind::kPurchase, 20010 * kDayMs, "", 30.0},
                                   {"u00004", "", EventKind::kPurchase, 20012 * kDayMs, "", 7.5},
                                   {"u00007", "", EventKind::kPurchase, 20030 * kDayMs, "", 4.0}};
  ASSERT_TRUE(store_->ApplyEvents(events).ok());

  // The next export: u00004 unchanged, u00007 without any offline purchases.
  std::string text;
  {
    std::ifstream in(tmp_.Join("users.jsonl"));
    std::string line;
    while (std::getline(in, line)) {
      if (absl::StrContains(line, "\"u00007\"")) {
        line = R"({"user_id": "u00007", "features": {"age": 50, "tier": "gold"}})";
      }
      text += line + "\n";
    }
  }
  WriteText(tmp_.Join("next.jsonl"), text);
  ASSERT_TRUE(store_->IngestSst(Write(tmp_.Join("next.jsonl"), "second")).ok());

  absl::StatusOr<std::optional<PurchaseSummary>> p = store_->GetPurchases("u00004");
  ASSERT_TRUE(p.ok() && p->has_value());
  EXPECT_EQ((*p)->repeat_days, 4);
  EXPECT_EQ((*p)->last_purchase_day, 20012);
  EXPECT_DOUBLE_EQ((*p)->repeat_spend_sum, 20.0 + 30.0 + 7.5);
  // u00007's old base (first day 20000) is gone; the online purchase alone remains.
  absl::StatusOr<std::optional<PurchaseSummary>> q = store_->GetPurchases("u00007");
  ASSERT_TRUE(q.ok() && q->has_value());
  EXPECT_EQ((*q)->first_purchase_day, 20030);
  EXPECT_EQ((*q)->repeat_days, 0);
  EXPECT_FLOAT_EQ((*store_->GetUser("u00007"))->numeric[0], 50.0f);
  // A user with neither base nor online purchases reads as "no purchases", not as zeros.
  WriteText(tmp_.Join("one.jsonl"), text.substr(0, text.find('\n') + 1) +
                                        R"({"user_id": "new-user", "features": {}})" + "\n");
  ASSERT_TRUE(store_->IngestSst(Write(tmp_.Join("one.jsonl"), "third")).ok());
  absl::StatusOr<std::optional<PurchaseSummary>> none = store_->GetPurchases("new-user");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

TEST_F(UsersSstTest, BadFilesAreRejectedWithAReasonAndNothingStoredIsLost) {
  const RocksDbStore::SstIngestRequest good = Write(tmp_.Join("users.jsonl"), "good");
  ASSERT_TRUE(store_->IngestSst(good).ok());
  // The files of another export (other embeddings), to mix with bad ones.
  TestWorld other = world_;
  other.seed = 99;
  other.WriteUsers(tmp_.Join("other.jsonl"));
  const RocksDbStore::SstIngestRequest next = Write(tmp_.Join("other.jsonl"), "other");

  WriteText(tmp_.Join("garbage.sst"), "this is not an SST file");
  WriteRawSst(tmp_.Join("plain.sst"), "", "", {{"u1", "x"}});
  WriteRawSst(tmp_.Join("fatigue.sst"), "fatigue", world_.schema_id, {{"Fu1", "x"}});
  // Online purchase deltas must never be bulk-loaded (they would erase reported purchases).
  WriteRawSst(tmp_.Join("delta.sst"), "purchases", world_.schema_id,
              {{rocksdb_layout::PurchaseKey("u00004", rocksdb_layout::kPurchaseDelta), "x"}});
  WriteRawSst(tmp_.Join("badvalue.sst"), "users", world_.schema_id, {{"u00004", "junk"}});
  UserRecord foreign;
  foreign.feature_schema_id = "another-schema";
  WriteRawSst(tmp_.Join("foreign.sst"), "users", world_.schema_id,
              {{"u00004", EncodeUserRecord(foreign)}});
  std::filesystem::create_symlink(next.paths[0], tmp_.Join("link.sst"));

  struct Case {
    std::vector<std::string> paths;
    std::string schema;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"relative/users.sst"}, world_.schema_id, "must be an absolute path"},
      {{tmp_.path() + "/good/../good/users-000001.sst"}, world_.schema_id, "normalised"},
      {{tmp_.Join("missing.sst")}, world_.schema_id, "cannot stat"},
      {{tmp_.Join("good")}, world_.schema_id, "not a regular file"},
      {{tmp_.Join("link.sst")}, world_.schema_id, "symbolic link"},
      {{tmp_.Join("garbage.sst")}, world_.schema_id, "not a readable SST file"},
      {{tmp_.Join("plain.sst")}, world_.schema_id, "not an offerd bulk-load file"},
      {{tmp_.Join("fatigue.sst")}, world_.schema_id, "column family \"fatigue\" cannot"},
      {{tmp_.Join("delta.sst")}, world_.schema_id, "online purchase deltas cannot"},
      {{tmp_.Join("badvalue.sst")}, world_.schema_id, "entry 0: user record"},
      {{tmp_.Join("foreign.sst")}, world_.schema_id, "record of feature schema \"another-schema\""},
      {{next.paths[0]}, "schema-other", "written for feature schema \"schema-test-1\""},
      {{next.paths[1]}, world_.schema_id, "no file holds user features"},
      {{next.paths[0], next.paths[0]}, world_.schema_id, "listed twice"},
      // Atomic: a good file next to a bad one does not land either.
      {{next.paths[0], next.paths[1], tmp_.Join("garbage.sst")},
       world_.schema_id,
       "paths[2] (" + tmp_.Join("garbage.sst") + "): not a readable SST file"},
  };
  for (const Case& c : cases) {
    RocksDbStore::SstIngestRequest request;
    request.paths = c.paths;
    request.feature_schema_id = c.schema;
    // A schema mismatch of the whole request is a precondition; pass that check here so the
    // per-file check is what is exercised.
    request.allow_schema_change = c.schema != world_.schema_id;
    absl::StatusOr<RocksDbStore::SstIngestStats> stats = store_->IngestSst(request);
    ASSERT_FALSE(stats.ok()) << c.message;
    EXPECT_EQ(stats.status().code(), absl::StatusCode::kInvalidArgument) << stats.status();
    EXPECT_TRUE(absl::StrContains(stats.status().message(), c.message))
        << "want \"" << c.message << "\" in: " << stats.status();
  }
  // Nothing stored was lost or replaced.
  EXPECT_EQ(store_->feature_schema_id(), world_.schema_id);
  EXPECT_EQ((*store_->GetUser("u00004"))->embedding, world_.UserEmbedding(4));
  EXPECT_EQ((*store_->GetPurchases("u00004"))->last_purchase_day, 20004);
  EXPECT_FALSE(std::filesystem::exists(tmp_.Join("db/ingest-staging")));

  // The other export is fine on its own.
  ASSERT_TRUE(store_->IngestSst(next).ok());
  EXPECT_EQ((*store_->GetUser("u00004"))->embedding, other.UserEmbedding(4));
}

TEST_F(UsersSstTest, SchemaChangeNeedsConsent) {
  ASSERT_TRUE(store_->IngestSst(Write(tmp_.Join("users.jsonl"), "v1")).ok());
  TestWorld v2 = world_;
  v2.schema_id = "schema-test-2";
  v2.WriteUsers(tmp_.Join("v2.jsonl"));
  RocksDbStore::SstIngestRequest request = Write(tmp_.Join("v2.jsonl"), "v2");
  absl::StatusOr<RocksDbStore::SstIngestStats> refused = store_->IngestSst(request);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "allow_schema_change"))
      << refused.status();
  EXPECT_EQ(store_->feature_schema_id(), world_.schema_id);

  request.allow_schema_change = true;
  absl::StatusOr<RocksDbStore::SstIngestStats> stats = store_->IngestSst(request);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->previous_feature_schema_id, world_.schema_id);
  EXPECT_EQ(store_->feature_schema_id(), "schema-test-2");
  EXPECT_EQ((*store_->GetUser("u00004"))->feature_schema_id, "schema-test-2");
}

TEST_F(UsersSstTest, FilesOutsideTheConfiguredDirectoryAreRefused) {
  store_.reset();
  std::filesystem::create_directories(tmp_.Join("allowed"));
  store_ = OpenStore(tmp_.Join("db"), tmp_.Join("allowed"));
  RocksDbStore::SstIngestRequest outside = Write(tmp_.Join("users.jsonl"), "elsewhere");
  absl::StatusOr<RocksDbStore::SstIngestStats> refused = store_->IngestSst(outside);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "outside the directory"))
      << refused.status();
  EXPECT_TRUE(store_->IngestSst(Write(tmp_.Join("users.jsonl"), "allowed/run1")).ok());
}

TEST(WriteUsersSstTest, SortsUnsortedInputAndRejectsDuplicates) {
  TempDir tmp;
  TestWorld world;
  world.WriteUsers(tmp.Join("users.jsonl"));
  std::vector<std::string> lines;
  {
    std::ifstream in(tmp.Join("users.jsonl"));
    for (std::string line; std::getline(in, line);) lines.push_back(line);
  }
  std::string reversed = lines[0] + "\n";
  for (size_t i = lines.size() - 1; i >= 1; --i) reversed += lines[i] + "\n";
  WriteText(tmp.Join("reversed.jsonl"), reversed);
  WriteUsersSstOptions options;
  options.directory = tmp.Join("sst");
  absl::StatusOr<WriteUsersSstResult> written = WriteUsersSst(tmp.Join("reversed.jsonl"), options);
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(written->users, world.num_users);
  absl::StatusOr<UsersSstFacts> facts = ValidateUsersSst(written->paths[0], world.schema_id);
  ASSERT_TRUE(facts.ok()) << facts.status();
  EXPECT_EQ(facts->column_family, "users");
  EXPECT_EQ(facts->entries, world.num_users);

  // Existing files are never overwritten.
  absl::StatusOr<WriteUsersSstResult> again = WriteUsersSst(tmp.Join("reversed.jsonl"), options);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists) << again.status();

  WriteText(tmp.Join("dup.jsonl"), reversed + lines[3] + "\n");
  options.directory = tmp.Join("dup");
  absl::StatusOr<WriteUsersSstResult> dup = WriteUsersSst(tmp.Join("dup.jsonl"), options);
  EXPECT_EQ(dup.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(dup.status().message(), "appears twice (lines")) << dup.status();
  EXPECT_TRUE(std::filesystem::is_empty(tmp.Join("dup")));

  // Parse errors name the file and line, as the startup ingest does.
  WriteText(tmp.Join("bad.jsonl"), lines[0] + "\n" + lines[1] + "\n{\"user_id\": \"\"}\n");
  options.directory = tmp.Join("bad");
  absl::StatusOr<WriteUsersSstResult> bad = WriteUsersSst(tmp.Join("bad.jsonl"), options);
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "bad.jsonl:3: user_id: must be 1..256"))
      << bad.status();
}

TEST(WriteUsersSstTest, ParallelParsingKeepsFileOrderAndTheFirstError) {
  TempDir tmp;
  TestWorld world;
  world.num_users = 5000;  // several batches of 1024 lines per thread
  world.WriteUsers(tmp.Join("users.jsonl"));
  WriteUsersSstOptions options;
  options.directory = tmp.Join("sst");
  options.parse_threads = 3;
  absl::StatusOr<WriteUsersSstResult> written = WriteUsersSst(tmp.Join("users.jsonl"), options);
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(written->users, 5000);
  std::unique_ptr<RocksDbStore> store = OpenStore(tmp.Join("db"));
  RocksDbStore::SstIngestRequest request;
  request.paths = written->paths;
  request.feature_schema_id = written->feature_schema_id;
  ASSERT_TRUE(store->IngestSst(request).ok());
  for (int i : {0, 1023, 1024, 3071, 4999}) {
    absl::StatusOr<std::optional<UserRecord>> user = store->GetUser(world.UserId(i));
    ASSERT_TRUE(user.ok() && user->has_value()) << i;
    EXPECT_EQ((*user)->embedding, world.UserEmbedding(i)) << i;
    EXPECT_FLOAT_EQ((*user)->numeric[0], 20.0f + i) << i;
  }

  // Two bad lines in different slices of one batch: the earlier one is reported.
  std::vector<std::string> lines;
  {
    std::ifstream in(tmp.Join("users.jsonl"));
    for (std::string line; std::getline(in, line);) lines.push_back(line);
  }
  lines[3500] = R"({"user_id": "late", "features": {"age": "old"}})";
  lines[3001] = R"({"user_id": ""})";
  std::string text;
  for (const std::string& line : lines) text += line + "\n";
  WriteText(tmp.Join("bad.jsonl"), text);
  options.directory = tmp.Join("bad");
  absl::StatusOr<WriteUsersSstResult> bad = WriteUsersSst(tmp.Join("bad.jsonl"), options);
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "bad.jsonl:3002: user_id")) << bad.status();
}

}  // namespace
}  // namespace offerd
