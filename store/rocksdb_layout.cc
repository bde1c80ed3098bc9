#include "store/rocksdb_layout.h"

#include <rocksdb/cache.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/table.h>

namespace offerd::rocksdb_layout {

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

bool ParsePurchaseKey(absl::string_view key, absl::string_view* user_id, char* kind) {
  if (key.size() < 3) return false;
  const size_t length =
      (static_cast<size_t>(static_cast<uint8_t>(key[0])) << 8) | static_cast<uint8_t>(key[1]);
  if (key.size() != length + 3) return false;
  *user_id = key.substr(2, length);
  *kind = key.back();
  return true;
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

}  // namespace offerd::rocksdb_layout
