#include "core/clv.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <optional>

#include "absl/strings/str_cat.h"

// How E[Y(t)] is evaluated, and why not with a library 2F1
// =========================================================
// With s = r + x, eps = a - 1, c = a + b + x - 1 and tau = t / (alpha + T), the Pfaff
// transformation of offline/clv_math.py turns E[Y(t)] into c * D(tau) * P(alive) with
//
//   D(tau) = (1 - G) / eps,  G = 2F1(s, eps; c; -tau)
//          = (1 + tau)^-eps 2F1(a + b - 1 - r, eps; c; z)   ("Euler form", z = tau / (1 + tau))
//          = (1 + tau)^-s   2F1(s, b + x; c; z)              ("textbook form").
//
// PfaffD evaluates D at the increasing taus of one customer (the weeks of the horizon), with no
// overflow and no cancellation beyond the inherent one:
//  1. tau <= 1/2: clv_math.py's series D = sum_{k>=1} (-1)^(k+1) (s)_k (a)_(k-1) tau^k /
//     ((c)_k k!) (eps and s are explicit factors: a -> 1 and s -> 0 lose nothing), accepted when
//     it converges with < 1e3 cancellation, as in Python.
//  2. otherwise the z series of one of the two forms, with its small parameter factored out: if
//     F = 2F1(al, be; c; z) = 1 + al H(z), H = sum_{k>=1} (al+1)_(k-1) (be)_k z^k / ((c)_k k!),
//     then (1 - (1+tau)^-al F) / al = E1 - (1+tau)^-al H, E1 = -expm1(-al log1p(tau)) / al.
//     The Euler form (al = eps) gives D and is exact at a = 1, so clv_math.py's third path
//     (Chebyshev interpolation in a around 1) is not needed. The textbook form (al = s,
//     D = s / eps * (...)) is used when s < |eps| (the Euler form would cancel like 1/s, or
//     grow like k^(eps - s) for large a) and when the Euler series alternates with a large hump
//     (r > a + b, small c), see ChooseZForm. Where E1 - (1+tau)^-eps H would cancel like
//     max(1, c) / s (tiny r, huge b), the Euler complement is summed instead: with
//     rho_k = (A)_k / (c)_k, A = c - s, 1 - rho_k = s g_k with g_(k+1) = g_k + rho_k / (c + k),
//     so D = s (1 + tau)^-eps sum_{k>=1} (1 + eps)_(k-1) g_k z^k / k!, all terms positive.
//     A series is accepted with < 1e3 cancellation.
//  3. Taylor continuation of an ODE, when a series needs many terms or cancels: z close to 1
//     (young customers: alpha + T much smaller than the horizon) or many weeks to evaluate.
//     In the tau <= 1/2 region D itself is continued, tau (1 + tau) D'' + (c + (s + a) tau) D'
//     + s (a-1) D = s; beyond it H, z (1 - z) H'' + (c - (al + be + 1) z) H' - al be H = be
//     (for the complement the same operator applied to the sum gives (1 - z)^(-eps-1)),
//     from the last point a series gave (or from the largest z in kContinuationStarts where the
//     series is well conditioned). Each step stays within half the distance to the nearest
//     singular point and is shortened where a large local exponent would amplify rounding.
//     Consecutive weeks are close, so a week costs one step of ~5-20 terms. There is no special
//     case at integer c - al - be, where the 1 - z connection formula of 2F1 degenerates into
//     digamma sums.
// The series coefficients do not depend on tau and are computed once per customer.
//
// Measured against tests/vectors/clv_vectors.json (268 cases, mpmath at 50 digits): max
// relative error 1.1e-13 (E[Y] and CLV; the case has condition number 1e3), median 4e-16
// (clv_math.py in float64: 1.3e-10). On 1800 further random cases over wider ranges (r up to
// 100, a up to 100, b up to 1e4, x up to 1e4, alpha + T down to 1e-3, horizons up to 5200
// weeks, a near 1, near-integer c - a - b): <= 3e-12, except models with a ~ 1000 and
// x ~ 1000, where 2F1 overflows a double and OUT_OF_RANGE is returned. Cost: 3-5 us of CPU for
// a 52-week CLV of a CDNOW-like customer, ~60 ns per week for long horizons.
//
// Boost.Math's hypergeometric_pFq (Boost 1.74) was measured on 363 Euler-form parameter sets
// from these regimes (z in [1/3, 0.9997], c up to 1e5, mpmath references at 40 digits): it is
// accurate (max relative error 1.6e-13) but too slow for a per-request loop over weeks: 0.6-2 us
// per call for z < 0.9, 27 us on average and up to 0.3 ms for z in [0.95, 1), 37 ms at
// z = 0.99996. A 52-week CLV would take 30-100 us for typical customers and milliseconds for
// young ones. It is therefore not used, and core needs no Boost dependency.

namespace offerd {
namespace {

constexpr double kWeeksPerYear = 52.0;
constexpr double kDaysPerWeek = 7.0;

// A series stops once its last term is below this fraction of the sum (and terms decrease).
constexpr double kSeriesTolerance = 1e-17;

// Path 1: the tau series.
constexpr double kTauSeriesMaxTau = 0.5;
constexpr int kTauSeriesMaxTerms = 400;
constexpr double kTauSeriesMaxCancellation = 1e3;  // sum |terms| / |sum|

// Path 2: the z series. Its coefficient table lives on the stack (8 KiB).
constexpr int kZSeriesMaxTerms = 1024;
// Beyond this cancellation (sum |terms| / |H|) the z series hands over to path 3.
constexpr double kZSeriesMaxCancellation = 1e3;
// Starting points of path 3 when no earlier point was evaluated by path 2: the largest one
// where the z series converges without cancellation is used.
constexpr std::array<double, 9> kContinuationStarts = {0.9, 0.75, 0.5,  1.0 / 3.0, 0.2,
                                                       0.1, 0.05, 0.02, 0.01};
// Form choice: the Euler form alternates (and cancels like (1+z)^|A|) when
// A = a + b - 1 - r < kEulerMinA, unless c >> |A| damps it; the textbook form cancels like
// 1/|a - 1| and its H grows like (1+tau)^s (overflow beyond s log1p(tau) ~ 700).
constexpr double kEulerMinA = -1.0;
constexpr double kEulerDampingRatio = 4.0;
constexpr double kTextbookMinAbsEps = 0.05;
constexpr double kTextbookMaxExponent = 500.0;
// The Euler form's E1 - (1+tau)^-eps H cancels like max(1, c) / s (D ~ s / c for tiny r or huge
// b); beyond kComplementMinCancellation its cancellation-free complement is summed instead
// (when A >= 0, c > 0; its terms decay like k^(eps-1) z^k, so only for eps <= 1).
constexpr double kComplementMinCancellation = 30.0;
constexpr double kComplementMaxEps = 1.0;

// Path 3: Taylor steps of a linear ODE (of H in z, or of D in tau; see OdeContinuation).
// A step h from y0 converges like (h / distance to the nearest singular point)^n and amplifies
// rounding by about exp(2 |e| h / distance) for a local solution (y - y_singular)^e; steps keep
// the first ratio <= 1/2 and the amplification <= e^2.
constexpr double kStepFractionOfSingularityDistance = 0.5;
constexpr double kStepStability = 1.0;
constexpr int kTaylorMaxTerms = 200;
// Work budget of one customer: kContinuationBaseSteps plus kContinuationStepsPerPoint for each
// tau evaluated (a week usually needs one step); beyond it the call returns OUT_OF_RANGE.
constexpr int kContinuationBaseSteps = 20000;
constexpr int kContinuationStepsPerPoint = 16;
// Once a series needed more terms than this for one point, the next points are reached by
// continuation from it if that takes at most kMaxStepsPerPointToPreferContinuation Taylor
// steps (a step between consecutive weeks costs ~5-20 terms).
constexpr int kTauSeriesTermsBeforeContinuing = 20;
constexpr int kZSeriesTermsBeforeContinuing = 40;
constexpr double kMaxStepsPerPointToPreferContinuation = 2.0;

// 1 / ((n + 1)(n + 2)) for the Taylor recurrence.
struct TaylorDenominators {
  constexpr TaylorDenominators() : inverse() {
    for (int n = 0; n < kTaylorMaxTerms; ++n) inverse[n] = 1.0 / ((n + 1.0) * (n + 2.0));
  }
  double inverse[kTaylorMaxTerms];
};
constexpr TaylorDenominators kTaylorDenominators;

absl::Status NotConverged(absl::string_view what) {
  return absl::OutOfRangeError(
      absl::StrCat("CLV: ", what, " did not converge within its work budget"));
}

// The k >= 1 coefficients of the power series of paths 1 and 2, produced in order:
//  - Gauss: c_1 = first, c_(k+1) = c_k (p + k)(q + k) / ((c + k)(k + 1));
//  - Euler complement (see ZForm): c_k = (1 + eps)_(k-1) / k! * g_k with g_1 = 1 / c,
//    g_(k+1) = g_k + (A)_k / ((c)_k (c + k)), i.e. s g_k = 1 - (A)_k / (c)_k without
//    cancellation (c - A = s).
class CoefficientRecurrence {
 public:
  static CoefficientRecurrence Gauss(double first, double p, double q, double c) {
    CoefficientRecurrence out;
    out.first_ = first;
    out.p_ = p;
    out.q_ = q;
    out.c_ = c;
    // Terms may change sign, or pass near zero, only while p + k, q + k or c + k is negative.
    out.settled_from_ = 2 + static_cast<int>(std::min(-std::min({p, q, c, 0.0}), 1e6));
    return out;
  }

  // REQUIRES: eps > -1, euler_a >= 0, c > 0 (every coefficient is then positive).
  static CoefficientRecurrence EulerComplement(double eps, double euler_a, double c) {
    CoefficientRecurrence out;
    out.complement_ = true;
    out.first_ = 1.0 / c;
    out.p_ = eps;
    out.q_ = euler_a;
    out.c_ = c;
    out.rho_ = euler_a / c;  // (A)_1 / (c)_1
    out.g_ = 1.0 / c;
    out.pochhammer_ = 1.0;  // (1 + eps)_0 / 1!
    return out;
  }

  double first() const { return first_; }
  int settled_from() const { return settled_from_; }

  // c_(k+1), given c_k; called for k = 1, 2, ... in order.
  double Next(int k, double coef_k) {
    const double j = k;
    if (!complement_) return coef_k * ((p_ + j) * (q_ + j) / ((c_ + j) * (j + 1.0)));
    g_ += rho_ / (c_ + j);
    rho_ *= (q_ + j) / (c_ + j);
    pochhammer_ *= (p_ + j) / (j + 1.0);
    return pochhammer_ * g_;
  }

 private:
  bool complement_ = false;
  double first_ = 0.0, p_ = 0.0, q_ = 0.0, c_ = 1.0;
  int settled_from_ = 2;
  double rho_ = 0.0, g_ = 0.0, pochhammer_ = 0.0;
};

// A power series sum_{k>=1} c_k y^k whose coefficients are extended lazily and kept for all the
// points of one customer (they do not depend on y).
template <int kMaxTerms>
class PowerSeries {
 public:
  struct Sum {
    double value = 0.0;       // sum_k c_k y^k
    double k_weighted = 0.0;  // sum_k k c_k y^k (= y * d value / dy)
    double magnitude = 0.0;   // sum_k |c_k y^k|
    int terms = 0;
    bool converged = false;  // also false when the sum overflowed
  };

  explicit PowerSeries(CoefficientRecurrence recurrence) : recurrence_(recurrence) {
    coef_[1] = recurrence_.first();
  }

  Sum Evaluate(double y) {
    Sum out;
    double power = y;
    const int settled_from = recurrence_.settled_from();
    for (int k = 1; k < kMaxTerms; ++k) {
      const double term = Coefficient(k) * power;
      out.value += term;
      out.k_weighted += k * term;
      out.magnitude += std::fabs(term);
      if (k >= settled_from && std::fabs(term) <= kSeriesTolerance * std::fabs(out.value) &&
          std::fabs(Coefficient(k + 1) * y) <= std::fabs(Coefficient(k))) {
        out.terms = k;
        out.converged = std::isfinite(out.magnitude);
        return out;
      }
      power *= y;
    }
    out.terms = kMaxTerms - 1;
    return out;
  }

 private:
  double Coefficient(int k) {
    while (count_ < k) {
      coef_[count_ + 1] = recurrence_.Next(count_, coef_[count_]);
      ++count_;
    }
    return coef_[k];
  }

  CoefficientRecurrence recurrence_;
  int count_ = 1;
  std::array<double, kMaxTerms + 1> coef_;
};

// A solution f of y (1 + sign y) f'' + (q0 + q1 y) f' + r f = rhs(y) (sign = +-1), with
// rhs(y) = rhs_constant + rhs_scale (1 + sign y)^rhs_power, moved forward in y by Taylor steps.
// The singular points are y = 0 (local exponents 0 and 1 - q0) and y = -sign (exponents 0 and
// `other_exponent`); the state keeps the distance to the latter, 1 + sign y, exactly as the
// caller computed it (1 - z is exact where z is not).
class OdeContinuation {
 public:
  struct Equation {
    double sign = 1.0;
    double q0 = 0.0;
    double q1 = 0.0;
    double r = 0.0;
    double rhs_constant = 0.0;
    double rhs_scale = 0.0;
    double rhs_power = 0.0;
    double other_exponent = 0.0;
  };

  explicit OdeContinuation(const Equation& equation)
      : eq_(equation),
        zero_exponent_(std::max(1.0, std::fabs(1.0 - equation.q0))),
        other_exponent_(std::max(1.0, std::fabs(equation.other_exponent))) {}

  bool has_state() const { return has_state_; }
  double y() const { return y_; }
  double f() const { return f_; }

  void Set(double y, double other_distance, double f, double df) {
    has_state_ = true;
    y_ = y;
    other_distance_ = other_distance;
    f_ = f;
    df_ = df;
  }

  // Longest step from the current state (see kStepStability).
  double MaxStep() const {
    return std::min({kStepFractionOfSingularityDistance * y_,
                     kStepFractionOfSingularityDistance * other_distance_,
                     kStepStability * y_ / zero_exponent_,
                     kStepStability * other_distance_ / other_exponent_});
  }

  // REQUIRES: has_state(), y >= y(). Decrements *steps_left by the steps taken.
  absl::Status ContinueTo(double y, double other_distance, int64_t* steps_left) {
    while (true) {
      // Steps toward the singular point are measured by its distance: near z = 1, z itself
      // carries an absolute rounding of 1e-16, which a solution like (1-z)^-40 would turn
      // into 40e-16 / (1-z) of relative error per step.
      const double remaining = eq_.sign < 0.0 ? other_distance_ - other_distance : y - y_;
      if (!(remaining > 0.0)) break;
      if (--*steps_left < 0) return NotConverged("2F1 continuation");
      double step = remaining, next_y = y, next_other_distance = other_distance;
      if (const double max_step = MaxStep(); step > max_step) {
        step = max_step;
        next_y = y_ + step;
        next_other_distance = other_distance_ + eq_.sign * step;
      }
      // u_n = f^(n)(y_) step^n / n! from the ODE expanded at y_ (P = p0 + p1 h + sign h^2,
      // Q = q0 + q1 h, rhs = sum_n rhs_n h^n): p0 (n+1)(n+2) u_(n+2) = rhs_n step^(n+2)
      //   - (n+1)(p1 n + q0) step u_(n+1) - (sign n(n-1) + q1 n + r) step^2 u_n.
      const double inv_p0 = 1.0 / (y_ * other_distance_);
      const double p1 = 1.0 + 2.0 * eq_.sign * y_;
      const double q0 = eq_.q0 + eq_.q1 * y_;
      const double step2 = step * step;
      // rhs_scale (d + sign h)^power = rhs_scale d^power sum_n binom(power, n) (sign h / d)^n.
      double rhs_term =
          eq_.rhs_scale == 0.0 ? 0.0 : eq_.rhs_scale * std::pow(other_distance_, eq_.rhs_power);
      const double rhs_ratio = eq_.sign * step / other_distance_;
      double u_prev = f_;         // u_0
      double u_cur = df_ * step;  // u_1
      double value = u_prev + u_cur;
      double k_weighted = u_cur;  // sum n u_n = step f'(y_ + step)
      bool converged = false;
      for (int n = 0; n < kTaylorMaxTerms; ++n) {
        const double nd = n;
        double numerator = -(nd + 1.0) * (p1 * nd + q0) * step * u_cur -
                           (eq_.sign * nd * (nd - 1.0) + eq_.q1 * nd + eq_.r) * step2 * u_prev +
                           rhs_term * step2;
        if (n == 0) numerator += eq_.rhs_constant * step2;
        if (rhs_term != 0.0) rhs_term *= (eq_.rhs_power - nd) / (nd + 1.0) * rhs_ratio;
        const double u_next = numerator * inv_p0 * kTaylorDenominators.inverse[n];
        value += u_next;
        k_weighted += (nd + 2.0) * u_next;
        const double small = kSeriesTolerance * std::fabs(value);
        if (n >= 2 && std::fabs(u_next) <= small && std::fabs(u_cur) <= small &&
            (nd + 2.0) * std::fabs(u_next) <= kSeriesTolerance * std::fabs(k_weighted)) {
          converged = true;
          break;
        }
        u_prev = u_cur;
        u_cur = u_next;
      }
      if (!converged || !std::isfinite(value)) return NotConverged("2F1 Taylor step");
      Set(next_y, next_other_distance, value, k_weighted / step);
    }
    return absl::OkStatus();
  }

 private:
  const Equation eq_;
  const double zero_exponent_, other_exponent_;
  bool has_state_ = false;
  double y_ = 0.0;
  double other_distance_ = 1.0;
  double f_ = 0.0;
  double df_ = 0.0;
};

// What paths 2 and 3 sum (see the top of this file): H of 2F1(al, be; c; z) = 1 + al H, with
// D = d_factor (E1 - (1 + tau)^-al H); or, for the Euler complement,
// K(z) = sum_k (1 + eps)_(k-1) g_k z^k / k! with D = s (1 + tau)^-eps K.
struct ZForm {
  enum class Kind { kEuler, kTextbook, kEulerComplement };
  Kind kind = Kind::kEuler;
  double al = 0.0;
  double be = 0.0;
  double c = 0.0;
  double d_factor = 1.0;
};

// Picks the form for tau up to max_tau (see the constants above and the top of this file).
ZForm ChooseZForm(double r, double a, double b, double x, double max_tau) {
  using Kind = ZForm::Kind;
  const double s = r + x;
  const double eps = a - 1.0;
  const double c = a + b + x - 1.0;
  const double euler_a = a + b - 1.0 - r;
  const ZForm textbook{Kind::kTextbook, s, b + x, c, s / eps};
  const ZForm euler{Kind::kEuler, eps, euler_a, c, 1.0};
  if (euler_a >= 0.0 && c > 0.0 && eps <= kComplementMaxEps &&
      std::max(1.0, c) > kComplementMinCancellation * s) {
    return ZForm{Kind::kEulerComplement, eps, euler_a, c, s};
  }
  if (eps == 0.0 || s * std::log1p(max_tau) > kTextbookMaxExponent) return euler;
  if (s < std::fabs(eps)) return textbook;
  const bool euler_alternates =
      euler_a < kEulerMinA && std::fabs(c) < kEulerDampingRatio * std::fabs(euler_a);
  if (euler_alternates && std::fabs(eps) >= kTextbookMinAbsEps) return textbook;
  return euler;
}

CoefficientRecurrence ZCoefficients(const ZForm& form) {
  if (form.kind == ZForm::Kind::kEulerComplement) {
    return CoefficientRecurrence::EulerComplement(form.al, form.be, form.c);
  }
  return CoefficientRecurrence::Gauss(form.be / form.c, form.al, form.be, form.c);
}

// z (1 - z) Y'' + (c - (al + be + 1) z) Y' - al be Y = rhs: be for H, (1 - z)^(-eps-1) for K.
OdeContinuation::Equation ZEquation(const ZForm& form) {
  OdeContinuation::Equation eq;
  eq.sign = -1.0;
  eq.q0 = form.c;
  eq.q1 = -(form.al + form.be + 1.0);
  eq.r = -form.al * form.be;
  if (form.kind == ZForm::Kind::kEulerComplement) {
    eq.rhs_scale = 1.0;
    eq.rhs_power = -form.al - 1.0;
  } else {
    eq.rhs_constant = form.be;
  }
  eq.other_exponent = form.c - form.al - form.be;
  return eq;
}

// tau (1 + tau) D'' + (c + (s + a) tau) D' + s (a - 1) D = s.
OdeContinuation::Equation TauEquation(double r, double a, double b, double x) {
  OdeContinuation::Equation eq;
  eq.sign = 1.0;
  eq.q0 = a + b + x - 1.0;
  eq.q1 = r + x + a;
  eq.r = (r + x) * (a - 1.0);
  eq.rhs_constant = r + x;
  eq.other_exponent = b - r;
  return eq;
}

// D(tau) = (1 - 2F1(s, a-1; c; -tau)) / (a-1) for a non-decreasing sequence of tau >= 0.
class PfaffD {
 public:
  // `max_tau` is the largest tau and `num_points` the number of taus that will be evaluated
  // (they guide the choice of form and set the work budget).
  PfaffD(double r, double a, double b, double x, double max_tau, int64_t num_points)
      : steps_left_(kContinuationBaseSteps + kContinuationStepsPerPoint * num_points),
        s_(r + x),
        c_(a + b + x - 1.0),
        form_(ChooseZForm(r, a, b, x, max_tau)),
        tau_series_(CoefficientRecurrence::Gauss(s_ / c_, s_, a - 1.0, c_)),
        z_series_(ZCoefficients(form_)),
        tau_ode_(TauEquation(r, a, b, x)),
        z_ode_(ZEquation(form_)) {}

  // REQUIRES: tau >= 0 and not smaller than in the previous call.
  absl::Status Evaluate(double tau, double* d) {
    if (tau == 0.0) {
      *d = 0.0;
      return absl::OkStatus();
    }
    if (tau <= kTauSeriesMaxTau && !tau_series_failed_) {
      if (!tau_continuing_ && last_tau_terms_ > kTauSeriesTermsBeforeContinuing &&
          tau - tau_ode_.y() <= kMaxStepsPerPointToPreferContinuation * tau_ode_.MaxStep()) {
        tau_continuing_ = true;  // cheaper than the series, which only grows with tau
      }
      if (tau_continuing_) {
        if (absl::Status status = tau_ode_.ContinueTo(tau, 1.0 + tau, &steps_left_); !status.ok()) {
          return status;
        }
        *d = tau_ode_.f();
        return absl::OkStatus();
      }
      const auto sum = tau_series_.Evaluate(-tau);
      if (sum.converged && sum.magnitude <= kTauSeriesMaxCancellation * std::fabs(sum.value)) {
        *d = -sum.value;
        last_tau_terms_ = sum.terms;
        tau_ode_.Set(tau, 1.0 + tau, *d, -sum.k_weighted / tau);
        return absl::OkStatus();
      }
      tau_series_failed_ = true;  // cancellation only grows with tau
    }
    const double log1p_tau = std::log1p(tau);
    const double one_minus_z = 1.0 / (1.0 + tau);
    const double z = tau * one_minus_z;
    if (!z_continuing_ && last_z_terms_ > kZSeriesTermsBeforeContinuing &&
        z - z_ode_.y() <= kMaxStepsPerPointToPreferContinuation * z_ode_.MaxStep()) {
      z_continuing_ = true;  // cheaper than the long series, and z only grows from here
    }
    double y = 0.0;  // H or K at z
    if (!z_continuing_) {
      const auto sum = z_series_.Evaluate(z);
      if (WellConditioned(sum)) {
        y = sum.value;
        last_z_terms_ = sum.terms;
        z_ode_.Set(z, one_minus_z, sum.value, sum.k_weighted / z);
      } else {
        z_continuing_ = true;  // slower or worse for every larger z
      }
    }
    if (z_continuing_) {
      if (!z_ode_.has_state()) {
        for (double start : kContinuationStarts) {
          if (start >= z) continue;
          const auto sum = z_series_.Evaluate(start);
          if (WellConditioned(sum)) {
            z_ode_.Set(start, 1.0 - start, sum.value, sum.k_weighted / start);
            break;
          }
        }
        if (!z_ode_.has_state()) return NotConverged("2F1 series");
      }
      if (absl::Status status = z_ode_.ContinueTo(z, one_minus_z, &steps_left_); !status.ok()) {
        return status;
      }
      y = z_ode_.f();
    }
    const double al_log = form_.al * log1p_tau;
    if (form_.kind == ZForm::Kind::kEulerComplement) {
      *d = s_ * std::exp(-al_log) * y;
    } else {
      const double e1 = form_.al == 0.0 ? log1p_tau : -std::expm1(-al_log) / form_.al;
      *d = form_.d_factor * (e1 - std::exp(-al_log) * y);
    }
    if (!std::isfinite(*d)) return NotConverged("2F1 evaluation (overflow)");
    return absl::OkStatus();
  }

  double c() const { return c_; }

 private:
  template <typename Sum>
  static bool WellConditioned(const Sum& sum) {
    return sum.converged && sum.magnitude <= kZSeriesMaxCancellation * std::fabs(sum.value);
  }

  int64_t steps_left_;
  const double s_;
  const double c_;
  const ZForm form_;
  PowerSeries<kTauSeriesMaxTerms> tau_series_;
  PowerSeries<kZSeriesMaxTerms> z_series_;
  OdeContinuation tau_ode_;
  OdeContinuation z_ode_;
  bool tau_series_failed_ = false;
  bool tau_continuing_ = false;
  bool z_continuing_ = false;
  int last_tau_terms_ = 0;
  int last_z_terms_ = 0;
};

absl::Status CheckFinite(absl::string_view name, double value) {
  if (!std::isfinite(value)) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": must be finite, got ", value));
  }
  return absl::OkStatus();
}

absl::Status CheckPositive(absl::string_view name, double value) {
  if (!(value > 0.0) || !std::isfinite(value)) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": must be finite and > 0, got ", value));
  }
  return absl::OkStatus();
}

double ProbabilityAliveUnchecked(const ClvModel& model, const RfmWeeks& rfm) {
  const double x = rfm.repeat_purchases;
  if (x == 0.0) return 1.0;
  // log(P(dead) / P(alive)); (alpha + T) / (alpha + t_x) = 1 + (T - t_x) / (alpha + t_x), and
  // T - t_x is exact when the two are close, so log1p keeps full precision for large x.
  const double log_odds = std::log(model.a) - std::log(model.b + x - 1.0) +
                          (model.r + x) * std::log1p((rfm.age_weeks - rfm.recency_weeks) /
                                                     (model.alpha + rfm.recency_weeks));
  if (log_odds > 0.0) {
    const double e = std::exp(-log_odds);
    return e / (1.0 + e);
  }
  return 1.0 / (1.0 + std::exp(log_odds));
}

double ExpectedSpendUnchecked(const ClvModel& model, const RfmWeeks& rfm) {
  const double x = rfm.repeat_purchases;
  return model.p * (model.v + x * rfm.mean_repeat_spend) / (model.p * x + model.q - 1.0);
}

// One pass over the weeks of the horizon; fills every field of `out`.
absl::Status ComputeUnchecked(const ClvModel& model, const RfmWeeks& rfm, ClvResult* out) {
  const double weeks_per_tau = model.alpha + rfm.age_weeks;  // tau = t / (alpha + T)
  const double horizon = model.horizon_weeks;
  // Without discounting every weight but the last is 0: only D(horizon) is needed.
  const bool discounted = model.annual_discount_rate > 0.0;
  const int64_t full_weeks = discounted ? static_cast<int64_t>(std::ceil(horizon)) - 1 : 0;
  PfaffD d(model.r, model.a, model.b, rfm.repeat_purchases, horizon / weeks_per_tau,
           full_weeks + 1);
  const double log_delta = -std::log1p(model.annual_discount_rate) / kWeeksPerYear;
  // Summation by parts of sum_k (D(t_k) - D(t_(k-1))) delta^t_k: every weight is >= 0.
  double discounted_d = 0.0;
  if (discounted) {
    const double delta = std::exp(log_delta);
    const double one_week_decline = -std::expm1(log_delta);  // 1 - delta, without cancellation
    double discount = 1.0;                                   // delta^k
    for (int64_t k = 1; k <= full_weeks; ++k) {
      double d_k = 0.0;
      if (absl::Status status = d.Evaluate(static_cast<double>(k) / weeks_per_tau, &d_k);
          !status.ok()) {
        return status;
      }
      discount *= delta;
      const double next_step = std::min(1.0, horizon - static_cast<double>(k));
      const double decline =
          next_step == 1.0 ? one_week_decline : -std::expm1(log_delta * next_step);
      discounted_d += d_k * discount * decline;
    }
  }
  double d_horizon = 0.0;
  if (absl::Status status = d.Evaluate(horizon / weeks_per_tau, &d_horizon); !status.ok()) {
    return status;
  }
  discounted_d += d_horizon * std::exp(log_delta * horizon);

  out->p_alive = ProbabilityAliveUnchecked(model, rfm);
  const double scale = d.c() * out->p_alive;  // E[Y(t)] = c D(tau) P(alive)
  out->expected_purchases = scale * d_horizon;
  out->discounted_expected_purchases = scale * discounted_d;
  out->expected_spend = ExpectedSpendUnchecked(model, rfm);
  out->clv = model.margin * out->expected_spend * out->discounted_expected_purchases;
  return absl::OkStatus();
}

absl::Status Validate(const ClvModel& model, const RfmWeeks& rfm) {
  if (absl::Status status = ValidateClvModel(model); !status.ok()) return status;
  return ValidateRfm(model, rfm);
}

}  // namespace

absl::Status ValidateClvModel(const ClvModel& model) {
  for (const auto& [name, value] : {std::pair<const char*, double>{"r", model.r},
                                    {"alpha", model.alpha},
                                    {"a", model.a},
                                    {"b", model.b},
                                    {"p", model.p},
                                    {"v", model.v},
                                    {"horizon_weeks", model.horizon_weeks}}) {
    if (absl::Status status = CheckPositive(absl::StrCat("ClvModel.", name), value); !status.ok()) {
      return status;
    }
  }
  if (!(model.q > 1.0) || !std::isfinite(model.q)) {
    return absl::InvalidArgumentError(
        absl::StrCat("ClvModel.q: must be finite and > 1, got ", model.q));
  }
  if (model.horizon_weeks > kMaxClvHorizonWeeks) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ClvModel.horizon_weeks: must be <= ", kMaxClvHorizonWeeks, ", got ", model.horizon_weeks));
  }
  if (!(model.margin >= 0.0 && model.margin <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("ClvModel.margin: must be in [0, 1], got ", model.margin));
  }
  if (!(model.annual_discount_rate >= 0.0) || !std::isfinite(model.annual_discount_rate)) {
    return absl::InvalidArgumentError(
        absl::StrCat("ClvModel.annual_discount_rate: must be finite and >= 0, got ",
                     model.annual_discount_rate));
  }
  return absl::OkStatus();
}

absl::Status ValidateRfm(const ClvModel& model, const RfmWeeks& rfm) {
  const double x = rfm.repeat_purchases;
  if (!(x >= 0.0) || !std::isfinite(x) || x != std::floor(x)) {
    return absl::InvalidArgumentError(
        absl::StrCat("RfmWeeks.repeat_purchases: must be a whole number >= 0, got ", x));
  }
  if (absl::Status status = CheckFinite("RfmWeeks.age_weeks", rfm.age_weeks); !status.ok()) {
    return status;
  }
  if (!(rfm.recency_weeks >= 0.0 && rfm.recency_weeks <= rfm.age_weeks)) {
    return absl::InvalidArgumentError(
        absl::StrCat("RfmWeeks: need 0 <= recency_weeks <= age_weeks, got recency_weeks ",
                     rfm.recency_weeks, ", age_weeks ", rfm.age_weeks));
  }
  if (!(rfm.mean_repeat_spend >= 0.0) || !std::isfinite(rfm.mean_repeat_spend)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "RfmWeeks.mean_repeat_spend: must be finite and >= 0, got ", rfm.mean_repeat_spend));
  }
  const double c = model.a + model.b + x - 1.0;
  if (c <= 0.0 && c == std::floor(c)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ClvModel: a + b + x - 1 must not be 0 or a negative integer, got ", c, " (x = ", x, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<double> ProbabilityAlive(const ClvModel& model, const RfmWeeks& rfm) {
  if (absl::Status status = Validate(model, rfm); !status.ok()) return status;
  return ProbabilityAliveUnchecked(model, rfm);
}

absl::StatusOr<double> ConditionalExpectedPurchases(const ClvModel& model, const RfmWeeks& rfm,
                                                    double t_weeks) {
  if (absl::Status status = Validate(model, rfm); !status.ok()) return status;
  if (!(t_weeks >= 0.0) || !std::isfinite(t_weeks)) {
    return absl::InvalidArgumentError(
        absl::StrCat("t_weeks: must be finite and >= 0, got ", t_weeks));
  }
  const double tau = t_weeks / (model.alpha + rfm.age_weeks);
  PfaffD d(model.r, model.a, model.b, rfm.repeat_purchases, tau, /*num_points=*/1);
  double d_t = 0.0;
  if (absl::Status status = d.Evaluate(tau, &d_t); !status.ok()) {
    return status;
  }
  return d.c() * d_t * ProbabilityAliveUnchecked(model, rfm);
}

absl::StatusOr<double> ConditionalExpectedSpend(const ClvModel& model, const RfmWeeks& rfm) {
  if (absl::Status status = Validate(model, rfm); !status.ok()) return status;
  return ExpectedSpendUnchecked(model, rfm);
}

absl::StatusOr<double> CustomerLifetimeValue(const ClvModel& model, const RfmWeeks& rfm) {
  absl::StatusOr<ClvResult> result = ComputeClv(model, rfm);
  if (!result.ok()) return result.status();
  return result->clv;
}

absl::StatusOr<ClvResult> ComputeClv(const ClvModel& model, const RfmWeeks& rfm) {
  if (absl::Status status = Validate(model, rfm); !status.ok()) return status;
  ClvResult result;
  if (absl::Status status = ComputeUnchecked(model, rfm, &result); !status.ok()) return status;
  return result;
}

absl::StatusOr<std::optional<RfmWeeks>> RfmFromPurchaseSummary(const PurchaseSummary& summary,
                                                               int32_t now_day) {
  if (!summary.has_purchases) return std::optional<RfmWeeks>();
  const int64_t first = summary.first_purchase_day;
  const int64_t last = summary.last_purchase_day;
  const int64_t repeat_days = summary.repeat_days;
  if (last < first || now_day < last) {
    return absl::InvalidArgumentError(absl::StrCat(
        "PurchaseSummary: need first_purchase_day <= last_purchase_day <= now_day, got ", first,
        ", ", last, ", ", now_day));
  }
  if (repeat_days < 0 || repeat_days > last - first || (repeat_days == 0) != (last == first)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "PurchaseSummary: repeat_days must count distinct days after the first purchase, got ",
        repeat_days, " over ", last - first, " days"));
  }
  if (!(summary.repeat_spend_sum >= 0.0) || !std::isfinite(summary.repeat_spend_sum)) {
    return absl::InvalidArgumentError(
        absl::StrCat("PurchaseSummary.repeat_spend_sum: must be finite and >= 0, got ",
                     summary.repeat_spend_sum));
  }
  RfmWeeks rfm;
  rfm.repeat_purchases = static_cast<double>(repeat_days);
  rfm.recency_weeks = static_cast<double>(last - first) / kDaysPerWeek;
  rfm.age_weeks = static_cast<double>(now_day - first) / kDaysPerWeek;
  rfm.mean_repeat_spend =
      repeat_days > 0 ? summary.repeat_spend_sum / static_cast<double>(repeat_days) : 0.0;
  return std::optional<RfmWeeks>(rfm);
}

}  // namespace offerd
