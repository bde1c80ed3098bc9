#include "server/recommender.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/clv.h"
#include "core/context_features.h"
#include "core/eligibility.h"
#include "core/event.h"
#include "core/exploration.h"
#include "core/model.h"
#include "core/policy.h"
#include "core/prefetch.h"
#include "core/request_limits.h"
#include "core/user_fatigue.h"
#include "core/vector_math.h"
#include "server/decision_id.h"
#include "server/request_validation.h"

namespace offerd {
namespace {

// Per-thread scratch of the request path: grown once, reused, so that steady-state requests
// do not allocate for it.
struct Scratch {
  std::vector<float> user, purchases, context, query, tower_input, tower_scratch;
  std::vector<ContextAttribute> attributes;
  std::vector<std::string> audiences;
  std::vector<Candidate> candidates;
  std::vector<absl::string_view> candidate_ids;  // parallel to `candidates`
  std::vector<OfferRuntime> runtimes;            // parallel to `candidates`
  std::vector<ScoredCandidate> scored;
  std::vector<CandidateScore> scores;         // parallel to `scored`
  std::vector<double> retrieval_scores;       // parallel to `scored`
  std::vector<double> p1s;                    // parallel to `scored`
  std::vector<SelectedOffer> selected;
  SelectionBuffers selection;
  UpliftEvaluator uplift;
};

Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

// With a large catalog the rows a candidate needs (its Offer, the Offer's channel, country
// and audience lists, its p1 share) are cold, and the candidate loop used to wait on each
// miss in turn: at 1M offers that loop cost more than scoring itself. The loops ask for rows
// a few candidates ahead instead: the Offer rows while collecting the candidates' ids, then
// the lists (which need the Offer to be found) and the p1 shares while scoring.
constexpr size_t kOfferRowsAhead = 8;
constexpr size_t kOfferListsAhead = 4;

void PrefetchOfferRow(const Offer& offer) { PrefetchBytes(&offer, sizeof(Offer)); }

void PrefetchOfferLists(const Offer& offer) {
  for (const std::vector<std::string>* list : {&offer.channels, &offer.countries, &offer.audiences}) {
    if (!list->empty()) __builtin_prefetch(list->data());
  }
}

uint64_t SeedFromDecisionId(const std::string& decision_id) {
  uint64_t seed = 0;
  for (size_t i = 0; i < 16 && i < decision_id.size(); ++i) {
    const char c = decision_id[i];
    seed = (seed << 4) | static_cast<uint64_t>(c <= '9' ? c - '0' : c - 'a' + 10);
  }
  return seed;
}

// Audiences of a user: "<value>_<feature>" for every categorical feature value (tier=gold ->
// gold_tier), plus the comma-separated `audiences` attribute of the request.
void CollectAudiences(const FeatureSchema& schema, const UserRecord* user,
                      const v1::Context& context, std::vector<std::string>* out) {
  out->clear();
  if (user != nullptr) {
    size_t categorical = 0;
    for (const FeatureSpec& spec : schema.features) {
      if (spec.kind != FeatureSpec::Kind::kCategorical) continue;
      if (categorical < user->categorical.size() && !user->categorical[categorical].empty()) {
        out->push_back(absl::StrCat(user->categorical[categorical], "_", spec.name));
      }
      ++categorical;
    }
  }
  auto it = context.attributes().find("audiences");
  if (it != context.attributes().end()) {
    for (absl::string_view a : absl::StrSplit(it->second, ',', absl::SkipWhitespace())) {
      out->emplace_back(a);
    }
  }
}

// Times consecutive stages of one request into offerd_stage_duration_seconds.
class StageTimer {
 public:
  explicit StageTimer(ServerMetrics* metrics)
      : metrics_(metrics), last_(std::chrono::steady_clock::now()) {}
  void End(Stage stage) {
    const auto now = std::chrono::steady_clock::now();
    if (metrics_ != nullptr) {
      metrics_->stage(stage).Observe(std::chrono::duration<double>(now - last_).count());
    }
    last_ = now;
  }

 private:
  ServerMetrics* const metrics_;
  std::chrono::steady_clock::time_point last_;
};

}  // namespace

Recommender::Recommender(const SnapshotManager* snapshots, RocksDbStore* store, const Clock* clock,
                         Options options)
    : snapshots_(snapshots), store_(store), clock_(clock), options_(std::move(options)) {}

absl::Status Recommender::Recommend(const v1::RecommendRequest& request,
                                    v1::RecommendResponse* response, absl::Time deadline,
                                    OnWriteStall on_stall) const {
  const bool degraded = deadline - absl::Now() < options_.degrade_below;
  StageTimer timer(options_.metrics);
  if (absl::Status s = ValidateRecommendRequest(request); !s.ok()) return s;
  const v1::Context& context = request.context();
  DecisionInfo info;
  info.now_ms = clock_->NowMs();
  if (options_.trust_client_time && context.timestamp_ms() > 0) {
    if (absl::Status s = CheckTimestamp("context.timestamp_ms", context.timestamp_ms(), info.now_ms);
        !s.ok()) {
      return s;
    }
    info.now_ms = context.timestamp_ms();
  }
  const Assignment assignment = AssignUser(options_.assignment, request.user_id());

  // Pin one bundle for the whole request (the canary candidate for users in its fraction).
  const std::shared_ptr<const Bundle> bundle = snapshots_->Pin(request.user_id(), &info.canary);
  if (bundle == nullptr) return absl::UnavailableError("no snapshot bundle is loaded yet");

  response->Clear();
  response->set_decision_id(NewDecisionId());
  response->set_snapshot_version(bundle->version());
  if (assignment.arm_index >= 0) {
    response->set_arm(options_.assignment.arms[assignment.arm_index].name);
  }
  timer.End(Stage::kAdmission);
  if (assignment.holdout) {
    // The control group: an empty list, on purpose, logged like any decision.
    response->set_holdout(true);
    if (options_.metrics != nullptr) options_.metrics->holdout_decisions().Increment();
    if (options_.on_decision) options_.on_decision(request, *response, info);
    timer.End(Stage::kLogging);
    return absl::OkStatus();
  }
  PolicyParams params = ApplyOverrides(bundle->manifest().policy.params, options_.global_overrides);
  if (assignment.arm_index >= 0) {
    params = ApplyOverrides(params, options_.assignment.arms[assignment.arm_index].overrides);
  }
  if (degraded) params.epsilon = 0;  // the fallback is greedy

  // User state. Unknown user -> cold start, not an error. (The degraded path reads none.)
  const auto get_start = std::chrono::steady_clock::now();
  absl::StatusOr<std::optional<UserRecord>> user =
      degraded ? absl::StatusOr<std::optional<UserRecord>>(std::nullopt)
               : store_->GetUser(request.user_id());
  if (!user.ok()) return absl::InternalError(absl::StrCat("feature store: ", user.status().message()));
  absl::StatusOr<std::optional<PurchaseSummary>> purchases =
      degraded ? absl::StatusOr<std::optional<PurchaseSummary>>(std::nullopt)
               : store_->GetPurchases(request.user_id());
  if (!purchases.ok()) {
    return absl::InternalError(absl::StrCat("feature store: ", purchases.status().message()));
  }
  const UserRecord* user_record = user->has_value() ? &**user : nullptr;
  // A record ingested under another feature schema cannot be encoded for this bundle.
  const bool user_usable = user_record != nullptr &&
                           user_record->feature_schema_id == bundle->manifest().feature_schema.id;
  const PurchaseSummary* purchase_summary = purchases->has_value() ? &**purchases : nullptr;
  const int32_t now_day = DayOfMs(info.now_ms);
  if (options_.metrics != nullptr) {
    options_.metrics->rocksdb_get_duration().Observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - get_start).count());
  }
  timer.End(Stage::kFeatures);

  Scratch& scratch = ThreadScratch();
  scratch.attributes.clear();
  for (const auto& [key, value] : context.attributes()) scratch.attributes.push_back({key, value});
  const RequestContextView context_view{context.channel(), context.device(), context.page(),
                                        context.locale(), context.country(), scratch.attributes};
  const auto encode = [&](const ModelSections& sections) {
    EncodedSections encoded;
    if (sections.has_user) {
      scratch.user.resize(static_cast<size_t>(sections.user.width()));
      if (user_usable) {
        sections.user.EncodeUserRecord(*user_record, absl::MakeSpan(scratch.user));
      } else {
        sections.user.Encode({}, absl::MakeSpan(scratch.user));
      }
      encoded.user = scratch.user;
    }
    if (sections.has_purchases) {
      scratch.purchases.resize(static_cast<size_t>(sections.purchases.width()));
      sections.purchases.Encode(purchase_summary, now_day, absl::MakeSpan(scratch.purchases));
      encoded.purchases = scratch.purchases;
    }
    if (sections.has_context) {
      scratch.context.resize(static_cast<size_t>(sections.context.width()));
      sections.context.Encode(context_view, absl::MakeSpan(scratch.context));
      encoded.context = scratch.context;
    }
    return encoded;
  };

  // Query embedding: the user tower when the bundle ships one, else the stored embedding,
  // else the cold-start query.
  absl::Span<const float> query = bundle->cold_start_query();
  bool cold_start = !user_usable;
  const BundleModels no_models;
  const BundleModels& models = degraded ? no_models : bundle->models();
  if (degraded) {
    cold_start = true;
  } else if (models.user_tower) {
    if (ComputeUserEmbedding(*models.user_tower, encode(models.user_tower->sections),
                             &scratch.tower_input, &scratch.tower_scratch, &scratch.query)) {
      query = scratch.query;
    }
  } else if (user_usable && static_cast<int>(user_record->embedding.size()) == bundle->dimension()) {
    query = user_record->embedding;
  } else {
    cold_start = true;
  }
  response->set_cold_start(cold_start);
  response->set_degraded(degraded);
  timer.End(Stage::kUserTower);

  // Retrieve.
  const int n = request.num_offers();
  const int k = std::max(n, bundle->manifest().policy.retrieval_k);
  if (degraded) {
    scratch.candidates = bundle->fallback_candidates();
  } else if (absl::Status s = bundle->retriever().Search(query, k, &scratch.candidates); !s.ok()) {
    return absl::InternalError(absl::StrCat("retrieval: ", s.message()));
  }
  info.candidates_retrieved = static_cast<int>(scratch.candidates.size());
  timer.End(Stage::kRetrieval);

  // Per-request model terms: p0 and the CLV of the user.
  if (models.uplift) scratch.uplift.Begin(*models.uplift, encode(models.uplift->sections));
  double clv = 0, p_alive = 0;
  const ClvSpec& clv_spec = bundle->manifest().clv;
  if (clv_spec.present && purchase_summary != nullptr && !degraded) {
    absl::StatusOr<std::optional<RfmWeeks>> rfm = RfmFromPurchaseSummary(*purchase_summary, now_day);
    if (rfm.ok() && rfm->has_value()) {
      ClvModel clv_model;
      clv_model.r = clv_spec.r;
      clv_model.alpha = clv_spec.alpha;
      clv_model.a = clv_spec.a;
      clv_model.b = clv_spec.b;
      clv_model.p = clv_spec.p;
      clv_model.q = clv_spec.q;
      clv_model.v = clv_spec.v;
      clv_model.horizon_weeks = clv_spec.horizon_weeks;
      clv_model.margin = clv_spec.margin;
      clv_model.annual_discount_rate = clv_spec.annual_discount_rate;
      absl::StatusOr<ClvResult> result = ComputeClv(clv_model, **rfm);
      if (result.ok()) {
        clv = result->clv;
        p_alive = result->p_alive;
      }
    }
  }
  CollectAudiences(bundle->manifest().feature_schema, user_usable ? user_record : nullptr, context,
                   &scratch.audiences);
  const EligibilityRequest eligibility{info.now_ms, context.channel(), context.country(),
                                       scratch.audiences};

  // The candidates' ids, for one lookup of their runtime state (pause, budget) below.
  const std::vector<Offer>& offers = bundle->offers();
  const std::vector<Candidate>& candidates = scratch.candidates;
  scratch.candidate_ids.resize(candidates.size());
  scratch.runtimes.resize(candidates.size());
  for (size_t i = 0; i < candidates.size(); ++i) {
    if (i + kOfferRowsAhead < candidates.size()) {
      PrefetchOfferRow(offers[candidates[i + kOfferRowsAhead].offer_index]);
    }
    scratch.candidate_ids[i] = offers[candidates[i].offer_index].offer_id;
  }

  // Filter, score, select and record, under the user's lock so that caps hold under
  // concurrent requests of the same user.
  absl::Status decided = store_->DecideAndRecord(
      request.user_id(), response->decision_id(), info.now_ms,
      [&](const UserFatigueRecord& fatigue, std::vector<std::string>* served) -> absl::Status {
        scratch.scored.clear();
        scratch.scores.clear();
        scratch.retrieval_scores.clear();
        scratch.p1s.clear();
        // Read under the user's lock, as ApplyEvents updates a redemption's budget and the
        // user's fatigue under it: a request sees both before or both after.
        store_->GetOfferRuntimes(scratch.candidate_ids, absl::MakeSpan(scratch.runtimes));
        for (size_t i = 0; i < candidates.size(); ++i) {
          if (i + kOfferRowsAhead < candidates.size() && models.uplift) {
            scratch.uplift.PrefetchOffer(candidates[i + kOfferRowsAhead].offer_index);
          }
          if (i + kOfferListsAhead < candidates.size()) {
            PrefetchOfferLists(offers[candidates[i + kOfferListsAhead].offer_index]);
          }
          const Candidate& c = candidates[i];
          const Offer& offer = offers[c.offer_index];
          const OfferRuntime& runtime = scratch.runtimes[i];
          const OfferRuntimeState runtime_state{
              runtime.paused,
              RemainingRedemptions(offer.budget, runtime.budget_override, runtime.redemptions)};
          const OfferFatigueLimits limits = ResolveOfferCaps(params, offer.caps);
          const OfferFatigueState state =
              OfferFatigueStateOf(fatigue, offer.offer_id, info.now_ms, limits.window_seconds);
          const EligibilityReason reason =
              CheckEligibility(offer, runtime_state, state, eligibility, params);
          if (reason != EligibilityReason::kEligible) {
            ++info.filtered[static_cast<int>(reason)];
            continue;
          }
          CandidateScore score;
          double p1 = 0;
          if (models.uplift) {
            p1 = scratch.uplift.P1(c.offer_index, c.retrieval_score);
            score = ScoreCandidate({scratch.uplift.p0(), p1, clv, offer.margin, offer.cost,
                                    state.impressions_in_window},
                                   params);
            if (!score.passes_roi_gate) {
              ++info.below_roi_gate;
              continue;
            }
          } else {
            // Without uplift heads the retrieval score ranks (no value model, no ROI gate).
            score.fatigue_multiplier =
                FatigueMultiplier(params.fatigue_decay, state.impressions_in_window);
            score.score = c.retrieval_score > 0 ? c.retrieval_score * score.fatigue_multiplier
                                                : c.retrieval_score;
          }
          scratch.scored.push_back({c.offer_index, offer.category, score.score});
          scratch.scores.push_back(score);
          scratch.retrieval_scores.push_back(c.retrieval_score);
          scratch.p1s.push_back(p1);
        }
        timer.End(Stage::kScoring);
        SplitMix64Rng rng(SeedFromDecisionId(response->decision_id()));
        SelectOffers(scratch.scored,
                     SelectionLimitsFor(params, n, DayStateOf(fatigue, info.now_ms)), &rng,
                     &scratch.selection, &scratch.selected);
        for (const SelectedOffer& s : scratch.selected) {
          served->push_back(offers[s.offer_index].offer_id);
        }
        return absl::OkStatus();
      },
      on_stall);
  if (IsWriteStalled(decided)) return decided;  // nothing recorded; the caller runs it again
  if (!decided.ok()) return absl::InternalError(absl::StrCat("state store: ", decided.message()));
  timer.End(Stage::kFatigue);

  int rank = 0;
  for (const SelectedOffer& s : scratch.selected) {
    const Offer& offer = offers[s.offer_index];
    const CandidateScore& score = scratch.scores[s.candidate];
    v1::ScoredOffer* out = response->add_offers();
    out->set_offer_id(offer.offer_id);
    out->set_category(offer.category);
    out->set_score(score.score);
    out->set_rank(++rank);
    out->set_propensity(s.propensity);
    {  // Always built: the decision log keeps it; cleared below unless asked for.
      v1::Explanation* e = out->mutable_explanation();
      e->set_retrieval_score(scratch.retrieval_scores[s.candidate]);
      e->set_fatigue_multiplier(score.fatigue_multiplier);
      e->set_explored(s.explored);
      if (models.uplift) {
        e->set_p_treated(scratch.p1s[s.candidate]);
        e->set_p_control(scratch.uplift.p0());
        e->set_uplift(score.uplift);
        e->set_expected_value(score.expected_value);
        e->set_segment(std::string(SegmentName(score.segment)));
      }
      e->set_clv(clv);
      e->set_p_alive(p_alive);
    }
  }
  if (ServerMetrics* m = options_.metrics; m != nullptr) {
    m->candidates_retrieved().Increment(info.candidates_retrieved);
    for (int r = 1; r < kNumEligibilityReasons; ++r) {
      if (info.filtered[r] > 0) m->filtered(static_cast<EligibilityReason>(r)).Increment(info.filtered[r]);
    }
    if (info.below_roi_gate > 0) m->filtered_below_roi_gate().Increment(info.below_roi_gate);
    m->offers_served().Increment(response->offers_size());
    int explored = 0;
    for (const SelectedOffer& s : scratch.selected) explored += s.explored;
    if (explored > 0) m->explored_offers().Increment(explored);
  }
  if (options_.on_decision) options_.on_decision(request, *response, info);
  timer.End(Stage::kLogging);
  if (!request.explain()) {
    for (v1::ScoredOffer& offer : *response->mutable_offers()) offer.clear_explanation();
  }
  return absl::OkStatus();
}

}  // namespace offerd
