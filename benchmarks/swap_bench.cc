// Hot-swap cost on a large bundle: peak resident memory during swaps relative to steady state,
// swap duration, and Recommend latency during continuous swapping relative to no swapping.
//
//   build/bin/swap_bench [--offers=100000] [--seconds=8] [--clients=2] [--out=FILE.json]
//
// Builds a clustered 64-d bundle with a prebuilt IVF index (as the offline export does for
// large catalogs) in a temp dir, starts an in-process offerd on loopback, and drives it with
// closed-loop gRPC clients: first without swaps, then while the admin API reloads bundles
// back to back. Prints one JSON object.
#include <faiss/IndexFlat.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/index_io.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "core/vector_math.h"
#include "offerd/v1/admin_service.grpc.pb.h"
#include "offerd/v1/offer_service.grpc.pb.h"
#include "server/clock.h"
#include "server/server.h"
#include "server/snapshot_manager.h"
#include "store/file_util.h"
#include "store/npy.h"

ABSL_FLAG(int64_t, offers, 100000, "catalog size");
ABSL_FLAG(double, seconds, 8, "duration of each phase (no swaps, swapping)");
ABSL_FLAG(int, clients, 2, "closed-loop client threads");
ABSL_FLAG(std::string, out, "", "also write the JSON here");

namespace offerd {
namespace {

constexpr int kDim = 64;
constexpr int kUsers = 2000;

int64_t ResidentBytes() {
  std::ifstream in("/proc/self/statm");
  int64_t pages = 0, resident = 0;
  in >> pages >> resident;
  return resident * 4096;
}

std::vector<float> Clustered(int64_t rows, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> centers(64 * kDim);
  for (float& x : centers) x = normal(rng);
  std::vector<float> out(rows * kDim);
  std::uniform_int_distribution<int> pick(0, 63);
  for (int64_t r = 0; r < rows; ++r) {
    const int c = pick(rng);
    for (int d = 0; d < kDim; ++d) out[r * kDim + d] = centers[c * kDim + d] + 0.35f * normal(rng);
    L2NormalizeInPlace(absl::MakeSpan(out.data() + r * kDim, kDim));
  }
  return out;
}

void WriteBundle(const std::string& dir, const std::string& version, int64_t offers,
                 const std::string& npy_src, const std::string& index_src,
                 const std::string& offers_src) {
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(npy_src, dir + "/offer_embeddings.npy");
  std::filesystem::copy_file(index_src, dir + "/index.faiss");
  std::filesystem::copy_file(offers_src, dir + "/offers.jsonl");
  nlohmann::json schema = {{"id", "bench-schema"},
                           {"features", {{{"name", "age"}, {"kind", "numeric"}, {"mean", 40.0},
                                          {"std", 12.0}}}}};
  nlohmann::json manifest = {{"format", "offerd-bundle"}, {"format_version", 1},
                             {"version", version}, {"embedding_dim", kDim},
                             {"num_offers", offers}, {"feature_schema", schema},
                             {"index", {{"type", "ivf"}, {"nprobe", 64}, {"file", "index.faiss"}}},
                             {"policy", {{"retrieval_k", 200}}}, {"files", nlohmann::json::object()}};
  for (const char* f : {"offers.jsonl", "offer_embeddings.npy", "index.faiss"}) {
    manifest["files"][f] = {{"sha256", *Sha256File(dir + "/" + f)},
                            {"bytes", std::filesystem::file_size(dir + "/" + f)}};
  }
  std::ofstream(dir + "/MANIFEST.json") << manifest.dump(2);
}

struct Phase {
  std::vector<double> latencies_ms;
  int64_t errors = 0;
};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

Phase Drive(const std::string& addr, int clients, double seconds) {
  std::vector<Phase> per(clients);
  std::vector<std::thread> threads;
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      grpc::ChannelArguments args;
      args.SetInt("grpc.channel_id", c);
      auto stub = v1::OfferService::NewStub(
          grpc::CreateCustomChannel(addr, grpc::InsecureChannelCredentials(), args));
      for (int i = c; std::chrono::steady_clock::now() < end; i += clients) {
        v1::RecommendRequest request;
        request.set_user_id(absl::StrFormat("u%05d", i % kUsers));
        request.set_num_offers(10);
        v1::RecommendResponse response;
        grpc::ClientContext context;
        const auto start = std::chrono::steady_clock::now();
        grpc::Status status = stub->Recommend(&context, request, &response);
        const double ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                .count();
        if (!status.ok()) {
          ++per[c].errors;
        } else {
          per[c].latencies_ms.push_back(ms);
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  Phase all;
  for (Phase& p : per) {
    all.latencies_ms.insert(all.latencies_ms.end(), p.latencies_ms.begin(), p.latencies_ms.end());
    all.errors += p.errors;
  }
  return all;
}

int Run() {
  const int64_t offers = absl::GetFlag(FLAGS_offers);
  const std::string root = std::filesystem::temp_directory_path() /
                           absl::StrFormat("offerd-swap-bench-%d", getpid());
  std::filesystem::create_directories(root + "/src");
  std::filesystem::create_directories(root + "/snapshots");

  // Source files, written once and copied into each version.
  {
    const std::vector<float> emb = Clustered(offers, 1);
    std::ofstream(root + "/src/offer_embeddings.npy", std::ios::binary)
        << EncodeNpyFloat32({offers, kDim}, emb);
    const int nlist = static_cast<int>(4 * std::sqrt(static_cast<double>(offers)));
    faiss::IndexFlatIP quantizer(kDim);
    faiss::IndexIVFFlat ivf(&quantizer, kDim, nlist, faiss::METRIC_INNER_PRODUCT);
    ivf.cp.min_points_per_centroid = 1;
    ivf.train(std::min<int64_t>(offers, nlist * 40), emb.data());
    ivf.add(offers, emb.data());
    faiss::write_index(&ivf, (root + "/src/index.faiss").c_str());
    std::ofstream catalog(root + "/src/offers.jsonl");
    for (int64_t i = 0; i < offers; ++i) {
      catalog << absl::StrFormat(
          "{\"offer_id\":\"o%07d\",\"category\":\"c%d\",\"type\":\"cashback\",\"title\":\"Offer %d\","
          "\"margin\":%.2f,\"cost\":1.0}\n",
          i, i % 40, i, 1.0 + i % 13);
    }
    const std::vector<float> users = Clustered(kUsers, 2);
    nlohmann::json header = {{"header", {{"format", "offerd-users"}, {"format_version", 1},
                                         {"embedding_dim", kDim},
                                         {"feature_schema", {{"id", "bench-schema"},
                                          {"features", {{{"name", "age"}, {"kind", "numeric"},
                                                         {"mean", 40.0}, {"std", 12.0}}}}}}}}};
    std::ofstream u(root + "/src/users.jsonl");
    u << header.dump() << "\n";
    for (int i = 0; i < kUsers; ++i) {
      nlohmann::json row = {{"user_id", absl::StrFormat("u%05d", i)}, {"features", {{"age", 30}}},
                            {"embedding", std::vector<float>(users.begin() + i * kDim,
                                                             users.begin() + (i + 1) * kDim)}};
      u << row.dump() << "\n";
    }
  }
  constexpr int kVersions = 4;
  for (int v = 1; v <= kVersions; ++v) {
    WriteBundle(absl::StrFormat("%s/snapshots/v%d", root, v), absl::StrFormat("v%d", v), offers,
                root + "/src/offer_embeddings.npy", root + "/src/index.faiss",
                root + "/src/offers.jsonl");
  }
  std::ofstream(root + "/snapshots/PINNED") << "v1\n";

  SystemClock clock;
  OfferdServer::Options options;
  options.listen = "127.0.0.1:0";
  options.admin_listen = "127.0.0.1:0";
  options.snapshot_root = root + "/snapshots";
  options.db_path = root + "/db";
  options.ingest_files = {root + "/src/users.jsonl"};
  options.snapshot_poll_interval = absl::ZeroDuration();
  absl::StatusOr<std::unique_ptr<OfferdServer>> server = OfferdServer::Create(options, &clock);
  if (!server.ok() || !(*server)->Start().ok()) {
    std::fprintf(stderr, "swap_bench: cannot start: %s\n", server.status().ToString().c_str());
    return 1;
  }
  const std::string addr = absl::StrFormat("127.0.0.1:%d", (*server)->port());
  const double seconds = absl::GetFlag(FLAGS_seconds);
  const int clients = absl::GetFlag(FLAGS_clients);

  Drive(addr, clients, 1.0);  // warm the channels
  const Phase steady = Drive(addr, clients, seconds);
  const int64_t steady_rss = ResidentBytes();

  // Continuous swapping: a sampler tracks resident memory; the admin API reloads bundles.
  std::atomic<bool> done{false};
  std::atomic<int64_t> peak_rss{steady_rss};
  std::thread sampler([&] {
    while (!done) {
      const int64_t rss = ResidentBytes();
      int64_t prev = peak_rss.load();
      while (rss > prev && !peak_rss.compare_exchange_weak(prev, rss)) {
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  });
  std::vector<double> swap_ms;
  std::thread swapper([&] {
    auto admin = v1::AdminService::NewStub(grpc::CreateChannel(
        absl::StrFormat("127.0.0.1:%d", (*server)->admin_port()), grpc::InsecureChannelCredentials()));
    for (int i = 0; !done; ++i) {
      v1::LoadSnapshotRequest request;
      request.set_version(absl::StrFormat("v%d", 1 + (i + 1) % kVersions));
      v1::LoadSnapshotResponse response;
      grpc::ClientContext context;
      if (admin->LoadSnapshot(&context, request, &response).ok()) {
        swap_ms.push_back(response.load_ms() + response.warmup_ms());
      }
    }
  });
  const Phase swapping = Drive(addr, clients, seconds);
  done = true;
  swapper.join();
  sampler.join();
  (*server)->Shutdown(absl::Seconds(2));

  const double p99_steady = Percentile(steady.latencies_ms, 0.99);
  const double p99_swapping = Percentile(swapping.latencies_ms, 0.99);
  nlohmann::json out = {
      {"offers", offers},
      {"index", "ivf (prebuilt), nprobe 64, K 200"},
      {"clients", clients},
      {"steady", {{"requests", steady.latencies_ms.size()}, {"errors", steady.errors},
                  {"p50_ms", Percentile(steady.latencies_ms, 0.5)}, {"p99_ms", p99_steady}}},
      {"swapping", {{"requests", swapping.latencies_ms.size()}, {"errors", swapping.errors},
                    {"swaps", swap_ms.size()},
                    {"p50_ms", Percentile(swapping.latencies_ms, 0.5)}, {"p99_ms", p99_swapping}}},
      {"p99_ratio_swapping_vs_steady", p99_swapping / p99_steady},
      {"swap_ms_median", Percentile(swap_ms, 0.5)},
      {"rss_steady_mb", steady_rss / 1048576.0},
      {"rss_peak_during_swaps_mb", peak_rss.load() / 1048576.0},
      {"rss_peak_ratio", static_cast<double>(peak_rss.load()) / steady_rss}};
  std::printf("%s\n", out.dump(2).c_str());
  if (!absl::GetFlag(FLAGS_out).empty()) std::ofstream(absl::GetFlag(FLAGS_out)) << out.dump(2);
  std::filesystem::remove_all(root);
  return 0;
}

}  // namespace
}  // namespace offerd

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return offerd::Run();
}
