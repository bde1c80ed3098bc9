#include "store/users_sst.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <system_error>
#include <thread>

#include <rocksdb/comparator.h>
#include <rocksdb/env.h>
#include <rocksdb/iterator.h>
#include <rocksdb/options.h>
#include <rocksdb/sst_file_reader.h>
#include <rocksdb/sst_file_writer.h>
#include <rocksdb/table_properties.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/request_limits.h"
#include "store/rocksdb_layout.h"
#include "store/user_codec.h"
#include "store/users_file.h"

namespace offerd {
namespace {

namespace fs = std::filesystem;
using rocksdb_layout::kPurchaseBase;
using rocksdb_layout::kPurchasesCf;
using rocksdb_layout::kUsersCf;

constexpr char kSstFormatVersion[] = "1";

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Stamps every file with its column family and feature schema id (table properties), which
// the server checks before ingesting: a purchases file offered as users data, or features
// written under another schema, are refused by content, not by file name.
class OfferdPropertiesCollector final : public rocksdb::TablePropertiesCollector {
 public:
  OfferdPropertiesCollector(std::string column_family, std::string feature_schema_id)
      : column_family_(std::move(column_family)),
        feature_schema_id_(std::move(feature_schema_id)) {}

  rocksdb::Status AddUserKey(const rocksdb::Slice& /*key*/, const rocksdb::Slice& /*value*/,
                             rocksdb::EntryType /*type*/, rocksdb::SequenceNumber /*seq*/,
                             uint64_t /*file_size*/) override {
    return rocksdb::Status::OK();
  }
  rocksdb::Status Finish(rocksdb::UserCollectedProperties* properties) override {
    *properties = GetReadableProperties();
    return rocksdb::Status::OK();
  }
  rocksdb::UserCollectedProperties GetReadableProperties() const override {
    return {{kSstPropertyFormat, kSstFormatVersion},
            {kSstPropertyColumnFamily, column_family_},
            {kSstPropertyFeatureSchemaId, feature_schema_id_}};
  }
  const char* Name() const override { return "offerd.PropertiesCollector"; }

 private:
  const std::string column_family_;
  const std::string feature_schema_id_;
};

class OfferdPropertiesCollectorFactory final : public rocksdb::TablePropertiesCollectorFactory {
 public:
  OfferdPropertiesCollectorFactory(std::string column_family, std::string feature_schema_id)
      : column_family_(std::move(column_family)),
        feature_schema_id_(std::move(feature_schema_id)) {}
  rocksdb::TablePropertiesCollector* CreateTablePropertiesCollector(
      rocksdb::TablePropertiesCollectorFactory::Context /*context*/) override {
    return new OfferdPropertiesCollector(column_family_, feature_schema_id_);
  }
  const char* Name() const override { return "offerd.PropertiesCollectorFactory"; }

 private:
  const std::string column_family_;
  const std::string feature_schema_id_;
};

// The database's table options (bloom filters, block size), so ingested files read like
// flushed ones. Compression: LZ4 (the non-bottom setting): an ingest that overlaps stored
// users lands above the bottom level, and LZ4 writes several times faster than ZSTD.
rocksdb::Options WriterOptions(const std::string& column_family,
                               const std::string& feature_schema_id) {
  rocksdb::Options options(rocksdb::DBOptions(), rocksdb_layout::PointLookupOptions(nullptr));
  options.bottommost_compression = rocksdb::kDisableCompressionOption;
  options.table_properties_collector_factories.push_back(
      std::make_shared<OfferdPropertiesCollectorFactory>(column_family, feature_schema_id));
  return options;
}

// Writes sorted entries into numbered files `<prefix>-NNNNNN.sst`, starting a new file once
// the current one reaches `max_bytes`.
class RotatingSstWriter {
 public:
  RotatingSstWriter(rocksdb::Options options, std::string directory, std::string prefix,
                    int64_t max_bytes, std::vector<std::string>* paths)
      : options_(std::move(options)),
        directory_(std::move(directory)),
        prefix_(std::move(prefix)),
        max_bytes_(max_bytes),
        paths_(paths) {}

  absl::Status Put(absl::string_view key, absl::string_view value) {
    if (writer_ == nullptr || static_cast<int64_t>(writer_->FileSize()) >= max_bytes_) {
      if (absl::Status s = Finish(); !s.ok()) return s;
      const std::string path =
          absl::StrFormat("%s/%s-%06d.sst", directory_, prefix_, ++file_number_);
      std::error_code ec;
      if (fs::exists(fs::symlink_status(path, ec))) {
        return absl::AlreadyExistsError(absl::StrCat(path, ": already exists (not overwritten)"));
      }
      // Keep the written pages cached (invalidate_page_cache=false): the server reads the
      // files right after to validate them.
      writer_ = std::make_unique<rocksdb::SstFileWriter>(rocksdb::EnvOptions(), options_,
                                                         /*column_family=*/nullptr,
                                                         /*invalidate_page_cache=*/false);
      if (rocksdb::Status s = writer_->Open(path); !s.ok()) {
        writer_.reset();
        return absl::UnavailableError(absl::StrCat(path, ": cannot create: ", s.ToString()));
      }
      paths_->push_back(path);
    }
    rocksdb::Status s = writer_->Put(rocksdb::Slice(key.data(), key.size()),
                                     rocksdb::Slice(value.data(), value.size()));
    if (!s.ok()) return absl::InternalError(absl::StrCat(paths_->back(), ": ", s.ToString()));
    return absl::OkStatus();
  }

  absl::Status Finish() {
    if (writer_ == nullptr) return absl::OkStatus();
    rocksdb::ExternalSstFileInfo info;
    rocksdb::Status s = writer_->Finish(&info);
    writer_.reset();
    if (!s.ok()) return absl::UnavailableError(absl::StrCat(paths_->back(), ": ", s.ToString()));
    bytes_ += static_cast<int64_t>(info.file_size);
    return absl::OkStatus();
  }

  int64_t bytes() const { return bytes_; }

 private:
  const rocksdb::Options options_;
  const std::string directory_;
  const std::string prefix_;
  const int64_t max_bytes_;
  std::vector<std::string>* const paths_;
  std::unique_ptr<rocksdb::SstFileWriter> writer_;
  int file_number_ = 0;
  int64_t bytes_ = 0;
};

struct EncodedUser {
  std::string user_id;
  std::string user_value;
  std::string purchase_value;
  int64_t line_number = 0;
};

absl::Status WriteSorted(std::vector<EncodedUser>* users_in_file_order,
                         const std::string& feature_schema_id, const WriteUsersSstOptions& options,
                         const std::string& directory, WriteUsersSstResult* result) {
  std::vector<EncodedUser>& users = *users_in_file_order;  // sorted in place
  std::sort(users.begin(), users.end(),
            [](const EncodedUser& a, const EncodedUser& b) { return a.user_id < b.user_id; });
  for (size_t i = 1; i < users.size(); ++i) {
    if (users[i].user_id == users[i - 1].user_id) {
      const auto [first, second] = std::minmax(users[i - 1].line_number, users[i].line_number);
      return absl::InvalidArgumentError(absl::StrCat(
          "user_id \"", users[i].user_id, "\" appears twice (lines ", first, " and ", second, ")"));
    }
  }
  RotatingSstWriter users_writer(WriterOptions(kUsersCf, feature_schema_id), directory, "users",
                                 options.max_file_bytes, &result->paths);
  for (const EncodedUser& u : users) {
    if (absl::Status s = users_writer.Put(u.user_id, u.user_value); !s.ok()) return s;
  }
  if (absl::Status s = users_writer.Finish(); !s.ok()) return s;

  // Purchase keys are length-prefixed, so their order is not the user id order.
  std::vector<std::pair<std::string, const EncodedUser*>> purchases;
  purchases.reserve(users.size());
  for (const EncodedUser& u : users) {
    purchases.emplace_back(rocksdb_layout::PurchaseKey(u.user_id, kPurchaseBase), &u);
  }
  std::sort(purchases.begin(), purchases.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  RotatingSstWriter purchases_writer(WriterOptions(kPurchasesCf, feature_schema_id), directory,
                                     "purchases", options.max_file_bytes, &result->paths);
  for (const auto& [key, user] : purchases) {
    if (absl::Status s = purchases_writer.Put(key, user->purchase_value); !s.ok()) return s;
  }
  if (absl::Status s = purchases_writer.Finish(); !s.ok()) return s;
  result->bytes = users_writer.bytes() + purchases_writer.bytes();
  return absl::OkStatus();
}

int DefaultParseThreads() {
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

absl::Status Invalid(const std::string& path, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", message));
}

}  // namespace

absl::StatusOr<WriteUsersSstResult> WriteUsersSst(const std::string& users_file,
                                                  const WriteUsersSstOptions& options) {
  if (options.directory.empty()) return absl::InvalidArgumentError("SST directory: empty");
  if (options.parse_threads < 0 || options.parse_threads > 256) {
    return absl::InvalidArgumentError("parse_threads: must be 0..256");
  }
  if (options.max_file_bytes < (1 << 20)) {
    return absl::InvalidArgumentError("max_file_bytes: must be >= 1 MiB");
  }
  std::error_code ec;
  fs::path normal = fs::absolute(options.directory, ec).lexically_normal();
  if (!normal.has_filename()) normal = normal.parent_path();  // "dir/" -> "dir"
  const std::string directory = normal.string();
  if (!ec) fs::create_directories(directory, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat(options.directory, ": cannot create directory: ", ec.message()));
  }

  WriteUsersSstResult result;
  const auto parse_start = std::chrono::steady_clock::now();
  std::vector<EncodedUser> users;
  absl::StatusOr<UsersFileHeader> header = ReadUsersFile(
      users_file,
      [&](int64_t line_number, UserLine user) {
        EncodedUser& encoded = users.emplace_back();
        encoded.user_value = EncodeUserRecord(user.record);
        // An explicit empty base (has_purchases=false) replaces any old base: a user whose
        // export shows no purchases must not keep the previous export's.
        encoded.purchase_value = EncodePurchaseSummary(user.purchases.value_or(PurchaseSummary()));
        encoded.user_id = std::move(user.user_id);
        encoded.line_number = line_number;
        result.with_embedding += user.record.embedding.empty() ? 0 : 1;
        result.with_purchases += user.purchases.has_value() ? 1 : 0;
        return absl::OkStatus();
      },
      options.parse_threads > 0 ? options.parse_threads : DefaultParseThreads());
  if (!header.ok()) return header.status();
  if (users.empty()) return absl::InvalidArgumentError(absl::StrCat(users_file, ": no users"));
  result.parse_seconds = SecondsSince(parse_start);
  result.feature_schema_id = header->feature_schema.id;
  result.users = static_cast<int64_t>(users.size());

  const auto write_start = std::chrono::steady_clock::now();
  absl::Status s = WriteSorted(&users, result.feature_schema_id, options, directory, &result);
  if (!s.ok()) {
    for (const std::string& path : result.paths) fs::remove(path, ec);
    return s;
  }
  result.write_seconds = SecondsSince(write_start);
  return result;
}

absl::StatusOr<UsersSstFacts> ValidateUsersSst(const std::string& file,
                                               absl::string_view expected_feature_schema_id,
                                               absl::string_view name_in_errors) {
  const std::string path = file;
  const std::string name = name_in_errors.empty() ? file : std::string(name_in_errors);
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    const int error = errno;
    if (error == ENOENT) return absl::NotFoundError(absl::StrCat(name, ": no such file"));
    return absl::UnavailableError(absl::StrCat(name, ": ", std::strerror(error)));
  }
  UsersSstFacts facts;
  facts.bytes = static_cast<int64_t>(st.st_size);

  rocksdb::Options options(rocksdb::DBOptions(), rocksdb_layout::PointLookupOptions(nullptr));
  rocksdb::SstFileReader reader(options);
  if (rocksdb::Status s = reader.Open(path); !s.ok()) {
    if (s.IsIOError()) return absl::UnavailableError(absl::StrCat(name, ": ", s.ToString()));
    return Invalid(name, absl::StrCat("not a readable SST file: ", s.ToString()));
  }
  const std::shared_ptr<const rocksdb::TableProperties> properties = reader.GetTableProperties();
  if (properties == nullptr) return Invalid(name, "no table properties");
  const auto property = [&](const char* name) -> std::string {
    auto it = properties->user_collected_properties.find(name);
    return it == properties->user_collected_properties.end() ? std::string() : it->second;
  };
  if (property(kSstPropertyFormat) != kSstFormatVersion) {
    return Invalid(name, "not an offerd bulk-load file (write it with `offerctl ingest`)");
  }
  facts.column_family = property(kSstPropertyColumnFamily);
  facts.feature_schema_id = property(kSstPropertyFeatureSchemaId);
  const bool users_cf = facts.column_family == kUsersCf;
  if (!users_cf && facts.column_family != kPurchasesCf) {
    return Invalid(name, absl::StrCat("column family \"", facts.column_family,
                                      "\" cannot be bulk-loaded (only users, purchases)"));
  }
  if (facts.feature_schema_id != expected_feature_schema_id) {
    return Invalid(name, absl::StrCat("written for feature schema \"", facts.feature_schema_id,
                                      "\", the request says \"", expected_feature_schema_id, "\""));
  }
  if (properties->comparator_name != rocksdb::BytewiseComparator()->Name()) {
    return Invalid(name,
                   absl::StrCat("comparator ", properties->comparator_name, " (the database uses ",
                                rocksdb::BytewiseComparator()->Name(), ")"));
  }
  // Deletions could erase data the file's iterator does not show (e.g. online purchase
  // deltas): only plain puts are accepted.
  if (properties->num_deletions != 0 || properties->num_range_deletions != 0 ||
      properties->num_merge_operands != 0) {
    return Invalid(name, "contains deletions or merge operands; only puts are accepted");
  }

  rocksdb::ReadOptions read_options;
  read_options.verify_checksums = true;  // every block, as it is read
  read_options.fill_cache = false;
  read_options.readahead_size = 2 << 20;
  std::unique_ptr<rocksdb::Iterator> it(reader.NewIterator(read_options));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    const absl::string_view key(it->key().data(), it->key().size());
    const absl::string_view value(it->value().data(), it->value().size());
    const int64_t entry = facts.entries++;
    if (users_cf) {
      if (key.empty() || key.size() > kMaxUserIdBytes) {
        return Invalid(name, absl::StrCat("entry ", entry, ": user id must be 1..", kMaxUserIdBytes,
                                          " bytes"));
      }
      absl::StatusOr<UserRecord> record = DecodeUserRecord(value);
      if (!record.ok()) {
        return Invalid(name, absl::StrCat("entry ", entry, ": ", record.status().message()));
      }
      if (record->feature_schema_id != expected_feature_schema_id) {
        return Invalid(name, absl::StrCat("entry ", entry, ": record of feature schema \"",
                                          record->feature_schema_id, "\""));
      }
    } else {
      absl::string_view user_id;
      char kind = 0;
      if (!rocksdb_layout::ParsePurchaseKey(key, &user_id, &kind) || user_id.empty() ||
          user_id.size() > kMaxUserIdBytes) {
        return Invalid(name, absl::StrCat("entry ", entry, ": not a purchase key"));
      }
      // Only the offline base: the online delta (purchases reported since) is never replaced.
      if (kind != kPurchaseBase) {
        return Invalid(name, absl::StrCat("entry ", entry,
                                          ": not an offline purchase base key (online purchase "
                                          "deltas cannot be bulk-loaded)"));
      }
      absl::StatusOr<PurchaseSummary> summary = DecodePurchaseSummary(value);
      if (!summary.ok()) {
        return Invalid(name, absl::StrCat("entry ", entry, ": ", summary.status().message()));
      }
    }
  }
  if (!it->status().ok()) {
    return Invalid(name, absl::StrCat("corrupt: ", it->status().ToString()));
  }
  if (facts.entries == 0) return Invalid(name, "no entries");
  return facts;
}

}  // namespace offerd
