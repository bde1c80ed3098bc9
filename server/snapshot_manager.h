#ifndef OFFERD_SERVER_SNAPSHOT_MANAGER_H_
#define OFFERD_SERVER_SNAPSHOT_MANAGER_H_

#include <cstdint>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/clock.h"
#include "store/bundle.h"

namespace offerd {

// Which bundle serves (ARCHITECTURE.md "Snapshot bundle", hot swap).
//
// One loader thread does all the work: it loads, validates and warms up bundles off the
// serving path, publishes them atomically, polls --snapshot_root for new versions, and
// destroys retired bundles. Requests call Pin() once and keep the pointer for their whole
// life; when the last request holding a retired bundle lets go, the bundle is handed back to
// the loader thread to be destroyed there, never on a request thread.
//
// Policy:
//  - the watcher publishes the highest valid version, unless a version is pinned or a canary
//    runs; a rejected version is remembered with a fingerprint of its files and not retried
//    until they change;
//  - LoadSnapshot (explicit) and Rollback pin the version in the pin file, <snapshot_root>/PINNED unless Options::pin_file says (survives
//    restarts) until Unpin;
//  - a canary serves a candidate bundle to a fixed fraction of users (deterministic hash of the
//    user id with the canary salt) until Promote (the candidate serves everyone, pinned) or
//    Rollback (the candidate is dropped);
//  - at startup the pinned version serves if valid, else the newest valid one; with no valid
//    bundle Create() fails, listing every rejection.
//
// Thread safety: every public method is thread-safe. Pin() never waits for a load.
class SnapshotManager {
 public:
  struct Options {
    std::string snapshot_root;
    // Where the pin lives; "" = <snapshot_root>/PINNED. Set it when the bundles are mounted
    // read-only (e.g. a shared volume in Kubernetes): the pin is per replica state anyway.
    std::string pin_file;
    // The feature schema id of the stored user features ("" = none, no check).
    std::function<std::string()> store_feature_schema_id;
    // Watcher period; zero disables the watcher (explicit loads still work).
    absl::Duration poll_interval = absl::Seconds(5);
    // Salt of the canary assignment hash (server configuration, not bundle data, so that a
    // new bundle does not reshuffle users).
    std::string canary_salt = "offerd-canary";
    // Runs real queries through a freshly loaded bundle before it is published. Default:
    // the bundle's warm-up queries through its retriever.
    std::function<void(const Bundle&)> warm_up;
    // After each successful load, before warm-up: AdviseHugePages() (server/huge_pages.h).
    bool huge_pages = false;
    // Test hook: called on the thread that destroys a retired bundle, after destruction.
    std::function<void(const std::string& version)> on_bundle_destroyed;
  };

  struct BundleInfo {
    std::string version;
    int64_t loaded_at_ms = 0;
    double load_ms = 0;    // read + validate + index build
    double warmup_ms = 0;  // warm-up queries before publishing
    int64_t num_offers = 0;
    int embedding_dim = 0;
    std::string index_type;
    std::string feature_schema_id;
    int64_t memory_bytes = 0;
  };

  struct Rejection {
    std::string error;
    int64_t at_ms = 0;
    std::string fingerprint;  // of the files when rejected
  };

  struct StatusSnapshot {
    std::optional<BundleInfo> current;
    std::optional<BundleInfo> previous;
    std::optional<BundleInfo> canary;
    double canary_fraction = 0;
    std::string pinned_version;  // "" when not pinned
    std::map<std::string, Rejection> rejected;  // version -> newest failed attempt
    int64_t loads_ok = 0;
    int64_t loads_failed = 0;
    // Load attempts by outcome: "ok" or the error's status code (DATA_LOSS for checksum or
    // truncation, INVALID_ARGUMENT for bad contents, NOT_FOUND for missing files,
    // FAILED_PRECONDITION for a feature schema mismatch, INTERNAL for FAISS errors).
    std::map<std::string, int64_t> load_outcomes;
  };

  // Loads the startup bundle and starts the loader thread.
  static absl::StatusOr<std::unique_ptr<SnapshotManager>> Create(Options options,
                                                                 const Clock* clock);
  ~SnapshotManager();

  // The bundle that serves `user_id` (the canary candidate for users in the canary fraction);
  // nullptr only if nothing was ever loaded.
  // `is_canary`, when given, tells whether the candidate was returned.
  std::shared_ptr<const Bundle> Pin(absl::string_view user_id, bool* is_canary = nullptr) const;
  // The fully published bundle.
  std::shared_ptr<const Bundle> Pin() const;

  // Loads `version` on the loader thread, validates, warms up and publishes it, and pins it.
  // With 0 < canary_fraction < 1 it becomes a canary candidate instead. Blocks until done.
  absl::StatusOr<BundleInfo> LoadVersion(const std::string& version, double canary_fraction = 0);
  // Makes the canary candidate serve everyone (pinned).
  absl::StatusOr<BundleInfo> Promote();
  // With a canary running: drops the candidate. Otherwise: reloads the previous version from
  // disk, publishes it and pins it.
  absl::StatusOr<BundleInfo> Rollback();
  // Removes the pin; the watcher then advances to the highest valid version.
  absl::Status Unpin();
  // Runs one watcher poll now, on the loader thread, and waits for it (tests, tools).
  void PollNow();

  StatusSnapshot Status() const;
  std::thread::id loader_thread_id() const { return loader_.get_id(); }

 private:
  class RetireQueue;
  struct Serving {
    std::shared_ptr<const Bundle> current;
    std::shared_ptr<const Bundle> canary;
    double canary_fraction = 0;
  };

  SnapshotManager(Options options, const Clock* clock);

  // Runs `job` on the loader thread and waits for it.
  void RunOnLoader(std::function<void()> job);
  void LoaderLoop();

  // Loader-thread-only helpers.
  absl::StatusOr<std::shared_ptr<const Bundle>> LoadAndWarm(const std::string& version,
                                                           BundleInfo* info);
  void PublishCurrent(std::shared_ptr<const Bundle> bundle, const BundleInfo& info);
  absl::Status LoadStartupBundle();
  void Poll();
  std::string PinPath() const;
  absl::Status WritePin(const std::string& version);
  std::string ReadPin() const;
  std::shared_ptr<const Bundle> WrapForRetirement(std::shared_ptr<const Bundle> bundle);

  const Options options_;
  const Clock* const clock_;
  std::shared_ptr<RetireQueue> retire_queue_;

  // Standard-library locks here (not absl::Mutex): Debian's Abseil is not built with
  // ThreadSanitizer, which then cannot see absl::Mutex synchronisation; these can be checked.
  mutable std::shared_mutex serving_mu_;
  Serving serving_ ABSL_GUARDED_BY(serving_mu_);

  mutable std::mutex status_mu_;
  StatusSnapshot status_ ABSL_GUARDED_BY(status_mu_);

  std::mutex jobs_mu_;
  std::condition_variable jobs_cv_;
  std::deque<std::function<void()>> jobs_ ABSL_GUARDED_BY(jobs_mu_);
  bool stopping_ ABSL_GUARDED_BY(jobs_mu_) = false;
  std::thread loader_;
};

}  // namespace offerd

#endif  // OFFERD_SERVER_SNAPSHOT_MANAGER_H_
