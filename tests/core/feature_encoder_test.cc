#include "core/feature_encoder.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "core/context_features.h"
#include "core/offer.h"
#include "core/offer_features.h"
#include "core/purchase_features.h"

namespace offerd {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

FeatureSpec Numeric(std::string name, double mean, double std,
                    FeatureSpec::Transform transform = FeatureSpec::Transform::kNone) {
  FeatureSpec spec;
  spec.name = std::move(name);
  spec.kind = FeatureSpec::Kind::kNumeric;
  spec.mean = mean;
  spec.std = std;
  spec.transform = transform;
  return spec;
}

FeatureSpec Categorical(std::string name, std::vector<std::string> vocabulary) {
  FeatureSpec spec;
  spec.name = std::move(name);
  spec.kind = FeatureSpec::Kind::kCategorical;
  spec.vocabulary = std::move(vocabulary);
  return spec;
}

// The section of the golden cases below: widths 1 + 1 + 5.
std::vector<FeatureSpec> GoldenSpecs() {
  return {Numeric("age", 38.2, 11.9),
          Numeric("repeat_days", 0.85, 0.94, FeatureSpec::Transform::kLog1p),
          Categorical("channel", {"app", "web", "push", "email"})};
}

TEST(SectionEncoderTest, WidthsAndOffsets) {
  absl::StatusOr<SectionEncoder> encoder = SectionEncoder::Create(GoldenSpecs());
  ASSERT_TRUE(encoder.ok()) << encoder.status();
  EXPECT_EQ(encoder->width(), 7);
  EXPECT_EQ(encoder->num_features(), 3);
  EXPECT_EQ(encoder->offset(0), 0);
  EXPECT_EQ(encoder->offset(1), 1);
  EXPECT_EQ(encoder->offset(2), 2);
  EXPECT_EQ(encoder->FeatureIndex("channel"), 2);
  EXPECT_EQ(encoder->FeatureIndex("nope"), -1);

  absl::StatusOr<SectionEncoder> empty = SectionEncoder::Create({});
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->width(), 0);
}

TEST(SectionEncoderTest, NumericIsStandardizedInDoubleThenRounded) {
  const FeatureSpec spec = Numeric("x", 10.0, 4.0);
  EXPECT_EQ(EncodeNumericValue(spec, 12.0), 0.5f);
  EXPECT_EQ(EncodeNumericValue(spec, 2.0), -2.0f);
  // (0.1 - 0.3) / 0.7 computed in double, then rounded once to float.
  const FeatureSpec odd = Numeric("y", 0.3, 0.7);
  EXPECT_EQ(EncodeNumericValue(odd, 0.1), static_cast<float>((0.1 - 0.3) / 0.7));
}

TEST(SectionEncoderTest, MissingAndNonFiniteNumericEncodeAsZero) {
  const FeatureSpec spec = Numeric("x", 10.0, 4.0);
  EXPECT_EQ(EncodeNumericValue(spec, kNaN), 0.0f);
  EXPECT_EQ(EncodeNumericValue(spec, std::numeric_limits<double>::infinity()), 0.0f);
  EXPECT_EQ(EncodeNumericValue(spec, -std::numeric_limits<double>::infinity()), 0.0f);
}

TEST(SectionEncoderTest, Log1pTransformAndItsDomain) {
  const FeatureSpec spec = Numeric("x", 1.0, 2.0, FeatureSpec::Transform::kLog1p);
  EXPECT_EQ(EncodeNumericValue(spec, std::exp(3.0) - 1.0), static_cast<float>((3.0 - 1.0) / 2.0));
  EXPECT_EQ(EncodeNumericValue(spec, 0.0), -0.5f);  // log1p(0) = 0
  EXPECT_EQ(EncodeNumericValue(spec, -1.0), 0.0f);  // x <= -1 is missing
  EXPECT_EQ(EncodeNumericValue(spec, -7.0), 0.0f);
  EXPECT_EQ(EncodeNumericValue(spec, kNaN), 0.0f);
}

TEST(SectionEncoderTest, HugeFiniteValuesSaturateLikeNumpy) {
  const FeatureSpec spec = Numeric("x", 0.0, 1.0);
  EXPECT_EQ(EncodeNumericValue(spec, 1e300), std::numeric_limits<float>::infinity());
  EXPECT_EQ(EncodeNumericValue(spec, -1e300), -std::numeric_limits<float>::infinity());
  EXPECT_EQ(EncodeNumericValue(spec, static_cast<double>(std::numeric_limits<float>::max())),
            std::numeric_limits<float>::max());
}

TEST(SectionEncoderTest, CategoricalOneHotWithTrailingUnknownSlot) {
  absl::StatusOr<SectionEncoder> encoder =
      SectionEncoder::Create({Categorical("tier", {"gold", "silver", "bronze"})});
  ASSERT_TRUE(encoder.ok());
  std::vector<float> out(4, 7.0f);  // stale values must be overwritten
  const auto encode = [&](RawFeatureValue raw) {
    encoder->Encode({raw}, absl::MakeSpan(out));
    return out;
  };
  EXPECT_EQ(encode(RawFeatureValue::Categorical("silver")), (std::vector<float>{0, 1, 0, 0}));
  EXPECT_EQ(encode(RawFeatureValue::Categorical("bronze")), (std::vector<float>{0, 0, 1, 0}));
  EXPECT_EQ(encode(RawFeatureValue::Categorical("platinum")), (std::vector<float>{0, 0, 0, 1}));
  EXPECT_EQ(encode(RawFeatureValue::Categorical("Gold")), (std::vector<float>{0, 0, 0, 1}));
  EXPECT_EQ(encode(RawFeatureValue::Categorical("")), (std::vector<float>{0, 0, 0, 1}));
  EXPECT_EQ(encode(RawFeatureValue::Missing()), (std::vector<float>{0, 0, 0, 1}));
}

TEST(SectionEncoderTest, EmptyRawSpanMeansAllMissing) {
  absl::StatusOr<SectionEncoder> encoder = SectionEncoder::Create(GoldenSpecs());
  ASSERT_TRUE(encoder.ok());
  std::vector<float> out(7, 3.0f);
  encoder->Encode({}, absl::MakeSpan(out));
  EXPECT_EQ(out, (std::vector<float>{0, 0, 0, 0, 0, 0, 1}));
}

TEST(SectionEncoderTest, RejectsInconsistentSpecs) {
  EXPECT_FALSE(SectionEncoder::Create({Numeric("x", 0.0, 0.0)}).ok());
  EXPECT_FALSE(SectionEncoder::Create({Numeric("x", 0.0, -1.0)}).ok());
  EXPECT_FALSE(SectionEncoder::Create({Numeric("x", kNaN, 1.0)}).ok());
  EXPECT_FALSE(SectionEncoder::Create({Numeric("", 0.0, 1.0)}).ok());
  EXPECT_FALSE(SectionEncoder::Create({Numeric("x", 0.0, 1.0), Numeric("x", 0.0, 1.0)}).ok());
  EXPECT_FALSE(SectionEncoder::Create({Categorical("c", {"a", "b", "a"})}).ok());
  EXPECT_FALSE(SectionEncoder::Create({Categorical("c", {"a", ""})}).ok());
  FeatureSpec transformed = Categorical("c", {"a"});
  transformed.transform = FeatureSpec::Transform::kLog1p;
  EXPECT_FALSE(SectionEncoder::Create({transformed}).ok());
}

// Expected rows produced by the Python reference (offline/uplift_models.py):
//   specs = [FeatureSpec("age", "numeric", 38.2, 11.9),
//            FeatureSpec("repeat_days", "numeric", 0.85, 0.94, transform="log1p"),
//            FeatureSpec("channel", "categorical", vocabulary=("app", "web", "push", "email"))]
//   encode_section(specs, {"age": [29.0, None, 1e6, -3.5],
//                          "repeat_days": [1.0, -1.0, 0.0, 7.25],
//                          "channel": ["app", "__unseen__", "email", None]}, 4)
// printed with "%.9g" (exact float32 round trip).
TEST(SectionEncoderTest, MatchesPythonEncodeSectionGolden) {
  absl::StatusOr<SectionEncoder> encoder = SectionEncoder::Create(GoldenSpecs());
  ASSERT_TRUE(encoder.ok());
  const std::vector<std::vector<RawFeatureValue>> rows = {
      {RawFeatureValue::Numeric(29.0), RawFeatureValue::Numeric(1.0),
       RawFeatureValue::Categorical("app")},
      {RawFeatureValue::Missing(), RawFeatureValue::Numeric(-1.0),
       RawFeatureValue::Categorical("__unseen__")},
      {RawFeatureValue::Numeric(1e6), RawFeatureValue::Numeric(0.0),
       RawFeatureValue::Categorical("email")},
      {RawFeatureValue::Numeric(-3.5), RawFeatureValue::Numeric(7.25), RawFeatureValue::Missing()},
  };
  const std::vector<std::vector<float>> want = {
      {-0.773109257f, -0.166864708f, 1, 0, 0, 0, 0},
      {0, 0, 0, 0, 0, 0, 1},
      {84030.4062f, -0.904255331f, 0, 0, 0, 1, 0},
      {-3.50420165f, 1.34065235f, 0, 0, 0, 0, 1},
  };
  for (size_t r = 0; r < rows.size(); ++r) {
    std::vector<float> out(7);
    encoder->Encode(rows[r], absl::MakeSpan(out));
    EXPECT_EQ(out, want[r]) << "row " << r;
  }
}

TEST(SectionEncoderTest, CopiesStayValid) {
  absl::StatusOr<SectionEncoder> made =
      SectionEncoder::Create({Categorical("c", {"zeta", "alpha", "mid"})});
  ASSERT_TRUE(made.ok());
  SectionEncoder copy = *made;
  made = absl::InternalError("gone");  // destroy the original
  std::vector<float> out(4);
  copy.Encode({RawFeatureValue::Categorical("alpha")}, absl::MakeSpan(out));
  EXPECT_EQ(out, (std::vector<float>{0, 1, 0, 0}));
}

TEST(SectionEncoderTest, UserRecordReadsNumericAndCategoricalInSchemaOrder) {
  absl::StatusOr<SectionEncoder> encoder =
      SectionEncoder::Create({Numeric("age", 40.0, 10.0), Categorical("tier", {"gold", "silver"}),
                              Numeric("tenure", 2.0, 1.0), Categorical("source", {"social"})});
  ASSERT_TRUE(encoder.ok());
  ASSERT_EQ(encoder->width(), 1 + 3 + 1 + 2);
  UserRecord user;
  user.numeric = {50.0f, std::nanf("")};
  user.categorical = {"silver", "social"};
  std::vector<float> out(encoder->width());
  encoder->EncodeUserRecord(user, absl::MakeSpan(out));
  EXPECT_EQ(out, (std::vector<float>{1.0f, 0, 1, 0, 0.0f, 1, 0}));

  // A short record: what is absent is missing.
  UserRecord short_user;
  short_user.numeric = {30.0f};
  encoder->EncodeUserRecord(short_user, absl::MakeSpan(out));
  EXPECT_EQ(out, (std::vector<float>{-1.0f, 0, 0, 1, 0.0f, 0, 1}));
}

TEST(PurchaseFeaturesTest, DerivedFromSummaryAndDay) {
  PurchaseSummary summary;
  summary.has_purchases = true;
  summary.first_purchase_day = 20000;
  summary.last_purchase_day = 20300;
  summary.repeat_days = 4;
  summary.repeat_spend_sum = 50.0;
  const PurchaseFeatureValues v = DerivePurchaseFeatures(&summary, 20310);
  EXPECT_EQ(v.has_purchases, 1.0);
  EXPECT_EQ(v.repeat_days, 4.0);
  EXPECT_EQ(v.days_since_first, 310.0);
  EXPECT_EQ(v.days_since_last, 10.0);
  EXPECT_EQ(v.repeat_spend_mean, 12.5);
}

TEST(PurchaseFeaturesTest, OnePurchaseDayHasNoRepeatSpendMean) {
  PurchaseSummary summary;
  summary.has_purchases = true;
  summary.first_purchase_day = 100;
  summary.last_purchase_day = 100;
  const PurchaseFeatureValues v = DerivePurchaseFeatures(&summary, 105);
  EXPECT_EQ(v.repeat_days, 0.0);
  EXPECT_EQ(v.days_since_first, 5.0);
  EXPECT_TRUE(std::isnan(v.repeat_spend_mean));
}

TEST(PurchaseFeaturesTest, NoPurchasesLeavesEverythingButTheFlagMissing) {
  const PurchaseSummary none;  // has_purchases = false
  for (const PurchaseFeatureValues& v :
       {DerivePurchaseFeatures(nullptr, 20000), DerivePurchaseFeatures(&none, 1)}) {
    EXPECT_EQ(v.has_purchases, 0.0);
    EXPECT_TRUE(std::isnan(v.repeat_days));
    EXPECT_TRUE(std::isnan(v.days_since_first));
    EXPECT_TRUE(std::isnan(v.days_since_last));
    EXPECT_TRUE(std::isnan(v.repeat_spend_mean));
  }
}

TEST(PurchaseSectionEncoderTest, EncodesNamedFeaturesInSectionOrder) {
  absl::StatusOr<PurchaseSectionEncoder> encoder = PurchaseSectionEncoder::Create(
      {Numeric("repeat_spend_mean", 10.0, 5.0), Numeric("has_purchases", 1.0, 1.0),
       Numeric("repeat_days", 0.0, 1.0, FeatureSpec::Transform::kLog1p)});
  ASSERT_TRUE(encoder.ok()) << encoder.status();
  ASSERT_EQ(encoder->width(), 3);
  PurchaseSummary summary;
  summary.has_purchases = true;
  summary.repeat_days = 3;
  summary.repeat_spend_sum = 60.0;
  std::vector<float> out(3);
  encoder->Encode(&summary, 0, absl::MakeSpan(out));
  EXPECT_EQ(out, (std::vector<float>{2.0f, 0.0f, static_cast<float>(std::log1p(3.0))}));
  encoder->Encode(nullptr, 0, absl::MakeSpan(out));
  EXPECT_EQ(out, (std::vector<float>{0.0f, -1.0f, 0.0f}));
}

TEST(PurchaseSectionEncoderTest, RejectsUnknownNamesAndCategoricals) {
  EXPECT_FALSE(PurchaseSectionEncoder::Create({Numeric("lifetime_value", 0, 1)}).ok());
  EXPECT_FALSE(PurchaseSectionEncoder::Create({Categorical("has_purchases", {"yes"})}).ok());
}

TEST(ContextSectionEncoderTest, ReadsNamedFieldsAndAttributes) {
  EXPECT_EQ(ContextFieldOf("channel"), ContextField::kChannel);
  EXPECT_EQ(ContextFieldOf("country"), ContextField::kCountry);
  EXPECT_EQ(ContextFieldOf("hour_of_day"), ContextField::kAttribute);

  absl::StatusOr<ContextSectionEncoder> encoder = ContextSectionEncoder::Create(
      {Categorical("channel", {"app", "web"}), Categorical("page", {"home"}),
       Numeric("hour_of_day", 12.0, 6.0), Categorical("campaign", {"spring"})});
  ASSERT_TRUE(encoder.ok()) << encoder.status();
  ASSERT_EQ(encoder->width(), 3 + 2 + 1 + 2);
  const std::vector<ContextAttribute> attributes = {{"campaign", "spring"}, {"hour_of_day", "18"}};
  RequestContextView context;
  context.channel = "web";
  context.attributes = attributes;
  std::vector<float> out(encoder->width());
  encoder->Encode(context, absl::MakeSpan(out));
  EXPECT_EQ(out, (std::vector<float>{0, 1, 0, 0, 1, 1.0f, 1, 0}));

  const std::vector<ContextAttribute> bad = {{"hour_of_day", "noon"}};
  context.channel = "";
  context.attributes = bad;
  encoder->Encode(context, absl::MakeSpan(out));
  EXPECT_EQ(out, (std::vector<float>{0, 0, 1, 0, 1, 0.0f, 0, 1}));
}

TEST(OfferFeaturesTest, EncodesCatalogFields) {
  absl::StatusOr<SectionEncoder> encoder = SectionEncoder::Create(
      {Categorical("category", {"home", "travel"}), Numeric("margin", 14.0, 8.0),
       Categorical("type", {"cashback"}), Numeric("cost", 1.0, 1.0)});
  ASSERT_TRUE(encoder.ok());
  Offer offer;
  offer.category = "travel";
  offer.margin = 18.0;
  offer.type = "free_item";
  offer.cost = 3.0;
  Offer other;
  other.category = "home";
  other.margin = 14.0;
  other.type = "cashback";
  other.cost = 1.0;
  absl::StatusOr<std::vector<float>> rows = EncodeOfferCatalog(*encoder, {offer, other});
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(*rows, (std::vector<float>{0, 1, 0, 0.5f, 0, 1, 2.0f,  //
                                       1, 0, 0, 0.0f, 1, 0, 0.0f}));
}

TEST(OfferFeaturesTest, RejectsUnknownFieldsAndKindMismatch) {
  absl::StatusOr<SectionEncoder> unknown = SectionEncoder::Create({Numeric("popularity", 0, 1)});
  ASSERT_TRUE(unknown.ok());
  EXPECT_FALSE(ValidateOfferSection(*unknown).ok());
  EXPECT_FALSE(EncodeOfferCatalog(*unknown, {}).ok());
  absl::StatusOr<SectionEncoder> mismatch = SectionEncoder::Create({Numeric("category", 0, 1)});
  ASSERT_TRUE(mismatch.ok());
  EXPECT_FALSE(ValidateOfferSection(*mismatch).ok());
  absl::StatusOr<SectionEncoder> mismatch2 = SectionEncoder::Create({Categorical("margin", {"1"})});
  ASSERT_TRUE(mismatch2.ok());
  EXPECT_FALSE(ValidateOfferSection(*mismatch2).ok());
}

}  // namespace
}  // namespace offerd
