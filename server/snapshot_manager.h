#ifndef OFFERD_SERVER_SNAPSHOT_MANAGER_H_
#define OFFERD_SERVER_SNAPSHOT_MANAGER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/clock.h"
#include "store/bundle.h"

namespace offerd {

// Which bundle serves: loads bundles from `<snapshot_root>/<version>/`, validates them off
// the serving path, publishes one atomically and keeps what GetStatus reports.
//
// Requests call Pin() once and keep the returned pointer for their whole life: a request
// always sees one immutable bundle even while a new one is published.
//
// Thread safety: all methods are thread-safe. Loads are serialised by an internal mutex
// (one load at a time); Pin() never waits for a load.
class SnapshotManager {
 public:
  struct Options {
    std::string snapshot_root;
    // Returns the feature schema id of the stored user features ("" = none, no check).
    std::function<std::string()> store_feature_schema_id;
  };

  struct BundleInfo {
    std::string version;
    int64_t loaded_at_ms = 0;
    double load_ms = 0;
    int64_t num_offers = 0;
    int embedding_dim = 0;
    std::string index_type;
    std::string feature_schema_id;
  };

  struct Rejection {
    std::string error;
    int64_t at_ms = 0;
  };

  struct StatusSnapshot {
    std::optional<BundleInfo> current;
    std::optional<BundleInfo> previous;
    std::map<std::string, Rejection> rejected;  // version -> newest failed attempt
  };

  SnapshotManager(Options options, const Clock* clock);

  // The bundle serving now; nullptr before the first successful load.
  std::shared_ptr<const Bundle> Pin() const ABSL_LOCKS_EXCLUDED(current_mu_);

  // Tries versions newest first and publishes the first valid one. Invalid ones are logged
  // and remembered. Errors when none is valid (the message lists every rejection).
  absl::Status LoadNewestValid() ABSL_LOCKS_EXCLUDED(load_mu_);

  // Loads `version`, validates it and publishes it. On failure nothing changes for serving.
  absl::StatusOr<BundleInfo> LoadVersion(const std::string& version) ABSL_LOCKS_EXCLUDED(load_mu_);

  // Re-loads the previously served version from disk and publishes it.
  absl::StatusOr<BundleInfo> Rollback() ABSL_LOCKS_EXCLUDED(load_mu_);

  StatusSnapshot Status() const;

 private:
  absl::StatusOr<BundleInfo> LoadAndPublishLocked(const std::string& version)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(load_mu_);

  const Options options_;
  const Clock* const clock_;

  // Serialises loads, rollbacks and their bookkeeping.
  absl::Mutex load_mu_;
  // Guards the serving pointer only; held for a pointer copy, never during a load.
  mutable absl::Mutex current_mu_;
  std::shared_ptr<const Bundle> current_ ABSL_GUARDED_BY(current_mu_);

  mutable absl::Mutex status_mu_;
  std::optional<BundleInfo> current_info_ ABSL_GUARDED_BY(status_mu_);
  std::optional<BundleInfo> previous_info_ ABSL_GUARDED_BY(status_mu_);
  std::map<std::string, Rejection> rejected_ ABSL_GUARDED_BY(status_mu_);
};

}  // namespace offerd

#endif  // OFFERD_SERVER_SNAPSHOT_MANAGER_H_
