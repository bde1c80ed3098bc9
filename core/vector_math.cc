#include "core/vector_math.h"

#include <cmath>

namespace offerd {

double L2Norm(absl::Span<const float> v) {
  double sum = 0.0;
  for (float x : v) sum += static_cast<double>(x) * x;
  return std::sqrt(sum);
}

bool L2NormalizeInPlace(absl::Span<float> v) {
  const double norm = L2Norm(v);
  if (!(norm > 0.0) || !std::isfinite(norm)) return false;
  const double inv = 1.0 / norm;
  for (float& x : v) x = static_cast<float>(x * inv);
  return true;
}

double Dot(absl::Span<const float> a, absl::Span<const float> b) {
  double sum = 0.0;
  const size_t n = a.size() < b.size() ? a.size() : b.size();
  for (size_t i = 0; i < n; ++i) sum += static_cast<double>(a[i]) * b[i];
  return sum;
}

bool AllFinite(absl::Span<const float> v) {
  for (float x : v) {
    if (!std::isfinite(x)) return false;
  }
  return true;
}

}  // namespace offerd
