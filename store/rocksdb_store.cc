#include "store/rocksdb_store.h"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include <rocksdb/cache.h>
#include <rocksdb/compaction_filter.h>
#include <rocksdb/statistics.h>
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/options.h>
#include <rocksdb/sst_file_writer.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/checkpoint.h>
#include <rocksdb/write_batch.h>

#include "absl/hash/hash.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "store/rocksdb_layout.h"
#include "store/user_codec.h"
#include "store/users_file.h"
#include "store/users_sst.h"

namespace offerd {
namespace {

// Column family names, purchase keys and table options: store/rocksdb_layout.h (shared with
// the SST bulk-load writer).
using rocksdb_layout::AppendLengthPrefixed;
using rocksdb_layout::kFatigueCf;
using rocksdb_layout::kMetaCf;
using rocksdb_layout::kMetaFeatureSchemaId;
using rocksdb_layout::kOffersCf;
using rocksdb_layout::kPurchaseBase;
using rocksdb_layout::kPurchaseDelta;
using rocksdb_layout::kPurchasesCf;
using rocksdb_layout::kUsersCf;
using rocksdb_layout::PointLookupOptions;
using rocksdb_layout::PurchaseKey;

// Fatigue-family key prefixes.
constexpr char kFatiguePrefix = 'F';
constexpr char kDedupePrefix = 'D';

std::string FatigueKey(absl::string_view user_id) {
  std::string key(1, kFatiguePrefix);
  key.append(user_id.data(), user_id.size());
  return key;
}

std::string DedupeUserPrefix(absl::string_view user_id) {
  std::string key(1, kDedupePrefix);
  AppendLengthPrefixed(&key, user_id);
  return key;
}

std::string DedupeKey(absl::string_view user_id, absl::string_view decision_id,
                      absl::string_view offer_id, EventKind kind) {
  std::string key = DedupeUserPrefix(user_id);
  AppendLengthPrefixed(&key, decision_id);
  AppendLengthPrefixed(&key, offer_id);
  key.push_back(static_cast<char>(kind));
  return key;
}

std::string EncodeMillis(int64_t ms) { return std::string(reinterpret_cast<const char*>(&ms), 8); }

std::string EncodeOfferRuntime(const OfferRuntime& r) {
  std::string v;
  v.push_back(1);  // encoding version
  v.push_back(r.paused ? 1 : 0);
  v.push_back(r.budget_override.has_value() ? 1 : 0);
  const int64_t budget = r.budget_override.value_or(0);
  v.append(reinterpret_cast<const char*>(&budget), 8);
  v.append(reinterpret_cast<const char*>(&r.redemptions), 8);
  return v;
}

bool DecodeOfferRuntime(absl::string_view v, OfferRuntime* r) {
  if (v.size() != 19 || v[0] != 1) return false;
  r->paused = v[1] != 0;
  int64_t budget, redemptions;
  std::memcpy(&budget, v.data() + 3, 8);
  std::memcpy(&redemptions, v.data() + 11, 8);
  r->budget_override = v[2] != 0 ? std::optional<int64_t>(budget) : std::nullopt;
  r->redemptions = redemptions;
  return true;
}

int64_t SystemNowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Drops expired fatigue state during compaction: dedupe markers older than the retention, and
// impression buckets, day counts and cooldown times inside user records (records left empty
// are removed). Reads see correct counts without it; it only bounds the space.
class FatigueCompactionFilter final : public rocksdb::CompactionFilter {
 public:
  FatigueCompactionFilter(int64_t retention_seconds, std::function<int64_t()> now_ms)
      : retention_seconds_(retention_seconds), now_ms_(std::move(now_ms)) {}

  Decision FilterV2(int /*level*/, const rocksdb::Slice& key, ValueType value_type,
                    const rocksdb::Slice& existing_value, std::string* new_value,
                    std::string* /*skip_until*/) const override {
    if (value_type != ValueType::kValue || key.empty()) return Decision::kKeep;
    const int64_t now = now_ms_();
    if (key[0] == kDedupePrefix) {
      int64_t at_ms = 0;
      if (existing_value.size() == 8) std::memcpy(&at_ms, existing_value.data(), 8);
      return at_ms < now - retention_seconds_ * 1000 ? Decision::kRemove : Decision::kKeep;
    }
    if (key[0] != kFatiguePrefix) return Decision::kKeep;
    absl::StatusOr<UserFatigueRecord> record =
        DecodeUserFatigue(absl::string_view(existing_value.data(), existing_value.size()));
    if (!record.ok()) return Decision::kKeep;
    if (!PruneFatigueRecord(&*record, now, retention_seconds_)) return Decision::kKeep;
    if (record->empty()) return Decision::kRemove;
    *new_value = EncodeUserFatigue(*record);
    return Decision::kChangeValue;
  }
  const char* Name() const override { return "offerd.FatigueCompactionFilter"; }

 private:
  const int64_t retention_seconds_;
  const std::function<int64_t()> now_ms_;
};

// Online purchase delta: spend per purchase day, day-sorted.
using PurchaseDays = std::map<int32_t, double>;

std::string EncodePurchaseDays(const PurchaseDays& days) {
  std::string v;
  v.reserve(days.size() * 12);
  for (const auto& [day, amount] : days) {
    v.append(reinterpret_cast<const char*>(&day), 4);
    v.append(reinterpret_cast<const char*>(&amount), 8);
  }
  return v;
}

bool DecodePurchaseDays(absl::string_view v, PurchaseDays* days) {
  if (v.size() % 12 != 0) return false;
  for (size_t i = 0; i < v.size(); i += 12) {
    int32_t day;
    double amount;
    std::memcpy(&day, v.data() + i, 4);
    std::memcpy(&amount, v.data() + i + 4, 8);
    (*days)[day] += amount;
  }
  return true;
}

// Merges the offline base with online purchase days. Days up to the base's last purchase day
// are already covered by the offline summary and are not counted again.
std::optional<PurchaseSummary> MergePurchases(const std::optional<PurchaseSummary>& base,
                                              const PurchaseDays& online) {
  if (online.empty()) return base;
  PurchaseSummary merged;
  auto it = online.begin();
  if (base && base->has_purchases) {
    merged = *base;
    it = online.upper_bound(base->last_purchase_day);
  } else {
    merged.has_purchases = true;
    merged.first_purchase_day = it->first;
    merged.last_purchase_day = it->first;
    ++it;  // the first purchase is not a repeat purchase
  }
  for (; it != online.end(); ++it) {
    ++merged.repeat_days;
    merged.repeat_spend_sum += it->second;
    merged.last_purchase_day = std::max(merged.last_purchase_day, it->first);
  }
  return merged;
}

absl::Status FromRocks(const rocksdb::Status& s, absl::string_view what) {
  if (s.ok()) return absl::OkStatus();
  const std::string message = absl::StrCat(what, ": ", s.ToString());
  if (s.IsNotFound()) return absl::NotFoundError(message);
  if (s.IsCorruption()) return absl::DataLossError(message);
  if (s.IsIOError()) return absl::UnavailableError(message);
  if (s.IsInvalidArgument()) return absl::InvalidArgumentError(message);
  return absl::InternalError(message);
}

constexpr absl::string_view kWriteStalledPayload = "type.offerd/write-stalled";

rocksdb::WriteOptions ServingWriteOptions(OnWriteStall on_stall) {
  rocksdb::WriteOptions options;  // WAL on
  options.no_slowdown = on_stall == OnWriteStall::kFail;
  return options;
}

// Takes `lock` (a mutex or a std::unique_lock): waits for it, or with OnWriteStall::kFail only
// tries it. False when it is busy and may not be waited for.
template <typename Lockable>
bool LockUnlessBusy(Lockable& lock, OnWriteStall on_stall) {
  if (on_stall == OnWriteStall::kFail) return lock.try_lock();
  lock.lock();
  return true;
}

// The error IsWriteStalled() recognises.
absl::Status WriteStalledError(absl::string_view what, absl::string_view why) {
  absl::Status stalled = absl::UnavailableError(
      absl::StrCat(what, ": write stalled (", why, "); nothing was written"));
  stalled.SetPayload(kWriteStalledPayload, absl::Cord());
  return stalled;
}

// FromRocks() for a serving write: with OnWriteStall::kFail RocksDB answers a write it would
// have delayed with Incomplete, which becomes the error IsWriteStalled() recognises.
absl::Status FromServingWrite(const rocksdb::Status& s, absl::string_view what,
                              OnWriteStall on_stall) {
  if (on_stall == OnWriteStall::kFail && s.IsIncomplete()) {
    return WriteStalledError(
        what, "RocksDB is throttling writes while flushes or compactions catch up");
  }
  return FromRocks(s, what);
}

// Resolves symbolic links in `path` (which must exist); "" when it cannot.
std::string RealPath(const std::string& path) {
  char resolved[PATH_MAX];
  return ::realpath(path.c_str(), resolved) != nullptr ? std::string(resolved) : std::string();
}

// Checks a client-supplied SST path before offerd reads it. offerd reads with its own rights,
// so the file must be named exactly (absolute, normalised), be a regular file (a symbolic
// link could point anywhere), and lie inside `allowed_directory` when one is configured.
absl::Status CheckIngestPath(const std::string& path, const std::string& allowed_directory) {
  if (path.empty() || path[0] != '/') return absl::InvalidArgumentError("must be an absolute path");
  if (std::filesystem::path(path).lexically_normal().string() != path) {
    return absl::InvalidArgumentError("must be a normalised path (no \".\", \"..\" or \"//\")");
  }
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot stat: ", std::strerror(errno)));
  }
  if (S_ISLNK(st.st_mode)) return absl::InvalidArgumentError("is a symbolic link");
  if (!S_ISREG(st.st_mode)) return absl::InvalidArgumentError("is not a regular file");
  if (::access(path.c_str(), R_OK) != 0) {
    return absl::InvalidArgumentError("is not readable by offerd");
  }
  if (!allowed_directory.empty()) {
    const std::string allowed = RealPath(allowed_directory);
    const std::string parent = RealPath(std::filesystem::path(path).parent_path().string());
    if (allowed.empty() || parent.empty() ||
        (parent != allowed && parent.rfind(allowed + "/", 0) != 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("is outside the directory offerd ingests from (--ingest_sst_dir=",
                       allowed_directory, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

bool IsWriteStalled(const absl::Status& status) {
  return status.code() == absl::StatusCode::kUnavailable &&
         status.GetPayload(kWriteStalledPayload).has_value();
}

RocksDbStore::~RocksDbStore() {
  if (db_) {
    for (rocksdb::ColumnFamilyHandle* h : handles_) db_->DestroyColumnFamilyHandle(h);
    handles_.clear();
    db_->Close();
  }
}

absl::StatusOr<std::unique_ptr<RocksDbStore>> RocksDbStore::Open(const Options& options) {
  if (options.path.empty()) return absl::InvalidArgumentError("db path: must not be empty");
  auto store = std::unique_ptr<RocksDbStore>(new RocksDbStore());
  store->block_cache_ = rocksdb::NewLRUCache(static_cast<size_t>(options.block_cache_bytes));

  rocksdb::DBOptions db_options;
  db_options.create_if_missing = options.create_if_missing;
  db_options.create_missing_column_families = true;
  db_options.max_background_jobs = 2;
  db_options.keep_log_file_num = 5;

  store->statistics_ = rocksdb::CreateDBStatistics();
  store->statistics_->set_stats_level(rocksdb::StatsLevel::kExceptDetailedTimers);
  db_options.statistics = store->statistics_;
  store->fatigue_retention_seconds_ = options.fatigue_retention_seconds;
  store->path_ = options.path;
  store->sst_ingest_directory_ = options.sst_ingest_directory;

  const rocksdb::ColumnFamilyOptions cf = PointLookupOptions(store->block_cache_);
  rocksdb::ColumnFamilyOptions fatigue_cf = cf;
  // Owned by the column family options for the life of the DB (RocksDB takes a raw pointer).
  store->fatigue_filter_ = std::make_unique<FatigueCompactionFilter>(
      options.fatigue_retention_seconds, options.now_ms ? options.now_ms : SystemNowMs);
  fatigue_cf.compaction_filter = store->fatigue_filter_.get();
  std::vector<rocksdb::ColumnFamilyDescriptor> families = {
      {rocksdb::kDefaultColumnFamilyName, cf}, {kUsersCf, cf},  {kPurchasesCf, cf},
      {kFatigueCf, fatigue_cf},                 {kOffersCf, cf}, {kMetaCf, cf}};
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s =
      rocksdb::DB::Open(db_options, options.path, families, &store->handles_, &raw);
  if (!s.ok()) return FromRocks(s, absl::StrCat("cannot open database at ", options.path));
  store->db_.reset(raw);
  store->users_ = store->handles_[1];
  store->purchases_ = store->handles_[2];
  store->fatigue_ = store->handles_[3];
  store->offers_ = store->handles_[4];
  store->meta_ = store->handles_[5];
  if (absl::Status s = store->LoadOfferRuntimes(); !s.ok()) return s;
  return store;
}

absl::StatusOr<std::optional<UserRecord>> RocksDbStore::GetUser(absl::string_view user_id) const {
  rocksdb::PinnableSlice value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), users_,
                               rocksdb::Slice(user_id.data(), user_id.size()), &value);
  if (s.IsNotFound()) return std::optional<UserRecord>();
  if (!s.ok()) return FromRocks(s, "users get");
  absl::StatusOr<UserRecord> record =
      DecodeUserRecord(absl::string_view(value.data(), value.size()));
  if (!record.ok()) return record.status();
  return std::optional<UserRecord>(std::move(*record));
}

absl::StatusOr<std::optional<PurchaseSummary>> RocksDbStore::GetPurchases(
    absl::string_view user_id) const {
  const std::string base_key = PurchaseKey(user_id, kPurchaseBase);
  const std::string delta_key = PurchaseKey(user_id, kPurchaseDelta);
  std::vector<rocksdb::Slice> keys = {base_key, delta_key};
  std::vector<rocksdb::ColumnFamilyHandle*> families = {purchases_, purchases_};
  std::vector<std::string> values;
  std::vector<rocksdb::Status> statuses =
      db_->MultiGet(rocksdb::ReadOptions(), families, keys, &values);
  std::optional<PurchaseSummary> base;
  if (statuses[0].ok()) {
    absl::StatusOr<PurchaseSummary> decoded = DecodePurchaseSummary(values[0]);
    if (!decoded.ok()) return decoded.status();
    // A bulk load writes an empty base (has_purchases=false) for users without purchases.
    if (decoded->has_purchases) base = *decoded;
  } else if (!statuses[0].IsNotFound()) {
    return FromRocks(statuses[0], "purchases get");
  }
  PurchaseDays online;
  if (statuses[1].ok()) {
    if (!DecodePurchaseDays(values[1], &online)) {
      return absl::DataLossError("purchase delta: corrupt value");
    }
  } else if (!statuses[1].IsNotFound()) {
    return FromRocks(statuses[1], "purchases get");
  }
  return MergePurchases(base, online);
}

std::mutex& RocksDbStore::UserLock(absl::string_view user_id) const {
  return user_locks_[absl::HashOf(user_id) % user_locks_.size()];
}

absl::StatusOr<UserFatigueRecord> RocksDbStore::ReadFatigue(absl::string_view user_id) const {
  rocksdb::PinnableSlice value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), fatigue_, FatigueKey(user_id), &value);
  if (s.IsNotFound()) return UserFatigueRecord();
  if (!s.ok()) return FromRocks(s, "fatigue get");
  return DecodeUserFatigue(absl::string_view(value.data(), value.size()));
}

absl::StatusOr<UserFatigueRecord> RocksDbStore::GetUserFatigue(absl::string_view user_id) const {
  return ReadFatigue(user_id);
}

absl::Status RocksDbStore::DecideAndRecord(absl::string_view user_id,
                                           absl::string_view decision_id, int64_t now_ms,
                                           const DecideFn& decide, OnWriteStall on_stall) {
  std::unique_lock<std::mutex> lock(UserLock(user_id), std::defer_lock);
  if (!LockUnlessBusy(lock, on_stall)) {
    return WriteStalledError("fatigue write", "another writer holds the user's lock");
  }
  absl::StatusOr<UserFatigueRecord> record = ReadFatigue(user_id);
  if (!record.ok()) return record.status();
  thread_local std::vector<std::string> served;
  served.clear();
  if (absl::Status s = decide(*record, &served); !s.ok()) return s;
  if (served.empty()) return absl::OkStatus();
  rocksdb::WriteBatch batch;
  for (const std::string& offer_id : served) {
    RecordImpression(&*record, offer_id, now_ms);
    if (!decision_id.empty()) {
      batch.Put(fatigue_, DedupeKey(user_id, decision_id, offer_id, EventKind::kImpression),
                EncodeMillis(now_ms));
    }
  }
  batch.Put(fatigue_, FatigueKey(user_id), EncodeUserFatigue(*record));
  return FromServingWrite(db_->Write(ServingWriteOptions(on_stall), &batch), "fatigue write",
                          on_stall);
}

absl::StatusOr<RocksDbStore::ApplyStats> RocksDbStore::ApplyEvents(
    absl::Span<const UserEvent> events, OnWriteStall on_stall) {
  std::unique_lock<std::mutex> events_lock(events_mu_, std::defer_lock);
  if (!LockUnlessBusy(events_lock, on_stall)) {
    return WriteStalledError("events write", "another writer holds the events lock");
  }
  // Lock every involved user's stripe, in address order (no deadlock with DecideAndRecord,
  // which holds one stripe and never waits for another).
  std::set<std::mutex*> stripes;
  for (const UserEvent& e : events) stripes.insert(&UserLock(e.user_id));
  std::vector<std::mutex*> locked;
  struct Unlock {
    std::vector<std::mutex*>& locked;
    ~Unlock() {
      for (std::mutex* m : locked) m->unlock();
    }
  } unlock{locked};
  for (std::mutex* m : stripes) {
    if (!LockUnlessBusy(*m, on_stall)) {
      return WriteStalledError("events write", "another writer holds a user's lock");
    }
    locked.push_back(m);
  }

  ApplyStats stats;
  stats.duplicate.assign(events.size(), false);
  rocksdb::WriteBatch batch;
  std::set<std::string> dedupe_in_batch;
  std::map<std::string, UserFatigueRecord> fatigue;        // by user id, read once
  std::map<std::string, PurchaseDays> purchases;           // by purchase key, read once
  std::map<std::string, int64_t> redeemed;                 // by offer id
  for (size_t index = 0; index < events.size(); ++index) {
    const UserEvent& e = events[index];
    if (!e.decision_id.empty()) {
      const std::string dedupe = DedupeKey(e.user_id, e.decision_id, e.offer_id, e.kind);
      std::string ignored;
      if (dedupe_in_batch.count(dedupe) > 0) {
        ++stats.duplicates;
        stats.duplicate[index] = true;
        continue;
      }
      rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), fatigue_, dedupe, &ignored);
      if (s.ok()) {
        ++stats.duplicates;
        stats.duplicate[index] = true;
        continue;
      }
      if (!s.IsNotFound()) return FromRocks(s, "events dedupe get");
      dedupe_in_batch.insert(dedupe);
      batch.Put(fatigue_, dedupe, EncodeMillis(e.timestamp_ms));
    }
    if (e.kind == EventKind::kPurchase) {
      const std::string key = PurchaseKey(e.user_id, kPurchaseDelta);
      auto it = purchases.find(key);
      if (it == purchases.end()) {
        PurchaseDays days;
        std::string value;
        rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), purchases_, key, &value);
        if (s.ok()) {
          if (!DecodePurchaseDays(value, &days)) {
            return absl::DataLossError("purchase delta: corrupt value");
          }
        } else if (!s.IsNotFound()) {
          return FromRocks(s, "purchases get");
        }
        it = purchases.emplace(key, std::move(days)).first;
      }
      it->second[DayOfMs(e.timestamp_ms)] += e.amount;
    } else if (e.kind != EventKind::kClick) {
      auto it = fatigue.find(e.user_id);
      if (it == fatigue.end()) {
        absl::StatusOr<UserFatigueRecord> record = ReadFatigue(e.user_id);
        if (!record.ok()) return record.status();
        it = fatigue.emplace(e.user_id, std::move(*record)).first;
      }
      if (e.kind == EventKind::kImpression) RecordImpression(&it->second, e.offer_id, e.timestamp_ms);
      if (e.kind == EventKind::kDismiss) RecordDismiss(&it->second, e.offer_id, e.timestamp_ms);
      if (e.kind == EventKind::kRedeem) {
        RecordRedeem(&it->second, e.offer_id, e.timestamp_ms);
        ++redeemed[e.offer_id];
      }
    }
    ++stats.applied;
  }
  for (const auto& [key, days] : purchases) batch.Put(purchases_, key, EncodePurchaseDays(days));
  for (const auto& [user, record] : fatigue) {
    batch.Put(fatigue_, FatigueKey(user), EncodeUserFatigue(record));
  }
  // Budget use. events_mu_ (held) also serialises SetOfferOverride, so the persisted
  // runtime records cannot lose an update; the in-memory table is updated after the write.
  std::map<std::string, OfferRuntime> runtimes;
  for (const auto& [offer, count] : redeemed) {
    OfferRuntime runtime = GetOfferRuntime(offer);
    runtime.redemptions += count;
    batch.Put(offers_, offer, EncodeOfferRuntime(runtime));
    runtimes.emplace(offer, runtime);
  }
  if (batch.Count() > 0) {
    rocksdb::Status s = db_->Write(ServingWriteOptions(on_stall), &batch);
    if (!s.ok()) return FromServingWrite(s, "events write", on_stall);
  }
  if (!runtimes.empty()) {
    std::unique_lock<std::shared_mutex> lock(offers_mu_);
    for (auto& [offer, runtime] : runtimes) offer_runtime_[offer] = runtime;
  }
  return stats;
}

absl::StatusOr<RocksDbStore::IngestStats> RocksDbStore::IngestUsersFile(const std::string& path) {
  const auto start = std::chrono::steady_clock::now();
  IngestStats stats;
  // One batch for the whole file: nothing is written unless every line is valid.
  rocksdb::WriteBatch batch;
  absl::StatusOr<UsersFileHeader> header =
      ReadUsersFile(path, [&](int64_t /*line_number*/, UserLine user) {
        batch.Put(users_, user.user_id, EncodeUserRecord(user.record));
        if (user.purchases) {
          batch.Put(purchases_, PurchaseKey(user.user_id, kPurchaseBase),
                    EncodePurchaseSummary(*user.purchases));
          ++stats.with_purchases;
        } else {
          batch.Delete(purchases_, PurchaseKey(user.user_id, kPurchaseBase));
        }
        stats.with_embedding += user.record.embedding.empty() ? 0 : 1;
        ++stats.users;
        return absl::OkStatus();
      });
  if (!header.ok()) return header.status();
  batch.Put(meta_, kMetaFeatureSchemaId, header->feature_schema.id);
  rocksdb::WriteOptions write_options;
  write_options.sync = true;
  rocksdb::Status s = db_->Write(write_options, &batch);
  if (!s.ok()) return FromRocks(s, absl::StrCat("ingest ", path));
  stats.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

absl::StatusOr<RocksDbStore::SstIngestStats> RocksDbStore::IngestSst(
    const SstIngestRequest& request) {
  namespace fs = std::filesystem;
  if (request.paths.empty()) return absl::InvalidArgumentError("paths: at least one file needed");
  if (request.feature_schema_id.empty()) {
    return absl::InvalidArgumentError("feature_schema_id: required");
  }
  std::lock_guard<std::mutex> lock(ingest_mu_);
  const auto start = std::chrono::steady_clock::now();
  SstIngestStats stats;
  stats.previous_feature_schema_id = feature_schema_id();
  if (!stats.previous_feature_schema_id.empty() &&
      stats.previous_feature_schema_id != request.feature_schema_id &&
      !request.allow_schema_change) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the stored user features use feature schema \"", stats.previous_feature_schema_id,
        "\", these files \"", request.feature_schema_id,
        "\"; to switch schemas, re-ingest every user with allow_schema_change and then load a "
        "bundle trained with the new schema"));
  }

  // Staging inside the database directory: on its filesystem, so the final move into the
  // database is a hard link. Removed whatever happens; a leftover from a crash is removed by
  // the next ingest.
  const std::string staging = path_ + "/ingest-staging";
  std::error_code ec;
  fs::remove_all(staging, ec);
  fs::create_directories(staging, ec);
  if (ec) return absl::UnavailableError(absl::StrCat(staging, ": ", ec.message()));
  struct RemoveStaging {
    const std::string& dir;
    ~RemoveStaging() {
      std::error_code ignored;
      fs::remove_all(dir, ignored);
    }
  } remove_staging{staging};

  rocksdb::IngestExternalFileArg users_arg, purchases_arg, meta_arg;
  users_arg.column_family = users_;
  purchases_arg.column_family = purchases_;
  meta_arg.column_family = meta_;
  for (size_t i = 0; i < request.paths.size(); ++i) {
    const std::string& path = request.paths[i];
    const std::string name = absl::StrCat("paths[", i, "] (", path, ")");
    for (size_t j = 0; j < i; ++j) {
      if (request.paths[j] == path) {
        return absl::InvalidArgumentError(absl::StrCat(name, ": listed twice"));
      }
    }
    if (absl::Status s = CheckIngestPath(path, sst_ingest_directory_); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": ", s.message()));
    }
    const std::string staged = absl::StrCat(staging, "/", i, ".sst");
    // A copy, not a hard link: a link would share the inode with the caller's file, which a
    // later write through the caller's path would corrupt inside the live database. The copy
    // costs ~0.3 s per GB here (page cache), small next to parsing the users file.
    fs::copy_file(path, staged, ec);
    if (ec) return absl::UnavailableError(absl::StrCat(name, ": cannot copy: ", ec.message()));
    absl::StatusOr<UsersSstFacts> facts =
        ValidateUsersSst(staged, request.feature_schema_id, name);
    if (!facts.ok()) {
      // The file was found and staged, so "not found" here is a broken file, i.e. bad input.
      if (facts.status().code() == absl::StatusCode::kNotFound) {
        return absl::InvalidArgumentError(facts.status().message());
      }
      return facts.status();
    }
    const bool users = facts->column_family == kUsersCf;
    (users ? users_arg : purchases_arg).external_files.push_back(staged);
    (users ? stats.users : stats.purchase_records) += facts->entries;
    stats.bytes += facts->bytes;
    ++stats.files;
  }
  if (users_arg.external_files.empty()) {
    return absl::InvalidArgumentError("paths: no file holds user features (users-*.sst)");
  }

  // The schema id goes in with the features, in the same atomic ingestion.
  const std::string meta_file = staging + "/meta.sst";
  {
    rocksdb::Options meta_options(db_->GetDBOptions(), db_->GetOptions(meta_));
    rocksdb::SstFileWriter writer(rocksdb::EnvOptions(), meta_options, meta_);
    rocksdb::Status s = writer.Open(meta_file);
    if (s.ok()) s = writer.Put(kMetaFeatureSchemaId, request.feature_schema_id);
    if (s.ok()) s = writer.Finish();
    if (!s.ok()) return FromRocks(s, "ingest: writing the meta file");
  }
  meta_arg.external_files.push_back(meta_file);
  stats.validate_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  std::vector<rocksdb::IngestExternalFileArg> args;
  for (rocksdb::IngestExternalFileArg* arg : {&users_arg, &purchases_arg, &meta_arg}) {
    if (arg->external_files.empty()) continue;
    rocksdb::IngestExternalFileOptions& o = arg->options;
    o.move_files = true;  // hard-link our staged copies into the database
    o.failed_move_fall_back_to_copy = true;
    o.snapshot_consistency = true;
    o.allow_global_seqno = true;    // the files overlap users already stored
    o.allow_blocking_flush = true;  // e.g. purchase deltas in the memtable
    o.write_global_seqno = false;   // the seqno goes to the MANIFEST, the files stay as written
    o.verify_checksums_before_ingest = false;  // every block was just read and verified
    args.push_back(std::move(*arg));
  }
  const auto ingest_start = std::chrono::steady_clock::now();
  rocksdb::Status s = db_->IngestExternalFiles(args);
  if (!s.ok()) {
    const std::string message = absl::StrCat("ingest: ", s.ToString());
    if (s.IsInvalidArgument() || s.IsNotSupported()) return absl::InvalidArgumentError(message);
    return FromRocks(s, "ingest");
  }
  stats.ingest_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - ingest_start).count();
  return stats;
}

OfferRuntime RocksDbStore::GetOfferRuntime(absl::string_view offer_id) const {
  OfferRuntime runtime;
  GetOfferRuntimes(absl::MakeConstSpan(&offer_id, 1), absl::MakeSpan(&runtime, 1));
  return runtime;
}

void RocksDbStore::GetOfferRuntimes(absl::Span<const absl::string_view> offer_ids,
                                    absl::Span<OfferRuntime> out) const {
  std::shared_lock<std::shared_mutex> lock(offers_mu_);
  if (offer_runtime_.empty()) {
    std::fill(out.begin(), out.end(), OfferRuntime());
    return;
  }
  for (size_t i = 0; i < offer_ids.size(); ++i) {
    auto it = offer_runtime_.find(offer_ids[i]);
    out[i] = it == offer_runtime_.end() ? OfferRuntime() : it->second;
  }
}

absl::StatusOr<OfferRuntime> RocksDbStore::SetOfferOverride(absl::string_view offer_id,
                                                            std::optional<bool> paused,
                                                            std::optional<int64_t> budget) {
  std::lock_guard<std::mutex> events_lock(events_mu_);
  OfferRuntime runtime = GetOfferRuntime(offer_id);
  if (paused.has_value()) runtime.paused = *paused;
  if (budget.has_value()) {
    if (*budget < -1) return absl::InvalidArgumentError("budget: must be >= 0, or -1 to clear");
    runtime.budget_override = *budget == -1 ? std::nullopt : std::optional<int64_t>(*budget);
  }
  rocksdb::WriteOptions options;
  options.sync = true;  // an operator action: make it durable before answering
  rocksdb::Status s = db_->Put(options, offers_, rocksdb::Slice(offer_id.data(), offer_id.size()),
                               EncodeOfferRuntime(runtime));
  if (!s.ok()) return FromRocks(s, "offer override write");
  std::unique_lock<std::shared_mutex> lock(offers_mu_);
  offer_runtime_[offer_id] = runtime;
  return runtime;
}

absl::Status RocksDbStore::LoadOfferRuntimes() {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), offers_));
  std::unique_lock<std::shared_mutex> lock(offers_mu_);
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    OfferRuntime runtime;
    if (!DecodeOfferRuntime(absl::string_view(it->value().data(), it->value().size()), &runtime)) {
      return absl::DataLossError(absl::StrCat("offers: corrupt record for ", it->key().ToString()));
    }
    offer_runtime_[it->key().ToString()] = runtime;
  }
  return FromRocks(it->status(), "offers scan");
}

absl::Status RocksDbStore::Checkpoint(const std::string& directory) {
  if (directory.empty() || directory[0] != '/') {
    return absl::InvalidArgumentError("checkpoint directory: must be an absolute path");
  }
  rocksdb::Checkpoint* raw = nullptr;
  rocksdb::Status s = rocksdb::Checkpoint::Create(db_.get(), &raw);
  if (!s.ok()) return FromRocks(s, "checkpoint");
  std::unique_ptr<rocksdb::Checkpoint> checkpoint(raw);
  // Flush first so the checkpoint needs no WAL replay.
  return FromRocks(checkpoint->CreateCheckpoint(directory, /*log_size_for_flush=*/0),
                   absl::StrCat("checkpoint into ", directory));
}

absl::Status RocksDbStore::ForgetUser(absl::string_view user_id) {
  std::lock_guard<std::mutex> events_lock(events_mu_);
  std::lock_guard<std::mutex> lock(UserLock(user_id));
  rocksdb::WriteBatch batch;
  const rocksdb::Slice user(user_id.data(), user_id.size());
  batch.Delete(users_, user);
  batch.Delete(purchases_, PurchaseKey(user_id, kPurchaseBase));
  batch.Delete(purchases_, PurchaseKey(user_id, kPurchaseDelta));
  batch.Delete(fatigue_, FatigueKey(user_id));
  // Dedupe markers share a per-user prefix: one range covers them all.
  std::string begin = DedupeUserPrefix(user_id);
  std::string end = begin;
  end.push_back('\xff');
  for (int i = 0; i < 4; ++i) end.push_back('\xff');
  batch.DeleteRange(fatigue_, begin, end);
  rocksdb::WriteOptions options;
  options.sync = true;
  return FromRocks(db_->Write(options, &batch), "forget user");
}

absl::Status RocksDbStore::CompactFatigueForTesting() {
  rocksdb::CompactRangeOptions options;
  // Rewrite every file (no trivial moves) so the compaction filter sees every key.
  options.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
  return FromRocks(db_->CompactRange(options, fatigue_, nullptr, nullptr), "compact fatigue");
}

absl::Status RocksDbStore::StopWritesForTesting() {
  rocksdb::ColumnFamilyHandle* filler = handles_[0];  // the default family, unused otherwise
  const rocksdb::ColumnFamilyOptions before = db_->GetOptions(filler);
  stop_writes_restore_ = {  // set back by ResumeWritesForTesting()
      {"write_buffer_size", std::to_string(before.write_buffer_size)},
      {"arena_block_size", std::to_string(before.arena_block_size)},
      {"max_write_buffer_number", std::to_string(before.max_write_buffer_number)}};
  rocksdb::Status s = db_->SetOptions(filler, {{"write_buffer_size", "65536"},
                                               // set at open from the default buffer size
                                               {"arena_block_size", "8192"},
                                               {"max_write_buffer_number", "2"}});
  if (!s.ok()) return FromRocks(s, "stop writes: set options");
  if (s = db_->PauseBackgroundWork(); !s.ok()) return FromRocks(s, "stop writes: pause");
  const auto fail = [&](absl::Status status) {
    (void)ResumeWritesForTesting();  // never leave the database paused
    return status;
  };
  // Switch to a memtable of the small size now (the flush itself waits, paused).
  rocksdb::FlushOptions flush;
  flush.wait = false;
  flush.allow_write_stall = true;
  if (s = db_->Flush(flush, filler); !s.ok()) return fail(FromRocks(s, "stop writes: switch"));
  // Fill memtables until RocksDB stops writes: two unflushed memtables reach the limit.
  rocksdb::WriteOptions fail_fast;
  fail_fast.no_slowdown = true;
  const std::string value(1024, 'x');
  for (int i = 0; i < 100000; ++i) {
    s = db_->Put(fail_fast, filler, absl::StrCat("stall-filler-", i), value);
    if (s.IsIncomplete()) return absl::OkStatus();
    if (!s.ok()) return fail(FromRocks(s, "stop writes: fill"));
  }
  return fail(absl::InternalError("stop writes: RocksDB still accepts writes"));
}

absl::Status RocksDbStore::ResumeWritesForTesting() {
  if (rocksdb::Status s = db_->ContinueBackgroundWork(); !s.ok()) {
    return FromRocks(s, "resume writes");
  }
  rocksdb::FlushOptions flush;  // waits for the pending flushes
  flush.allow_write_stall = true;
  if (rocksdb::Status s = db_->Flush(flush, handles_[0]); !s.ok()) {
    return FromRocks(s, "resume writes: flush");
  }
  return FromRocks(db_->SetOptions(handles_[0], stop_writes_restore_), "resume writes: options");
}

double RocksDbStore::BlockCacheHitRatio() const {
  const uint64_t hits = statistics_->getTickerCount(rocksdb::BLOCK_CACHE_HIT);
  const uint64_t misses = statistics_->getTickerCount(rocksdb::BLOCK_CACHE_MISS);
  if (hits + misses == 0) return std::nan("");
  return static_cast<double>(hits) / static_cast<double>(hits + misses);
}

std::string RocksDbStore::feature_schema_id() const {
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), meta_, kMetaFeatureSchemaId, &value);
  return s.ok() ? value : std::string();
}

int64_t RocksDbStore::ApproximateUserCount() const {
  uint64_t keys = 0;
  db_->GetIntProperty(users_, "rocksdb.estimate-num-keys", &keys);
  return static_cast<int64_t>(keys);
}

absl::Status RocksDbStore::Flush() {
  rocksdb::FlushOptions options;
  options.wait = true;
  return FromRocks(db_->Flush(options, handles_), "flush");
}

}  // namespace offerd
