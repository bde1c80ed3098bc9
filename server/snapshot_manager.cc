#include "server/snapshot_manager.h"

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/log.h"

namespace offerd {

SnapshotManager::SnapshotManager(Options options, const Clock* clock)
    : options_(std::move(options)), clock_(clock) {}

std::shared_ptr<const Bundle> SnapshotManager::Pin() const {
  absl::ReaderMutexLock lock(&current_mu_);
  return current_;
}

absl::StatusOr<SnapshotManager::BundleInfo> SnapshotManager::LoadAndPublishLocked(
    const std::string& version) {
  if (!IsValidBundleVersion(version)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "version \"", version, "\": must match [0-9A-Za-z._-]{1,128} and not start with '.'"));
  }
  const auto start = std::chrono::steady_clock::now();
  Bundle::LoadOptions load_options;
  if (options_.store_feature_schema_id) {
    load_options.expected_feature_schema_id = options_.store_feature_schema_id();
  }
  absl::StatusOr<std::shared_ptr<const Bundle>> bundle =
      Bundle::Load(absl::StrCat(options_.snapshot_root, "/", version), load_options);
  const double load_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  if (!bundle.ok()) {
    log::Error("bundle_rejected",
               {{"version", version}, {"error", std::string(bundle.status().message())}});
    absl::MutexLock lock(&status_mu_);
    rejected_[version] = Rejection{std::string(bundle.status().message()), clock_->NowMs()};
    return bundle.status();
  }
  BundleInfo info;
  info.version = (*bundle)->version();
  info.loaded_at_ms = clock_->NowMs();
  info.load_ms = load_ms;
  info.num_offers = (*bundle)->manifest().num_offers;
  info.embedding_dim = (*bundle)->dimension();
  info.index_type = (*bundle)->manifest().index.type;
  info.feature_schema_id = (*bundle)->manifest().feature_schema.id;

  std::shared_ptr<const Bundle> old;
  {
    absl::MutexLock lock(&current_mu_);
    old = std::exchange(current_, std::move(*bundle));
  }
  {
    absl::MutexLock lock(&status_mu_);
    if (current_info_ && current_info_->version != info.version) previous_info_ = current_info_;
    current_info_ = info;
    rejected_.erase(version);
  }
  log::Info("bundle_published", {{"version", info.version},
                                 {"num_offers", info.num_offers},
                                 {"index", info.index_type},
                                 {"load_ms", load_ms}});
  // `old` is released here, on the loading thread, unless a request still pins it.
  return info;
}

absl::Status SnapshotManager::LoadNewestValid() {
  absl::MutexLock lock(&load_mu_);
  absl::StatusOr<std::vector<std::string>> versions = ListBundleVersions(options_.snapshot_root);
  if (!versions.ok()) return versions.status();
  if (versions->empty()) {
    return absl::NotFoundError(
        absl::StrCat("no bundle under snapshot root ", options_.snapshot_root));
  }
  std::string errors;
  for (const std::string& version : *versions) {
    absl::StatusOr<BundleInfo> info = LoadAndPublishLocked(version);
    if (info.ok()) return absl::OkStatus();
    absl::StrAppend(&errors, "\n  ", info.status().message());
  }
  return absl::FailedPreconditionError(
      absl::StrCat("no valid bundle under ", options_.snapshot_root, ":", errors));
}

absl::StatusOr<SnapshotManager::BundleInfo> SnapshotManager::LoadVersion(
    const std::string& version) {
  absl::MutexLock lock(&load_mu_);
  return LoadAndPublishLocked(version);
}

absl::StatusOr<SnapshotManager::BundleInfo> SnapshotManager::Rollback() {
  absl::MutexLock lock(&load_mu_);
  std::optional<BundleInfo> previous;
  {
    absl::MutexLock status_lock(&status_mu_);
    previous = previous_info_;
  }
  if (!previous) return absl::FailedPreconditionError("rollback: no previous bundle");
  return LoadAndPublishLocked(previous->version);
}

SnapshotManager::StatusSnapshot SnapshotManager::Status() const {
  absl::MutexLock lock(&status_mu_);
  return StatusSnapshot{current_info_, previous_info_, rejected_};
}

}  // namespace offerd
