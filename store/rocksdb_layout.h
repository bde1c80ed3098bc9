#ifndef OFFERD_STORE_ROCKSDB_LAYOUT_H_
#define OFFERD_STORE_ROCKSDB_LAYOUT_H_

// On-disk layout shared by RocksDbStore (the database) and the SST bulk-load path
// (store/users_sst.h), which writes files for the database without opening it: column family
// names, key encodings and table options. Both sides must agree byte for byte, so they live
// in one place. Internal to store/.

#include <memory>
#include <string>

#include <rocksdb/options.h>

#include "absl/strings/string_view.h"

namespace rocksdb {
class Cache;
}  // namespace rocksdb

namespace offerd::rocksdb_layout {

inline constexpr char kUsersCf[] = "users";
inline constexpr char kPurchasesCf[] = "purchases";
inline constexpr char kFatigueCf[] = "fatigue";
inline constexpr char kOffersCf[] = "offers";
inline constexpr char kMetaCf[] = "meta";
inline constexpr char kMetaFeatureSchemaId[] = "feature_schema_id";

// Purchase keys: big-endian 16-bit user id length, user id, one kind byte. The length prefix
// keeps keys of different users from colliding whatever bytes the ids contain.
inline constexpr char kPurchaseBase = 'b';   // offline base, replaced by every ingest
inline constexpr char kPurchaseDelta = 'd';  // online purchase days, never touched by ingest

void AppendLengthPrefixed(std::string* key, absl::string_view part);
std::string PurchaseKey(absl::string_view user_id, char kind);
// Splits a purchase key; false when it is not one.
bool ParsePurchaseKey(absl::string_view key, absl::string_view* user_id, char* kind);

// Column-family options tuned for point lookups (bloom filters, cached index/filter blocks,
// LZ4 with ZSTD at the bottom). `cache` may be null (RocksDB then uses a small private one).
rocksdb::ColumnFamilyOptions PointLookupOptions(const std::shared_ptr<rocksdb::Cache>& cache);

}  // namespace offerd::rocksdb_layout

#endif  // OFFERD_STORE_ROCKSDB_LAYOUT_H_
