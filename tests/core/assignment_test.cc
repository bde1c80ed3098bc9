#include "core/assignment.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace offerd {
namespace {

constexpr int kUsers = 100'000;

std::string UserId(int i) { return absl::StrCat("u", 1000000 + i); }

ExperimentArm Arm(std::string name, double share) {
  ExperimentArm arm;
  arm.name = std::move(name);
  arm.traffic_share = share;
  return arm;
}

// |observed share - p| within 5 binomial standard errors.
void ExpectShare(int hits, int n, double p, const std::string& what) {
  const double share = static_cast<double>(hits) / n;
  EXPECT_NEAR(share, p, 5.0 * std::sqrt(p * (1.0 - p) / n)) << what;
}

// Pearson chi-square statistic of a contingency table.
double ChiSquare(const std::vector<std::vector<double>>& table) {
  double total = 0.0;
  std::vector<double> rows(table.size(), 0.0);
  std::vector<double> cols(table[0].size(), 0.0);
  for (size_t r = 0; r < table.size(); ++r) {
    for (size_t c = 0; c < table[r].size(); ++c) {
      rows[r] += table[r][c];
      cols[c] += table[r][c];
      total += table[r][c];
    }
  }
  double statistic = 0.0;
  for (size_t r = 0; r < table.size(); ++r) {
    for (size_t c = 0; c < table[r].size(); ++c) {
      const double expected = rows[r] * cols[c] / total;
      statistic += (table[r][c] - expected) * (table[r][c] - expected) / expected;
    }
  }
  return statistic;
}

// Values from the Python transcription in core/assignment.h (python3, exact doubles).
TEST(AssignmentHashTest, MatchesThePythonReference) {
  EXPECT_EQ(AssignmentHash("offerd-holdout", "u0000001"), 0.4976710924872103);
  EXPECT_EQ(AssignmentHash("offerd-arm", "u0000001"), 0.038907909795753315);
  EXPECT_EQ(AssignmentHash("", ""), 0.5048676404714686);
  EXPECT_EQ(AssignmentHash("ab", "c"), 0.13873308169701293);
  EXPECT_EQ(AssignmentHash("a", "bc"), 0.8139296540679807);  // the length prefix separates them
  EXPECT_EQ(AssignmentHash("salt", "\xc3\xbc-ser"), 0.003931540295278313);
}

TEST(AssignmentHashTest, UniformOverTenBins) {
  std::vector<std::vector<double>> bins(1, std::vector<double>(10, 0.0));
  for (int i = 0; i < kUsers; ++i) {
    const double u = AssignmentHash("offerd-holdout", UserId(i));
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    bins[0][static_cast<int>(u * 10)] += 1;
  }
  double statistic = 0.0;
  for (double count : bins[0]) statistic += (count - kUsers / 10.0) * (count - kUsers / 10.0);
  statistic /= kUsers / 10.0;
  EXPECT_LT(statistic, 33.7);  // chi-square, 9 degrees of freedom, p = 1e-4
}

TEST(AssignUserTest, DeterministicPerUser) {
  AssignmentConfig config;
  config.arms = {Arm("a", 0.5), Arm("b", 0.5)};
  config.canary_fraction = 0.3;
  for (int i = 0; i < 100; ++i) {
    const Assignment first = AssignUser(config, UserId(i));
    const Assignment again = AssignUser(config, UserId(i));
    EXPECT_EQ(first.holdout, again.holdout);
    EXPECT_EQ(first.arm_index, again.arm_index);
    EXPECT_EQ(first.canary, again.canary);
  }
}

TEST(AssignUserTest, SharesWithinFiveSigma) {
  AssignmentConfig config;                                        // holdout 0.05
  config.arms = {Arm("control", 0.2), Arm("high_epsilon", 0.3)};  // 0.5 gets no arm
  config.canary_fraction = 0.1;
  int holdout = 0;
  int canary = 0;
  int arms[3] = {0, 0, 0};  // control, high_epsilon, none
  for (int i = 0; i < kUsers; ++i) {
    const Assignment a = AssignUser(config, UserId(i));
    holdout += a.holdout;
    canary += a.canary;
    ++arms[a.arm_index < 0 ? 2 : a.arm_index];
  }
  ExpectShare(holdout, kUsers, 0.05, "holdout");
  ExpectShare(canary, kUsers, 0.1, "canary");
  ExpectShare(arms[0], kUsers, 0.2, "arm control");
  ExpectShare(arms[1], kUsers, 0.3, "arm high_epsilon");
  ExpectShare(arms[2], kUsers, 0.5, "no arm");
}

TEST(AssignUserTest, HoldoutArmAndCanaryAreIndependent) {
  AssignmentConfig config;
  config.holdout_fraction = 0.2;
  config.arms = {Arm("a", 0.25), Arm("b", 0.25), Arm("c", 0.5)};
  config.canary_fraction = 0.5;
  std::vector<std::vector<double>> holdout_by_arm(2, std::vector<double>(3, 0.0));
  std::vector<std::vector<double>> canary_by_arm(2, std::vector<double>(3, 0.0));
  std::vector<std::vector<double>> holdout_by_canary(2, std::vector<double>(2, 0.0));
  for (int i = 0; i < kUsers; ++i) {
    const Assignment a = AssignUser(config, UserId(i));
    ASSERT_GE(a.arm_index, 0);  // shares sum to 1: everyone has an arm
    holdout_by_arm[a.holdout][a.arm_index] += 1;
    canary_by_arm[a.canary][a.arm_index] += 1;
    holdout_by_canary[a.holdout][a.canary] += 1;
  }
  // Chi-square critical values at p = 1e-4: 18.42 (2 degrees of freedom), 15.14 (1).
  EXPECT_LT(ChiSquare(holdout_by_arm), 18.42);
  EXPECT_LT(ChiSquare(canary_by_arm), 18.42);
  EXPECT_LT(ChiSquare(holdout_by_canary), 15.14);
  // And the holdout share is the same inside every arm (within 5 sigma of 0.2).
  for (int arm = 0; arm < 3; ++arm) {
    const double n = holdout_by_arm[0][arm] + holdout_by_arm[1][arm];
    ExpectShare(static_cast<int>(holdout_by_arm[1][arm]), static_cast<int>(n), 0.2,
                absl::StrCat("holdout within arm ", arm));
  }
}

TEST(AssignUserTest, EdgeFractions) {
  AssignmentConfig config;
  config.holdout_fraction = 0.0;
  config.canary_fraction = 1.0;
  for (int i = 0; i < 1000; ++i) {
    const Assignment a = AssignUser(config, UserId(i));
    EXPECT_FALSE(a.holdout);
    EXPECT_TRUE(a.canary);
    EXPECT_EQ(a.arm_index, -1);  // no arms configured
  }
}

TEST(AssignUserTest, SharesThatRoundShortOfOneStillCoverEveryone) {
  AssignmentConfig config;
  for (int k = 0; k < 10; ++k) config.arms.push_back(Arm(absl::StrCat("arm", k), 0.1));
  config.arms.push_back(Arm("empty", 0.0));
  // Ten times 0.1 sums to 0.9999999999999999 in double.
  for (int i = 0; i < 20000; ++i) {
    const int32_t arm = AssignUser(config, UserId(i)).arm_index;
    EXPECT_GE(arm, 0);
    EXPECT_LT(arm, 10);
  }
}

TEST(ValidateAssignmentConfigTest, RejectsBadConfigs) {
  const PolicyParams base;
  AssignmentConfig config;
  EXPECT_TRUE(ValidateAssignmentConfig(config, base).ok());
  config.arms = {Arm("a", 0.6), Arm("b", 0.6)};
  EXPECT_FALSE(ValidateAssignmentConfig(config, base).ok());
  config.arms = {Arm("a", 0.5), Arm("a", 0.5)};
  EXPECT_FALSE(ValidateAssignmentConfig(config, base).ok());
  config.arms = {Arm("", 0.5)};
  EXPECT_FALSE(ValidateAssignmentConfig(config, base).ok());
  config.arms = {Arm("a", -0.1)};
  EXPECT_FALSE(ValidateAssignmentConfig(config, base).ok());
  config.arms = {Arm("a", 0.5)};
  config.arms[0].overrides.epsilon = 2.0;
  const absl::Status status = ValidateAssignmentConfig(config, base);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("epsilon"), absl::string_view::npos) << status;
  config.arms = {};
  config.holdout_fraction = 1.5;
  EXPECT_FALSE(ValidateAssignmentConfig(config, base).ok());
  config.holdout_fraction = 0.05;
  config.arm_salt = config.holdout_salt;
  EXPECT_FALSE(ValidateAssignmentConfig(config, base).ok());
  config.arm_salt = "";
  EXPECT_FALSE(ValidateAssignmentConfig(config, base).ok());
}

}  // namespace
}  // namespace offerd
