#ifndef OFFERD_CORE_EXPLORATION_H_
#define OFFERD_CORE_EXPLORATION_H_

#include <cstdint>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/random.h"

namespace offerd {

// An eligible candidate that passed the ROI gate, ready for slot selection.
struct ScoredCandidate {
  int32_t offer_index = -1;    // catalog row
  absl::string_view category;  // diversity key; must outlive the call
  double score = 0.0;          // fatigue-adjusted expected incremental value; higher is better
};

// One filled slot of the response.
struct SelectedOffer {
  int32_t candidate = -1;    // index into the `candidates` span
  int32_t offer_index = -1;  // catalog row (copied from the candidate)
  // Probability that this offer was chosen for its slot given the candidates still available
  // for the slot: 1 - epsilon for the greedy one, epsilon / (m - 1) for each of the m - 1
  // others, 1 when m == 1.
  double propensity = 1.0;
  bool explored = false;  // true when not the greedy choice
};

struct SelectionLimits {
  int32_t num_slots = 0;         // offers asked for (N)
  int32_t remaining_today = 0;   // OffersRemainingToday(): the user's day budget
  int32_t max_per_category = 0;  // diversity limit; 0 = none
  double epsilon = 0.0;          // exploration probability per slot, in [0, 1]
};

// Caller-owned buffers, reused across requests so that selection does not allocate once they
// have grown to the largest candidate count.
struct SelectionBuffers {
  std::vector<uint8_t> available;  // per candidate
};

// Fills up to min(num_slots, remaining_today) slots from `candidates` (request path steps
// 9-10), in slot order, into `out` (cleared first). For each slot, the available set holds
// the candidates not yet chosen whose offer is not yet chosen and whose category has fewer
// than max_per_category chosen offers; with m = its size:
//   m == 0 -> stop (fewer than N offers, or none, is a correct answer);
//   m == 1 -> that candidate, propensity 1;
//   else   -> with probability 1 - epsilon the greedy candidate (highest score, ties to the
//             lower offer_index, then the lower candidate index), otherwise one of the other
//             m - 1 uniformly at random (explored).
// Randomness comes only from `rng` (one UniformDouble per slot with m > 1, plus one
// UniformInt when exploring), so a fixed seed replays a decision. Candidates with a NaN score
// are never chosen. No allocation once `buffers` and `out` have the capacity.
void SelectOffers(absl::Span<const ScoredCandidate> candidates, const SelectionLimits& limits,
                  SplitMix64Rng* rng, SelectionBuffers* buffers, std::vector<SelectedOffer>* out);

}  // namespace offerd

#endif  // OFFERD_CORE_EXPLORATION_H_
