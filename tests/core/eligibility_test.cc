#include "core/eligibility.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/fatigue.h"

namespace offerd {
namespace {

constexpr int64_t kNowMs = 1'700'000'000'000;
constexpr int64_t kDayMs = 86'400'000;

Offer TargetedOffer() {
  Offer offer;
  offer.offer_id = "o1";
  offer.category = "travel";
  offer.active_from_ms = kNowMs - kDayMs;
  offer.active_to_ms = kNowMs + kDayMs;
  offer.channels = {"web", "app"};
  offer.countries = {"US", "CA"};
  offer.audiences = {"gold_tier"};
  return offer;
}

class EligibilityTest : public ::testing::Test {
 protected:
  EligibilityReason Check(const Offer& offer) const {
    EligibilityRequest request;
    request.now_ms = now_ms_;
    request.channel = channel_;
    request.country = country_;
    request.user_audiences = audiences_;
    return CheckEligibility(offer, runtime_, fatigue_, request, params_);
  }

  int64_t now_ms_ = kNowMs;
  std::string channel_ = "web";
  std::string country_ = "US";
  std::vector<std::string> audiences_ = {"new_user", "gold_tier"};
  OfferRuntimeState runtime_;
  OfferFatigueState fatigue_;
  PolicyParams params_;
};

TEST_F(EligibilityTest, TargetedOfferIsEligibleWhenEveryRuleHolds) {
  EXPECT_EQ(Check(TargetedOffer()), EligibilityReason::kEligible);
  EXPECT_EQ(Check(Offer()), EligibilityReason::kEligible);  // no restriction at all
}

TEST_F(EligibilityTest, ActiveWindowIsHalfOpenAndZeroIsUnbounded) {
  Offer offer = TargetedOffer();
  now_ms_ = offer.active_from_ms;
  EXPECT_EQ(Check(offer), EligibilityReason::kEligible);
  now_ms_ = offer.active_from_ms - 1;
  EXPECT_EQ(Check(offer), EligibilityReason::kInactive);
  now_ms_ = offer.active_to_ms - 1;
  EXPECT_EQ(Check(offer), EligibilityReason::kEligible);
  now_ms_ = offer.active_to_ms;
  EXPECT_EQ(Check(offer), EligibilityReason::kInactive);
  offer.active_to_ms = 0;
  EXPECT_EQ(Check(offer), EligibilityReason::kEligible);
  offer.active_from_ms = 0;
  now_ms_ = 1;
  EXPECT_EQ(Check(offer), EligibilityReason::kEligible);
}

TEST_F(EligibilityTest, ChannelCountryAudience) {
  const Offer offer = TargetedOffer();
  channel_ = "email";
  EXPECT_EQ(Check(offer), EligibilityReason::kChannel);
  channel_ = "";
  EXPECT_EQ(Check(offer), EligibilityReason::kChannel);  // unknown channel matches no list
  channel_ = "app";
  country_ = "FR";
  EXPECT_EQ(Check(offer), EligibilityReason::kCountry);
  country_ = "us";  // exact bytes
  EXPECT_EQ(Check(offer), EligibilityReason::kCountry);
  country_ = "CA";
  audiences_ = {"new_user"};
  EXPECT_EQ(Check(offer), EligibilityReason::kAudience);
  audiences_ = {};
  EXPECT_EQ(Check(offer), EligibilityReason::kAudience);
  audiences_ = {"gold_tier"};
  EXPECT_EQ(Check(offer), EligibilityReason::kEligible);
}

TEST_F(EligibilityTest, RuntimePauseAndBudget) {
  const Offer offer = TargetedOffer();
  runtime_.paused = true;
  EXPECT_EQ(Check(offer), EligibilityReason::kPaused);
  runtime_.paused = false;
  runtime_.remaining_redemptions = 0;
  EXPECT_EQ(Check(offer), EligibilityReason::kBudget);
  runtime_.remaining_redemptions = 1;
  EXPECT_EQ(Check(offer), EligibilityReason::kEligible);
  runtime_.remaining_redemptions.reset();
  EXPECT_EQ(Check(offer), EligibilityReason::kEligible);
}

TEST_F(EligibilityTest, FirstBrokenRuleWinsInEnumOrder) {
  const Offer offer = TargetedOffer();
  now_ms_ = offer.active_to_ms + 1;
  channel_ = "email";
  runtime_.paused = true;
  EXPECT_EQ(Check(offer), EligibilityReason::kInactive);
  now_ms_ = kNowMs;
  EXPECT_EQ(Check(offer), EligibilityReason::kChannel);
  channel_ = "web";
  fatigue_.impressions_in_window = 99;
  EXPECT_EQ(Check(offer), EligibilityReason::kPaused);
  runtime_.paused = false;
  EXPECT_EQ(Check(offer), EligibilityReason::kCapped);
}

TEST_F(EligibilityTest, CapsAndCooldownsUseCatalogOverrides) {
  Offer offer = TargetedOffer();
  fatigue_.impressions_in_window = 2;
  EXPECT_EQ(Check(offer), EligibilityReason::kEligible);  // default cap 3
  fatigue_.impressions_in_window = 3;
  EXPECT_EQ(Check(offer), EligibilityReason::kCapped);
  offer.caps.max_impressions = 5;
  EXPECT_EQ(Check(offer), EligibilityReason::kEligible);
  fatigue_.last_redeem_ms = now_ms_ - 10 * kDayMs;  // default redeem cooldown 30 days
  EXPECT_EQ(Check(offer), EligibilityReason::kCooldown);
  offer.caps.redeem_cooldown_seconds = 5 * 86400;
  EXPECT_EQ(Check(offer), EligibilityReason::kEligible);
}

TEST(EligibilityReasonTest, NamesAreDenseAndDistinct) {
  EXPECT_EQ(static_cast<int>(EligibilityReason::kCooldown) + 1, kNumEligibilityReasons);
  const char* want[] = {"eligible", "inactive", "channel", "country", "audience",
                        "paused",   "budget",   "capped",  "cooldown"};
  for (int i = 0; i < kNumEligibilityReasons; ++i) {
    EXPECT_EQ(EligibilityReasonName(static_cast<EligibilityReason>(i)), want[i]);
  }
}

TEST(RemainingRedemptionsTest, OverrideThenCatalogMinusConsumed) {
  EXPECT_EQ(RemainingRedemptions(std::nullopt, std::nullopt, 5), std::nullopt);
  EXPECT_EQ(RemainingRedemptions(100, std::nullopt, 30), 70);
  EXPECT_EQ(RemainingRedemptions(100, 40, 30), 10);
  EXPECT_EQ(RemainingRedemptions(std::nullopt, 40, 30), 10);
  EXPECT_EQ(RemainingRedemptions(10, std::nullopt, 30), 0);
}

TEST(FatigueTest, CapIsAtMostMaxImpressions) {
  OfferFatigueLimits limits;
  limits.max_impressions = 3;
  OfferFatigueState state;
  state.impressions_in_window = 2;
  EXPECT_EQ(CheckFatigue(state, limits, kNowMs), FatigueVerdict::kAllowed);
  state.impressions_in_window = 3;
  EXPECT_EQ(CheckFatigue(state, limits, kNowMs), FatigueVerdict::kCapped);
  limits.max_impressions = 0;  // a cap of zero never shows the offer
  state.impressions_in_window = 0;
  EXPECT_EQ(CheckFatigue(state, limits, kNowMs), FatigueVerdict::kCapped);
}

TEST(FatigueTest, CooldownBoundaries) {
  OfferFatigueLimits limits;
  limits.max_impressions = 3;
  limits.dismiss_cooldown_seconds = 3 * 86400;
  limits.redeem_cooldown_seconds = 30 * 86400;
  OfferFatigueState state;
  state.last_dismiss_ms = kNowMs;
  EXPECT_EQ(CheckFatigue(state, limits, kNowMs), FatigueVerdict::kCooldown);
  EXPECT_EQ(CheckFatigue(state, limits, kNowMs + 3 * kDayMs - 1), FatigueVerdict::kCooldown);
  EXPECT_EQ(CheckFatigue(state, limits, kNowMs + 3 * kDayMs), FatigueVerdict::kAllowed);
  EXPECT_EQ(CheckFatigue(state, limits, kNowMs - 5), FatigueVerdict::kCooldown);  // future event
  state.last_dismiss_ms = 0;
  state.last_redeem_ms = kNowMs;
  EXPECT_EQ(CheckFatigue(state, limits, kNowMs + 29 * kDayMs), FatigueVerdict::kCooldown);
  EXPECT_EQ(CheckFatigue(state, limits, kNowMs + 30 * kDayMs), FatigueVerdict::kAllowed);
  limits.redeem_cooldown_seconds = 0;
  EXPECT_EQ(CheckFatigue(state, limits, kNowMs), FatigueVerdict::kAllowed);
}

TEST(FatigueTest, SoftMultiplierAndDayBudget) {
  EXPECT_EQ(FatigueMultiplier(0.8, 0), 1.0);
  EXPECT_EQ(FatigueMultiplier(0.8, -2), 1.0);
  EXPECT_DOUBLE_EQ(FatigueMultiplier(0.8, 1), 0.8);
  EXPECT_DOUBLE_EQ(FatigueMultiplier(0.8, 3), 0.512);
  EXPECT_EQ(FatigueMultiplier(1.0, 50), 1.0);
  PolicyParams params;
  params.max_offers_per_day = 20;
  EXPECT_EQ(OffersRemainingToday(UserDayState{0}, params), 20);
  EXPECT_EQ(OffersRemainingToday(UserDayState{18}, params), 2);
  EXPECT_EQ(OffersRemainingToday(UserDayState{20}, params), 0);
  EXPECT_EQ(OffersRemainingToday(UserDayState{25}, params), 0);
}

}  // namespace
}  // namespace offerd
