#ifndef OFFERD_STORE_ROCKSDB_STORE_H_
#define OFFERD_STORE_ROCKSDB_STORE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "core/event.h"
#include "store/feature_store.h"

namespace rocksdb {
class DB;
class ColumnFamilyHandle;
class Cache;
}  // namespace rocksdb

namespace offerd {

// offerd's embedded state in RocksDB, one column family per kind of state
// (ARCHITECTURE.md "State in RocksDB"): `users`, `purchases`, `fatigue`, `offers`, plus
// `meta` (store-wide facts such as the ingested feature schema id).
//
// Options are tuned for point lookups: a shared LRU block cache, 10-bit bloom filters on
// whole keys, index and filter blocks cached and pinned for L0. See store/README.md.
//
// Thread safety: all methods are safe for concurrent use (RocksDB is internally
// synchronised).
class RocksDbStore final : public FeatureStore {
 public:
  struct Options {
    std::string path;                   // database directory; created when missing
    int64_t block_cache_bytes = 64 << 20;  // shared LRU block cache
    bool create_if_missing = true;
  };

  struct IngestStats {
    int64_t users = 0;
    int64_t with_embedding = 0;
    int64_t with_purchases = 0;
    double seconds = 0;
  };

  // Opens (creating when allowed) the database at options.path. Errors say what is wrong with
  // the path (missing parent, not a directory, locked by another process, permissions).
  static absl::StatusOr<std::unique_ptr<RocksDbStore>> Open(const Options& options);
  ~RocksDbStore() override;

  absl::StatusOr<std::optional<UserRecord>> GetUser(absl::string_view user_id) const override;
  absl::StatusOr<std::optional<PurchaseSummary>> GetPurchases(
      absl::string_view user_id) const override;

  // Loads a users.jsonl file (docs/snapshot-format.md) atomically: the whole file is parsed
  // and validated first; on any error nothing is written and the error names the file and
  // line. Replaces the offline record and purchase base of every user in the file and records
  // the file's feature schema id.
  absl::StatusOr<IngestStats> IngestUsersFile(const std::string& path);

  struct ApplyStats {
    int64_t applied = 0;
    int64_t duplicates = 0;  // same (decision_id, offer_id, type) already applied
  };

  // Applies events in one WriteBatch with the write-ahead log on: an acknowledged event
  // survives a crash of the process. PURCHASE adds to the user's online purchase delta (kept
  // apart from the offline base, merged on read); other types update the per user x offer
  // counters (count and last time). Events carrying a decision_id are applied at most once
  // per (decision_id, offer_id, type).
  absl::StatusOr<ApplyStats> ApplyEvents(absl::Span<const UserEvent> events)
      ABSL_LOCKS_EXCLUDED(events_mu_);

  // Count and last time (Unix ms) of `kind` events for user x offer; {0, 0} when none.
  struct OfferEventCounter {
    int64_t count = 0;
    int64_t last_ms = 0;
  };
  absl::StatusOr<OfferEventCounter> GetOfferEventCounter(absl::string_view user_id,
                                                         absl::string_view offer_id,
                                                         EventKind kind) const;

  // Feature schema id of the last ingest; "" when nothing was ingested.
  std::string feature_schema_id() const;

  // RocksDB's estimate of the number of stored users.
  int64_t ApproximateUserCount() const;

  // Flushes memtables to SST files (used at shutdown).
  absl::Status Flush();

 private:
  RocksDbStore() = default;

  std::shared_ptr<rocksdb::Cache> block_cache_;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;  // owned; destroyed before db_
  rocksdb::ColumnFamilyHandle* users_ = nullptr;
  rocksdb::ColumnFamilyHandle* purchases_ = nullptr;
  rocksdb::ColumnFamilyHandle* fatigue_ = nullptr;
  rocksdb::ColumnFamilyHandle* meta_ = nullptr;
  // Serialises the read-modify-write of event application.
  absl::Mutex events_mu_;
};

}  // namespace offerd

#endif  // OFFERD_STORE_ROCKSDB_STORE_H_
