#include "store/rocksdb_store.h"

#include <chrono>
#include <cstring>
#include <fstream>
#include <map>

#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "store/user_codec.h"
#include "store/users_file.h"

namespace offerd {
namespace {

constexpr char kUsersCf[] = "users";
constexpr char kPurchasesCf[] = "purchases";
constexpr char kFatigueCf[] = "fatigue";
constexpr char kOffersCf[] = "offers";
constexpr char kMetaCf[] = "meta";
constexpr char kMetaFeatureSchemaId[] = "feature_schema_id";

// Purchase keys: big-endian 16-bit user id length, user id, one kind byte. The length prefix
// keeps keys of different users from colliding whatever bytes the ids contain.
constexpr char kPurchaseBase = 'b';

constexpr char kPurchaseDelta = 'd';
// Fatigue-family key prefixes.
constexpr char kCounterPrefix = 'C';
constexpr char kDedupePrefix = 'D';

void AppendLengthPrefixed(std::string* key, absl::string_view part) {
  key->push_back(static_cast<char>((part.size() >> 8) & 0xff));
  key->push_back(static_cast<char>(part.size() & 0xff));
  key->append(part.data(), part.size());
}

std::string PurchaseKey(absl::string_view user_id, char kind) {
  std::string key;
  key.reserve(user_id.size() + 3);
  AppendLengthPrefixed(&key, user_id);
  key.push_back(kind);
  return key;
}

std::string CounterKey(absl::string_view user_id, absl::string_view offer_id, EventKind kind) {
  std::string key(1, kCounterPrefix);
  AppendLengthPrefixed(&key, user_id);
  AppendLengthPrefixed(&key, offer_id);
  key.push_back(static_cast<char>(kind));
  return key;
}

std::string DedupeKey(const UserEvent& e) {
  std::string key(1, kDedupePrefix);
  AppendLengthPrefixed(&key, e.decision_id);
  AppendLengthPrefixed(&key, e.user_id);
  AppendLengthPrefixed(&key, e.offer_id);
  key.push_back(static_cast<char>(e.kind));
  return key;
}

std::string EncodeCounter(int64_t count, int64_t last_ms) {
  std::string v(16, '\0');
  std::memcpy(v.data(), &count, 8);
  std::memcpy(v.data() + 8, &last_ms, 8);
  return v;
}

bool DecodeCounter(absl::string_view v, int64_t* count, int64_t* last_ms) {
  if (v.size() != 16) return false;
  std::memcpy(count, v.data(), 8);
  std::memcpy(last_ms, v.data() + 8, 8);
  return true;
}

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

rocksdb::ColumnFamilyOptions PointLookupOptions(const std::shared_ptr<rocksdb::Cache>& cache) {
  rocksdb::ColumnFamilyOptions cf;
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = cache;
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  table.whole_key_filtering = true;
  table.cache_index_and_filter_blocks = true;
  table.pin_l0_filter_and_index_blocks_in_cache = true;
  table.block_size = 8 * 1024;
  cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  // Keep bloom filters on the last level too: lookups of unknown users (cold start) are
  // common, and a filter answers them without reading a data block.
  cf.optimize_filters_for_hits = false;
  cf.compression = rocksdb::kLZ4Compression;
  cf.bottommost_compression = rocksdb::kZSTD;
  return cf;
}

}  // namespace

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

  const rocksdb::ColumnFamilyOptions cf = PointLookupOptions(store->block_cache_);
  std::vector<rocksdb::ColumnFamilyDescriptor> families = {
      {rocksdb::kDefaultColumnFamilyName, cf}, {kUsersCf, cf},  {kPurchasesCf, cf},
      {kFatigueCf, cf},                         {kOffersCf, cf}, {kMetaCf, cf}};
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s =
      rocksdb::DB::Open(db_options, options.path, families, &store->handles_, &raw);
  if (!s.ok()) return FromRocks(s, absl::StrCat("cannot open database at ", options.path));
  store->db_.reset(raw);
  store->users_ = store->handles_[1];
  store->purchases_ = store->handles_[2];
  store->fatigue_ = store->handles_[3];
  store->meta_ = store->handles_[5];
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
    base = *decoded;
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

absl::StatusOr<RocksDbStore::ApplyStats> RocksDbStore::ApplyEvents(
    absl::Span<const UserEvent> events) {
  absl::MutexLock lock(&events_mu_);
  ApplyStats stats;
  rocksdb::WriteBatch batch;
  // Values written earlier in this batch, so that repeated keys within one request compose.
  std::map<std::string, std::string> pending_fatigue;
  std::map<std::string, PurchaseDays> pending_purchases;
  const auto read_fatigue = [&](const std::string& key, std::string* value) -> rocksdb::Status {
    auto it = pending_fatigue.find(key);
    if (it != pending_fatigue.end()) {
      *value = it->second;
      return rocksdb::Status::OK();
    }
    return db_->Get(rocksdb::ReadOptions(), fatigue_, key, value);
  };
  for (const UserEvent& e : events) {
    std::string value;
    if (!e.decision_id.empty()) {
      const std::string dedupe = DedupeKey(e);
      rocksdb::Status s = read_fatigue(dedupe, &value);
      if (s.ok()) {
        ++stats.duplicates;
        continue;
      }
      if (!s.IsNotFound()) return FromRocks(s, "events dedupe get");
      pending_fatigue[dedupe] = "";
      batch.Put(fatigue_, dedupe, "");
    }
    if (e.kind == EventKind::kPurchase) {
      const std::string key = PurchaseKey(e.user_id, kPurchaseDelta);
      auto it = pending_purchases.find(key);
      if (it == pending_purchases.end()) {
        PurchaseDays days;
        rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), purchases_, key, &value);
        if (s.ok()) {
          if (!DecodePurchaseDays(value, &days)) {
            return absl::DataLossError("purchase delta: corrupt value");
          }
        } else if (!s.IsNotFound()) {
          return FromRocks(s, "purchases get");
        }
        it = pending_purchases.emplace(key, std::move(days)).first;
      }
      it->second[DayOfMs(e.timestamp_ms)] += e.amount;
      batch.Put(purchases_, key, EncodePurchaseDays(it->second));
    } else {
      const std::string key = CounterKey(e.user_id, e.offer_id, e.kind);
      int64_t count = 0, last_ms = 0;
      rocksdb::Status s = read_fatigue(key, &value);
      if (s.ok()) {
        if (!DecodeCounter(value, &count, &last_ms)) {
          return absl::DataLossError("offer event counter: corrupt value");
        }
      } else if (!s.IsNotFound()) {
        return FromRocks(s, "counter get");
      }
      const std::string updated = EncodeCounter(count + 1, std::max(last_ms, e.timestamp_ms));
      pending_fatigue[key] = updated;
      batch.Put(fatigue_, key, updated);
    }
    ++stats.applied;
  }
  if (batch.Count() > 0) {
    rocksdb::WriteOptions options;  // WAL on (disableWAL = false)
    rocksdb::Status s = db_->Write(options, &batch);
    if (!s.ok()) return FromRocks(s, "events write");
  }
  return stats;
}

absl::StatusOr<RocksDbStore::OfferEventCounter> RocksDbStore::GetOfferEventCounter(
    absl::string_view user_id, absl::string_view offer_id, EventKind kind) const {
  std::string value;
  rocksdb::Status s =
      db_->Get(rocksdb::ReadOptions(), fatigue_, CounterKey(user_id, offer_id, kind), &value);
  OfferEventCounter counter;
  if (s.IsNotFound()) return counter;
  if (!s.ok()) return FromRocks(s, "counter get");
  if (!DecodeCounter(value, &counter.count, &counter.last_ms)) {
    return absl::DataLossError("offer event counter: corrupt value");
  }
  return counter;
}

absl::StatusOr<RocksDbStore::IngestStats> RocksDbStore::IngestUsersFile(const std::string& path) {
  const auto start = std::chrono::steady_clock::now();
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::string line;
  int64_t line_number = 0;
  std::optional<UsersFileHeader> header;
  IngestStats stats;
  // One batch for the whole file: nothing is written unless every line is valid.
  rocksdb::WriteBatch batch;
  while (std::getline(in, line)) {
    ++line_number;
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    if (!header) {
      absl::StatusOr<UsersFileHeader> parsed = ParseUsersHeader(line);
      if (!parsed.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ":", line_number, ": ", parsed.status().message()));
      }
      header = std::move(*parsed);
      continue;
    }
    absl::StatusOr<UserLine> user = ParseUserLine(*header, line);
    if (!user.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", line_number, ": ", user.status().message()));
    }
    batch.Put(users_, user->user_id, EncodeUserRecord(user->record));
    if (user->purchases) {
      batch.Put(purchases_, PurchaseKey(user->user_id, kPurchaseBase),
                EncodePurchaseSummary(*user->purchases));
      ++stats.with_purchases;
    } else {
      batch.Delete(purchases_, PurchaseKey(user->user_id, kPurchaseBase));
    }
    stats.with_embedding += user->record.embedding.empty() ? 0 : 1;
    ++stats.users;
  }
  if (in.bad()) return absl::UnavailableError(absl::StrCat(path, ": read error"));
  if (!header) return absl::InvalidArgumentError(absl::StrCat(path, ": empty file (no header)"));
  batch.Put(meta_, kMetaFeatureSchemaId, header->feature_schema.id);
  rocksdb::WriteOptions write_options;
  write_options.sync = true;
  rocksdb::Status s = db_->Write(write_options, &batch);
  if (!s.ok()) return FromRocks(s, absl::StrCat("ingest ", path));
  stats.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
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
