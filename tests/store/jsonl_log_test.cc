#include "store/jsonl_log.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace offerd {
namespace {

namespace fs = std::filesystem;

constexpr absl::Duration kDeadline = absl::Seconds(30);

// A fresh, empty directory per test.
std::string MakeTestDir(const std::string& name) {
  const fs::path dir =
      fs::path(::testing::TempDir()) / absl::StrCat("jsonl_log_test_", ::getpid(), "_", name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

struct LogFile {
  std::string path;
  std::string base;  // name without ".jsonl" / ".jsonl.open"
  bool complete = false;
};

// Log files of `prefix` in `dir`, in name (= creation) order.
std::vector<LogFile> ListFiles(const std::string& dir, const std::string& prefix) {
  std::vector<LogFile> files;
  for (const auto& entry : fs::directory_iterator(dir)) {
    std::string name = entry.path().filename().string();
    if (!absl::StartsWith(name, prefix + "-")) continue;
    LogFile file;
    file.path = entry.path().string();
    if (absl::EndsWith(name, ".jsonl")) {
      file.complete = true;
      file.base = name.substr(0, name.size() - 6);
    } else if (absl::EndsWith(name, ".jsonl.open")) {
      file.base = name.substr(0, name.size() - 11);
    } else {
      continue;
    }
    files.push_back(file);
  }
  std::sort(files.begin(), files.end(),
            [](const LogFile& a, const LogFile& b) { return a.base < b.base; });
  return files;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Every line of every file, in order. Fails the test on a line without its '\n'.
std::vector<std::string> ReadLines(const std::string& dir, const std::string& prefix) {
  std::vector<std::string> lines;
  for (const LogFile& file : ListFiles(dir, prefix)) {
    const std::string text = ReadAll(file.path);
    EXPECT_TRUE(text.empty() || text.back() == '\n') << file.path << " ends in a torn line";
    for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
      lines.emplace_back(line);
    }
  }
  return lines;
}

JsonlLogWriter::Options BaseOptions(const std::string& dir) {
  JsonlLogWriter::Options options;
  options.directory = dir;
  options.file_prefix = "decisions";
  options.flush_interval = absl::Milliseconds(20);
  options.retry_backoff = absl::Milliseconds(5);
  // A fixed clock: every file of every writer gets the same timestamp, so the sequence number
  // and the collision handling are what keeps names unique and ordered.
  options.clock = [] { return absl::FromUnixSeconds(1795417200); };  // 2026-11-23T07:00:00Z
  return options;
}

std::string Line(int i) { return absl::StrCat("{\"i\":", i, "}"); }

TEST(JsonlLogWriterTest, LinesLandInOrderAndFlushMakesThemReadable) {
  const std::string dir = MakeTestDir("order");
  auto writer = JsonlLogWriter::Create(BaseOptions(dir));
  ASSERT_TRUE(writer.ok()) << writer.status();
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE((*writer)->TryAppend(Line(i)));
  ASSERT_TRUE((*writer)->Flush().ok());

  // Flushed lines are readable in the active file while the writer is still open.
  const std::vector<LogFile> files = ListFiles(dir, "decisions");
  ASSERT_EQ(files.size(), 1u);
  EXPECT_FALSE(files[0].complete);
  EXPECT_EQ(files[0].path, (*writer)->active_file_path());
  EXPECT_TRUE(absl::StartsWith(files[0].base,
                               absl::StrCat("decisions-20261123T070000Z-", ::getpid(), "-000000")))
      << files[0].base;
  const std::vector<std::string> lines = ReadLines(dir, "decisions");
  ASSERT_EQ(lines.size(), 1000u);
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(lines[i], Line(i));

  const JsonlLogWriter::Stats stats = (*writer)->stats();
  EXPECT_EQ(stats.appended, 1000);
  EXPECT_EQ(stats.written, 1000);
  EXPECT_EQ(stats.dropped, 0);
  EXPECT_EQ(stats.queue_depth, 0);
  EXPECT_EQ(stats.write_errors, 0);
  int64_t bytes = 0;
  for (const std::string& line : lines) bytes += static_cast<int64_t>(line.size()) + 1;
  EXPECT_EQ(stats.bytes_written, bytes);
}

TEST(JsonlLogWriterTest, FlushIntervalWritesWithoutFlush) {
  const std::string dir = MakeTestDir("interval");
  auto writer = JsonlLogWriter::Create(BaseOptions(dir));  // 20 ms interval, large capacity
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)->TryAppend(Line(7)));
  // One line is far below the wake-up batch size: only the interval timer writes it.
  const absl::Time deadline = absl::Now() + kDeadline;
  while ((*writer)->stats().written < 1 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(2));
  }
  EXPECT_EQ((*writer)->stats().written, 1);
  EXPECT_EQ(ReadAll((*writer)->active_file_path()), Line(7) + "\n");
}

TEST(JsonlLogWriterTest, RotatesBySizeAndKeepsMaxFiles) {
  const std::string dir = MakeTestDir("rotate");
  JsonlLogWriter::Options options = BaseOptions(dir);
  options.max_file_bytes = 100;
  options.max_files = 3;
  auto writer = JsonlLogWriter::Create(options);
  ASSERT_TRUE(writer.ok()) << writer.status();
  // 20-byte lines (19 + '\n'): five per 100-byte file.
  std::vector<std::string> sent;
  for (int i = 0; i < 52; ++i) {
    sent.push_back(absl::StrCat("{\"line\":", 100000000 + i, "} "));
    ASSERT_EQ(sent.back().size(), 19u);
    ASSERT_TRUE((*writer)->TryAppend(sent.back()));
    if (i % 7 == 0) {
      ASSERT_TRUE((*writer)->Flush().ok());  // rotation across batches too
    }
  }
  const std::string long_line(250, 'x');  // longer than a file: gets a file of its own
  ASSERT_TRUE((*writer)->TryAppend("\"" + long_line + "\""));
  sent.push_back("\"" + long_line + "\"");
  ASSERT_TRUE((*writer)->TryAppend(sent[0]));
  sent.push_back(sent[0]);
  ASSERT_TRUE((*writer)->Close().ok());

  const std::vector<LogFile> files = ListFiles(dir, "decisions");
  ASSERT_EQ(files.size(), 3u);
  for (const LogFile& file : files) EXPECT_TRUE(file.complete) << file.path;
  // 52 lines = 10 full files + 2 lines; then the long line; then one line: 13 files in all.
  EXPECT_EQ((*writer)->stats().files_rotated, 13);
  EXPECT_EQ(fs::file_size(files[0].path), 40u);   // the last 2 short lines
  EXPECT_EQ(fs::file_size(files[1].path), 253u);  // the long line alone
  EXPECT_EQ(fs::file_size(files[2].path), 20u);
  // The files kept hold the newest lines, in order.
  const std::vector<std::string> lines = ReadLines(dir, "decisions");
  const std::vector<std::string> newest(sent.end() - 4, sent.end());
  EXPECT_EQ(lines, newest);
}

TEST(JsonlLogWriterTest, DropsAndCountsWhenQueueIsFull) {
  const std::string dir = MakeTestDir("drop");
  JsonlLogWriter::Options options = BaseOptions(dir);
  options.queue_capacity = 4;
  absl::Notification writer_blocked;
  absl::Notification release_writer;
  options.before_write_batch_for_testing = [&] {
    if (!writer_blocked.HasBeenNotified()) {
      writer_blocked.Notify();
      ASSERT_TRUE(release_writer.WaitForNotificationWithTimeout(kDeadline));
    }
  };
  auto writer = JsonlLogWriter::Create(options);
  ASSERT_TRUE(writer.ok()) << writer.status();

  // The first line wakes the writer (capacity 4 -> wake at 1), which then blocks in the hook
  // holding that line: the queue is empty again and has room for exactly 4 more.
  ASSERT_TRUE((*writer)->TryAppend(Line(0)));
  ASSERT_TRUE(writer_blocked.WaitForNotificationWithTimeout(kDeadline));
  for (int i = 1; i <= 4; ++i) EXPECT_TRUE((*writer)->TryAppend(Line(i))) << i;
  for (int i = 5; i < 15; ++i) EXPECT_FALSE((*writer)->TryAppend(Line(i))) << i;
  JsonlLogWriter::Stats stats = (*writer)->stats();
  EXPECT_EQ(stats.appended, 15);
  EXPECT_EQ(stats.dropped, 10);
  EXPECT_EQ(stats.written, 0);
  EXPECT_EQ(stats.queue_depth, 5);

  release_writer.Notify();
  ASSERT_TRUE((*writer)->Flush().ok());
  EXPECT_TRUE((*writer)->TryAppend(Line(15)));  // room again
  ASSERT_TRUE((*writer)->Close().ok());
  stats = (*writer)->stats();
  EXPECT_EQ(stats.appended, 16);
  EXPECT_EQ(stats.dropped, 10);
  EXPECT_EQ(stats.written, 6);
  EXPECT_EQ(stats.queue_depth, 0);
  EXPECT_EQ(ReadLines(dir, "decisions"),
            (std::vector<std::string>{Line(0), Line(1), Line(2), Line(3), Line(4), Line(15)}));
}

TEST(JsonlLogWriterTest, RejectsLinesWithNewlines) {
  const std::string dir = MakeTestDir("reject");
  auto writer = JsonlLogWriter::Create(BaseOptions(dir));
  ASSERT_TRUE(writer.ok()) << writer.status();
  EXPECT_FALSE((*writer)->TryAppend("{\"a\":1}\n{\"b\":2}"));
  EXPECT_TRUE((*writer)->TryAppend("{\"a\":1}"));
  ASSERT_TRUE((*writer)->Close().ok());
  const JsonlLogWriter::Stats stats = (*writer)->stats();
  EXPECT_EQ(stats.rejected, 1);
  EXPECT_EQ(stats.appended, 2);
  EXPECT_EQ(ReadLines(dir, "decisions"), std::vector<std::string>{"{\"a\":1}"});
}

TEST(JsonlLogWriterTest, CloseCompletesTheFileAndIsIdempotent) {
  const std::string dir = MakeTestDir("close");
  {
    auto writer = JsonlLogWriter::Create(BaseOptions(dir));
    ASSERT_TRUE(writer.ok()) << writer.status();
    for (int i = 0; i < 100; ++i) ASSERT_TRUE((*writer)->TryAppend(Line(i)));
    // No Flush(): Close() must write everything queued.
    ASSERT_TRUE((*writer)->Close().ok());
    EXPECT_TRUE((*writer)->Close().ok());
    EXPECT_EQ((*writer)->active_file_path(), "");
    EXPECT_FALSE((*writer)->TryAppend(Line(100)));
    EXPECT_EQ((*writer)->Flush().code(), absl::StatusCode::kFailedPrecondition);
    const JsonlLogWriter::Stats stats = (*writer)->stats();
    EXPECT_EQ(stats.written, 100);
    EXPECT_EQ(stats.dropped, 1);
    EXPECT_EQ(stats.files_rotated, 1);
  }  // the destructor after Close() is a no-op
  const std::vector<LogFile> files = ListFiles(dir, "decisions");
  ASSERT_EQ(files.size(), 1u);
  EXPECT_TRUE(files[0].complete);
  const std::vector<std::string> lines = ReadLines(dir, "decisions");
  ASSERT_EQ(lines.size(), 100u);
  EXPECT_EQ(lines.back(), Line(99));
}

TEST(JsonlLogWriterTest, DestructorFlushesAndEmptyFileIsRemoved) {
  const std::string dir = MakeTestDir("destructor");
  {
    auto writer = JsonlLogWriter::Create(BaseOptions(dir));
    ASSERT_TRUE(writer.ok()) << writer.status();
    ASSERT_TRUE((*writer)->TryAppend(Line(1)));
  }
  EXPECT_EQ(ReadLines(dir, "decisions"), std::vector<std::string>{Line(1)});
  {
    auto writer = JsonlLogWriter::Create(BaseOptions(dir));  // writes nothing
    ASSERT_TRUE(writer.ok()) << writer.status();
  }
  EXPECT_EQ(ListFiles(dir, "decisions").size(), 1u);  // no empty file left behind
}

TEST(JsonlLogWriterTest, ConcurrentAppendersNeverTearLines) {
  const std::string dir = MakeTestDir("concurrent");
  JsonlLogWriter::Options options = BaseOptions(dir);
  options.queue_capacity = 2048;
  options.max_file_bytes = 64 << 10;
  options.max_files = 1000;
  auto writer = JsonlLogWriter::Create(options);
  ASSERT_TRUE(writer.ok()) << writer.status();
  constexpr int kThreads = 4;
  constexpr int kLinesPerThread = 10000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kLinesPerThread; ++i) {
        (*writer)->TryAppend(absl::StrCat("{\"t\":", t, ",\"i\":", i, ",\"pad\":\"",
                                          std::string(i % 50, 'p'), "\"}"));
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  ASSERT_TRUE((*writer)->Close().ok());
  const JsonlLogWriter::Stats stats = (*writer)->stats();
  EXPECT_EQ(stats.appended, kThreads * kLinesPerThread);
  EXPECT_EQ(stats.written + stats.dropped, stats.appended);
  EXPECT_EQ(stats.queue_depth, 0);
  EXPECT_EQ(stats.write_errors, 0);
  EXPECT_GT(stats.files_rotated, 1);

  // Every line on disk is whole, and each thread's lines appear in the order it sent them.
  const std::vector<std::string> lines = ReadLines(dir, "decisions");
  EXPECT_EQ(static_cast<int64_t>(lines.size()), stats.written);
  std::vector<int> last(kThreads, -1);
  for (const std::string& line : lines) {
    int t = -1, i = -1;
    ASSERT_EQ(std::sscanf(line.c_str(), "{\"t\":%d,\"i\":%d,", &t, &i), 2) << line;
    ASSERT_TRUE(t >= 0 && t < kThreads) << line;
    EXPECT_EQ(line, absl::StrCat("{\"t\":", t, ",\"i\":", i, ",\"pad\":\"",
                                 std::string(i % 50, 'p'), "\"}"));
    EXPECT_GT(i, last[t]) << line;
    last[t] = i;
  }
}

TEST(JsonlLogWriterTest, RestartAppendsToNewFilesWithoutClobbering) {
  const std::string dir = MakeTestDir("restart");
  // Same pid, same (fixed) clock second: the second run must still pick new names.
  for (int run = 0; run < 3; ++run) {
    auto writer = JsonlLogWriter::Create(BaseOptions(dir));
    ASSERT_TRUE(writer.ok()) << writer.status();
    for (int i = 0; i < 10; ++i) ASSERT_TRUE((*writer)->TryAppend(Line(run * 100 + i)));
    ASSERT_TRUE((*writer)->Close().ok());
  }
  std::vector<std::string> want;
  for (int run = 0; run < 3; ++run) {
    for (int i = 0; i < 10; ++i) want.push_back(Line(run * 100 + i));
  }
  EXPECT_EQ(ReadLines(dir, "decisions"), want);
  EXPECT_EQ(ListFiles(dir, "decisions").size(), 3u);
}

TEST(JsonlLogWriterTest, CompletesOrphanedOpenFilesButNotLiveOnes) {
  const std::string dir = MakeTestDir("orphan");
  // A file left by a crashed writer, torn last line included.
  const std::string orphan = dir + "/decisions-20260101T000000Z-1-000000.jsonl.open";
  std::ofstream(orphan) << "{\"i\":1}\n{\"i\":";
  // Another prefix and a foreign name are never touched.
  const std::string other = dir + "/events-20260101T000000Z-1-000000.jsonl.open";
  std::ofstream(other) << "{}\n";
  const std::string foreign = dir + "/decisions-notes.jsonl.open";
  std::ofstream(foreign) << "{}\n";

  auto live = JsonlLogWriter::Create(BaseOptions(dir));
  ASSERT_TRUE(live.ok()) << live.status();
  EXPECT_FALSE(fs::exists(orphan));
  EXPECT_TRUE(fs::exists(dir + "/decisions-20260101T000000Z-1-000000.jsonl"));
  EXPECT_TRUE(fs::exists(other));
  EXPECT_TRUE(fs::exists(foreign));

  // A second writer on the same directory leaves the first one's active file alone.
  const std::string live_path = (*live)->active_file_path();
  auto second = JsonlLogWriter::Create(BaseOptions(dir));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_TRUE(fs::exists(live_path));
  EXPECT_NE((*second)->active_file_path(), live_path);
  ASSERT_TRUE((*live)->TryAppend(Line(1)));
  ASSERT_TRUE((*second)->TryAppend(Line(2)));
  ASSERT_TRUE((*live)->Close().ok());
  ASSERT_TRUE((*second)->Close().ok());
  EXPECT_EQ(ReadAll(live_path.substr(0, live_path.size() - 5)), Line(1) + "\n");
}

TEST(JsonlLogWriterTest, UnusableDirectoryFailsCreateWithAClearError) {
  const std::string dir = MakeTestDir("unusable");
  const std::string file = dir + "/not_a_dir";
  std::ofstream(file) << "x";

  JsonlLogWriter::Options options = BaseOptions(file + "/logs");
  auto writer = JsonlLogWriter::Create(options);
  ASSERT_FALSE(writer.ok());
  EXPECT_EQ(writer.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(writer.status().message(), "cannot create log directory"))
      << writer.status();
  EXPECT_TRUE(absl::StrContains(writer.status().message(), file)) << writer.status();

  options.directory = file;
  writer = JsonlLogWriter::Create(options);
  ASSERT_FALSE(writer.ok());
  EXPECT_TRUE(absl::StrContains(writer.status().message(), file)) << writer.status();

  // An existing directory nobody may create files in (even root cannot in /proc).
  options.directory = "/proc/self";
  writer = JsonlLogWriter::Create(options);
  ASSERT_FALSE(writer.ok());
  EXPECT_TRUE(absl::StrContains(writer.status().message(), "cannot create /proc/self/decisions-"))
      << writer.status();

  if (::geteuid() != 0) {  // permission bits bind only non-root users
    const std::string read_only = dir + "/read_only";
    fs::create_directories(read_only);
    ::chmod(read_only.c_str(), 0555);
    options.directory = read_only;
    writer = JsonlLogWriter::Create(options);
    ASSERT_FALSE(writer.ok());
    EXPECT_EQ(writer.status().code(), absl::StatusCode::kPermissionDenied) << writer.status();
    ::chmod(read_only.c_str(), 0755);
  }
}

TEST(JsonlLogWriterTest, RejectsBadOptions) {
  const std::string dir = MakeTestDir("options");
  JsonlLogWriter::Options options = BaseOptions(dir);
  options.file_prefix = "dec-isions";
  EXPECT_EQ(JsonlLogWriter::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options = BaseOptions(dir);
  options.queue_capacity = 0;
  EXPECT_EQ(JsonlLogWriter::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
  options = BaseOptions("");
  EXPECT_EQ(JsonlLogWriter::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(JsonlLogWriterTest, IoErrorsAreCountedAndTheWriterRecovers) {
  const std::string dir = MakeTestDir("ioerror");
  JsonlLogWriter::Options options = BaseOptions(dir);
  options.max_file_bytes = 8;  // every line rotates: each write needs a new file
  auto writer = JsonlLogWriter::Create(options);
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)->TryAppend(Line(1)));
  ASSERT_TRUE((*writer)->Flush().ok());

  fs::remove_all(dir);  // the disk "goes away"
  ASSERT_TRUE((*writer)->TryAppend(Line(2)));
  const absl::Status failed = (*writer)->Flush();
  EXPECT_FALSE(failed.ok());
  EXPECT_TRUE(absl::StrContains(failed.message(), dir)) << failed;
  EXPECT_GT((*writer)->stats().write_errors, 0);
  EXPECT_EQ((*writer)->stats().queue_depth, 1);  // kept for the retry

  fs::create_directories(dir);  // ...and comes back: the retried line lands
  absl::Status flushed = (*writer)->Flush();
  const absl::Time deadline = absl::Now() + kDeadline;
  while (!flushed.ok() && absl::Now() < deadline) flushed = (*writer)->Flush();
  ASSERT_TRUE(flushed.ok()) << flushed;
  ASSERT_TRUE((*writer)->TryAppend(Line(3)));
  ASSERT_TRUE((*writer)->Close().ok());
  EXPECT_EQ(ReadLines(dir, "decisions"), (std::vector<std::string>{Line(2), Line(3)}));
  const JsonlLogWriter::Stats stats = (*writer)->stats();
  EXPECT_EQ(stats.written, 3);
  EXPECT_EQ(stats.lost, 0);
}

TEST(JsonlLogWriterTest, CloseGivesUpOnAPersistentErrorAndCountsLostLines) {
  const std::string dir = MakeTestDir("lost");
  JsonlLogWriter::Options options = BaseOptions(dir);
  options.max_file_bytes = 8;
  auto writer = JsonlLogWriter::Create(options);
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)->TryAppend(Line(1)));
  ASSERT_TRUE((*writer)->Flush().ok());
  fs::remove_all(dir);
  ASSERT_TRUE((*writer)->TryAppend(Line(2)));
  ASSERT_TRUE((*writer)->TryAppend(Line(3)));
  const absl::Status closed = (*writer)->Close();
  EXPECT_FALSE(closed.ok());
  EXPECT_TRUE(absl::StrContains(closed.message(), "lines lost at close")) << closed;
  const JsonlLogWriter::Stats stats = (*writer)->stats();
  EXPECT_EQ(stats.lost, 2);
  EXPECT_EQ(stats.written + stats.dropped + stats.rejected + stats.lost, stats.appended);
  EXPECT_TRUE((*writer)->Close().ok());  // idempotent
}

}  // namespace
}  // namespace offerd
