#include "core/ranking.h"

#include <vector>

#include <gtest/gtest.h>

namespace offerd {
namespace {

TEST(RankingTest, KeepsTheBestNInOrder) {
  const std::vector<Candidate> candidates = {{0, 0.1f}, {1, 0.9f}, {2, 0.5f}, {3, 0.7f}};
  std::vector<RankedOffer> out;
  SelectTopNByRetrievalScore(candidates, 2, &out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].offer_index, 1);
  EXPECT_EQ(out[1].offer_index, 3);
  EXPECT_DOUBLE_EQ(out[0].propensity, 1.0);
  EXPECT_FLOAT_EQ(static_cast<float>(out[0].retrieval_score), 0.9f);
}

TEST(RankingTest, TiesBreakByLowerIndexAndPaddingIsSkipped) {
  const std::vector<Candidate> candidates = {{5, 0.5f}, {-1, 0.0f}, {2, 0.5f}, {9, 0.5f}};
  std::vector<RankedOffer> out;
  SelectTopNByRetrievalScore(candidates, 10, &out);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].offer_index, 2);
  EXPECT_EQ(out[1].offer_index, 5);
  EXPECT_EQ(out[2].offer_index, 9);
}

TEST(RankingTest, NonPositiveNIsEmpty) {
  std::vector<RankedOffer> out = {RankedOffer{}};
  SelectTopNByRetrievalScore(std::vector<Candidate>{{0, 1.0f}}, 0, &out);
  EXPECT_TRUE(out.empty());
}

}  // namespace
}  // namespace offerd
