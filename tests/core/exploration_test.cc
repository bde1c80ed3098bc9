#include "core/exploration.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/random.h"

namespace offerd {
namespace {

SelectionLimits Limits(int slots, double epsilon, int max_per_category = 0, int today = 100) {
  SelectionLimits limits;
  limits.num_slots = slots;
  limits.remaining_today = today;
  limits.max_per_category = max_per_category;
  limits.epsilon = epsilon;
  return limits;
}

std::vector<SelectedOffer> Select(const std::vector<ScoredCandidate>& candidates,
                                  const SelectionLimits& limits, uint64_t seed = 1) {
  SplitMix64Rng rng(seed);
  SelectionBuffers buffers;
  std::vector<SelectedOffer> out;
  SelectOffers(candidates, limits, &rng, &buffers, &out);
  return out;
}

std::vector<int32_t> Offers(const std::vector<SelectedOffer>& selected) {
  std::vector<int32_t> offers;
  for (const SelectedOffer& s : selected) offers.push_back(s.offer_index);
  return offers;
}

TEST(RandomTest, SplitMix64IsDeterministicAndInRange) {
  SplitMix64Rng a(7);
  SplitMix64Rng b(7);
  for (int i = 0; i < 1000; ++i) {
    const double u = a.UniformDouble();
    EXPECT_EQ(u, b.UniformDouble());
    EXPECT_GE(u, 0.0);
    EXPECT_LT(u, 1.0);
    EXPECT_LT(a.UniformInt(3), 3u);
    b.UniformInt(3);
  }
  // Reference value of splitmix64 (seed 0, first output), as published with the algorithm.
  EXPECT_EQ(SplitMix64Rng(0).Next(), 0xe220a8397b1dcdafULL);
}

TEST(SelectOffersTest, GreedyWithoutExplorationIsScoreOrder) {
  const std::vector<ScoredCandidate> candidates = {
      {10, "a", 1.0}, {11, "b", 3.0}, {12, "c", 2.0}, {13, "d", 0.5}};
  const std::vector<SelectedOffer> out = Select(candidates, Limits(3, 0.0));
  EXPECT_EQ(Offers(out), (std::vector<int32_t>{11, 12, 10}));
  EXPECT_EQ(out[0].candidate, 1);
  for (const SelectedOffer& s : out) {
    EXPECT_EQ(s.propensity, 1.0);
    EXPECT_FALSE(s.explored);
  }
}

TEST(SelectOffersTest, TiesGoToTheLowerOfferIndex) {
  const std::vector<ScoredCandidate> candidates = {{9, "a", 1.0}, {4, "b", 1.0}, {6, "c", 1.0}};
  EXPECT_EQ(Offers(Select(candidates, Limits(3, 0.0))), (std::vector<int32_t>{4, 6, 9}));
}

TEST(SelectOffersTest, PropensitiesFollowTheAvailableSet) {
  // epsilon 0.2 over 3 candidates: greedy 0.8, others 0.1 each; the last slot has m == 1.
  const std::vector<ScoredCandidate> candidates = {{0, "a", 3.0}, {1, "b", 2.0}, {2, "c", 1.0}};
  for (uint64_t seed = 0; seed < 50; ++seed) {
    const std::vector<SelectedOffer> out = Select(candidates, Limits(3, 0.2), seed);
    ASSERT_EQ(out.size(), 3u);
    EXPECT_DOUBLE_EQ(out[0].propensity, out[0].explored ? 0.1 : 0.8);
    EXPECT_DOUBLE_EQ(out[1].propensity, out[1].explored ? 0.2 : 0.8);  // m = 2
    EXPECT_EQ(out[2].propensity, 1.0);
    EXPECT_FALSE(out[2].explored);
  }
}

TEST(SelectOffersTest, FewerThanAskedWhenCandidatesOrBudgetRunOut) {
  const std::vector<ScoredCandidate> candidates = {{0, "a", 3.0}, {1, "b", 2.0}};
  EXPECT_EQ(Select(candidates, Limits(5, 0.1)).size(), 2u);
  EXPECT_EQ(Select(candidates, Limits(5, 0.1, 0, /*today=*/1)).size(), 1u);
  EXPECT_TRUE(Select(candidates, Limits(5, 0.1, 0, /*today=*/0)).empty());
  EXPECT_TRUE(Select(candidates, Limits(0, 0.1)).empty());
  EXPECT_TRUE(Select({}, Limits(3, 0.1)).empty());
}

TEST(SelectOffersTest, SkipsNaNScoresPaddingAndRepeatedOffers) {
  const std::vector<ScoredCandidate> candidates = {
      {0, "a", std::numeric_limits<double>::quiet_NaN()},
      {-1, "a", 9.0},
      {5, "a", 2.0},
      {5, "a", 1.5},  // the same offer again: never served twice
      {6, "b", 1.0}};
  const std::vector<SelectedOffer> out = Select(candidates, Limits(5, 0.0));
  EXPECT_EQ(Offers(out), (std::vector<int32_t>{5, 6}));
}

TEST(SelectOffersTest, DiversityLimitsEachCategory) {
  const std::vector<ScoredCandidate> candidates = {
      {0, "food", 9.0}, {1, "food", 8.0}, {2, "food", 7.0}, {3, "travel", 1.0}, {4, "home", 0.5}};
  EXPECT_EQ(Offers(Select(candidates, Limits(4, 0.0, 2))), (std::vector<int32_t>{0, 1, 3, 4}));
  EXPECT_EQ(Offers(Select(candidates, Limits(4, 0.0, 1))), (std::vector<int32_t>{0, 3, 4}));
  EXPECT_EQ(Offers(Select(candidates, Limits(4, 0.0, 0))), (std::vector<int32_t>{0, 1, 2, 3}));
}

TEST(SelectOffersTest, SameSeedSameDecision) {
  std::vector<ScoredCandidate> candidates;
  for (int i = 0; i < 30; ++i) candidates.push_back({i, i % 2 ? "x" : "y", 1.0 / (i + 1)});
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const auto a = Select(candidates, Limits(10, 0.5, 3), seed);
    const auto b = Select(candidates, Limits(10, 0.5, 3), seed);
    EXPECT_EQ(Offers(a), Offers(b));
  }
}

// Property: for every history (offers chosen in the earlier slots), the empirical frequency
// with which each offer fills the next slot matches the propensity the selection reported for
// it, within 5 standard errors; and the reported propensity depends only on the history.
TEST(SelectOffersPropertyTest, EmpiricalFrequencyMatchesReportedPropensity) {
  const std::vector<ScoredCandidate> candidates = {{0, "a", 5.0}, {1, "a", 4.0}, {2, "b", 3.0},
                                                   {3, "b", 2.0}, {4, "c", 1.0}, {5, "a", 0.5}};
  const SelectionLimits limits = Limits(3, 0.3, /*max_per_category=*/2);
  constexpr int kRuns = 200'000;
  struct Tally {
    int count = 0;
    double propensity = -1.0;
  };
  std::map<std::string, int> history_count;
  std::map<std::string, std::map<int32_t, Tally>> picks;
  SelectionBuffers buffers;
  std::vector<SelectedOffer> out;
  for (int run = 0; run < kRuns; ++run) {
    SplitMix64Rng rng(0x5eed0000ULL + run);
    SelectOffers(candidates, limits, &rng, &buffers, &out);
    ASSERT_EQ(out.size(), 3u);
    std::string history;
    for (const SelectedOffer& s : out) {
      ++history_count[history];
      Tally& tally = picks[history][s.offer_index];
      ++tally.count;
      if (tally.propensity < 0) tally.propensity = s.propensity;
      ASSERT_EQ(tally.propensity, s.propensity) << "history " << history;
      history += std::to_string(s.offer_index) + ",";
    }
  }
  int checked = 0;
  for (const auto& [history, by_offer] : picks) {
    const int n = history_count[history];
    if (n < 2000) continue;
    double total_propensity = 0.0;
    for (const auto& [offer, tally] : by_offer) {
      const double p = tally.propensity;
      total_propensity += p;
      const double frequency = static_cast<double>(tally.count) / n;
      const double standard_error = std::sqrt(p * (1.0 - p) / n);
      EXPECT_NEAR(frequency, p, 5.0 * standard_error + 1e-12)
          << "history '" << history << "' offer " << offer << " n=" << n;
      ++checked;
    }
    // Every available candidate was seen, so the propensities of one slot sum to 1.
    EXPECT_NEAR(total_propensity, 1.0, 1e-9) << "history '" << history << "'";
  }
  EXPECT_GT(checked, 20);
  // First slot: the greedy offer 0 with 1 - 0.3, each of the 5 others with 0.3 / 5.
  EXPECT_DOUBLE_EQ(picks[""][0].propensity, 0.7);
  EXPECT_DOUBLE_EQ(picks[""][4].propensity, 0.06);
}

// Property over random candidate sets: no category exceeds its limit, no offer repeats, the
// slot count respects the request and the day budget, and when fewer slots are filled every
// remaining candidate was blocked (its offer served or its category full).
TEST(SelectOffersPropertyTest, LimitsHoldOnRandomInputs) {
  SplitMix64Rng gen(2024);
  const char* kCategories[] = {"a", "b", "c", "d", "e"};
  SelectionBuffers buffers;
  std::vector<SelectedOffer> out;
  for (int trial = 0; trial < 5000; ++trial) {
    const int num_candidates = static_cast<int>(gen.UniformInt(40));
    std::vector<ScoredCandidate> candidates(num_candidates);
    for (ScoredCandidate& c : candidates) {
      c.offer_index = static_cast<int32_t>(gen.UniformInt(30));  // repeats happen
      c.category = kCategories[gen.UniformInt(1 + gen.UniformInt(5))];
      c.score = gen.UniformDouble() * 10.0 - 2.0;
    }
    SelectionLimits limits;
    limits.num_slots = 1 + static_cast<int32_t>(gen.UniformInt(15));
    limits.remaining_today = static_cast<int32_t>(gen.UniformInt(20));
    limits.max_per_category = static_cast<int32_t>(gen.UniformInt(4));
    limits.epsilon = gen.UniformDouble();
    SplitMix64Rng rng(trial);
    SelectOffers(candidates, limits, &rng, &buffers, &out);

    ASSERT_LE(out.size(), static_cast<size_t>(std::min(limits.num_slots, limits.remaining_today)));
    std::map<std::string, int> per_category;
    std::set<int32_t> offers;
    for (const SelectedOffer& s : out) {
      ASSERT_EQ(candidates[s.candidate].offer_index, s.offer_index);
      ASSERT_TRUE(offers.insert(s.offer_index).second) << "offer served twice";
      const int n = ++per_category[std::string(candidates[s.candidate].category)];
      if (limits.max_per_category > 0) {
        ASSERT_LE(n, limits.max_per_category);
      }
      ASSERT_GT(s.propensity, 0.0);
      ASSERT_LE(s.propensity, 1.0);
    }
    if (out.size() < static_cast<size_t>(std::min(limits.num_slots, limits.remaining_today))) {
      for (const ScoredCandidate& c : candidates) {
        const bool served = offers.count(c.offer_index) > 0;
        const bool full = limits.max_per_category > 0 &&
                          per_category[std::string(c.category)] >= limits.max_per_category;
        EXPECT_TRUE(served || full) << "trial " << trial << ": stopped with candidates left";
      }
    }
  }
}

}  // namespace
}  // namespace offerd
