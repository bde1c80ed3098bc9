#ifndef OFFERD_STORE_USERS_SST_H_
#define OFFERD_STORE_USERS_SST_H_

// Bulk load of user features by SST ingestion (docs/snapshot-format.md, "Bulk load").
//
// RocksDB locks its directory, so a running offerd cannot share its database with another
// process. `offerctl ingest` therefore turns a users.jsonl file into sorted SST files with
// WriteUsersSst (no database needed), and offerd ingests them with RocksDbStore::IngestSst,
// which checks every file with ValidateUsersSst first. The files carry their column family
// and feature schema id as table properties, so a file cannot land in the wrong column family
// or under the wrong schema.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace offerd {

// Table property names written into every bulk-load SST file.
inline constexpr char kSstPropertyFormat[] = "offerd.sst_format";  // "1"
inline constexpr char kSstPropertyColumnFamily[] = "offerd.column_family";
inline constexpr char kSstPropertyFeatureSchemaId[] = "offerd.feature_schema_id";

struct WriteUsersSstOptions {
  // Directory the files go to; created when missing. Files already there with the names this
  // writer uses are an error (never overwritten).
  std::string directory;
  // A new file is started once one reaches this size (bytes), so that compactions after the
  // ingest work on files of a usual size. Keys never overlap between files.
  int64_t max_file_bytes = 256LL << 20;
  // Threads parsing the JSON lines (most of the cost); 0 = one per core.
  int parse_threads = 1;
};

struct WriteUsersSstResult {
  std::string feature_schema_id;  // the users file header's schema id
  // Absolute paths of the files written: users-NNNNNN.sst first, then purchases-NNNNNN.sst.
  std::vector<std::string> paths;
  int64_t users = 0;
  int64_t with_embedding = 0;
  int64_t with_purchases = 0;
  int64_t bytes = 0;         // total size of the files written
  double parse_seconds = 0;  // reading, parsing and encoding the users file
  double write_seconds = 0;  // sorting and writing the SST files
};

// Reads a users.jsonl file (header + one user per line, validated exactly as
// RocksDbStore::IngestUsersFile does) and writes:
//   users-*.sst      user id -> encoded UserRecord (column family `users`)
//   purchases-*.sst  purchase *base* key -> encoded PurchaseSummary (column family
//                    `purchases`); a user without purchases gets an empty base, so the
//                    ingest clears an old one. Online purchase deltas are never written.
// Lines may come in any order; they are sorted in memory (the encoded users plus per-entry
// overhead: offerctl peaks at ~0.8 GB resident for 1M users with 64-d embeddings, 300 MB of
// SST). A user id appearing twice is an error naming both lines. On error, files already
// written are removed.
absl::StatusOr<WriteUsersSstResult> WriteUsersSst(const std::string& users_file,
                                                  const WriteUsersSstOptions& options);

struct UsersSstFacts {
  std::string column_family;  // "users" or "purchases"
  std::string feature_schema_id;
  int64_t entries = 0;
  int64_t bytes = 0;  // file size
};

// Checks that `path` is a bulk-load SST file written by WriteUsersSst for
// `expected_feature_schema_id`: its table properties (format, column family, schema id, no
// deletions or merge operands, bytewise comparator), the checksum of every block, and every
// entry (users: 1..256-byte id, value decodes with the expected schema id; purchases: a
// well-formed *base* key and a value that decodes). INVALID_ARGUMENT naming the problem
// otherwise; NOT_FOUND / UNAVAILABLE when the file cannot be read. Messages start with
// `name_in_errors` (default: `path`).
absl::StatusOr<UsersSstFacts> ValidateUsersSst(const std::string& path,
                                               absl::string_view expected_feature_schema_id,
                                               absl::string_view name_in_errors = {});

}  // namespace offerd

#endif  // OFFERD_STORE_USERS_SST_H_
