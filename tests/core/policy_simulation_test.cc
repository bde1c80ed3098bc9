// Property test of the whole pure policy: random sequences of requests and events, simulated
// with the core functions the server calls (CheckEligibility, ScoreCandidate, SelectOffers),
// against a plain in-memory event log standing in for the counter store. Whatever the
// sequence, the hard caps are never exceeded and no offer is served inside a cooldown.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/eligibility.h"
#include "core/event.h"
#include "core/exploration.h"
#include "core/fatigue.h"
#include "core/offer.h"
#include "core/policy.h"
#include "core/policy_params.h"
#include "core/random.h"

namespace offerd {
namespace {

constexpr int64_t kHourMs = 3'600'000;
constexpr int kNumOffers = 40;
constexpr int kNumUsers = 15;

struct UserOfferLog {
  std::vector<int64_t> impressions_ms;  // ascending
  int64_t last_dismiss_ms = 0;
  int64_t last_redeem_ms = 0;
};

class Simulation {
 public:
  explicit Simulation(uint64_t seed) : gen_(seed) {
    params_.max_offers_per_day = 6;
    params_.max_impressions_per_window = 3;
    params_.impression_window_seconds = 2 * 86400;
    params_.dismiss_cooldown_seconds = 86400;
    params_.redeem_cooldown_seconds = 5 * 86400;
    params_.epsilon = 0.2;
    params_.max_per_category = 2;
    params_.min_ev = -0.5;  // let some money-losers through the gate to stress the caps
    for (int i = 0; i < kNumOffers; ++i) {
      Offer offer;
      offer.offer_id = absl::StrCat("o", i);
      offer.category = absl::StrCat("c", i % 6);
      offer.margin = 5.0 + i % 9;
      offer.cost = 1.0 + i % 4;
      if (i % 3 == 0) offer.channels = {"web", "app"};
      if (i % 8 == 0) offer.countries = {"US"};
      if (i % 10 == 0) offer.audiences = {"gold"};
      if (i % 4 == 0) offer.budget = 3;
      if (i % 5 == 0) {
        offer.caps.max_impressions = 1;
        offer.caps.window_seconds = 6 * 3600;
      }
      if (i % 7 == 0) offer.caps.dismiss_cooldown_seconds = 2 * 3600;
      offers_.push_back(offer);
    }
  }

  void Run(int steps) {
    int64_t now_ms = 1'700'000'000'000;
    for (int step = 0; step < steps; ++step) {
      now_ms += static_cast<int64_t>(gen_.UniformInt(3 * kHourMs));  // 0 allowed: same instant
      if (gen_.UniformDouble() < 0.8) {
        Request(step, now_ms);
      } else {
        Event(now_ms);
      }
    }
    ++runs_;
  }

  // Final audit over the whole history: every trailing window of every user x offer and
  // every user-day.
  void Audit() const {
    for (const auto& [key, log] : logs_) {
      const OfferFatigueLimits limits = ResolveOfferCaps(params_, offers_[key.second].caps);
      for (size_t i = 0; i < log.impressions_ms.size(); ++i) {
        const int64_t end = log.impressions_ms[i];
        const int in_window = CountInWindow(log, end, limits.window_seconds);
        ASSERT_LE(in_window, limits.max_impressions)
            << "user " << key.first << " offer " << key.second << " at " << end;
      }
    }
    for (const auto& [user_day, served] : served_per_day_) {
      ASSERT_LE(served, params_.max_offers_per_day) << "user " << user_day.first;
    }
  }

  int64_t total_served() const { return total_served_; }
  int64_t total_capped() const { return filtered_[static_cast<int>(EligibilityReason::kCapped)]; }
  int64_t total_cooldown() const {
    return filtered_[static_cast<int>(EligibilityReason::kCooldown)];
  }
  int64_t day_limited() const { return day_limited_; }

 private:
  static int CountInWindow(const UserOfferLog& log, int64_t now_ms, int64_t window_seconds) {
    const int64_t start = now_ms - window_seconds * 1000;  // window (start, now]
    int n = 0;
    for (int64_t t : log.impressions_ms) n += t > start && t <= now_ms;
    return n;
  }

  void Request(int step, int64_t now_ms) {
    const int user = static_cast<int>(gen_.UniformInt(kNumUsers));
    const char* kChannels[] = {"web", "app", "email"};
    const char* kCountries[] = {"US", "CA"};
    const std::vector<std::string> audiences =
        user % 3 == 0 ? std::vector<std::string>{"gold"} : std::vector<std::string>{};
    EligibilityRequest request;
    request.now_ms = now_ms;
    request.channel = kChannels[gen_.UniformInt(3)];
    request.country = kCountries[gen_.UniformInt(2)];
    request.user_audiences = audiences;

    std::vector<ScoredCandidate> candidates;
    for (int o = 0; o < kNumOffers; ++o) {
      const Offer& offer = offers_[o];
      const OfferFatigueLimits limits = ResolveOfferCaps(params_, offer.caps);
      UserOfferLog& log = logs_[{user, o}];
      OfferFatigueState fatigue;
      fatigue.impressions_in_window = CountInWindow(log, now_ms, limits.window_seconds);
      fatigue.last_dismiss_ms = log.last_dismiss_ms;
      fatigue.last_redeem_ms = log.last_redeem_ms;
      OfferRuntimeState runtime;
      runtime.paused = o % 11 == 0 && (now_ms / (24 * kHourMs)) % 2 == 0;
      runtime.remaining_redemptions =
          RemainingRedemptions(offer.budget, std::nullopt, redemptions_[o]);
      const EligibilityReason reason = CheckEligibility(offer, runtime, fatigue, request, params_);
      ++filtered_[static_cast<int>(reason)];
      if (reason != EligibilityReason::kEligible) continue;

      CandidateScoreInputs inputs;
      inputs.p0 = gen_.UniformDouble() * 0.3;
      inputs.p1 = std::min(1.0, std::max(0.0, inputs.p0 + gen_.UniformDouble() * 0.2 - 0.05));
      inputs.clv = gen_.UniformDouble() * 50.0;
      inputs.margin = offer.margin;
      inputs.cost = offer.cost;
      inputs.impressions_in_window = fatigue.impressions_in_window;
      const CandidateScore score = ScoreCandidate(inputs, params_);
      if (!score.passes_roi_gate) continue;
      candidates.push_back({o, offer.category, score.score});
    }

    const std::pair<int, int32_t> user_day = {user, DayOfMs(now_ms)};
    UserDayState day;
    day.offers_served_today = served_per_day_[user_day];
    const int32_t num_offers = 1 + static_cast<int32_t>(gen_.UniformInt(10));
    const SelectionLimits limits = SelectionLimitsFor(params_, num_offers, day);
    if (limits.remaining_today < num_offers) ++day_limited_;
    SplitMix64Rng rng(0xabcdef00ULL + step + 1000003ULL * runs_);
    SelectOffers(candidates, limits, &rng, &buffers_, &selected_);

    // Record at decision time, then check the invariants the store relies on.
    for (const SelectedOffer& s : selected_) {
      const Offer& offer = offers_[s.offer_index];
      const OfferFatigueLimits caps = ResolveOfferCaps(params_, offer.caps);
      UserOfferLog& log = logs_[{user, s.offer_index}];
      log.impressions_ms.push_back(now_ms);
      ASSERT_LE(CountInWindow(log, now_ms, caps.window_seconds), caps.max_impressions)
          << "offer " << s.offer_index;
      ASSERT_FALSE(log.last_dismiss_ms != 0 &&
                   now_ms - log.last_dismiss_ms < caps.dismiss_cooldown_seconds * 1000)
          << "served inside the dismiss cooldown";
      ASSERT_FALSE(log.last_redeem_ms != 0 &&
                   now_ms - log.last_redeem_ms < caps.redeem_cooldown_seconds * 1000)
          << "served inside the redeem cooldown";
      ASSERT_TRUE(offer.channels.empty() ||
                  std::count(offer.channels.begin(), offer.channels.end(), request.channel));
      ASSERT_FALSE(offer.budget && redemptions_[s.offer_index] >= *offer.budget);
      served_.push_back({user, s.offer_index});
    }
    served_per_day_[user_day] += static_cast<int>(selected_.size());
    total_served_ += static_cast<int64_t>(selected_.size());
    ASSERT_LE(served_per_day_[user_day], params_.max_offers_per_day);
  }

  void Event(int64_t now_ms) {
    if (served_.empty()) return;
    const auto [user, offer] = served_[gen_.UniformInt(served_.size())];
    UserOfferLog& log = logs_[{user, offer}];
    if (gen_.UniformDouble() < 0.6) {
      log.last_dismiss_ms = now_ms;
    } else {
      log.last_redeem_ms = now_ms;
      ++redemptions_[offer];
    }
  }

  SplitMix64Rng gen_;
  PolicyParams params_;
  std::vector<Offer> offers_;
  std::map<std::pair<int, int>, UserOfferLog> logs_;
  std::map<std::pair<int, int32_t>, int> served_per_day_;
  std::map<int, int64_t> redemptions_;
  std::vector<std::pair<int, int>> served_;
  SelectionBuffers buffers_;
  std::vector<SelectedOffer> selected_;
  int64_t filtered_[kNumEligibilityReasons] = {};
  int64_t total_served_ = 0;
  int64_t day_limited_ = 0;
  int runs_ = 0;
};

TEST(PolicySimulationTest, CapsAndCooldownsAreNeverExceeded) {
  for (uint64_t seed : {1u, 2u, 3u, 4u}) {
    Simulation simulation(seed);
    simulation.Run(4000);
    simulation.Audit();
    if (HasFatalFailure()) return;
    // The rules were actually exercised, not vacuously satisfied.
    EXPECT_GT(simulation.total_served(), 1000) << "seed " << seed;
    EXPECT_GT(simulation.total_capped(), 100) << "seed " << seed;
    EXPECT_GT(simulation.total_cooldown(), 100) << "seed " << seed;
    EXPECT_GT(simulation.day_limited(), 10) << "seed " << seed;
  }
}

}  // namespace
}  // namespace offerd
