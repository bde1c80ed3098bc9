#ifndef OFFERD_STORE_JSONL_LOG_H_
#define OFFERD_STORE_JSONL_LOG_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace offerd {

// Rotating JSONL files written off the hot path (ARCHITECTURE.md "Logs for offline use";
// docs/logs-format.md is the contract with the offline reader).
//
// Files live in `directory` and are named
//     <prefix>-<UTC yyyymmddThhmmssZ>-<pid>-<seq>.jsonl       complete, never written again
//     <prefix>-<UTC yyyymmddThhmmssZ>-<pid>-<seq>.jsonl.open  the one being written
// The timestamp is the file's creation time and `seq` (6 digits, zero-padded) counts the files
// this writer opened, so names sort by creation time and never collide across restarts (the
// file is created with O_EXCL; a taken name bumps `seq`). The writer holds an exclusive
// flock(2) on its `.open` file. On rotation (size) and Close() the file is fsync'ed and renamed
// to `.jsonl`; an empty file is deleted instead. Create() renames `.open` files of the same
// prefix that no live writer holds (left by a crash) to `.jsonl`. A reader may read `.open`
// files too; their last line may be incomplete (torn) and must then be skipped.
//
// Every line is one JSON value followed by '\n'. Only whole lines are written by one write(2)
// sequence; a torn line can only be the last line of a file (crash, or an I/O error after
// which the writer abandons the file and continues in a new one).
//
// Durability: queued lines reach the file (write(2)) at least every `flush_interval`; fsync
// happens on rotation, on Flush() and on Close(). A process crash loses at most the lines
// queued in the last `flush_interval`; a power loss, those since the last fsync.
//
// Thread safety: all methods are safe to call concurrently. TryAppend() never blocks on I/O:
// it takes a mutex for a vector push_back (the writer thread swaps the whole vector out, so
// the critical section is short and independent of the disk).
class JsonlLogWriter {
 public:
  struct Options {
    // Directory of the log files; created (with parents) when missing.
    std::string directory;
    // File name prefix, e.g. "decisions" or "events": [A-Za-z0-9_]+ (no '-', so names parse
    // unambiguously).
    std::string file_prefix;
    // Rotate before a line would make the file exceed this size. A single longer line gets a
    // file of its own. >= 1.
    int64_t max_file_bytes = int64_t{64} << 20;
    // Complete files of this prefix kept in `directory` (including those of earlier runs);
    // the oldest (by name) are deleted after each rotation and at Create(). The file being
    // written is not counted. >= 1.
    int max_files = 20;
    // Lines queued and not yet taken by the writer thread; TryAppend() drops beyond it. >= 1.
    int64_t queue_capacity = 65536;
    // Longest time a queued line waits before it is written (write(2), not fsync). > 0.
    absl::Duration flush_interval = absl::Seconds(1);
    // Wait before retrying after an I/O error (doubles up to 16x while errors persist). > 0.
    absl::Duration retry_backoff = absl::Milliseconds(100);
    // Clock used for file names; nullptr = absl::Now. Tests inject a fixed clock.
    std::function<absl::Time()> clock;
    // For tests only: called on the writer thread after it took a batch from the queue and
    // before it writes it. Blocking in it makes the queue fill up deterministically.
    std::function<void()> before_write_batch_for_testing;
  };

  // Counters since Create(). Each is read atomically; they are not one consistent snapshot
  // (except after Flush()/Close() returned with no concurrent TryAppend()).
  struct Stats {
    int64_t appended = 0;       // TryAppend() calls (accepted or not)
    int64_t dropped = 0;        // lines refused: queue full or writer closed
    int64_t rejected = 0;       // lines refused: contained '\n'
    int64_t written = 0;        // lines written to a file
    int64_t lost = 0;           // accepted lines abandoned at Close() because of I/O errors
    int64_t queue_depth = 0;    // accepted lines not yet written (queued or being written)
    int64_t bytes_written = 0;  // bytes written to files, '\n' included
    int64_t files_rotated = 0;  // files completed (renamed to .jsonl), Close() included
    int64_t write_errors = 0;   // failed open/write/fsync/rename/unlink calls
  };
  // After Close(): appended == written + dropped + rejected + lost.

  // Validates `options`, creates the directory, completes orphaned `.open` files, prunes old
  // files and opens the first file (so an unusable directory fails here, with the path and
  // errno text in the message), then starts the writer thread.
  static absl::StatusOr<std::unique_ptr<JsonlLogWriter>> Create(const Options& options);

  // Close()s.
  ~JsonlLogWriter();

  JsonlLogWriter(const JsonlLogWriter&) = delete;
  JsonlLogWriter& operator=(const JsonlLogWriter&) = delete;

  // Queues `line` (one JSON value, without the trailing '\n') for writing. Never blocks on
  // I/O and allocates nothing beyond `line` (the queue's vectors keep their capacity). Returns
  // false, and counts it, when the queue is full or the writer is closed ("dropped"), or when
  // `line` contains '\n' ("rejected").
  bool TryAppend(std::string line) ABSL_LOCKS_EXCLUDED(mu_);

  // Blocks until every line accepted before the call is written and fsync'ed. Returns the I/O
  // error when the writer failed to do so (the lines stay queued and are retried; a later
  // Flush() may succeed), FailedPrecondition after Close().
  absl::Status Flush() ABSL_LOCKS_EXCLUDED(mu_);

  // Writes and fsyncs everything queued, completes the current file (rename to `.jsonl`) and
  // stops the writer thread. After persistent I/O errors (three attempts) the remaining lines
  // are counted as `lost` and the error is returned. Idempotent: later calls return OK.
  absl::Status Close() ABSL_LOCKS_EXCLUDED(mu_);

  Stats stats() const;

  // The file being written ("" when none is open). For tests and status pages.
  std::string active_file_path() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  explicit JsonlLogWriter(const Options& options);

  // Writer thread.
  void WriterLoop() ABSL_LOCKS_EXCLUDED(mu_);
  bool WriterShouldWake() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Formats `batch` into pending_ and writes whatever fits; false on an I/O error (unwritten
  // lines stay in pending_).
  bool WriteBatch(std::vector<std::string>* batch);
  // Writes pending_ to the current file (opening one when needed); false on an I/O error.
  bool WritePending();
  absl::Status OpenNewFile();
  // fsync + rename to `.jsonl` (or unlink when empty) + close; then prunes old files.
  absl::Status CompleteCurrentFile();
  // Closes the current file after an I/O error: rename to `.jsonl` without fsync.
  void AbandonCurrentFile();
  absl::Status SyncCurrentFile();
  void PruneOldFiles();
  void RecordError(const absl::Status& status) ABSL_LOCKS_EXCLUDED(mu_);
  void SetActivePath(const std::string& path) ABSL_LOCKS_EXCLUDED(mu_);

  const Options options_;
  const int64_t wake_lines_;  // queue size at which the writer is woken early

  mutable absl::Mutex mu_;
  std::vector<std::string> queue_ ABSL_GUARDED_BY(mu_);
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  // Flush(): lines accepted up to the highest requested target must be written and synced.
  int64_t flush_target_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t synced_through_ ABSL_GUARDED_BY(mu_) = 0;    // accepted lines written + fsync'ed
  int64_t error_generation_ ABSL_GUARDED_BY(mu_) = 0;  // bumped on every failed attempt
  absl::Status last_error_ ABSL_GUARDED_BY(mu_);
  absl::Status close_status_ ABSL_GUARDED_BY(mu_);
  std::string active_path_ ABSL_GUARDED_BY(mu_);
  int64_t accepted_ ABSL_GUARDED_BY(mu_) = 0;  // lines ever queued (the flush sequence)

  // Writer-thread state (also used by Create() before the thread starts; not locked).
  int fd_ = -1;
  std::string open_path_;      // "<base>.jsonl.open" of fd_
  std::string complete_path_;  // "<base>.jsonl" of fd_
  int64_t file_bytes_ = 0;     // bytes in the current file
  int64_t file_seq_ = 0;       // files opened by this writer
  std::string pending_;        // whole lines formatted, not yet written
  int64_t pending_lines_ = 0;
  std::vector<std::string> batch_;

  std::atomic<int64_t> appended_{0};
  std::atomic<int64_t> dropped_{0};
  std::atomic<int64_t> rejected_{0};
  std::atomic<int64_t> accepted_count_{0};
  std::atomic<int64_t> written_{0};
  std::atomic<int64_t> lost_{0};
  std::atomic<int64_t> bytes_written_{0};
  std::atomic<int64_t> files_rotated_{0};
  std::atomic<int64_t> write_errors_{0};

  std::thread thread_;
};

}  // namespace offerd

#endif  // OFFERD_STORE_JSONL_LOG_H_
