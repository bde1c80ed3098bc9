#include "server/snapshot_manager.h"

#include <sys/stat.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <shared_mutex>
#include <chrono>
#include <filesystem>
#include <future>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "core/assignment.h"
#include "server/huge_pages.h"
#include "server/log.h"
#include "store/file_util.h"

namespace offerd {
namespace {

constexpr char kPinFile[] = "PINNED";

double MsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

// Names, sizes and modification times of every file of a bundle directory: a rejected
// version is retried only when this changes.
std::string Fingerprint(const std::string& dir) {
  std::vector<std::string> entries;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    struct stat st;
    if (::stat(it->path().c_str(), &st) != 0) continue;
    entries.push_back(absl::StrCat(it->path().lexically_relative(dir).string(), ":", st.st_size,
                                   ":", st.st_mtim.tv_sec, ".", st.st_mtim.tv_nsec));
  }
  std::sort(entries.begin(), entries.end());
  std::string all;
  for (const std::string& e : entries) absl::StrAppend(&all, e, "\n");
  return Sha256Hex(all);
}

SnapshotManager::BundleInfo DescribeBundle(const Bundle& bundle) {
  SnapshotManager::BundleInfo info;
  info.version = bundle.version();
  info.num_offers = bundle.manifest().num_offers;
  info.embedding_dim = bundle.dimension();
  info.index_type = bundle.manifest().index.type;
  info.feature_schema_id = bundle.manifest().feature_schema.id;
  info.memory_bytes = bundle.memory_bytes();
  return info;
}

}  // namespace

// Where retired bundles go to be destroyed: the loader thread's job queue while the manager
// lives; inline once it has shut down.
class SnapshotManager::RetireQueue {
 public:
  explicit RetireQueue(SnapshotManager* manager) : manager_(manager) {}

  void Push(std::shared_ptr<const Bundle> bundle) {
    std::lock_guard<std::mutex> lock(mu_);
    if (manager_ == nullptr) return;  // shutting down: destroyed here
    auto holder = std::make_shared<std::shared_ptr<const Bundle>>(std::move(bundle));
    SnapshotManager* manager = manager_;
    std::lock_guard<std::mutex> jobs_lock(manager->jobs_mu_);
    manager->jobs_cv_.notify_one();
    manager->jobs_.push_back([manager, holder] {
      const std::string version = (*holder)->version();
      holder->reset();
      log::Info("bundle_destroyed", {{"version", version}});
      if (manager->options_.on_bundle_destroyed) manager->options_.on_bundle_destroyed(version);
    });
  }

  void Close() {
    std::lock_guard<std::mutex> lock(mu_);
    manager_ = nullptr;
  }

 private:
  std::mutex mu_;
  SnapshotManager* manager_ ABSL_GUARDED_BY(mu_);
};

SnapshotManager::SnapshotManager(Options options, const Clock* clock)
    : options_(std::move(options)),
      clock_(clock),
      retire_queue_(std::make_shared<RetireQueue>(this)) {}

absl::StatusOr<std::unique_ptr<SnapshotManager>> SnapshotManager::Create(Options options,
                                                                         const Clock* clock) {
  auto manager = std::unique_ptr<SnapshotManager>(new SnapshotManager(std::move(options), clock));
  manager->loader_ = std::thread([m = manager.get()] { m->LoaderLoop(); });
  absl::Status startup;
  manager->RunOnLoader([&] { startup = manager->LoadStartupBundle(); });
  if (!startup.ok()) return startup;
  return manager;
}

SnapshotManager::~SnapshotManager() {
  {
    std::lock_guard<std::mutex> lock(jobs_mu_);
    stopping_ = true;
  }
  jobs_cv_.notify_one();
  if (loader_.joinable()) loader_.join();
  retire_queue_->Close();
}

std::shared_ptr<const Bundle> SnapshotManager::Pin(absl::string_view user_id,
                                                   bool* is_canary) const {
  std::shared_lock<std::shared_mutex> lock(serving_mu_);
  const bool canary = serving_.canary != nullptr &&
                      AssignmentHash(options_.canary_salt, user_id) < serving_.canary_fraction;
  if (is_canary != nullptr) *is_canary = canary;
  return canary ? serving_.canary : serving_.current;
}

std::shared_ptr<const Bundle> SnapshotManager::Pin() const {
  std::shared_lock<std::shared_mutex> lock(serving_mu_);
  return serving_.current;
}

void SnapshotManager::RunOnLoader(std::function<void()> job) {
  std::promise<void> done;
  std::future<void> finished = done.get_future();
  {
    std::lock_guard<std::mutex> lock(jobs_mu_);
    jobs_.push_back([&job, &done] {
      job();
      done.set_value();
    });
  }
  jobs_cv_.notify_one();
  finished.wait();
}

void SnapshotManager::LoaderLoop() {
  const bool polling = options_.poll_interval > absl::ZeroDuration();
  const auto poll_period = absl::ToChronoMilliseconds(options_.poll_interval);
  auto next_poll = std::chrono::steady_clock::now() + poll_period;
  std::unique_lock<std::mutex> lock(jobs_mu_);
  while (true) {
    const auto ready = [this] { return stopping_ || !jobs_.empty(); };
    if (polling) {
      jobs_cv_.wait_until(lock, next_poll, ready);
    } else {
      jobs_cv_.wait(lock, ready);
    }
    if (!jobs_.empty()) {
      // Jobs (loads, retirements, callers waiting) run even while stopping.
      std::function<void()> job = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      job();
      job = nullptr;  // drop what the job captured (e.g. a retired bundle) on this thread
      lock.lock();
      continue;
    }
    if (stopping_) return;
    if (polling && std::chrono::steady_clock::now() >= next_poll) {
      lock.unlock();
      Poll();
      lock.lock();
      next_poll = std::chrono::steady_clock::now() + poll_period;
    }
  }
}

std::shared_ptr<const Bundle> SnapshotManager::WrapForRetirement(
    std::shared_ptr<const Bundle> bundle) {
  // The published pointer shares ownership of a holder; when its last copy goes (on whatever
  // thread), the holder hands the bundle to the loader thread to destroy.
  struct Holder {
    std::shared_ptr<const Bundle> bundle;
    std::shared_ptr<RetireQueue> queue;
  };
  const Bundle* raw = bundle.get();
  std::shared_ptr<Holder> holder(new Holder{std::move(bundle), retire_queue_}, [](Holder* h) {
    h->queue->Push(std::move(h->bundle));
    delete h;
  });
  return std::shared_ptr<const Bundle>(holder, raw);
}

absl::StatusOr<std::shared_ptr<const Bundle>> SnapshotManager::LoadAndWarm(
    const std::string& version, BundleInfo* info) {
  if (!IsValidBundleVersion(version)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "version \"", version, "\": must match [0-9A-Za-z._-]{1,128} and not start with '.'"));
  }
  const std::string dir = absl::StrCat(options_.snapshot_root, "/", version);
  const std::string fingerprint = Fingerprint(dir);
  Bundle::LoadOptions load_options;
  if (options_.store_feature_schema_id) {
    load_options.expected_feature_schema_id = options_.store_feature_schema_id();
  }
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::shared_ptr<const Bundle>> bundle = Bundle::Load(dir, load_options);
  if (!bundle.ok()) {
    log::Error("bundle_rejected",
               {{"version", version}, {"error", std::string(bundle.status().message())}});
    std::lock_guard<std::mutex> lock(status_mu_);
    status_.rejected[version] =
        Rejection{std::string(bundle.status().message()), clock_->NowMs(), fingerprint};
    ++status_.loads_failed;
    ++status_.load_outcomes[absl::StatusCodeToString(bundle.status().code())];
    return bundle.status();
  }
  *info = DescribeBundle(**bundle);
  info->load_ms = MsSince(start);
  if (options_.huge_pages) {
    const HugePageStats pages = AdviseHugePages();
    log::Info("huge_pages", {{"version", version},
                             {"mappings", pages.mappings},
                             {"advised_mb", pages.bytes_advised >> 20},
                             {"collapsed_mb", pages.bytes_collapsed >> 20},
                             {"ms", pages.ms}});
  }
  const auto warm_start = std::chrono::steady_clock::now();
  if (options_.warm_up) {
    options_.warm_up(**bundle);
  } else {
    std::vector<Candidate> candidates;
    const int k = (*bundle)->manifest().policy.retrieval_k;
    for (const std::vector<float>& query : (*bundle)->warmup_queries()) {
      (void)(*bundle)->retriever().Search(query, k, &candidates);
    }
  }
  info->warmup_ms = MsSince(warm_start);
  info->loaded_at_ms = clock_->NowMs();
  {
    std::lock_guard<std::mutex> lock(status_mu_);
    status_.rejected.erase(version);
    ++status_.loads_ok;
    ++status_.load_outcomes["ok"];
  }
  return WrapForRetirement(std::move(*bundle));
}

void SnapshotManager::PublishCurrent(std::shared_ptr<const Bundle> bundle,
                                     const BundleInfo& info) {
  std::shared_ptr<const Bundle> old;
  {
    std::unique_lock<std::shared_mutex> lock(serving_mu_);
    old = std::exchange(serving_.current, std::move(bundle));
  }
  {
    std::lock_guard<std::mutex> lock(status_mu_);
    if (status_.current && status_.current->version != info.version) {
      status_.previous = status_.current;
    }
    status_.current = info;
  }
  log::Info("bundle_published", {{"version", info.version},
                                 {"num_offers", info.num_offers},
                                 {"index", info.index_type},
                                 {"load_ms", info.load_ms},
                                 {"warmup_ms", info.warmup_ms}});
  // `old` drops here; if no request holds it, it is destroyed now, on this (loader) thread.
}

absl::Status SnapshotManager::LoadStartupBundle() {
  const std::string pinned = ReadPin();
  {
    std::lock_guard<std::mutex> lock(status_mu_);
    status_.pinned_version = pinned;
  }
  std::string errors;
  if (!pinned.empty()) {
    BundleInfo info;
    absl::StatusOr<std::shared_ptr<const Bundle>> bundle = LoadAndWarm(pinned, &info);
    if (bundle.ok()) {
      PublishCurrent(std::move(*bundle), info);
      return absl::OkStatus();
    }
    log::Warning("pinned_bundle_invalid",
                 {{"version", pinned}, {"error", std::string(bundle.status().message())}});
    absl::StrAppend(&errors, "\n  ", bundle.status().message());
  }
  absl::StatusOr<std::vector<std::string>> versions = ListBundleVersions(options_.snapshot_root);
  if (!versions.ok()) return versions.status();
  for (const std::string& version : *versions) {
    if (version == pinned) continue;
    BundleInfo info;
    absl::StatusOr<std::shared_ptr<const Bundle>> bundle = LoadAndWarm(version, &info);
    if (bundle.ok()) {
      PublishCurrent(std::move(*bundle), info);
      return absl::OkStatus();
    }
    absl::StrAppend(&errors, "\n  ", bundle.status().message());
  }
  if (errors.empty()) {
    return absl::NotFoundError(absl::StrCat("no bundle under snapshot root ", options_.snapshot_root));
  }
  return absl::FailedPreconditionError(
      absl::StrCat("no valid bundle under ", options_.snapshot_root, ":", errors));
}

void SnapshotManager::Poll() {
  {
    std::lock_guard<std::mutex> lock(status_mu_);
    status_.pinned_version = ReadPin();
    if (!status_.pinned_version.empty() || status_.canary) return;
  }
  absl::StatusOr<std::vector<std::string>> versions = ListBundleVersions(options_.snapshot_root);
  if (!versions.ok()) {
    log::Warning("snapshot_root_unreadable", {{"error", std::string(versions.status().message())}});
    return;
  }
  std::string current;
  {
    std::lock_guard<std::mutex> lock(status_mu_);
    if (status_.current) current = status_.current->version;
  }
  for (const std::string& version : *versions) {
    if (version == current) return;  // nothing newer is valid
    {
      std::lock_guard<std::mutex> lock(status_mu_);
      auto it = status_.rejected.find(version);
      if (it != status_.rejected.end() &&
          it->second.fingerprint ==
              Fingerprint(absl::StrCat(options_.snapshot_root, "/", version))) {
        continue;  // rejected before and unchanged since
      }
    }
    BundleInfo info;
    absl::StatusOr<std::shared_ptr<const Bundle>> bundle = LoadAndWarm(version, &info);
    if (bundle.ok()) {
      PublishCurrent(std::move(*bundle), info);
      return;
    }
  }
}

void SnapshotManager::PollNow() {
  RunOnLoader([this] { Poll(); });
}

absl::StatusOr<SnapshotManager::BundleInfo> SnapshotManager::LoadVersion(const std::string& version,
                                                                        double canary_fraction) {
  if (!(canary_fraction >= 0 && canary_fraction < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("canary_fraction: must be in [0, 1), got ", canary_fraction));
  }
  absl::StatusOr<BundleInfo> result;
  RunOnLoader([&] {
    {
      std::lock_guard<std::mutex> lock(status_mu_);
      if (canary_fraction > 0 && status_.canary) {
        result = absl::FailedPreconditionError(absl::StrCat(
            "a canary of ", status_.canary->version, " is running: Promote or Rollback it first"));
        return;
      }
    }
    BundleInfo info;
    absl::StatusOr<std::shared_ptr<const Bundle>> bundle = LoadAndWarm(version, &info);
    if (!bundle.ok()) {
      result = bundle.status();
      return;
    }
    if (canary_fraction > 0) {
      {
        std::unique_lock<std::shared_mutex> lock(serving_mu_);
        serving_.canary = std::move(*bundle);
        serving_.canary_fraction = canary_fraction;
      }
      std::lock_guard<std::mutex> lock(status_mu_);
      status_.canary = info;
      status_.canary_fraction = canary_fraction;
      log::Info("canary_started", {{"version", version}, {"fraction", canary_fraction}});
    } else {
      PublishCurrent(std::move(*bundle), info);
      if (absl::Status s = WritePin(version); !s.ok()) {
        result = s;
        return;
      }
    }
    result = info;
  });
  return result;
}

absl::StatusOr<SnapshotManager::BundleInfo> SnapshotManager::Promote() {
  absl::StatusOr<BundleInfo> result;
  RunOnLoader([&] {
    std::optional<BundleInfo> info;
    {
      std::lock_guard<std::mutex> lock(status_mu_);
      info = status_.canary;
    }
    if (!info) {
      result = absl::FailedPreconditionError("promote: no canary is running");
      return;
    }
    std::shared_ptr<const Bundle> candidate;
    {
      std::unique_lock<std::shared_mutex> lock(serving_mu_);
      candidate = std::move(serving_.canary);
      serving_.canary_fraction = 0;
    }
    {
      std::lock_guard<std::mutex> lock(status_mu_);
      status_.canary.reset();
      status_.canary_fraction = 0;
    }
    PublishCurrent(std::move(candidate), *info);
    if (absl::Status s = WritePin(info->version); !s.ok()) {
      result = s;
      return;
    }
    log::Info("canary_promoted", {{"version", info->version}});
    result = *info;
  });
  return result;
}

absl::StatusOr<SnapshotManager::BundleInfo> SnapshotManager::Rollback() {
  absl::StatusOr<BundleInfo> result;
  RunOnLoader([&] {
    std::optional<BundleInfo> canary, previous, current;
    {
      std::lock_guard<std::mutex> lock(status_mu_);
      canary = status_.canary;
      previous = status_.previous;
      current = status_.current;
    }
    if (canary) {
      std::shared_ptr<const Bundle> dropped;
      {
        std::unique_lock<std::shared_mutex> lock(serving_mu_);
        dropped = std::move(serving_.canary);
        serving_.canary_fraction = 0;
      }
      {
        std::lock_guard<std::mutex> lock(status_mu_);
        status_.canary.reset();
        status_.canary_fraction = 0;
      }
      log::Info("canary_rolled_back", {{"version", canary->version}});
      result = *current;
      return;
    }
    if (!previous) {
      result = absl::FailedPreconditionError("rollback: no previous bundle");
      return;
    }
    BundleInfo info;
    absl::StatusOr<std::shared_ptr<const Bundle>> bundle = LoadAndWarm(previous->version, &info);
    if (!bundle.ok()) {
      result = bundle.status();
      return;
    }
    PublishCurrent(std::move(*bundle), info);
    if (absl::Status s = WritePin(info.version); !s.ok()) {
      result = s;
      return;
    }
    log::Info("rolled_back", {{"version", info.version}});
    result = info;
  });
  return result;
}

absl::Status SnapshotManager::Unpin() {
  absl::Status result;
  RunOnLoader([&] {
    const std::string path = PinPath();
    std::error_code ec;
    std::filesystem::remove(path, ec);
    if (ec) {
      result = absl::InternalError(absl::StrCat(path, ": cannot remove: ", ec.message()));
      return;
    }
    std::lock_guard<std::mutex> lock(status_mu_);
    status_.pinned_version.clear();
    log::Info("unpinned");
  });
  return result;
}

std::string SnapshotManager::PinPath() const {
  return options_.pin_file.empty() ? absl::StrCat(options_.snapshot_root, "/", kPinFile)
                                   : options_.pin_file;
}

absl::Status SnapshotManager::WritePin(const std::string& version) {
  absl::Status s = WriteFileAtomically(PinPath(),
                                       absl::StrCat(version, "\n"));
  if (s.ok()) {
    std::lock_guard<std::mutex> lock(status_mu_);
    status_.pinned_version = version;
  }
  return s;
}

std::string SnapshotManager::ReadPin() const {
  absl::StatusOr<std::string> text =
      ReadFileToString(PinPath());
  if (!text.ok()) return "";
  const std::string version(absl::StripAsciiWhitespace(*text));
  if (!IsValidBundleVersion(version)) {
    log::Warning("pin_file_invalid", {{"content", version.substr(0, 140)}});
    return "";
  }
  return version;
}

SnapshotManager::StatusSnapshot SnapshotManager::Status() const {
  std::lock_guard<std::mutex> lock(status_mu_);
  return status_;
}

}  // namespace offerd
