#ifndef OFFERD_CORE_VECTOR_MATH_H_
#define OFFERD_CORE_VECTOR_MATH_H_

#include <cstdint>

#include "absl/types/span.h"

namespace offerd {

// Returns the Euclidean norm of `v`.
double L2Norm(absl::Span<const float> v);

// Scales `v` to unit L2 norm in place. Returns false (and leaves `v` unchanged) when the norm
// is zero or not finite.
bool L2NormalizeInPlace(absl::Span<float> v);

// Inner product of two equally long vectors.
double Dot(absl::Span<const float> a, absl::Span<const float> b);

// True when every value is finite (no NaN or Inf).
bool AllFinite(absl::Span<const float> v);

}  // namespace offerd

#endif  // OFFERD_CORE_VECTOR_MATH_H_
