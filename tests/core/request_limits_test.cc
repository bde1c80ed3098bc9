#include "core/request_limits.h"

#include <string>

#include <gtest/gtest.h>

namespace offerd {
namespace {

TEST(RequestLimitsTest, LengthNamesTheField) {
  EXPECT_TRUE(CheckLength("user_id", "u1", 1, kMaxUserIdBytes).ok());
  const absl::Status empty = CheckLength("user_id", "", 1, kMaxUserIdBytes);
  EXPECT_EQ(empty.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(empty.message(), "user_id: must be 1..256 bytes, got 0");
  EXPECT_FALSE(CheckLength("user_id", std::string(257, 'x'), 1, kMaxUserIdBytes).ok());
  EXPECT_TRUE(CheckLength("user_id", std::string(256, 'x'), 1, kMaxUserIdBytes).ok());
}

TEST(RequestLimitsTest, NumOffersBounds) {
  EXPECT_FALSE(CheckNumOffers(0).ok());
  EXPECT_TRUE(CheckNumOffers(1).ok());
  EXPECT_TRUE(CheckNumOffers(100).ok());
  const absl::Status s = CheckNumOffers(101);
  EXPECT_NE(s.message().find("num_offers"), absl::string_view::npos);
}

TEST(RequestLimitsTest, TimestampAtMostOneDayAhead) {
  const int64_t now = 1'700'000'000'000;
  EXPECT_TRUE(CheckTimestamp("timestamp_ms", 0, now).ok());
  EXPECT_TRUE(CheckTimestamp("timestamp_ms", now + kMaxFutureSkewMs, now).ok());
  EXPECT_FALSE(CheckTimestamp("timestamp_ms", now + kMaxFutureSkewMs + 1, now).ok());
  EXPECT_FALSE(CheckTimestamp("timestamp_ms", -5, now).ok());
}

}  // namespace
}  // namespace offerd
