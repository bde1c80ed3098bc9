#ifndef OFFERD_CORE_CLV_H_
#define OFFERD_CORE_CLV_H_

// Customer lifetime value from the BG/NBD purchase model and the Gamma-Gamma spend model.
//
// This is the C++ twin of offline/clv_math.py (the reference of every formula here, see its
// module docstring); tests/core/clv_test.cc checks it against tests/vectors/clv_vectors.json
// (mpmath, 50 digits). Time unit: weeks everywhere. Money: the currency unit of the spends.
//
//   P(alive)  = 1 / (1 + [x > 0] a / (b + x - 1) ((alpha + T) / (alpha + t_x))^(r + x))
//   E[Y(t)]   = (a + b + x - 1) / (a - 1)
//               * [1 - ((alpha + T) / (alpha + T + t))^(r + x)
//                      * 2F1(r + x, b + x; a + b + x - 1; t / (alpha + T + t))] * P(alive)
//   E[M]      = p (v + x m_x) / (p x + q - 1)
//   CLV       = margin * E[M] * sum_{k=1..K} (E[Y(t_k)] - E[Y(t_(k-1))]) * delta^(t_k),
//               delta = (1 + annual_discount_rate)^(-1/52), K = ceil(horizon),
//               t_k = min(k, horizon)
//
// Thread safety: every function is pure (no I/O, clock, allocation on success, or shared
// state) and may be called concurrently. Nothing throws; errors are returned as absl::Status.
// Cost: a 52-week CLV takes 3-5 us of CPU (about 60 ns per week of horizon); uses ~12 KiB of
// stack. Accuracy and the algorithm: see clv.cc.

#include <cstdint>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/user.h"

namespace offerd {

// Longest accepted CLV horizon. The work of one CLV call grows with the number of weeks.
inline constexpr double kMaxClvHorizonWeeks = 5200.0;  // 100 years

// Fitted model parameters (BG/NBD: Fader, Hardie & Lee 2005, "Counting your customers the easy
// way"; Gamma-Gamma: Fader, Hardie & Lee 2005, "RFM and CLV"). Validate once at load time with
// ValidateClvModel; every function below validates again (a few comparisons).
struct ClvModel {
  // BG/NBD: purchase rate ~ Gamma(shape r, rate alpha); dropout probability ~ Beta(a, b).
  double r = 0.0;      // > 0
  double alpha = 0.0;  // > 0, weeks
  double a = 0.0;      // > 0
  double b = 0.0;      // > 0
  // Gamma-Gamma: spend per occasion ~ Gamma(p, nu), nu ~ Gamma(q, v).
  double p = 0.0;  // > 0
  double q = 0.0;  // > 1 (E[M] is infinite otherwise)
  double v = 0.0;  // > 0, currency units
  // CLV definition.
  double horizon_weeks = 52.0;        // in (0, kMaxClvHorizonWeeks]; need not be an integer
  double margin = 1.0;                // in [0, 1]: fraction of spend kept as profit
  double annual_discount_rate = 0.0;  // >= 0, e.g. 0.1 = 10% per year
};

// One customer's purchase history summary (the RFM inputs of BG/NBD), in weeks. A customer
// exists from the first purchase on; a user without purchases has no RfmWeeks.
struct RfmWeeks {
  double repeat_purchases = 0.0;   // x: repeat purchase occasions; a whole number >= 0
  double recency_weeks = 0.0;      // t_x: first to last purchase, 0 <= t_x <= T
  double age_weeks = 0.0;          // T: first purchase to now, >= 0
  double mean_repeat_spend = 0.0;  // m_x: mean spend of the x repeat occasions (>= 0; 0 if x = 0)
};

// Everything the service needs about one customer, for the model's horizon.
struct ClvResult {
  double p_alive = 0.0;                        // P(alive | x, t_x, T)
  double expected_purchases = 0.0;             // E[Y(horizon_weeks) | x, t_x, T]
  double expected_spend = 0.0;                 // E[M | x, m_x], currency units per occasion
  double discounted_expected_purchases = 0.0;  // the CLV sum without margin * E[M]
  double clv = 0.0;                            // currency units
};

// OK when every parameter is finite and in the range documented on ClvModel; otherwise
// INVALID_ARGUMENT naming the parameter.
absl::Status ValidateClvModel(const ClvModel& model);

// OK when the summary is finite and consistent (x whole and >= 0, 0 <= t_x <= T, m_x >= 0)
// and a + b + x - 1 is not 0 or a negative integer (only possible for x = 0, a + b <= 1).
absl::Status ValidateRfm(const ClvModel& model, const RfmWeeks& rfm);

// P(alive | x, t_x, T), in (0, 1]; exactly 1 when x = 0. Evaluated from the log-odds, so it
// neither overflows nor cancels for large x or T.
absl::StatusOr<double> ProbabilityAlive(const ClvModel& model, const RfmWeeks& rfm);

// E[Y(t) | x, t_x, T]: expected number of purchases in the next `t_weeks` (>= 0, finite)
// weeks; 0 for t_weeks = 0. With x = t_x = T = 0 this is E[X(t)] of a brand-new customer.
// Returns OUT_OF_RANGE, instead of an infinite or NaN value, in the parameter regions where the
// hypergeometric evaluation overflows or exceeds its work budget (models with a and x both in
// the hundreds or more and a large t / (alpha + T); see clv.cc).
absl::StatusOr<double> ConditionalExpectedPurchases(const ClvModel& model, const RfmWeeks& rfm,
                                                    double t_weeks);

// Gamma-Gamma E[M | x, m_x] in currency units per purchase occasion; the population mean
// p v / (q - 1) when x = 0.
absl::StatusOr<double> ConditionalExpectedSpend(const ClvModel& model, const RfmWeeks& rfm);

// CLV over model.horizon_weeks (definition at the top of this file), in currency units.
absl::StatusOr<double> CustomerLifetimeValue(const ClvModel& model, const RfmWeeks& rfm);

// All of the above for one customer, sharing the work (one pass over the horizon's weeks).
// INVALID_ARGUMENT as ValidateClvModel / ValidateRfm; OUT_OF_RANGE as
// ConditionalExpectedPurchases.
absl::StatusOr<ClvResult> ComputeClv(const ClvModel& model, const RfmWeeks& rfm);

// Turns the stored purchase summary into RFM in weeks at `now_day` (days since 1970-01-01):
// x = repeat_days, t_x = (last - first) / 7, T = (now_day - first) / 7,
// m_x = repeat_spend_sum / x (0 when x = 0).
// Returns std::nullopt when the user has no purchases: BG/NBD only describes customers from
// their first purchase on, so such a user has no CLV (callers decide on a cold-start value).
// INVALID_ARGUMENT when the summary is inconsistent: negative repeat_days or spend, last before
// first, purchases after now_day, x > 0 with fewer than x days after the first purchase.
absl::StatusOr<std::optional<RfmWeeks>> RfmFromPurchaseSummary(const PurchaseSummary& summary,
                                                               int32_t now_day);

}  // namespace offerd

#endif  // OFFERD_CORE_CLV_H_
