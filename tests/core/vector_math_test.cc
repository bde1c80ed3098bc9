#include "core/vector_math.h"

#include <cmath>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

namespace offerd {
namespace {

TEST(VectorMathTest, NormalizeMakesUnitNorm) {
  std::vector<float> v = {3.0f, 4.0f};
  ASSERT_TRUE(L2NormalizeInPlace(absl::MakeSpan(v)));
  EXPECT_NEAR(v[0], 0.6f, 1e-6);
  EXPECT_NEAR(v[1], 0.8f, 1e-6);
  EXPECT_NEAR(L2Norm(v), 1.0, 1e-6);
}

TEST(VectorMathTest, NormalizeRefusesZeroAndNonFinite) {
  std::vector<float> zero = {0.0f, 0.0f};
  EXPECT_FALSE(L2NormalizeInPlace(absl::MakeSpan(zero)));
  EXPECT_EQ(zero[0], 0.0f);
  std::vector<float> inf = {std::numeric_limits<float>::infinity(), 1.0f};
  EXPECT_FALSE(L2NormalizeInPlace(absl::MakeSpan(inf)));
}

TEST(VectorMathTest, Dot) {
  const std::vector<float> a = {1, 2, 3};
  const std::vector<float> b = {4, -5, 6};
  EXPECT_DOUBLE_EQ(Dot(a, b), 4 - 10 + 18);
}

TEST(VectorMathTest, AllFiniteDetectsNaN) {
  EXPECT_TRUE(AllFinite(std::vector<float>{1, 2}));
  EXPECT_FALSE(AllFinite(std::vector<float>{1, std::nanf("")}));
}

}  // namespace
}  // namespace offerd
