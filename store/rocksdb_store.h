#ifndef OFFERD_STORE_ROCKSDB_STORE_H_
#define OFFERD_STORE_ROCKSDB_STORE_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "core/event.h"
#include "core/user_fatigue.h"
#include "store/feature_store.h"

namespace rocksdb {
class CompactionFilter;
class DB;
class ColumnFamilyHandle;
class Cache;
class Statistics;
}  // namespace rocksdb

namespace offerd {

// What a serving write does when it would have to wait: RocksDB throttling writes (flushes or
// compactions have fallen behind: RocksDB's "write stall", which delays a write by
// milliseconds or stops it until a flush completes), or another writer holding a lock it needs
// (an admin call writing during such a stall, say).
enum class OnWriteStall {
  kWait,  // wait until it can write (the default)
  kFail,  // write nothing and return at once an error IsWriteStalled() recognises
};

// True for the error a write with OnWriteStall::kFail returns when it would have had to wait
// (UNAVAILABLE, "... write stalled ...", with a payload this function checks).
bool IsWriteStalled(const absl::Status& status);

// Operator overrides and budget use of one offer, kept in memory and persisted in the
// `offers` column family.
struct OfferRuntime {
  bool paused = false;
  std::optional<int64_t> budget_override;  // replaces the catalog budget when set
  int64_t redemptions = 0;                 // REDEEM events applied
};

// offerd's embedded state in RocksDB, one column family per kind of state
// (ARCHITECTURE.md "State in RocksDB"):
//   users      user id -> offline feature record (UserRecord), written by ingest
//   purchases  user id + 'b' -> offline purchase base; user id + 'd' -> online purchase days
//              (kept apart so an ingest never erases reported purchases; merged on read)
//   fatigue    'F' + user id -> UserFatigueRecord (hour-bucketed impressions, last dismiss /
//              redeem per offer, shown per day); 'D' + user id + decision + offer + type ->
//              dedupe marker (time). Expired buckets and markers are dropped by a compaction
//              filter, never by scans.
//   offers     offer id -> OfferRuntime
//   meta       store-wide facts (ingested feature schema id)
//
// Options are tuned for point lookups (see store/README.md): a shared LRU block cache,
// 10-bit bloom filters on whole keys, index and filter blocks cached and pinned for L0.
// Writes go through the write-ahead log: an acknowledged write survives a process crash.
//
// Thread safety: all methods are safe for concurrent use. Read-modify-writes of one user's
// fatigue record are serialised by a striped per-user lock, so caps hold under concurrency.
class RocksDbStore final : public FeatureStore {
 public:
  struct Options {
    std::string path;                      // database directory; created when missing
    int64_t block_cache_bytes = 64 << 20;  // shared LRU block cache
    bool create_if_missing = true;
    // How long fatigue state and dedupe markers are kept (>= every cap window and cooldown).
    int64_t fatigue_retention_seconds = 90LL * 24 * 3600;
    // Clock of the compaction filter (Unix ms); the system clock when empty.
    std::function<int64_t()> now_ms;
    // When non-empty, IngestSst accepts files inside this directory only (compared after
    // resolving symbolic links of both directories). Empty: any absolute path.
    std::string sst_ingest_directory;
  };

  struct IngestStats {
    int64_t users = 0;
    int64_t with_embedding = 0;
    int64_t with_purchases = 0;
    double seconds = 0;
  };

  static absl::StatusOr<std::unique_ptr<RocksDbStore>> Open(const Options& options);
  ~RocksDbStore() override;

  absl::StatusOr<std::optional<UserRecord>> GetUser(absl::string_view user_id) const override;
  absl::StatusOr<std::optional<PurchaseSummary>> GetPurchases(
      absl::string_view user_id) const override;

  // Loads a users.jsonl file atomically (nothing is written unless every line is valid).
  absl::StatusOr<IngestStats> IngestUsersFile(const std::string& path);

  struct SstIngestRequest {
    // Absolute, normalised paths of regular files written by WriteUsersSst
    // (store/users_sst.h); at least one must hold `users` data.
    std::vector<std::string> paths;
    // Required; every file and every user record in them must carry it.
    std::string feature_schema_id;
    // False: refuse (FAILED_PRECONDITION) files whose schema differs from the one the stored
    // features were ingested with. True: accept them (a full re-ingest under a new schema);
    // the store then records the new schema id.
    bool allow_schema_change = false;
  };
  struct SstIngestStats {
    int64_t users = 0;             // user feature records ingested
    int64_t purchase_records = 0;  // offline purchase bases ingested (empty ones included)
    int64_t files = 0;
    int64_t bytes = 0;             // total size of the files
    double validate_seconds = 0;   // staging, checking every entry, writing the meta file
    double ingest_seconds = 0;     // RocksDB IngestExternalFiles
    std::string previous_feature_schema_id;  // "" when the store had none
  };
  // Bulk-loads SST files into the running database, atomically across column families: either
  // every file lands (and the store records `feature_schema_id`) or none does. Only user
  // features and offline purchase *bases* are replaced; online purchase deltas, fatigue state
  // and everything else are untouched. Each path is checked (absolute, normalised, a regular
  // file and not a symbolic link, readable, inside `sst_ingest_directory` when set), copied
  // into a staging directory inside the database directory and validated there with
  // ValidateUsersSst: the database then owns files nobody else can change after the check,
  // and the caller's files stay the caller's (to delete). Errors: INVALID_ARGUMENT naming the
  // path (index and name) and the problem; FAILED_PRECONDITION for a schema change without
  // `allow_schema_change`. On any error nothing is written. Ingests are serialised; serving
  // continues meanwhile.
  absl::StatusOr<SstIngestStats> IngestSst(const SstIngestRequest& request);

  // The user's fatigue record (empty for a user never shown anything).
  absl::StatusOr<UserFatigueRecord> GetUserFatigue(absl::string_view user_id) const;

  // The serve-time transaction of one decision. Under the user's lock: reads the fatigue
  // record, calls `decide` with it, and records every offer id `decide` returns as shown at
  // now_ms (impression bucket + day count) together with a dedupe marker per (decision_id,
  // offer, IMPRESSION), so that the client's IMPRESSION for that decision is not counted
  // again. `decide` must not call back into the store. With OnWriteStall::kFail, a write that
  // would wait (RocksDB throttling, or the user's lock held) is not made: nothing is recorded
  // and the error satisfies IsWriteStalled(), so the caller can run the whole decision again
  // where waiting is allowed.
  using DecideFn = std::function<absl::Status(const UserFatigueRecord& fatigue,
                                              std::vector<std::string>* served_offer_ids)>;
  absl::Status DecideAndRecord(absl::string_view user_id, absl::string_view decision_id,
                               int64_t now_ms, const DecideFn& decide,
                               OnWriteStall on_stall = OnWriteStall::kWait);

  struct ApplyStats {
    int64_t applied = 0;
    int64_t duplicates = 0;  // same (decision_id, offer_id, type) already applied
    // Per input event: true when it was a duplicate (not applied again).
    std::vector<bool> duplicate;
  };
  // Applies events in one WriteBatch (WAL on). PURCHASE -> online purchase delta;
  // IMPRESSION -> impression bucket and day count (unless already counted for its decision);
  // DISMISS / REDEEM -> cooldown times; REDEEM also uses one unit of the offer's budget.
  // Events with a decision_id are applied at most once per (decision_id, offer_id, type).
  // With OnWriteStall::kFail, a batch that would wait is not written (IsWriteStalled()).
  absl::StatusOr<ApplyStats> ApplyEvents(absl::Span<const UserEvent> events,
                                         OnWriteStall on_stall = OnWriteStall::kWait);

  // Runtime state of an offer (defaults when none was set).
  OfferRuntime GetOfferRuntime(absl::string_view offer_id) const;
  // The same for many offers under one lock (the request path looks up every candidate):
  // out[i] is the runtime state of offer_ids[i]. The spans must have the same size.
  void GetOfferRuntimes(absl::Span<const absl::string_view> offer_ids,
                        absl::Span<OfferRuntime> out) const;
  // Pauses/resumes an offer and/or sets (or clears, with budget = -1) its budget override;
  // persisted before it returns.
  absl::StatusOr<OfferRuntime> SetOfferOverride(absl::string_view offer_id,
                                                std::optional<bool> paused,
                                                std::optional<int64_t> budget);

  // Writes a consistent checkpoint of the whole database into `directory` (which must not
  // exist; its parent must). Opening it with Open() restores the state at this moment.
  absl::Status Checkpoint(const std::string& directory);

  // Erases everything stored about a user: features, purchases, fatigue, dedupe markers.
  absl::Status ForgetUser(absl::string_view user_id);

  std::string feature_schema_id() const;
  int64_t ApproximateUserCount() const;
  // Block cache hit ratio since open, in [0, 1] (NaN before any block read).
  double BlockCacheHitRatio() const;
  absl::Status Flush();
  // Compacts the fatigue column family now (tests of the compaction filter).
  absl::Status CompactFatigueForTesting();
  // Tests of write stalls: brings RocksDB into the state it is in when flushes fall behind
  // (background work paused, the unused default column family's memtables full), so that
  // every write stops (a failure leaves nothing paused); ResumeWritesForTesting() lets the flush
  // run, sets the options back and returns once writes are accepted again. Serving data is
  // untouched.
  absl::Status StopWritesForTesting();
  absl::Status ResumeWritesForTesting();

 private:
  RocksDbStore() = default;
  std::mutex& UserLock(absl::string_view user_id) const;
  absl::StatusOr<UserFatigueRecord> ReadFatigue(absl::string_view user_id) const;
  absl::Status LoadOfferRuntimes();

  std::shared_ptr<rocksdb::Cache> block_cache_;
  std::shared_ptr<rocksdb::Statistics> statistics_;
  std::unique_ptr<rocksdb::CompactionFilter> fatigue_filter_;  // outlives db_ (declared first)
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;  // owned; destroyed before db_
  rocksdb::ColumnFamilyHandle* users_ = nullptr;
  rocksdb::ColumnFamilyHandle* purchases_ = nullptr;
  rocksdb::ColumnFamilyHandle* fatigue_ = nullptr;
  rocksdb::ColumnFamilyHandle* offers_ = nullptr;
  rocksdb::ColumnFamilyHandle* meta_ = nullptr;
  int64_t fatigue_retention_seconds_ = 0;
  std::string path_;
  std::string sst_ingest_directory_;
  // Serialises bulk loads (schema check, staging directory, ingestion).
  std::mutex ingest_mu_;

  // Standard-library locks (not absl::Mutex): Debian's Abseil is not built with
  // ThreadSanitizer, which then cannot see absl::Mutex synchronisation; these can be checked.
  // Striped per-user locks for fatigue read-modify-writes.
  mutable std::array<std::mutex, 256> user_locks_;
  // Serialises event batches (they may touch many users and offers) and offer overrides.
  std::mutex events_mu_;

  // The options StopWritesForTesting() changed, to set back.
  std::unordered_map<std::string, std::string> stop_writes_restore_;

  mutable std::shared_mutex offers_mu_;
  absl::flat_hash_map<std::string, OfferRuntime> offer_runtime_ ABSL_GUARDED_BY(offers_mu_);
};

}  // namespace offerd

#endif  // OFFERD_STORE_ROCKSDB_STORE_H_
