#include "core/exploration.h"

#include <algorithm>
#include <cmath>

namespace offerd {
namespace {

// Strict "a ranks before b" for the greedy choice; the tie-breaks make the greedy choice (and
// so the propensities) independent of the candidates' order.
bool RanksBefore(absl::Span<const ScoredCandidate> candidates, size_t a, size_t b) {
  if (candidates[a].score != candidates[b].score) return candidates[a].score > candidates[b].score;
  if (candidates[a].offer_index != candidates[b].offer_index) {
    return candidates[a].offer_index < candidates[b].offer_index;
  }
  return a < b;
}

}  // namespace

void SelectOffers(absl::Span<const ScoredCandidate> candidates, const SelectionLimits& limits,
                  SplitMix64Rng* rng, SelectionBuffers* buffers, std::vector<SelectedOffer>* out) {
  out->clear();
  const int32_t slots = std::min(limits.num_slots, limits.remaining_today);
  if (slots <= 0 || candidates.empty()) return;

  std::vector<uint8_t>& available = buffers->available;
  available.assign(candidates.size(), 0);  // keeps the capacity: no allocation once grown
  for (size_t i = 0; i < candidates.size(); ++i) {
    available[i] = candidates[i].offer_index >= 0 && !std::isnan(candidates[i].score);
  }

  for (int32_t slot = 0; slot < slots; ++slot) {
    size_t num_available = 0;
    size_t greedy = 0;
    for (size_t i = 0; i < candidates.size(); ++i) {
      if (!available[i]) continue;
      if (num_available == 0 || RanksBefore(candidates, i, greedy)) greedy = i;
      ++num_available;
    }
    if (num_available == 0) break;

    SelectedOffer choice;
    size_t chosen = greedy;
    if (num_available > 1) {
      const size_t others = num_available - 1;
      if (rng->UniformDouble() < limits.epsilon) {
        // The k-th available candidate other than the greedy one, in candidate order.
        size_t k = static_cast<size_t>(rng->UniformInt(others));
        for (size_t i = 0; i < candidates.size(); ++i) {
          if (!available[i] || i == greedy) continue;
          if (k == 0) {
            chosen = i;
            break;
          }
          --k;
        }
        choice.propensity = limits.epsilon / static_cast<double>(others);
        choice.explored = true;
      } else {
        choice.propensity = 1.0 - limits.epsilon;
      }
    }
    choice.candidate = static_cast<int32_t>(chosen);
    choice.offer_index = candidates[chosen].offer_index;
    out->push_back(choice);

    // Retire the chosen offer (every candidate row of it, should retrieval repeat one) and,
    // once its category is full, the rest of that category.
    const absl::string_view category = candidates[chosen].category;
    int32_t chosen_in_category = 0;
    for (const SelectedOffer& served : *out) {
      chosen_in_category += candidates[served.candidate].category == category;
    }
    const bool category_full =
        limits.max_per_category > 0 && chosen_in_category >= limits.max_per_category;
    for (size_t i = 0; i < candidates.size(); ++i) {
      if (!available[i]) continue;
      if (candidates[i].offer_index == choice.offer_index ||
          (category_full && candidates[i].category == category)) {
        available[i] = 0;
      }
    }
  }
}

}  // namespace offerd
