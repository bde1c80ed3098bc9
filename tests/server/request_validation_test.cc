#include "server/request_validation.h"

#include <gtest/gtest.h>

namespace offerd {
namespace {

TEST(RequestValidationTest, AcceptsAWellFormedRequest) {
  v1::RecommendRequest request;
  request.set_user_id("u1");
  request.set_num_offers(10);
  request.mutable_context()->set_channel("app");
  (*request.mutable_context()->mutable_attributes())["ab"] = "x";
  EXPECT_TRUE(ValidateRecommendRequest(request).ok());
}

TEST(RequestValidationTest, NamesTheFieldOfEachLimit) {
  v1::RecommendRequest request;
  request.set_user_id("u1");
  request.set_num_offers(1);
  request.mutable_context()->set_country("UNITED-STATES");
  EXPECT_NE(ValidateRecommendRequest(request).message().find("context.country"),
            absl::string_view::npos);
  request.mutable_context()->set_country("US");
  request.set_request_id(std::string(129, 'r'));
  EXPECT_NE(ValidateRecommendRequest(request).message().find("request_id"), absl::string_view::npos);
}

TEST(RequestValidationTest, Events) {
  const int64_t now = 1'790'000'000'000;
  v1::Event e;
  e.set_user_id("u");
  e.set_offer_id("o");
  e.set_type(v1::REDEEM);
  EXPECT_TRUE(ValidateEvent(e, now).ok());
  e.set_offer_id("");
  EXPECT_NE(ValidateEvent(e, now).message().find("offer_id"), absl::string_view::npos);
  e.set_type(v1::PURCHASE);
  e.set_amount(3);
  EXPECT_TRUE(ValidateEvent(e, now).ok());
  e.set_amount(std::numeric_limits<double>::infinity());
  EXPECT_FALSE(ValidateEvent(e, now).ok());
  e.set_amount(1);
  e.set_type(static_cast<v1::EventType>(42));
  EXPECT_NE(ValidateEvent(e, now).message().find("type"), absl::string_view::npos);
}

}  // namespace
}  // namespace offerd
