// Bulk load of user features by SST ingestion: the two halves of `offerctl ingest`, timed
// separately on a synthetic users.jsonl in the export's format.
//
//   client (offerctl): parse users.jsonl, sort, write SST files   (WriteUsersSst)
//   server (offerd):   stage, validate every entry, ingest         (RocksDbStore::IngestSst)
//
// The server half is the code AdminService.IngestFeatures runs (the RPC itself only carries
// the file paths). Run 1 ingests into an empty database; later runs replace every user of a
// database that already holds them (the periodic re-ingest case). Prints one line per run,
// the median, and a JSON summary.
//
//   build/bin/ingest_bench --users=1000000 --dim=64 --runs=3
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "store/rocksdb_store.h"
#include "store/users_sst.h"

ABSL_FLAG(int64_t, users, 1000000, "Synthetic users in the users file.");
ABSL_FLAG(int, dim, 64, "Stored embedding dimension (0 = no embeddings).");
ABSL_FLAG(int, runs, 3, "Write + ingest runs (the median is reported).");
ABSL_FLAG(std::string, work_dir, "",
          "Directory for the users file, SST files and database (default: a fresh one under "
          "$TMPDIR or /tmp, removed at the end).");
ABSL_FLAG(int, parse_threads, 0, "Threads parsing users.jsonl (offerctl's default: 0 = per core).");
ABSL_FLAG(bool, compare_jsonl, false,
          "Also time the startup path (--ingest: one WriteBatch from users.jsonl) once.");

namespace {

namespace fs = std::filesystem;

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Writes users.jsonl like offline/export does: 3 numeric and 3 categorical features, a
// unit-norm embedding, purchases for about 70% of users. Ids are shuffled so the writer has
// to sort.
void WriteUsersFile(const std::string& path, int64_t users, int dim) {
  std::ofstream out(path);
  out << R"({"header": {"format": "offerd-users", "format_version": 1, "embedding_dim": )" << dim
      << R"(, "feature_schema": {"id": "bench-schema-1", "features": [)"
      << R"({"name": "age", "kind": "numeric", "mean": 40.0, "std": 12.0}, )"
      << R"({"name": "tenure_days", "kind": "numeric", "mean": 400.0, "std": 300.0}, )"
      << R"({"name": "orders_90d", "kind": "numeric", "mean": 2.0, "std": 3.0}, )"
      << R"({"name": "tier", "kind": "categorical", "vocabulary": ["basic", "silver", "gold"]}, )"
      << R"({"name": "device", "kind": "categorical", "vocabulary": ["ios", "android", "web"]}, )"
      << R"({"name": "acquisition_source", "kind": "categorical", "vocabulary": )"
      << R"(["organic", "social", "search", "referral"]}]}}})"
      << "\n";
  static const char* kTiers[] = {"basic", "silver", "gold"};
  static const char* kDevices[] = {"ios", "android", "web"};
  static const char* kSources[] = {"organic", "social", "search", "referral"};
  std::vector<int64_t> order(static_cast<size_t>(users));
  for (int64_t i = 0; i < users; ++i) order[static_cast<size_t>(i)] = i;
  std::mt19937_64 rng(7);
  std::shuffle(order.begin(), order.end(), rng);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::string line;
  std::vector<float> embedding(static_cast<size_t>(dim));
  for (int64_t i : order) {
    line.clear();
    absl::StrAppendFormat(&line,
                          R"({"user_id": "u%09d", "features": {"age": %d, "tenure_days": %d, )"
                          R"("orders_90d": %d, "tier": "%s", "device": "%s", )"
                          R"("acquisition_source": "%s"})",
                          i, 18 + i % 60, i % 1500, i % 9, kTiers[i % 3], kDevices[(i / 3) % 3],
                          kSources[i % 4]);
    if (dim > 0) {
      double norm = 0;
      for (float& x : embedding) {
        x = normal(rng);
        norm += static_cast<double>(x) * x;
      }
      line += R"(, "embedding": [)";
      for (int d = 0; d < dim; ++d) {
        absl::StrAppendFormat(&line, d == 0 ? "%.6g" : ", %.6g",
                              embedding[static_cast<size_t>(d)] / std::sqrt(norm));
      }
      line += "]";
    }
    if (i % 10 < 7) {
      const int first = 19000 + static_cast<int>(i % 700);
      const int repeat = static_cast<int>(i % 12);
      absl::StrAppendFormat(&line,
                            R"(, "purchases": {"first_purchase_day": %d, "last_purchase_day": %d, )"
                            R"("repeat_days": %d, "repeat_spend_sum": %.2f})",
                            first, first + 30 * repeat, repeat, 23.5 * repeat);
    }
    line += "}\n";
    out << line;
  }
}

struct Run {
  double parse = 0, write = 0, validate = 0, ingest = 0;
  double client() const { return parse + write; }
  double server() const { return validate + ingest; }
  double total() const { return client() + server(); }
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int64_t users = absl::GetFlag(FLAGS_users);
  const int dim = absl::GetFlag(FLAGS_dim);
  const int runs = absl::GetFlag(FLAGS_runs);
  if (users < 1 || dim < 0 || runs < 1) {
    std::fprintf(stderr, "ingest_bench: need --users >= 1, --dim >= 0, --runs >= 1\n");
    return 1;
  }
  std::string work_dir = absl::GetFlag(FLAGS_work_dir);
  const bool own_dir = work_dir.empty();
  if (own_dir) {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base ? base : "/tmp") + "/offerd-ingest-bench-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) {
      std::perror("ingest_bench: mkdtemp");
      return 1;
    }
    work_dir = pattern;
  }
  fs::create_directories(work_dir);
  const std::string users_file = work_dir + "/users.jsonl";

  auto start = std::chrono::steady_clock::now();
  WriteUsersFile(users_file, users, dim);
  std::printf("parse threads: %d (0 = one per core, %u cores)\n",
              absl::GetFlag(FLAGS_parse_threads), std::thread::hardware_concurrency());
  std::printf("generated %lld users (dim %d): %.0f MB in %.1f s -> %s\n",
              static_cast<long long>(users), dim,
              static_cast<double>(fs::file_size(users_file)) / 1e6, Seconds(start),
              users_file.c_str());

  offerd::RocksDbStore::Options store_options;
  store_options.path = work_dir + "/db";
  absl::StatusOr<std::unique_ptr<offerd::RocksDbStore>> store =
      offerd::RocksDbStore::Open(store_options);
  if (!store.ok()) {
    std::fprintf(stderr, "ingest_bench: %s\n", std::string(store.status().message()).c_str());
    return 1;
  }

  std::vector<Run> results;
  int64_t sst_bytes = 0;
  for (int r = 0; r < runs; ++r) {
    offerd::WriteUsersSstOptions options;
    options.directory = absl::StrCat(work_dir, "/sst-", r);
    options.parse_threads = absl::GetFlag(FLAGS_parse_threads);
    absl::StatusOr<offerd::WriteUsersSstResult> written =
        offerd::WriteUsersSst(users_file, options);
    if (!written.ok()) {
      std::fprintf(stderr, "ingest_bench: %s\n", std::string(written.status().message()).c_str());
      return 1;
    }
    offerd::RocksDbStore::SstIngestRequest request;
    request.paths = written->paths;
    request.feature_schema_id = written->feature_schema_id;
    absl::StatusOr<offerd::RocksDbStore::SstIngestStats> ingested = (*store)->IngestSst(request);
    if (!ingested.ok()) {
      std::fprintf(stderr, "ingest_bench: %s\n", std::string(ingested.status().message()).c_str());
      return 1;
    }
    fs::remove_all(options.directory);
    sst_bytes = written->bytes;
    Run run{written->parse_seconds, written->write_seconds, ingested->validate_seconds,
            ingested->ingest_seconds};
    results.push_back(run);
    const double n = static_cast<double>(users);
    std::printf(
        "run %d (%s): parse %.2f s, sort+write %.2f s, validate %.2f s, ingest %.2f s | "
        "offerctl %.0f users/s, offerd %.0f users/s, end to end %.0f users/s\n",
        r + 1, r == 0 ? "empty db" : "replace all", run.parse, run.write, run.validate, run.ingest,
        n / run.client(), n / run.server(), n / run.total());
  }
  // Reads after the ingest (spot check that the users are there).
  absl::StatusOr<std::optional<offerd::UserRecord>> spot = (*store)->GetUser("u000000042");
  if (!spot.ok() || !spot->has_value()) {
    std::fprintf(stderr, "ingest_bench: user u000000042 missing after ingest\n");
    return 1;
  }

  std::vector<double> parse, write, validate, ingest, client, server, total;
  for (const Run& r : results) {
    parse.push_back(r.parse);
    write.push_back(r.write);
    validate.push_back(r.validate);
    ingest.push_back(r.ingest);
    client.push_back(r.client());
    server.push_back(r.server());
    total.push_back(r.total());
  }
  const double n = static_cast<double>(users);
  std::printf(
      "median of %d: parse %.2f s, sort+write %.2f s, validate %.2f s, ingest %.2f s | "
      "offerctl %.0f users/s, offerd %.0f users/s, end to end %.0f users/s\n",
      runs, Median(parse), Median(write), Median(validate), Median(ingest), n / Median(client),
      n / Median(server), n / Median(total));

  double jsonl_seconds = 0;
  if (absl::GetFlag(FLAGS_compare_jsonl)) {
    store->reset();
    fs::remove_all(store_options.path);
    store = offerd::RocksDbStore::Open(store_options);
    if (!store.ok()) return 1;
    start = std::chrono::steady_clock::now();
    absl::StatusOr<offerd::RocksDbStore::IngestStats> stats = (*store)->IngestUsersFile(users_file);
    if (!stats.ok()) {
      std::fprintf(stderr, "ingest_bench: %s\n", std::string(stats.status().message()).c_str());
      return 1;
    }
    jsonl_seconds = Seconds(start);
    std::printf("startup path (--ingest, one WriteBatch): %.2f s, %.0f users/s\n", jsonl_seconds,
                n / jsonl_seconds);
  }
  std::printf(
      "{\"users\": %lld, \"dim\": %d, \"runs\": %d, \"sst_bytes\": %lld, "
      "\"median_parse_seconds\": %.3f, \"median_write_seconds\": %.3f, "
      "\"median_validate_seconds\": %.3f, \"median_ingest_seconds\": %.3f, "
      "\"offerctl_users_per_second\": %.0f, \"offerd_users_per_second\": %.0f, "
      "\"end_to_end_users_per_second\": %.0f, \"jsonl_startup_seconds\": %.3f}\n",
      static_cast<long long>(users), dim, runs, static_cast<long long>(sst_bytes), Median(parse),
      Median(write), Median(validate), Median(ingest), n / Median(client), n / Median(server),
      n / Median(total), jsonl_seconds);
  store->reset();
  if (own_dir) fs::remove_all(work_dir);
  return 0;
}
