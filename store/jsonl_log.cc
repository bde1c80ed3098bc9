#include "store/jsonl_log.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

namespace offerd {
namespace {

constexpr absl::string_view kCompleteSuffix = ".jsonl";
constexpr absl::string_view kOpenSuffix = ".jsonl.open";
// pending_ is written once it holds this much, so a large batch is written in pieces.
constexpr size_t kWriteChunkBytes = size_t{1} << 20;
constexpr int kCloseAttempts = 3;
constexpr int kMaxBackoffMultiplier = 16;

absl::Status ErrnoError(absl::string_view what, absl::string_view path, int err) {
  const std::string message = absl::StrCat(what, " ", path, ": ", std::strerror(err));
  if (err == ENOENT) return absl::NotFoundError(message);
  if (err == EACCES || err == EPERM || err == EROFS) return absl::PermissionDeniedError(message);
  if (err == ENOSPC || err == EDQUOT) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

bool AllDigits(absl::string_view s) {
  return !s.empty() &&
         std::all_of(s.begin(), s.end(), [](char c) { return absl::ascii_isdigit(c); });
}

// True when `name` is "<prefix>-<yyyymmddThhmmssZ>-<pid>-<seq><suffix>".
bool IsLogFileName(absl::string_view name, absl::string_view prefix, absl::string_view suffix) {
  if (!absl::ConsumePrefix(&name, prefix) || !absl::ConsumePrefix(&name, "-") ||
      !absl::ConsumeSuffix(&name, suffix)) {
    return false;
  }
  // yyyymmddThhmmssZ
  if (name.size() < 16 || !AllDigits(name.substr(0, 8)) || name[8] != 'T' ||
      !AllDigits(name.substr(9, 6)) || name[15] != 'Z') {
    return false;
  }
  name.remove_prefix(16);
  if (!absl::ConsumePrefix(&name, "-")) return false;
  const size_t dash = name.find('-');
  return dash != absl::string_view::npos && AllDigits(name.substr(0, dash)) &&
         AllDigits(name.substr(dash + 1));
}

bool ValidPrefix(absl::string_view prefix) {
  return !prefix.empty() && std::all_of(prefix.begin(), prefix.end(),
                                        [](char c) { return absl::ascii_isalnum(c) || c == '_'; });
}

// Best effort: makes created/renamed/deleted entries of `dir` durable.
bool SyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = ::fsync(fd) == 0;
  ::close(fd);
  return ok;
}

// Names (not paths) of the entries of `dir` that are log files of `prefix` with `suffix`,
// sorted (= by creation time).
std::vector<std::string> ListLogFiles(const std::string& dir, absl::string_view prefix,
                                      absl::string_view suffix) {
  std::vector<std::string> names;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (IsLogFileName(name, prefix, suffix)) names.push_back(std::move(name));
  }
  std::sort(names.begin(), names.end());
  return names;
}

int64_t CountNewlines(const char* data, size_t size) {
  return static_cast<int64_t>(std::count(data, data + size, '\n'));
}

}  // namespace

JsonlLogWriter::JsonlLogWriter(const Options& options)
    : options_(options),
      wake_lines_(std::max<int64_t>(1, std::min<int64_t>(options.queue_capacity / 4, 8192))) {}

absl::StatusOr<std::unique_ptr<JsonlLogWriter>> JsonlLogWriter::Create(const Options& options) {
  const std::string where = absl::StrCat("jsonl log '", options.file_prefix, "'");
  if (options.directory.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": directory is empty"));
  }
  if (!ValidPrefix(options.file_prefix)) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": file_prefix must match [A-Za-z0-9_]+"));
  }
  if (options.max_file_bytes < 1 || options.max_files < 1 || options.queue_capacity < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": max_file_bytes, max_files and queue_capacity must be >= 1 (got ",
        options.max_file_bytes, ", ", options.max_files, ", ", options.queue_capacity, ")"));
  }
  if (options.flush_interval <= absl::ZeroDuration() ||
      options.retry_backoff <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": flush_interval and retry_backoff must be > 0"));
  }
  std::error_code ec;
  std::filesystem::create_directories(options.directory, ec);
  if (ec) {
    return absl::FailedPreconditionError(absl::StrCat(where, ": cannot create log directory ",
                                                      options.directory, ": ", ec.message()));
  }
  if (!std::filesystem::is_directory(options.directory, ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat(where, ": ", options.directory, " is not a directory"));
  }

  std::unique_ptr<JsonlLogWriter> writer(new JsonlLogWriter(options));
  // Complete the `.open` files a crashed writer left behind; a live writer holds a flock on
  // its file, so it is left alone.
  for (const std::string& name :
       ListLogFiles(options.directory, options.file_prefix, kOpenSuffix)) {
    const std::string path = absl::StrCat(options.directory, "/", name);
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0) {
      struct stat st;
      const std::string done =
          path.substr(0, path.size() - (kOpenSuffix.size() - kCompleteSuffix.size()));
      if (::fstat(fd, &st) == 0 && st.st_size == 0) {
        ::unlink(path.c_str());
      } else {
        ::rename(path.c_str(), done.c_str());
      }
    }
    ::close(fd);
  }
  writer->PruneOldFiles();
  if (absl::Status status = writer->OpenNewFile(); !status.ok()) {
    return absl::Status(status.code(), absl::StrCat(where, ": ", status.message()));
  }
  writer->thread_ = std::thread([w = writer.get()] { w->WriterLoop(); });
  return writer;
}

JsonlLogWriter::~JsonlLogWriter() { Close().IgnoreError(); }

bool JsonlLogWriter::TryAppend(std::string line) {
  appended_.fetch_add(1, std::memory_order_relaxed);
  if (std::memchr(line.data(), '\n', line.size()) != nullptr) {
    rejected_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  absl::MutexLock lock(&mu_);
  if (closing_ || static_cast<int64_t>(queue_.size()) >= options_.queue_capacity) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  queue_.push_back(std::move(line));
  ++accepted_;
  accepted_count_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

absl::Status JsonlLogWriter::Flush() {
  absl::MutexLock lock(&mu_);
  if (closed_) return absl::FailedPreconditionError("jsonl log: Flush() after Close()");
  const int64_t target = accepted_;
  if (synced_through_ >= target) return absl::OkStatus();
  flush_target_ = std::max(flush_target_, target);
  const int64_t generation = error_generation_;
  auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return synced_through_ >= target || error_generation_ != generation || closed_;
  };
  mu_.Await(absl::Condition(&done));
  if (synced_through_ >= target) return absl::OkStatus();
  if (closed_) return close_status_;
  return last_error_;
}

absl::Status JsonlLogWriter::Close() {
  {
    absl::MutexLock lock(&mu_);
    if (closing_) {
      // Another caller closes (or closed): wait for it, report success to later callers.
      mu_.Await(absl::Condition(&closed_));
      return absl::OkStatus();
    }
    closing_ = true;
  }
  if (thread_.joinable()) thread_.join();
  absl::MutexLock lock(&mu_);
  closed_ = true;
  return close_status_;
}

JsonlLogWriter::Stats JsonlLogWriter::stats() const {
  Stats s;
  s.appended = appended_.load(std::memory_order_relaxed);
  s.dropped = dropped_.load(std::memory_order_relaxed);
  s.rejected = rejected_.load(std::memory_order_relaxed);
  s.written = written_.load(std::memory_order_relaxed);
  s.lost = lost_.load(std::memory_order_relaxed);
  s.queue_depth =
      std::max<int64_t>(0, accepted_count_.load(std::memory_order_relaxed) - s.written - s.lost);
  s.bytes_written = bytes_written_.load(std::memory_order_relaxed);
  s.files_rotated = files_rotated_.load(std::memory_order_relaxed);
  s.write_errors = write_errors_.load(std::memory_order_relaxed);
  return s;
}

std::string JsonlLogWriter::active_file_path() const {
  absl::MutexLock lock(&mu_);
  return active_path_;
}

bool JsonlLogWriter::WriterShouldWake() const {
  return closing_ || flush_target_ > synced_through_ ||
         static_cast<int64_t>(queue_.size()) >= wake_lines_;
}

void JsonlLogWriter::WriterLoop() {
  bool in_error = false;
  int backoff_multiplier = 1;
  int close_failures = 0;
  while (true) {
    int64_t taken_through = 0;
    int64_t flush_target = 0;
    int64_t synced_through = 0;
    bool closing = false;
    bool took_batch = false;
    {
      absl::MutexLock lock(&mu_);
      if (in_error) {
        // Back off before retrying; Close() cuts the wait short once.
        const absl::Duration wait =
            closing_ ? options_.retry_backoff : options_.retry_backoff * backoff_multiplier;
        static constexpr bool kNever = false;
        mu_.AwaitWithTimeout(absl::Condition(closing_ ? &kNever : &closing_), wait);
      } else {
        mu_.AwaitWithTimeout(absl::Condition(this, &JsonlLogWriter::WriterShouldWake),
                             options_.flush_interval);
      }
      // New lines are taken only when the previous ones are out, so a failing disk makes the
      // queue fill up and drop instead of growing memory.
      if (pending_.empty() && !queue_.empty()) {
        batch_.swap(queue_);
        took_batch = true;
      }
      taken_through = accepted_ - static_cast<int64_t>(queue_.size());
      flush_target = flush_target_;
      synced_through = synced_through_;
      closing = closing_;
    }
    if (took_batch && options_.before_write_batch_for_testing) {
      options_.before_write_batch_for_testing();
    }

    absl::Status status;
    bool ok = pending_.empty() || WritePending();
    if (ok && took_batch) ok = WriteBatch(&batch_);
    batch_.clear();  // frees the strings, keeps the vector's capacity
    const bool must_sync = closing || flush_target > synced_through;
    if (ok && must_sync) {
      status = closing ? CompleteCurrentFile() : SyncCurrentFile();
      ok = status.ok();
    }

    if (!status.ok()) RecordError(status);  // before close_status_ reads last_error_
    bool finished = false;
    {
      absl::MutexLock lock(&mu_);
      if (ok) {
        in_error = false;
        backoff_multiplier = 1;
        if (must_sync) synced_through_ = std::max(synced_through_, taken_through);
        // While closing, loop until the queue is drained (TryAppend refuses new lines).
        finished = closing && queue_.empty() && pending_.empty();
      } else {
        in_error = true;
        backoff_multiplier = std::min(backoff_multiplier * 2, kMaxBackoffMultiplier);
        ++error_generation_;
        if (closing && ++close_failures >= kCloseAttempts) {
          const int64_t unwritten =
              CountNewlines(pending_.data(), pending_.size()) + static_cast<int64_t>(queue_.size());
          lost_.fetch_add(unwritten, std::memory_order_relaxed);
          pending_.clear();
          queue_.clear();
          close_status_ =
              absl::Status(last_error_.code(),
                           absl::StrCat("jsonl log '", options_.file_prefix, "': ", unwritten,
                                        " lines lost at close: ", last_error_.message()));
          finished = true;
        }
      }
    }
    if (finished) {
      if (fd_ >= 0) AbandonCurrentFile();
      SetActivePath("");
      return;
    }
  }
}

bool JsonlLogWriter::WriteBatch(std::vector<std::string>* batch) {
  bool ok = true;
  for (std::string& line : *batch) {
    pending_.append(line);
    pending_.push_back('\n');
    std::string().swap(line);
    if (ok && pending_.size() >= kWriteChunkBytes) ok = WritePending();
  }
  if (ok && !pending_.empty()) ok = WritePending();
  return ok;
}

bool JsonlLogWriter::WritePending() {
  size_t offset = 0;
  bool ok = true;
  while (offset < pending_.size()) {
    if (fd_ < 0) {
      if (absl::Status status = OpenNewFile(); !status.ok()) {
        RecordError(status);
        ok = false;
        break;
      }
    }
    // The longest run of whole lines that fits in the current file; a file's first line is
    // written whole even when it alone exceeds max_file_bytes.
    const size_t remaining = pending_.size() - offset;
    const int64_t room = options_.max_file_bytes - file_bytes_;
    size_t chunk = 0;
    if (room >= static_cast<int64_t>(remaining)) {
      chunk = remaining;  // pending_ always ends with '\n'
    } else {
      const char* begin = pending_.data() + offset;
      if (room > 0) {
        const void* last = ::memrchr(begin, '\n', static_cast<size_t>(room));
        if (last != nullptr) chunk = static_cast<const char*>(last) - begin + 1;
      }
      if (chunk == 0 && file_bytes_ == 0) {
        chunk = static_cast<const char*>(std::memchr(begin, '\n', remaining)) - begin + 1;
      }
    }
    if (chunk == 0) {  // the next line does not fit: rotate
      if (absl::Status status = CompleteCurrentFile(); !status.ok()) {
        RecordError(status);
        ok = false;
        break;
      }
      continue;
    }
    size_t done = 0;
    int err = 0;
    while (done < chunk) {
      const ssize_t n = ::write(fd_, pending_.data() + offset + done, chunk - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        err = errno;
        break;
      }
      done += static_cast<size_t>(n);
    }
    // Count only whole lines; the bytes of a line cut by an error stay in the abandoned file
    // as its (torn) last line and the line is written again, whole, in the next file.
    size_t whole = done;
    if (err != 0) {
      const void* last = done > 0 ? ::memrchr(pending_.data() + offset, '\n', done) : nullptr;
      whole = last == nullptr ? 0 : static_cast<const char*>(last) - (pending_.data() + offset) + 1;
    }
    written_.fetch_add(CountNewlines(pending_.data() + offset, whole), std::memory_order_relaxed);
    bytes_written_.fetch_add(static_cast<int64_t>(done), std::memory_order_relaxed);
    file_bytes_ += static_cast<int64_t>(done);
    offset += whole;
    if (err != 0) {
      RecordError(ErrnoError("cannot write", open_path_, err));
      AbandonCurrentFile();
      ok = false;
      break;
    }
  }
  pending_.erase(0, offset);
  return ok;
}

absl::Status JsonlLogWriter::OpenNewFile() {
  const absl::Time now = options_.clock ? options_.clock() : absl::Now();
  const std::string stamp = absl::FormatTime("%Y%m%dT%H%M%SZ", now, absl::UTCTimeZone());
  const int pid = static_cast<int>(::getpid());
  for (int attempt = 0; attempt < 1000; ++attempt) {
    const std::string base = absl::StrFormat("%s/%s-%s-%d-%06d", options_.directory,
                                             options_.file_prefix, stamp, pid, file_seq_++);
    const std::string open_path = absl::StrCat(base, kOpenSuffix);
    const std::string complete_path = absl::StrCat(base, kCompleteSuffix);
    struct stat st;
    if (::stat(complete_path.c_str(), &st) == 0) continue;  // name taken by an earlier run
    const int fd =
        ::open(open_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
      if (errno == EEXIST) continue;
      return ErrnoError("cannot create", open_path, errno);
    }
    // Marks the file as live for other writers' orphan recovery; cannot fail on a new file
    // that nobody else has opened.
    ::flock(fd, LOCK_EX | LOCK_NB);
    SyncDirectory(options_.directory);
    fd_ = fd;
    open_path_ = open_path;
    complete_path_ = complete_path;
    file_bytes_ = 0;
    SetActivePath(open_path_);
    return absl::OkStatus();
  }
  return absl::AlreadyExistsError(
      absl::StrCat("no free file name for ", options_.file_prefix, " in ", options_.directory));
}

absl::Status JsonlLogWriter::SyncCurrentFile() {
  if (fd_ < 0) return absl::OkStatus();
  if (::fsync(fd_) != 0) {
    const int err = errno;
    absl::Status status = ErrnoError("cannot fsync", open_path_, err);
    AbandonCurrentFile();
    return status;
  }
  return absl::OkStatus();
}

absl::Status JsonlLogWriter::CompleteCurrentFile() {
  if (fd_ < 0) return absl::OkStatus();
  if (absl::Status status = SyncCurrentFile(); !status.ok()) return status;
  absl::Status status;
  if (file_bytes_ == 0) {
    if (::unlink(open_path_.c_str()) != 0) status = ErrnoError("cannot delete", open_path_, errno);
  } else if (::rename(open_path_.c_str(), complete_path_.c_str()) != 0) {
    status = ErrnoError("cannot rename", open_path_, errno);
  } else {
    files_rotated_.fetch_add(1, std::memory_order_relaxed);
  }
  ::close(fd_);
  fd_ = -1;
  SetActivePath("");
  SyncDirectory(options_.directory);
  PruneOldFiles();
  // A failed rename/unlink leaves a `.open` file whose lines are all written; it is not worth
  // retrying the lines, so only the error is reported.
  if (!status.ok()) RecordError(status);
  return absl::OkStatus();
}

void JsonlLogWriter::AbandonCurrentFile() {
  if (fd_ < 0) return;
  ::fsync(fd_);
  if (file_bytes_ == 0) {
    ::unlink(open_path_.c_str());
  } else if (::rename(open_path_.c_str(), complete_path_.c_str()) == 0) {
    files_rotated_.fetch_add(1, std::memory_order_relaxed);
  }
  ::close(fd_);
  fd_ = -1;
  SetActivePath("");
}

void JsonlLogWriter::PruneOldFiles() {
  const std::vector<std::string> names =
      ListLogFiles(options_.directory, options_.file_prefix, kCompleteSuffix);
  const size_t excess = names.size() > static_cast<size_t>(options_.max_files)
                            ? names.size() - options_.max_files
                            : 0;
  for (size_t i = 0; i < excess; ++i) {
    const std::string path = absl::StrCat(options_.directory, "/", names[i]);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      RecordError(ErrnoError("cannot delete", path, errno));
    }
  }
}

void JsonlLogWriter::RecordError(const absl::Status& status) {
  write_errors_.fetch_add(1, std::memory_order_relaxed);
  absl::MutexLock lock(&mu_);
  last_error_ = status;
}

void JsonlLogWriter::SetActivePath(const std::string& path) {
  absl::MutexLock lock(&mu_);
  active_path_ = path;
}

}  // namespace offerd
