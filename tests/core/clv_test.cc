#include "core/clv.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <vector>

#include "core/user.h"

#ifndef OFFERD_SOURCE_DIR
#error "OFFERD_SOURCE_DIR must point at the source tree (tests/CMakeLists.txt)"
#endif

namespace offerd {
namespace {

constexpr double kRelativeTolerance = 1e-9;

// CDNOW-like fit (Fader, Hardie & Lee 2005), the same as offline/clv_vectors.py.
ClvModel CdnowModel() {
  ClvModel model;
  model.r = 0.243;
  model.alpha = 4.414;
  model.a = 0.793;
  model.b = 2.426;
  model.p = 6.25;
  model.q = 3.74;
  model.v = 15.44;
  model.horizon_weeks = 52.0;
  model.margin = 0.3;
  model.annual_discount_rate = 0.1;
  return model;
}

RfmWeeks Rfm(double x, double t_x, double age, double m_x) {
  RfmWeeks rfm;
  rfm.repeat_purchases = x;
  rfm.recency_weeks = t_x;
  rfm.age_weeks = age;
  rfm.mean_repeat_spend = m_x;
  return rfm;
}

double RelativeError(double value, double reference) {
  if (reference == 0.0) return std::fabs(value);
  return std::fabs(value / reference - 1.0);
}

// ------------------------------------------------------------------ reference vectors

// OFFERD_CLV_VECTORS overrides the checked-in file (to try a freshly generated one).
std::string VectorsPath() {
  if (const char* path = std::getenv("OFFERD_CLV_VECTORS"); path != nullptr && *path != '\0') {
    return path;
  }
  return std::string(OFFERD_SOURCE_DIR) + "/tests/vectors/clv_vectors.json";
}

TEST(ClvVectorsTest, ReproducesEveryCaseToOneInABillion) {
  std::ifstream in(VectorsPath());
  ASSERT_TRUE(in.good())
      << "missing " << VectorsPath()
      << " (python3 -m offline.clv_vectors --out tests/vectors/clv_vectors.json)";
  const nlohmann::json document = nlohmann::json::parse(in);
  ASSERT_EQ(document.at("weeks_per_year").get<double>(), 52.0);
  const auto& cases = document.at("cases");
  ASSERT_GT(cases.size(), 100u);

  const std::vector<std::string> outputs = {"p_alive", "expected_purchases", "expected_spend",
                                            "clv"};
  std::vector<double> max_error(outputs.size(), 0.0);
  std::vector<std::string> worst_case(outputs.size());
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& c = cases[i];
    const auto& in_values = c.at("inputs");
    const auto input = [&](const char* name) { return in_values.at(name).get<double>(); };
    ClvModel model;
    model.r = input("r");
    model.alpha = input("alpha");
    model.a = input("a");
    model.b = input("b");
    model.p = input("p");
    model.q = input("q");
    model.v = input("v");
    model.horizon_weeks = input("t");
    model.margin = input("margin");
    model.annual_discount_rate = input("annual_discount_rate");
    const RfmWeeks rfm = Rfm(input("x"), input("t_x"), input("T"), input("m_x"));
    const std::string label = "case " + std::to_string(i) + " (" +
                              c.at("label").get<std::string>() + "): " + in_values.dump();

    const absl::StatusOr<ClvResult> result = ComputeClv(model, rfm);
    ASSERT_TRUE(result.ok()) << label << ": " << result.status();
    const absl::StatusOr<double> single = ConditionalExpectedPurchases(model, rfm, input("t"));
    ASSERT_TRUE(single.ok()) << label << ": " << single.status();
    const absl::StatusOr<double> clv = CustomerLifetimeValue(model, rfm);
    ASSERT_TRUE(clv.ok()) << label << ": " << clv.status();
    const std::vector<double> values = {result->p_alive, result->expected_purchases,
                                        result->expected_spend, result->clv};

    for (size_t j = 0; j < outputs.size(); ++j) {
      // 25 significant digits; every reference here is far from 0 (the smallest is a
      // P(alive) of ~1e-20, computed from its log-odds), so a relative bound applies to all.
      const double reference =
          std::strtod(c.at("outputs").at(outputs[j]).get<std::string>().c_str(), nullptr);
      ASSERT_NE(reference, 0.0) << label;
      const double error = RelativeError(values[j], reference);
      EXPECT_LE(error, kRelativeTolerance)
          << label << "\n  " << outputs[j] << " = " << values[j] << ", reference " << reference;
      if (error > max_error[j]) {
        max_error[j] = error;
        worst_case[j] = c.at("label").get<std::string>();
      }
    }
    // The single-point evaluation and the CLV pass reach E[Y(t)] along different paths.
    EXPECT_LE(RelativeError(*single, result->expected_purchases), kRelativeTolerance) << label;
    EXPECT_EQ(*clv, result->clv) << label;
  }
  for (size_t j = 0; j < outputs.size(); ++j) {
    std::cout << "[ clv vectors ] " << outputs[j] << ": max relative error " << max_error[j] << " ("
              << worst_case[j] << ") over " << cases.size() << " cases\n";
  }
}

// ---------------------------------------------------------------------- closed forms

TEST(ClvTest, NoRepeatPurchaseMeansAlive) {
  const ClvModel model = CdnowModel();
  for (double age : {0.0, 1.0, 38.86, 5000.0}) {
    const absl::StatusOr<double> p = ProbabilityAlive(model, Rfm(0, 0, age, 0));
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_EQ(*p, 1.0);
  }
}

TEST(ClvTest, ProbabilityAliveMatchesTheDirectFormula) {
  const ClvModel model = CdnowModel();
  const double x = 3, t_x = 20, age = 30;
  const double direct =
      1.0 / (1.0 + model.a / (model.b + x - 1) *
                       std::pow((model.alpha + age) / (model.alpha + t_x), model.r + x));
  EXPECT_NEAR(*ProbabilityAlive(model, Rfm(x, t_x, age, 10)), direct, 1e-15);
  // Bought at the end of the observation: as alive as the model allows.
  EXPECT_NEAR(*ProbabilityAlive(model, Rfm(x, age, age, 10)),
              1.0 / (1.0 + model.a / (model.b + x - 1)), 1e-15);
  // Huge x, long silence: the power overflows a double, the log-odds do not.
  const double tiny = *ProbabilityAlive(model, Rfm(1e5, 100, 200, 10));
  EXPECT_GE(tiny, 0.0);
  EXPECT_LT(tiny, 1e-300);
}

TEST(ClvTest, ZeroHorizonGivesZeroPurchases) {
  const ClvModel model = CdnowModel();
  for (const RfmWeeks& rfm : {Rfm(0, 0, 0, 0), Rfm(2, 30, 38, 20), Rfm(1e4, 199, 200, 12)}) {
    const absl::StatusOr<double> e = ConditionalExpectedPurchases(model, rfm, 0.0);
    ASSERT_TRUE(e.ok()) << e.status();
    EXPECT_EQ(*e, 0.0);
  }
}

// With r = a + b - 1 the hypergeometric factor is elementary:
// 2F1(r + x, a - 1; r + x; -tau) = (1 + tau)^(1 - a), so
// E[Y(t)] = (r + x) (1 - (1 + tau)^(1 - a)) / (a - 1) P(alive), and (r + x) log(1 + tau) P(alive)
// at a = 1.
TEST(ClvTest, ExpectedPurchasesMatchesTheElementaryCase) {
  for (double a : {0.5, 1.0 - 1e-9, 1.0, 1.0 + 1e-7, 2.5, 30.0}) {
    ClvModel model = CdnowModel();
    model.a = a;
    model.b = 1.7;
    model.r = a + model.b - 1.0;
    for (const RfmWeeks& rfm : {Rfm(0, 0, 0, 0), Rfm(0, 0, 12, 0), Rfm(3, 10, 20, 5),
                                Rfm(50, 99, 100, 5), Rfm(2000, 150, 200, 5)}) {
      const double p_alive = *ProbabilityAlive(model, rfm);
      for (double t : {0.01, 1.0, 10.0, 52.0, 520.0, 5200.0}) {
        const double tau = t / (model.alpha + rfm.age_weeks);
        const double eps = a - 1.0;
        const double d = eps == 0.0 ? std::log1p(tau) : -std::expm1(-eps * std::log1p(tau)) / eps;
        const double expected = (model.r + rfm.repeat_purchases) * d * p_alive;
        const absl::StatusOr<double> e = ConditionalExpectedPurchases(model, rfm, t);
        ASSERT_TRUE(e.ok()) << e.status();
        EXPECT_LE(RelativeError(*e, expected), 1e-12)
            << "a=" << a << " x=" << rfm.repeat_purchases << " t=" << t << ": " << *e << " vs "
            << expected;
      }
    }
  }
}

TEST(ClvTest, ExpectedSpendClosedForm) {
  const ClvModel model = CdnowModel();
  // x = 0: the population mean p v / (q - 1).
  EXPECT_DOUBLE_EQ(*ConditionalExpectedSpend(model, Rfm(0, 0, 10, 0)),
                   model.p * model.v / (model.q - 1.0));
  // Weighted between the population mean and m_x; tends to m_x for large x.
  const double m_x = 40.0;
  const double few = *ConditionalExpectedSpend(model, Rfm(2, 5, 10, m_x));
  EXPECT_DOUBLE_EQ(few, model.p * (model.v + 2 * m_x) / (model.p * 2 + model.q - 1.0));
  EXPECT_NEAR(*ConditionalExpectedSpend(model, Rfm(1e6, 5, 10, m_x)), m_x, 1e-3);
}

TEST(ClvTest, ExpectedPurchasesIncreaseWithHorizonAndStayBelowTheLifetimeLimit) {
  ClvModel model = CdnowModel();
  model.a = 2.2;  // a > 1: the lifetime expectation (a + b + x - 1) / (a - 1) P(alive) is finite
  for (const RfmWeeks& rfm : {Rfm(0, 0, 0, 0), Rfm(0, 0, 0.05, 0), Rfm(1, 0.5, 0.5, 10),
                              Rfm(4, 15, 20, 25), Rfm(300, 99, 100, 5)}) {
    const double limit = (model.a + model.b + rfm.repeat_purchases - 1.0) / (model.a - 1.0) *
                         *ProbabilityAlive(model, rfm);
    double previous = 0.0;
    for (double t = 0.5; t <= 5200.0; t *= 1.5) {
      const absl::StatusOr<double> e = ConditionalExpectedPurchases(model, rfm, t);
      ASSERT_TRUE(e.ok()) << e.status();
      EXPECT_GT(*e, previous) << "x=" << rfm.repeat_purchases << " t=" << t;
      EXPECT_LT(*e, limit) << "x=" << rfm.repeat_purchases << " t=" << t;
      previous = *e;
    }
    EXPECT_GT(previous, 0.5 * limit);
  }
}

TEST(ClvTest, ClvIncreasesWithHorizon) {
  ClvModel model = CdnowModel();
  for (const RfmWeeks& rfm : {Rfm(0, 0, 0, 0), Rfm(2, 30.43, 38.86, 22.35), Rfm(29, 38, 39, 40)}) {
    double previous = 0.0;
    for (double horizon : {0.5, 1.0, 4.0, 13.0, 26.5, 52.0, 104.0, 520.0}) {
      model.horizon_weeks = horizon;
      const absl::StatusOr<ClvResult> result = ComputeClv(model, rfm);
      ASSERT_TRUE(result.ok()) << result.status();
      EXPECT_GT(result->clv, previous) << "horizon " << horizon;
      // Discounting only ever lowers the value.
      EXPECT_LE(result->discounted_expected_purchases, result->expected_purchases);
      previous = result->clv;
    }
  }
}

TEST(ClvTest, WithoutDiscountClvIsMarginTimesSpendTimesPurchases) {
  ClvModel model = CdnowModel();
  model.annual_discount_rate = 0.0;
  model.horizon_weeks = 26.5;
  const RfmWeeks rfm = Rfm(3, 12, 30, 20);
  const ClvResult result = *ComputeClv(model, rfm);
  EXPECT_EQ(result.discounted_expected_purchases, result.expected_purchases);
  EXPECT_DOUBLE_EQ(result.clv, model.margin * result.expected_spend * result.expected_purchases);
  EXPECT_DOUBLE_EQ(result.expected_purchases,
                   *ConditionalExpectedPurchases(model, rfm, model.horizon_weeks));
  // A positive rate discounts every week but the first a little.
  model.annual_discount_rate = 0.1;
  const ClvResult discounted = *ComputeClv(model, rfm);
  EXPECT_LT(discounted.clv, result.clv);
  EXPECT_GT(discounted.clv, std::pow(1.1, -26.5 / 52.0) * result.clv);
}

TEST(ClvTest, ClvOfAYoungCustomerOverTenYearsIsFinite) {
  // z = tau / (1 + tau) reaches 0.99998 here: the Taylor continuation path.
  ClvModel model = CdnowModel();
  model.alpha = 0.01;
  model.horizon_weeks = 520.0;
  const absl::StatusOr<ClvResult> result = ComputeClv(model, Rfm(0, 0, 0.001, 0));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_GT(result->clv, 0.0);
  EXPECT_LE(RelativeError(result->expected_purchases,
                          *ConditionalExpectedPurchases(model, Rfm(0, 0, 0.001, 0), 520.0)),
            1e-10);
}

// The CLV pass reaches E[Y(horizon)] week by week (series, then Taylor continuation in tau and
// in z); a single evaluation goes straight there (series, or continuation from a fixed start).
TEST(ClvTest, WeeklyPassAndSinglePointEvaluationAgree) {
  for (double alpha_plus_age : {0.02, 0.5, 4.0, 40.0, 400.0, 3000.0}) {
    for (const auto& [r, a, b] : {std::tuple<double, double, double>{0.243, 0.793, 2.426},
                                  {2.0, 3.5, 0.4},
                                  {0.05, 1.0 + 1e-9, 8.0},
                                  {40.0, 0.6, 1.5},
                                  {1.3, 20.0, 60.0}}) {
      for (double x : {0.0, 1.0, 7.0, 200.0}) {
        ClvModel model = CdnowModel();
        model.r = r;
        model.a = a;
        model.b = b;
        model.alpha = alpha_plus_age / 2;
        model.horizon_weeks = 520.0;
        const RfmWeeks rfm = Rfm(x, x > 0 ? alpha_plus_age / 4 : 0, alpha_plus_age / 2, 10);
        const absl::StatusOr<ClvResult> weekly = ComputeClv(model, rfm);
        const absl::StatusOr<double> single = ConditionalExpectedPurchases(model, rfm, 520.0);
        ASSERT_TRUE(weekly.ok() && single.ok()) << weekly.status() << single.status();
        EXPECT_LE(RelativeError(weekly->expected_purchases, *single), 1e-12)
            << "alpha+T=" << alpha_plus_age << " r=" << r << " a=" << a << " b=" << b << " x=" << x;
      }
    }
  }
}

// Far outside any fitted model (a ~ 1000 with 1000 repeat purchases and tau ~ 650) the
// hypergeometric factor overflows a double: the call says so instead of returning NaN.
TEST(ClvTest, ExtremeParametersGiveAValueOrOutOfRangeNeverNaN) {
  for (double a : {0.01, 1.0, 30.0, 1004.0}) {
    for (double r : {1e-3, 1.0, 80.0}) {
      for (double x : {0.0, 3.0, 1000.0}) {
        for (double alpha_plus_age : {0.05, 5.0, 500.0}) {
          ClvModel model = CdnowModel();
          model.a = a;
          model.r = r;
          model.b = 0.7;
          model.alpha = alpha_plus_age / 2;
          model.horizon_weeks = 52.0;
          const RfmWeeks rfm = Rfm(x, x > 0 ? alpha_plus_age / 4 : 0, alpha_plus_age / 2, 10);
          const absl::StatusOr<ClvResult> result = ComputeClv(model, rfm);
          if (result.ok()) {
            EXPECT_TRUE(std::isfinite(result->clv) && result->clv >= 0.0)
                << a << " " << r << " " << x << " " << alpha_plus_age << ": " << result->clv;
          } else {
            EXPECT_EQ(result.status().code(), absl::StatusCode::kOutOfRange) << result.status();
          }
        }
      }
    }
  }
  ClvModel model = CdnowModel();
  model.a = 1004.0;
  model.r = 0.0055;
  model.b = 0.67;
  model.alpha = 0.0334;
  EXPECT_EQ(ComputeClv(model, Rfm(1000, 0.02, 0.0465, 10)).status().code(),
            absl::StatusCode::kOutOfRange);
}

// ------------------------------------------------------------------------ validation

TEST(ClvTest, RejectsInvalidModelParameters) {
  const RfmWeeks rfm = Rfm(1, 1, 2, 10);
  const auto with = [](auto mutate) {
    ClvModel model = CdnowModel();
    mutate(model);
    return model;
  };
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  const std::vector<ClvModel> invalid = {
      with([](ClvModel& m) { m.r = 0.0; }),
      with([](ClvModel& m) { m.alpha = -1.0; }),
      with([&](ClvModel& m) { m.a = nan; }),
      with([&](ClvModel& m) { m.b = inf; }),
      with([](ClvModel& m) { m.p = 0.0; }),
      with([](ClvModel& m) { m.q = 1.0; }),
      with([](ClvModel& m) { m.q = 0.5; }),
      with([](ClvModel& m) { m.v = -2.0; }),
      with([](ClvModel& m) { m.horizon_weeks = 0.0; }),
      with([](ClvModel& m) { m.horizon_weeks = kMaxClvHorizonWeeks * 2; }),
      with([](ClvModel& m) { m.margin = -0.1; }),
      with([](ClvModel& m) { m.margin = 1.5; }),
      with([](ClvModel& m) { m.annual_discount_rate = -0.05; }),
      with([&](ClvModel& m) { m.annual_discount_rate = nan; }),
  };
  for (size_t i = 0; i < invalid.size(); ++i) {
    EXPECT_EQ(ValidateClvModel(invalid[i]).code(), absl::StatusCode::kInvalidArgument) << i;
    EXPECT_EQ(ComputeClv(invalid[i], rfm).status().code(), absl::StatusCode::kInvalidArgument) << i;
    EXPECT_EQ(ProbabilityAlive(invalid[i], rfm).status().code(), absl::StatusCode::kInvalidArgument)
        << i;
  }
  EXPECT_TRUE(ValidateClvModel(CdnowModel()).ok());
  const absl::Status q_status = ValidateClvModel(invalid[5]);
  EXPECT_NE(q_status.message().find("q"), absl::string_view::npos) << q_status;
}

TEST(ClvTest, RejectsInconsistentRfm) {
  const ClvModel model = CdnowModel();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (const RfmWeeks& rfm :
       {Rfm(-1, 0, 1, 0), Rfm(1.5, 1, 2, 3), Rfm(nan, 0, 1, 0), Rfm(2, 3, 2, 10),  // t_x > T
        Rfm(2, -1, 2, 10), Rfm(2, 1, nan, 10), Rfm(2, 1, 2, -5)}) {
    EXPECT_EQ(ComputeClv(model, rfm).status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(ConditionalExpectedSpend(model, rfm).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(ConditionalExpectedPurchases(model, Rfm(1, 1, 2, 3), -1.0).status().code(),
            absl::StatusCode::kInvalidArgument);
  // a + b + x - 1 = 0: the hypergeometric function is undefined.
  ClvModel degenerate = model;
  degenerate.a = 0.25;
  degenerate.b = 0.75;
  EXPECT_EQ(ComputeClv(degenerate, Rfm(0, 0, 1, 0)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(ComputeClv(degenerate, Rfm(1, 1, 2, 3)).ok());
}

// ----------------------------------------------------------------- purchase summaries

PurchaseSummary Summary(int32_t first, int32_t last, int32_t repeat_days, double spend) {
  PurchaseSummary summary;
  summary.first_purchase_day = first;
  summary.last_purchase_day = last;
  summary.repeat_days = repeat_days;
  summary.repeat_spend_sum = spend;
  summary.has_purchases = true;
  return summary;
}

TEST(ClvTest, PurchaseSummaryBecomesRfmInWeeks) {
  const absl::StatusOr<std::optional<RfmWeeks>> rfm =
      RfmFromPurchaseSummary(Summary(20000, 20070, 4, 100.0), 20140);
  ASSERT_TRUE(rfm.ok()) << rfm.status();
  ASSERT_TRUE(rfm->has_value());
  EXPECT_EQ((*rfm)->repeat_purchases, 4.0);
  EXPECT_DOUBLE_EQ((*rfm)->recency_weeks, 10.0);
  EXPECT_DOUBLE_EQ((*rfm)->age_weeks, 20.0);
  EXPECT_DOUBLE_EQ((*rfm)->mean_repeat_spend, 25.0);
  EXPECT_TRUE(ComputeClv(CdnowModel(), **rfm).ok());

  // Bought once, today: a brand-new customer.
  const auto once = RfmFromPurchaseSummary(Summary(20140, 20140, 0, 0.0), 20140);
  ASSERT_TRUE(once.ok() && once->has_value());
  EXPECT_EQ((*once)->age_weeks, 0.0);
  EXPECT_EQ((*once)->mean_repeat_spend, 0.0);
  EXPECT_GT(ComputeClv(CdnowModel(), **once)->clv, 0.0);
}

TEST(ClvTest, UserWithoutPurchasesHasNoClv) {
  const absl::StatusOr<std::optional<RfmWeeks>> rfm =
      RfmFromPurchaseSummary(PurchaseSummary{}, 20140);
  ASSERT_TRUE(rfm.ok()) << rfm.status();
  EXPECT_FALSE(rfm->has_value());
}

TEST(ClvTest, RejectsInconsistentPurchaseSummaries) {
  for (const PurchaseSummary& summary :
       {Summary(100, 90, 1, 5.0),    // last before first
        Summary(100, 110, 1, 5.0),   // purchase after now (105)
        Summary(100, 103, 4, 5.0),   // 4 repeat days in 3 days
        Summary(100, 100, 1, 5.0),   // repeat day on the first day
        Summary(100, 102, 0, 0.0),   // a later purchase day that is not a repeat day
        Summary(100, 102, -1, 0.0),  // negative count
        Summary(100, 102, 1, -3.0), Summary(100, 102, 1, std::nan(""))}) {
    EXPECT_EQ(RfmFromPurchaseSummary(summary, 105).status().code(),
              absl::StatusCode::kInvalidArgument)
        << summary.first_purchase_day << " " << summary.last_purchase_day << " "
        << summary.repeat_days;
  }
}

}  // namespace
}  // namespace offerd
