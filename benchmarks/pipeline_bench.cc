// Stages of the Recommend path on real bundles, and the whole path in-process (no gRPC).
//
//   build/bin/pipeline_bench --roots=var/bench/snapshots/10000,... --users_file=users.jsonl
//       [--hnsw_max_offers=100000] [--benchmark_format=json]
//
// Every --roots entry is a snapshot root holding one bundle (as `make bench` builds them).
// Benchmarks, per catalog size where it matters:
//   features/{known,unknown}    RocksDB GetUser + GetPurchases (the feature fetch stage)
//   user_tower                  encode user + purchases + context, MLP, L2-normalise
//   retrieval/<N>/<index>       one top-K search with the bundle's user-tower queries, with
//                               recall@K against exact search as a counter: flat; IVF (the
//                               bundle's prebuilt index when it has one) over several nprobe;
//                               HNSW over several efSearch (built here, up to --hnsw_max_offers)
//   scoring/K                   uplift p1 + expected value of K candidates
//   fatigue/K                   fatigue state + eligibility of K candidates for a user with
//                               history; fatigue/decide_and_record the RocksDB transaction
//   pipeline/<N>                Recommender::Recommend with the skewed request mix
// Time is CPU time per call of the benchmark thread (one OpenMP thread, as offerd serves).
#include <benchmark/benchmark.h>
#include <faiss/IndexHNSW.h>
#include <faiss/index_io.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "core/eligibility.h"
#include "core/model.h"
#include "core/policy.h"
#include "core/policy_params.h"
#include "core/user_fatigue.h"
#include "server/clock.h"
#include "server/policy_config.h"
#include "server/recommender.h"
#include "server/snapshot_manager.h"
#include "store/faiss_retriever.h"
#include "store/npy.h"
#include "store/rocksdb_store.h"

ABSL_FLAG(std::string, roots, "", "comma-separated snapshot roots, one bundle each");
ABSL_FLAG(std::string, users_file, "", "users.jsonl ingested into a scratch RocksDB");
ABSL_FLAG(std::string, scratch_dir, "", "scratch directory (default: a temp dir)");
ABSL_FLAG(int64_t, hnsw_max_offers, 100000, "build HNSW indexes only up to this catalog size");
ABSL_FLAG(bool, index_sweep, true, "sweep nprobe / efSearch (false: the bundle's index only)");

namespace offerd::bench {
namespace {

constexpr int kQueries = 256;
constexpr int kRecallQueries = 128;

struct Catalog {
  std::string root;
  std::unique_ptr<SnapshotManager> snapshots;
  std::shared_ptr<const Bundle> bundle;
  int64_t offers = 0;
  std::vector<float> queries;               // kQueries user-tower queries, row-major
  std::vector<std::set<int32_t>> truth;     // exact top-K of the first kRecallQueries
  int64_t rss_after_load_bytes = 0;
};

struct World {
  SystemClock clock;
  std::unique_ptr<RocksDbStore> store;
  std::vector<std::string> users;
  std::vector<std::unique_ptr<Catalog>> catalogs;
};

World* g_world = nullptr;

int64_t ResidentBytes() {
  std::ifstream in("/proc/self/statm");
  int64_t pages = 0, resident = 0;
  in >> pages >> resident;
  return resident * 4096;
}

std::vector<std::string> ReadUserIds(const std::string& path) {
  std::vector<std::string> users;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    const size_t key = line.find("\"user_id\"");
    if (key == std::string::npos || key > 16) continue;
    const size_t open = line.find('"', line.find(':', key) + 1);
    const size_t close = line.find('"', open + 1);
    users.push_back(line.substr(open + 1, close - open - 1));
  }
  return users;
}

// The request mix of the load generator (benchmarks/loadgen.cc), pre-generated.
std::vector<v1::RecommendRequest> MakeRequests(const std::vector<std::string>& users, int count) {
  std::mt19937_64 rng(11);
  std::vector<std::string> order = users;
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<double> cdf;
  double total = 0;
  for (size_t r = 1; r <= order.size(); ++r) cdf.push_back(total += std::pow(r, -0.9));
  std::uniform_real_distribution<double> u(0, total);
  static constexpr const char* kChannels[] = {"web", "web", "app", "app", "app", "email", "push"};
  static constexpr const char* kCountries[] = {"US", "US", "US", "GB", "DE", "FR", "CA", ""};
  static constexpr int kNumOffers[] = {3, 5, 5, 5, 10};
  std::vector<v1::RecommendRequest> out(count);
  for (v1::RecommendRequest& r : out) {
    if (rng() % 10 == 0) {
      r.set_user_id(absl::StrFormat("anon-%016x", rng()));
    } else {
      r.set_user_id(order[std::lower_bound(cdf.begin(), cdf.end(), u(rng)) - cdf.begin()]);
    }
    r.mutable_context()->set_channel(kChannels[rng() % 7]);
    r.mutable_context()->set_country(kCountries[rng() % 8]);
    r.set_num_offers(kNumOffers[rng() % 5]);
  }
  return out;
}

// Encodes the tower's sections for one user and context, as the Recommender does.
struct TowerInput {
  std::vector<float> user, purchases, context;
  std::vector<ContextAttribute> attributes;
};

EncodedSections EncodeForModel(const ModelSections& sections, const FeatureSchema& schema,
                               const UserRecord* user, const PurchaseSummary* purchases,
                               int32_t now_day, const RequestContextView& context,
                               TowerInput* buffers) {
  EncodedSections encoded;
  if (sections.has_user) {
    buffers->user.resize(sections.user.width());
    if (user != nullptr && user->feature_schema_id == schema.id) {
      sections.user.EncodeUserRecord(*user, absl::MakeSpan(buffers->user));
    } else {
      sections.user.Encode({}, absl::MakeSpan(buffers->user));
    }
    encoded.user = buffers->user;
  }
  if (sections.has_purchases) {
    buffers->purchases.resize(sections.purchases.width());
    sections.purchases.Encode(purchases, now_day, absl::MakeSpan(buffers->purchases));
    encoded.purchases = buffers->purchases;
  }
  if (sections.has_context) {
    buffers->context.resize(sections.context.width());
    sections.context.Encode(context, absl::MakeSpan(buffers->context));
    encoded.context = buffers->context;
  }
  return encoded;
}

int32_t NowDay() { return static_cast<int32_t>(SystemClock().NowMs() / 86400000); }

// Queries of a catalog: the user tower over real users (or their stored embeddings).
void BuildQueries(World& world, Catalog& catalog) {
  const Bundle& bundle = *catalog.bundle;
  const int dim = bundle.dimension();
  TowerInput buffers;
  std::vector<float> input, scratch, query;
  const RequestContextView context{"web", "ios", "home", "", "US", {}};
  for (int q = 0; q < kQueries; ++q) {
    const std::string& user_id = world.users[(q * 7919) % world.users.size()];
    absl::StatusOr<std::optional<UserRecord>> user = world.store->GetUser(user_id);
    absl::StatusOr<std::optional<PurchaseSummary>> purchases = world.store->GetPurchases(user_id);
    const UserRecord* record = user.ok() && user->has_value() ? &**user : nullptr;
    const PurchaseSummary* summary =
        purchases.ok() && purchases->has_value() ? &**purchases : nullptr;
    absl::Span<const float> row = bundle.cold_start_query();
    if (bundle.models().user_tower) {
      const UserTowerModel& tower = *bundle.models().user_tower;
      if (ComputeUserEmbedding(tower,
                               EncodeForModel(tower.sections, bundle.manifest().feature_schema,
                                              record, summary, NowDay(), context, &buffers),
                               &input, &scratch, &query)) {
        row = query;
      }
    } else if (record != nullptr && static_cast<int>(record->embedding.size()) == dim) {
      row = record->embedding;
    }
    catalog.queries.insert(catalog.queries.end(), row.begin(), row.end());
  }
}

absl::Span<const float> Query(const Catalog& catalog, int q) {
  const int dim = catalog.bundle->dimension();
  return absl::MakeConstSpan(catalog.queries.data() + (q % kQueries) * dim, dim);
}

// Exact top-K of the recall queries, with a flat index over the bundle's embeddings.
absl::Status BuildTruth(Catalog& catalog, const FaissRetriever& exact, int k) {
  std::vector<Candidate> out;
  for (int q = 0; q < kRecallQueries; ++q) {
    if (absl::Status s = exact.Search(Query(catalog, q), k, &out); !s.ok()) return s;
    std::set<int32_t> ids;
    for (const Candidate& c : out) ids.insert(c.offer_index);
    catalog.truth.push_back(std::move(ids));
  }
  return absl::OkStatus();
}

double Recall(const Catalog& catalog, const CandidateRetriever& index, int k) {
  std::vector<Candidate> out;
  double hits = 0, total = 0;
  for (int q = 0; q < kRecallQueries; ++q) {
    if (!index.Search(Query(catalog, q), k, &out).ok()) return 0;
    for (const Candidate& c : out) hits += catalog.truth[q].count(c.offer_index);
    total += catalog.truth[q].size();
  }
  return total > 0 ? hits / total : 0;
}

void ReportCpu(benchmark::State& state) {
  state.counters["calls_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

// --- features -----------------------------------------------------------------------------

void BM_Features(benchmark::State& state, bool known) {
  World& world = *g_world;
  size_t i = 0;
  for (auto _ : state) {
    const std::string user_id = known ? world.users[(i++ * 7919) % world.users.size()]
                                      : absl::StrCat("anon-", i++);
    benchmark::DoNotOptimize(world.store->GetUser(user_id));
    benchmark::DoNotOptimize(world.store->GetPurchases(user_id));
  }
}

// --- user tower ---------------------------------------------------------------------------

void BM_UserTower(benchmark::State& state) {
  World& world = *g_world;
  const Bundle& bundle = *world.catalogs.front()->bundle;
  if (!bundle.models().user_tower) {
    state.SkipWithError("bundle has no user tower");
    return;
  }
  const UserTowerModel& tower = *bundle.models().user_tower;
  std::vector<std::optional<UserRecord>> users;
  std::vector<std::optional<PurchaseSummary>> purchases;
  for (int i = 0; i < 64; ++i) {
    const std::string& id = world.users[(i * 7919) % world.users.size()];
    users.push_back(*world.store->GetUser(id));
    purchases.push_back(*world.store->GetPurchases(id));
  }
  TowerInput buffers;
  std::vector<float> input, scratch, query;
  const RequestContextView context{"web", "ios", "home", "", "US", {}};
  const int32_t now_day = NowDay();
  size_t i = 0;
  for (auto _ : state) {
    const size_t u = i++ % users.size();
    benchmark::DoNotOptimize(ComputeUserEmbedding(
        tower,
        EncodeForModel(tower.sections, bundle.manifest().feature_schema,
                       users[u] ? &*users[u] : nullptr, purchases[u] ? &*purchases[u] : nullptr,
                       now_day, context, &buffers),
        &input, &scratch, &query));
  }
}

// --- retrieval ----------------------------------------------------------------------------

void BM_Retrieval(benchmark::State& state, Catalog* catalog,
                  std::shared_ptr<const CandidateRetriever> index, int k, double recall,
                  int64_t index_bytes) {
  std::vector<Candidate> out;
  int q = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(index->Search(Query(*catalog, q++), k, &out));
  }
  state.counters["recall_at_k"] = recall;
  state.counters["k"] = k;
  state.counters["offers"] = static_cast<double>(catalog->offers);
  if (index_bytes > 0) state.counters["index_mb"] = index_bytes / 1048576.0;
  ReportCpu(state);
}

// --- scoring and fatigue -----------------------------------------------------------------

// Retrieved candidates of the first query of a catalog.
std::vector<Candidate> CandidatesOf(const Catalog& catalog, int k) {
  std::vector<Candidate> out;
  (void)catalog.bundle->retriever().Search(Query(catalog, 0), k, &out);
  return out;
}

void BM_Scoring(benchmark::State& state) {
  const Catalog& catalog = *g_world->catalogs.front();
  const Bundle& bundle = *catalog.bundle;
  if (!bundle.models().uplift) {
    state.SkipWithError("bundle has no uplift model");
    return;
  }
  const int k = static_cast<int>(state.range(0));
  const std::vector<Candidate> candidates = CandidatesOf(catalog, k);
  const UpliftModel& uplift = *bundle.models().uplift;
  const PolicyParams params = bundle.manifest().policy.params;
  World& world = *g_world;
  const std::string& user_id = world.users.front();
  const std::optional<UserRecord> user = *world.store->GetUser(user_id);
  const std::optional<PurchaseSummary> purchases = *world.store->GetPurchases(user_id);
  TowerInput buffers;
  const RequestContextView context{"web", "ios", "home", "", "US", {}};
  UpliftEvaluator evaluator;
  for (auto _ : state) {
    evaluator.Begin(uplift, EncodeForModel(uplift.sections, bundle.manifest().feature_schema,
                                           user ? &*user : nullptr,
                                           purchases ? &*purchases : nullptr, NowDay(), context,
                                           &buffers));
    double total = 0;
    for (const Candidate& c : candidates) {
      const Offer& offer = bundle.offers()[c.offer_index];
      const double p1 = evaluator.P1(c.offer_index, c.retrieval_score);
      total += ScoreCandidate({evaluator.p0(), p1, 20.0, offer.margin, offer.cost, 1}, params).score;
    }
    benchmark::DoNotOptimize(total);
  }
  state.counters["candidates"] = k;
}

// A user who has seen 40 of the candidates, a few times each, over the last days.
UserFatigueRecord FatigueHistory(const Bundle& bundle, const std::vector<Candidate>& candidates,
                                 int64_t now_ms) {
  UserFatigueRecord record;
  for (size_t i = 0; i < candidates.size() && i < 40; ++i) {
    for (int j = 0; j < 3; ++j) {
      RecordImpression(&record, bundle.offers()[candidates[i].offer_index].offer_id,
                       now_ms - (i * 3 + j) * 3600 * 1000);
    }
  }
  return record;
}

void BM_Fatigue(benchmark::State& state) {
  const Catalog& catalog = *g_world->catalogs.front();
  const Bundle& bundle = *catalog.bundle;
  const int k = static_cast<int>(state.range(0));
  const std::vector<Candidate> candidates = CandidatesOf(catalog, k);
  const int64_t now_ms = SystemClock().NowMs();
  const UserFatigueRecord record = FatigueHistory(bundle, candidates, now_ms);
  const PolicyParams params = bundle.manifest().policy.params;
  const std::vector<std::string> audiences = {"gold_tier"};
  const EligibilityRequest request{now_ms, "web", "US", audiences};
  RocksDbStore& store = *g_world->store;
  for (auto _ : state) {
    int eligible = 0;
    for (const Candidate& c : candidates) {
      const Offer& offer = bundle.offers()[c.offer_index];
      const OfferRuntime runtime = store.GetOfferRuntime(offer.offer_id);
      const OfferRuntimeState runtime_state{
          runtime.paused,
          RemainingRedemptions(offer.budget, runtime.budget_override, runtime.redemptions)};
      const OfferFatigueLimits limits = ResolveOfferCaps(params, offer.caps);
      const OfferFatigueState fatigue =
          OfferFatigueStateOf(record, offer.offer_id, now_ms, limits.window_seconds);
      eligible += CheckEligibility(offer, runtime_state, fatigue, request, params) ==
                  EligibilityReason::kEligible;
    }
    benchmark::DoNotOptimize(eligible);
  }
  state.counters["candidates"] = k;
}

// The serve-time RocksDB transaction: read the fatigue record, record 5 impressions.
void BM_DecideAndRecord(benchmark::State& state) {
  World& world = *g_world;
  const Bundle& bundle = *world.catalogs.front()->bundle;
  size_t i = 0;
  int64_t decision = 0;
  for (auto _ : state) {
    const std::string& user_id = world.users[(i++ * 7919) % 500];
    const absl::Status s = world.store->DecideAndRecord(
        user_id, absl::StrFormat("%032x", ++decision), world.clock.NowMs(),
        [&](const UserFatigueRecord&, std::vector<std::string>* served) {
          for (int j = 0; j < 5; ++j) {
            served->push_back(bundle.offers()[(i + j) % bundle.offers().size()].offer_id);
          }
          return absl::OkStatus();
        });
    benchmark::DoNotOptimize(s);
  }
}

// --- whole pipeline -----------------------------------------------------------------------

void BM_Pipeline(benchmark::State& state, Catalog* catalog) {
  World& world = *g_world;
  static const std::vector<v1::RecommendRequest>* requests =
      new std::vector<v1::RecommendRequest>(MakeRequests(world.users, 4096));
  PolicyConfig policy;  // server defaults: 5% holdout, bundle policy
  Recommender::Options options;
  options.assignment = policy.assignment;
  options.global_overrides = policy.overrides;
  options.degrade_below = absl::ZeroDuration();
  Recommender recommender(catalog->snapshots.get(), world.store.get(), &world.clock, options);
  v1::RecommendResponse response;
  size_t i = 0;
  int64_t served = 0, errors = 0;
  for (auto _ : state) {
    const absl::Status s = recommender.Recommend((*requests)[i++ % requests->size()], &response);
    errors += !s.ok();
    served += response.offers_size();
  }
  state.counters["offers"] = static_cast<double>(catalog->offers);
  state.counters["offers_served_per_call"] = static_cast<double>(served) / state.iterations();
  state.counters["errors"] = static_cast<double>(errors);
  state.counters["rss_mb"] = catalog->rss_after_load_bytes / 1048576.0;
  ReportCpu(state);
}

// HNSW32 (inner product, efConstruction 200) over the embeddings in `npy`, written to `out`.
bool BuildHnswFile(const std::string& npy, const std::string& out) {
  absl::StatusOr<NpyFloatArray> embeddings = ReadNpyFloat32(npy);
  if (!embeddings.ok()) {
    std::fprintf(stderr, "pipeline_bench: %s\n", embeddings.status().ToString().c_str());
    return false;
  }
  try {
    faiss::IndexHNSWFlat index(static_cast<int>(embeddings->cols()), 32,
                               faiss::METRIC_INNER_PRODUCT);
    index.hnsw.efConstruction = 200;
    index.add(embeddings->rows(), embeddings->data.data());
    faiss::write_index(&index, out.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pipeline_bench: HNSW build: %s\n", e.what());
    return false;
  }
  return true;
}

// --- setup --------------------------------------------------------------------------------

int Setup() {
  auto* world = new World;
  g_world = world;
  std::string scratch = absl::GetFlag(FLAGS_scratch_dir);
  if (scratch.empty()) {
    scratch = std::filesystem::temp_directory_path() / absl::StrCat("offerd-pipeline-bench-", getpid());
  }
  std::filesystem::remove_all(scratch);
  std::filesystem::create_directories(scratch);
  RocksDbStore::Options store_options;
  store_options.path = scratch + "/db";
  absl::StatusOr<std::unique_ptr<RocksDbStore>> store = RocksDbStore::Open(store_options);
  if (!store.ok()) {
    std::fprintf(stderr, "pipeline_bench: %s\n", store.status().ToString().c_str());
    return 1;
  }
  world->store = std::move(*store);
  const std::string users_file = absl::GetFlag(FLAGS_users_file);
  if (absl::StatusOr<RocksDbStore::IngestStats> s = world->store->IngestUsersFile(users_file);
      !s.ok()) {
    std::fprintf(stderr, "pipeline_bench: %s\n", s.status().ToString().c_str());
    return 1;
  }
  world->users = ReadUserIds(users_file);
  if (world->users.empty()) {
    std::fprintf(stderr, "pipeline_bench: no users in %s\n", users_file.c_str());
    return 1;
  }
  for (absl::string_view root : absl::StrSplit(absl::GetFlag(FLAGS_roots), ',', absl::SkipEmpty())) {
    auto catalog = std::make_unique<Catalog>();
    catalog->root = std::string(root);
    SnapshotManager::Options options;
    options.snapshot_root = catalog->root;
    options.poll_interval = absl::ZeroDuration();
    RocksDbStore* store_ptr = world->store.get();
    options.store_feature_schema_id = [store_ptr] { return store_ptr->feature_schema_id(); };
    absl::StatusOr<std::unique_ptr<SnapshotManager>> snapshots =
        SnapshotManager::Create(std::move(options), &world->clock);
    if (!snapshots.ok()) {
      std::fprintf(stderr, "pipeline_bench: %s\n", snapshots.status().ToString().c_str());
      return 1;
    }
    catalog->snapshots = std::move(*snapshots);
    bool canary = false;
    catalog->bundle = catalog->snapshots->Pin("bench", &canary);
    catalog->offers = static_cast<int64_t>(catalog->bundle->offers().size());
    catalog->rss_after_load_bytes = ResidentBytes();
    BuildQueries(*world, *catalog);
    world->catalogs.push_back(std::move(catalog));
  }
  if (world->catalogs.empty()) {
    std::fprintf(stderr, "pipeline_bench: --roots names no bundle\n");
    return 1;
  }

  benchmark::RegisterBenchmark("features/known", BM_Features, true);
  benchmark::RegisterBenchmark("features/unknown", BM_Features, false);
  benchmark::RegisterBenchmark("user_tower", BM_UserTower);
  benchmark::RegisterBenchmark("scoring", BM_Scoring)->Arg(200);
  benchmark::RegisterBenchmark("fatigue", BM_Fatigue)->Arg(200);
  benchmark::RegisterBenchmark("fatigue/decide_and_record", BM_DecideAndRecord);

  const bool sweep = absl::GetFlag(FLAGS_index_sweep);
  for (auto& owned : world->catalogs) {
    Catalog* catalog = owned.get();
    const Bundle& bundle = *catalog->bundle;
    const int k = std::max(1, bundle.manifest().policy.retrieval_k);
    const int dim = bundle.dimension();
    const std::string bundle_dir = catalog->root + "/" + bundle.version();
    const std::string npy = bundle_dir + "/offer_embeddings.npy";
    // Exact search over the bundle's embeddings: the truth and the flat entry.
    const auto build = [&](const IndexSpec& spec, const std::string& index_path)
        -> std::shared_ptr<const FaissRetriever> {
      absl::StatusOr<std::unique_ptr<NpyFloat32Reader>> reader = NpyFloat32Reader::Open(npy);
      if (!reader.ok()) return nullptr;
      NpyFloat32Reader* r = reader->get();
      absl::StatusOr<std::unique_ptr<FaissRetriever>> index = FaissRetriever::Create(
          spec, catalog->offers, dim,
          [r](int64_t first, int64_t count, float* out) { return r->ReadRows(first, count, out); },
          index_path);
      if (!index.ok()) {
        std::fprintf(stderr, "pipeline_bench: %s\n", index.status().ToString().c_str());
        return nullptr;
      }
      return std::shared_ptr<const FaissRetriever>(std::move(*index));
    };
    std::shared_ptr<const FaissRetriever> exact = build(IndexSpec{}, "");
    if (exact == nullptr || !BuildTruth(*catalog, *exact, k).ok()) return 1;
    const std::string n = absl::StrCat(catalog->offers);
    benchmark::RegisterBenchmark(absl::StrCat("retrieval/", n, "/flat").c_str(), BM_Retrieval,
                                 catalog, exact, k, 1.0, exact->memory_bytes());

    // The bundle's own index as served (its manifest parameters).
    const IndexSpec& served = bundle.manifest().index;
    const std::string served_file = served.file.empty() ? "" : bundle_dir + "/" + served.file;
    if (served.type != "flat") {
      std::shared_ptr<const FaissRetriever> own = build(served, served_file);
      if (own == nullptr) return 1;
      const std::string param = served.type == "ivf" ? absl::StrCat("nprobe", served.ivf_nprobe)
                                                     : absl::StrCat("ef", served.hnsw_ef_search);
      benchmark::RegisterBenchmark(
          absl::StrCat("retrieval/", n, "/", served.type, "_", param, "/served").c_str(),
          BM_Retrieval, catalog, own, k, Recall(*catalog, *own, k), own->memory_bytes());
    }
    if (!sweep) continue;
    // IVF over several nprobe: the prebuilt index when the bundle has one (loaded once per
    // setting: the search parameter is part of the retriever's spec).
    IndexSpec ivf = served.type == "ivf" ? served : IndexSpec{};
    ivf.type = "ivf";
    if (served.type != "ivf") ivf.file.clear();
    for (int nprobe : {8, 16, 32, 64, 128}) {
      ivf.ivf_nprobe = nprobe;
      std::shared_ptr<const FaissRetriever> index =
          build(ivf, served.type == "ivf" ? served_file : "");
      if (index == nullptr) return 1;
      benchmark::RegisterBenchmark(
          absl::StrCat("retrieval/", n, "/ivf_nprobe", nprobe).c_str(), BM_Retrieval, catalog,
          index, k, Recall(*catalog, *index, k), index->memory_bytes());
    }
    if (catalog->offers <= absl::GetFlag(FLAGS_hnsw_max_offers)) {
      // One graph, written once and read back per beam width (the width is part of the
      // retriever's spec; rebuilding the graph per width would dominate the run).
      const std::string graph_file = absl::StrCat(scratch, "/hnsw-", n, ".faiss");
      if (!BuildHnswFile(npy, graph_file)) return 1;
      IndexSpec hnsw;
      hnsw.type = "hnsw";
      for (int ef : {200, 400, 800}) {
        hnsw.hnsw_ef_search = ef;
        std::shared_ptr<const FaissRetriever> index = build(hnsw, graph_file);
        if (index == nullptr) return 1;
        benchmark::RegisterBenchmark(
            absl::StrCat("retrieval/", n, "/hnsw_ef", ef).c_str(), BM_Retrieval, catalog, index,
            k, Recall(*catalog, *index, k), index->memory_bytes());
      }
    }
  }
  for (auto& owned : world->catalogs) {
    benchmark::RegisterBenchmark(absl::StrCat("pipeline/", owned->offers).c_str(), BM_Pipeline,
                                 owned.get());
  }
  return 0;
}

}  // namespace
}  // namespace offerd::bench

int main(int argc, char** argv) {
  omp_set_num_threads(1);
  benchmark::Initialize(&argc, argv);
  absl::ParseCommandLine(argc, argv);
  if (int rc = offerd::bench::Setup(); rc != 0) return rc;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
