#include "core/expected_value.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "core/policy.h"
#include "core/policy_params.h"

namespace offerd {
namespace {

constexpr double kMargin = 20.0;
constexpr double kCost = 2.0;
constexpr double kClv = 100.0;
constexpr double kBeta = 0.1;  // margin + beta * CLV = 30

TEST(ExpectedValueTest, FormulaByHand) {
  // (0.15 - 0.05) * (20 + 0.1 * 100) - 0.15 * 2 = 3 - 0.3
  EXPECT_DOUBLE_EQ(ExpectedIncrementalValue(0.05, 0.15, kMargin, kCost, kClv, kBeta), 2.7);
  // beta = 0 ignores CLV: 0.1 * 20 - 0.3
  EXPECT_DOUBLE_EQ(ExpectedIncrementalValue(0.05, 0.15, kMargin, kCost, kClv, 0.0), 1.7);
  // No cost: pure incremental margin.
  EXPECT_DOUBLE_EQ(ExpectedIncrementalValue(0.1, 0.3, 10.0, 0.0, 0.0, kBeta), 2.0);
}

TEST(ExpectedValueTest, SegmentsLandWhereTheFormulaPutsThem) {
  const SegmentThresholds thresholds;  // 0.02 / 0.2
  struct Case {
    double p0, p1;
    Segment segment;
    double ev;
  };
  const Case cases[] = {
      {0.05, 0.15, Segment::kPersuadable, 2.7},   // earns
      {0.50, 0.51, Segment::kSureThing, -0.72},   // 0.01 * 30 - 0.51 * 2: costs money
      {0.30, 0.20, Segment::kSleepingDog, -3.4},  // -0.1 * 30 - 0.2 * 2: loses money
      {0.01, 0.015, Segment::kLostCause, 0.12},   // 0.005 * 30 - 0.015 * 2: small
  };
  for (const Case& c : cases) {
    EXPECT_EQ(ClassifySegment(c.p0, c.p1, thresholds), c.segment) << c.p0 << " " << c.p1;
    EXPECT_NEAR(ExpectedIncrementalValue(c.p0, c.p1, kMargin, kCost, kClv, kBeta), c.ev, 1e-12);
  }
  // The order the design promises: persuadable > 0 > sure thing > sleeping dog.
  const double persuadable = ExpectedIncrementalValue(0.05, 0.15, kMargin, kCost, kClv, kBeta);
  const double sure_thing = ExpectedIncrementalValue(0.50, 0.51, kMargin, kCost, kClv, kBeta);
  const double sleeping_dog = ExpectedIncrementalValue(0.30, 0.20, kMargin, kCost, kClv, kBeta);
  EXPECT_GT(persuadable, 0.0);
  EXPECT_LT(sure_thing, 0.0);
  EXPECT_LT(sleeping_dog, sure_thing);
}

TEST(ExpectedValueTest, SegmentThresholdsAreInclusive) {
  const SegmentThresholds t;
  EXPECT_EQ(ClassifySegment(0.0, 0.02, t), Segment::kPersuadable);
  EXPECT_EQ(ClassifySegment(0.02, 0.0, t), Segment::kSleepingDog);
  EXPECT_EQ(ClassifySegment(0.2, 0.2, t), Segment::kSureThing);
  EXPECT_EQ(ClassifySegment(0.19, 0.2, t), Segment::kLostCause);
  EXPECT_EQ(ClassifySegment(0.5, 0.51, SegmentThresholds{0.005, 0.9}), Segment::kPersuadable);
  EXPECT_EQ(SegmentName(Segment::kSleepingDog), "sleeping_dog");
  EXPECT_EQ(SegmentName(Segment::kSureThing), "sure_thing");
  EXPECT_EQ(SegmentName(Segment::kPersuadable), "persuadable");
  EXPECT_EQ(SegmentName(Segment::kLostCause), "lost_cause");
}

TEST(ExpectedValueTest, RoiGateDropsAtOrBelowMinEv) {
  EXPECT_TRUE(PassesRoiGate(0.01, 0.0));
  EXPECT_FALSE(PassesRoiGate(0.0, 0.0));
  EXPECT_FALSE(PassesRoiGate(-1.0, 0.0));
  EXPECT_FALSE(PassesRoiGate(std::numeric_limits<double>::quiet_NaN(), 0.0));
  EXPECT_TRUE(PassesRoiGate(-0.5, -1.0));
}

TEST(ScoreCandidateTest, FatigueShrinksGainsThenTheGateApplies) {
  PolicyParams params;  // beta 0.1, decay 0.8, min_ev 0
  CandidateScoreInputs inputs;
  inputs.p0 = 0.05;
  inputs.p1 = 0.15;
  inputs.clv = kClv;
  inputs.margin = kMargin;
  inputs.cost = kCost;
  inputs.impressions_in_window = 2;
  CandidateScore score = ScoreCandidate(inputs, params);
  EXPECT_DOUBLE_EQ(score.uplift, 0.1);
  EXPECT_DOUBLE_EQ(score.expected_value, 2.7);
  EXPECT_DOUBLE_EQ(score.fatigue_multiplier, 0.64);
  EXPECT_DOUBLE_EQ(score.score, 2.7 * 0.64);
  EXPECT_EQ(score.segment, Segment::kPersuadable);
  EXPECT_TRUE(score.passes_roi_gate);

  params.min_ev = 2.0;  // 1.728 after fatigue no longer clears it
  EXPECT_FALSE(ScoreCandidate(inputs, params).passes_roi_gate);
  inputs.impressions_in_window = 0;
  EXPECT_TRUE(ScoreCandidate(inputs, params).passes_roi_gate);
}

TEST(ScoreCandidateTest, FatigueNeverMakesALossLookSmaller) {
  PolicyParams params;
  params.min_ev = -100.0;
  CandidateScoreInputs inputs;
  inputs.p0 = 0.3;
  inputs.p1 = 0.2;
  inputs.clv = kClv;
  inputs.margin = kMargin;
  inputs.cost = kCost;
  inputs.impressions_in_window = 3;
  const CandidateScore score = ScoreCandidate(inputs, params);
  EXPECT_DOUBLE_EQ(score.expected_value, -3.4);
  EXPECT_DOUBLE_EQ(score.score, -3.4);
  EXPECT_EQ(score.segment, Segment::kSleepingDog);
}

TEST(PolicyParamsTest, DefaultsAreValidAndDocumented) {
  const PolicyParams p;
  EXPECT_TRUE(ValidatePolicyParams(p).ok());
  EXPECT_EQ(p.beta, 0.1);
  EXPECT_EQ(p.min_ev, 0.0);
  EXPECT_EQ(p.epsilon, 0.05);
  EXPECT_EQ(p.max_per_category, 2);
  EXPECT_EQ(p.fatigue_decay, 0.8);
  EXPECT_EQ(p.impression_window_seconds, 7 * 86400);
  EXPECT_EQ(p.max_impressions_per_window, 3);
  EXPECT_EQ(p.max_offers_per_day, 20);
  EXPECT_EQ(p.dismiss_cooldown_seconds, 3 * 86400);
  EXPECT_EQ(p.redeem_cooldown_seconds, 30 * 86400);
  EXPECT_EQ(p.segment_thresholds.uplift, 0.02);
  EXPECT_EQ(p.segment_thresholds.response, 0.2);
}

TEST(PolicyParamsTest, ValidationNamesTheField) {
  PolicyParams p;
  p.epsilon = 1.5;
  absl::Status status = ValidatePolicyParams(p);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("epsilon"), absl::string_view::npos);
  p = PolicyParams();
  p.fatigue_decay = 0.0;
  EXPECT_FALSE(ValidatePolicyParams(p).ok());
  p = PolicyParams();
  p.beta = std::numeric_limits<double>::quiet_NaN();
  EXPECT_FALSE(ValidatePolicyParams(p).ok());
  p = PolicyParams();
  p.max_per_category = -1;
  EXPECT_FALSE(ValidatePolicyParams(p).ok());
  p = PolicyParams();
  p.impression_window_seconds = 0;
  EXPECT_FALSE(ValidatePolicyParams(p).ok());
  p = PolicyParams();
  p.segment_thresholds.response = 2.0;
  EXPECT_FALSE(ValidatePolicyParams(p).ok());
}

TEST(PolicyParamsTest, OverridesReplaceOnlyTheSetFields) {
  PolicyOverrides overrides;
  overrides.epsilon = 0.2;
  overrides.max_offers_per_day = 7;
  overrides.segment_uplift_threshold = 0.05;
  const PolicyParams p = ApplyOverrides(PolicyParams(), overrides);
  EXPECT_EQ(p.epsilon, 0.2);
  EXPECT_EQ(p.max_offers_per_day, 7);
  EXPECT_EQ(p.segment_thresholds.uplift, 0.05);
  EXPECT_EQ(p.beta, PolicyParams().beta);
  EXPECT_EQ(p.segment_thresholds.response, 0.2);
}

TEST(PolicyParamsTest, CatalogCapsReplaceTheDefaultsForThatOffer) {
  const PolicyParams params;
  OfferFatigueLimits limits = ResolveOfferCaps(params, OfferCaps());
  EXPECT_EQ(limits.max_impressions, 3);
  EXPECT_EQ(limits.window_seconds, 7 * 86400);
  EXPECT_EQ(limits.dismiss_cooldown_seconds, 3 * 86400);
  EXPECT_EQ(limits.redeem_cooldown_seconds, 30 * 86400);
  OfferCaps caps;
  caps.max_impressions = 1;
  caps.redeem_cooldown_seconds = 60;
  limits = ResolveOfferCaps(params, caps);
  EXPECT_EQ(limits.max_impressions, 1);
  EXPECT_EQ(limits.window_seconds, 7 * 86400);
  EXPECT_EQ(limits.redeem_cooldown_seconds, 60);
}

}  // namespace
}  // namespace offerd
