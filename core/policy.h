#ifndef OFFERD_CORE_POLICY_H_
#define OFFERD_CORE_POLICY_H_

#include <cstdint>

#include "core/expected_value.h"
#include "core/exploration.h"
#include "core/fatigue.h"
#include "core/policy_params.h"

namespace offerd {

// The ranking policy of one Recommend request, as pure steps the server calls in order
// (ARCHITECTURE.md, request path):
//   1. AssignUser (core/assignment.h): holdout -> empty list; arm -> ApplyOverrides on the
//      bundle's PolicyParams.
//   2. per retrieved candidate: CheckEligibility (core/eligibility.h); count the reason.
//   3. per eligible candidate: p1 from the uplift head (p0 once per request), then
//      ScoreCandidate below; keep it when `passes_roi_gate`.
//   4. SelectOffers (core/exploration.h) with SelectionLimitsFor(...) and a per-request
//      SplitMix64Rng seeded from fresh randomness (e.g. the decision id).
//   5. Record every served offer as an impression and in the day count at decision time.

// Model outputs and catalog values of one eligible user x offer.
struct CandidateScoreInputs {
  double p0 = 0.0;                    // P(convert | not shown), per request
  double p1 = 0.0;                    // P(convert | shown this offer)
  double clv = 0.0;                   // CLV(u), currency units
  double margin = 0.0;                // Offer::margin, currency units
  double cost = 0.0;                  // Offer::cost, currency units
  int32_t impressions_in_window = 0;  // OfferFatigueState::impressions_in_window
};

// Everything the explanation of an offer reports, plus the ranking score.
struct CandidateScore {
  double uplift = 0.0;              // p1 - p0
  double expected_value = 0.0;      // ExpectedIncrementalValue, before fatigue
  double fatigue_multiplier = 1.0;  // fatigue_decay^impressions_in_window
  // Ranking score: expected_value * fatigue_multiplier when expected_value > 0, else
  // expected_value unchanged. Fatigue only shrinks a gain; it never makes a loss look smaller
  // (which would rank a fatigued money-loser above a fresh one).
  double score = 0.0;
  Segment segment = Segment::kLostCause;
  bool passes_roi_gate = false;  // score > params.min_ev
};

CandidateScore ScoreCandidate(const CandidateScoreInputs& inputs, const PolicyParams& params);

// The selection limits of a request for `num_offers` slots.
SelectionLimits SelectionLimitsFor(const PolicyParams& params, int32_t num_offers,
                                   const UserDayState& day);

}  // namespace offerd

#endif  // OFFERD_CORE_POLICY_H_
