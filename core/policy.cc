#include "core/policy.h"

namespace offerd {

CandidateScore ScoreCandidate(const CandidateScoreInputs& inputs, const PolicyParams& params) {
  CandidateScore score;
  score.uplift = inputs.p1 - inputs.p0;
  score.expected_value = ExpectedIncrementalValue(inputs.p0, inputs.p1, inputs.margin, inputs.cost,
                                                  inputs.clv, params.beta);
  score.fatigue_multiplier = FatigueMultiplier(params.fatigue_decay, inputs.impressions_in_window);
  score.score = score.expected_value > 0.0 ? score.expected_value * score.fatigue_multiplier
                                           : score.expected_value;
  score.segment = ClassifySegment(inputs.p0, inputs.p1, params.segment_thresholds);
  score.passes_roi_gate = PassesRoiGate(score.score, params.min_ev);
  return score;
}

SelectionLimits SelectionLimitsFor(const PolicyParams& params, int32_t num_offers,
                                   const UserDayState& day) {
  SelectionLimits limits;
  limits.num_slots = num_offers;
  limits.remaining_today = OffersRemainingToday(day, params);
  limits.max_per_category = params.max_per_category;
  limits.epsilon = params.epsilon;
  return limits;
}

}  // namespace offerd
