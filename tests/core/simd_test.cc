#include "core/simd.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace offerd {
namespace simd {
namespace {

// Every kernel set this CPU runs (each is tested, not just the one Best() picks).
std::vector<const Kernels*> AllKernels() {
  std::vector<const Kernels*> all = {&Generic()};
  if (Avx2() != nullptr) all.push_back(Avx2());
  if (Avx512() != nullptr) all.push_back(Avx512());
  return all;
}

std::vector<float> Random(std::mt19937* rng, size_t n, float zero_fraction = 0.0f) {
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  std::uniform_real_distribution<float> coin(0.0f, 1.0f);
  std::vector<float> out(n);
  for (float& v : out) v = coin(*rng) < zero_fraction ? 0.0f : value(*rng);
  return out;
}

TEST(SimdTest, BestIsTheWidestTheCpuRunsAndGenericIsPortable) {
  EXPECT_STREQ(Generic().name, "generic");
  const std::string best = Best().name;
  EXPECT_TRUE(best == "generic" || best == "avx2" || best == "avx512") << best;
#if defined(__x86_64__)
  // This project's machines (and CI) have AVX2 + FMA, and AVX-512 on the current ones; the
  // widest kernels must be the ones in use unless OFFERD_SIMD caps them.
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f");
  EXPECT_EQ(Avx2() != nullptr, avx2);
  EXPECT_EQ(Avx512() != nullptr, avx512);
  const char* forced = std::getenv("OFFERD_SIMD");
  if (forced == nullptr) {
    EXPECT_EQ(best, avx512 ? "avx512" : avx2 ? "avx2" : "generic");
  }
#endif
}

// The AVX-512 layer sums each output in exactly the AVX2 kernel's order (bias, then the
// non-zero inputs in order, one fused multiply-add each): the two agree bit for bit, so the
// serving path's results do not depend on which of them the CPU picks.
TEST(SimdTest, DenseColumnsAvx512EqualsAvx2BitForBit) {
  if (Avx2() == nullptr || Avx512() == nullptr) {
    GTEST_SKIP() << "this CPU lacks AVX-512";  // only reachable off the project's machines
  }
  std::mt19937 rng(7);
  for (int in : {0, 1, 7, 56, 102, 513, 1100}) {
    for (int out : {1, 2, 8, 15, 16, 17, 31, 56, 98, 102, 128, 129, 200, 257}) {
      const std::vector<float> columns = Random(&rng, static_cast<size_t>(in) * out);
      const std::vector<float> bias = Random(&rng, out);
      const std::vector<float> x = Random(&rng, in, 0.4f);
      std::vector<float> a(out + 1, -3.0f), b(out + 1, -3.0f);
      Avx2()->dense_columns(columns.data(), bias.data(), x.data(), in, out, a.data());
      Avx512()->dense_columns(columns.data(), bias.data(), x.data(), in, out, b.data());
      ASSERT_EQ(a, b) << "in=" << in << " out=" << out;
    }
  }
}

// Every output, every width: against a double-precision reference, within a few float ulps of
// the sum of |terms|.
TEST(SimdTest, DenseColumnsMatchesDoubleReference) {
  std::mt19937 rng(42);
  for (const Kernels* kernels : AllKernels()) {
    for (int in : {0, 1, 5, 56, 600, 1100}) {
      for (int out : {1, 3, 8, 9, 16, 63, 64, 65, 102, 200}) {
        const std::vector<float> columns = Random(&rng, static_cast<size_t>(in) * out);
        const std::vector<float> bias = Random(&rng, out);
        const std::vector<float> x = Random(&rng, in, 0.5f);
        std::vector<float> y(out + 1, 12345.0f);  // the extra slot must stay untouched
        kernels->dense_columns(columns.data(), bias.data(), x.data(), in, out, y.data());
        for (int r = 0; r < out; ++r) {
          double want = bias[r], magnitude = std::fabs(bias[r]);
          for (int c = 0; c < in; ++c) {
            want += static_cast<double>(x[c]) * columns[static_cast<size_t>(c) * out + r];
            magnitude += std::fabs(static_cast<double>(x[c]) * columns[static_cast<size_t>(c) * out + r]);
          }
          ASSERT_NEAR(y[r], want, 1e-6 * magnitude + 1e-7)
              << kernels->name << " in=" << in << " out=" << out << " r=" << r;
        }
        EXPECT_EQ(y[out], 12345.0f) << kernels->name << " wrote past out=" << out;
      }
    }
  }
}

TEST(SimdTest, DenseColumnsSkipsZeroInputsExactly) {
  // Inputs that are zero contribute nothing: a layer over [x, 0, 0] equals the layer over [x]
  // with the extra columns set to anything (even huge values).
  std::mt19937 rng(3);
  for (const Kernels* kernels : AllKernels()) {
    const int out = 37;
    std::vector<float> narrow = Random(&rng, 4 * out);
    std::vector<float> wide = narrow;
    wide.resize(6 * out, 1e30f);
    const std::vector<float> bias = Random(&rng, out);
    const std::vector<float> x = Random(&rng, 4);
    std::vector<float> x_wide = x;
    x_wide.resize(6, 0.0f);
    std::vector<float> a(out), b(out);
    kernels->dense_columns(narrow.data(), bias.data(), x.data(), 4, out, a.data());
    kernels->dense_columns(wide.data(), bias.data(), x_wide.data(), 6, out, b.data());
    EXPECT_EQ(a, b) << kernels->name;
  }
}

TEST(SimdTest, InnerProductsMatchDoubleReference) {
  std::mt19937 rng(7);
  for (const Kernels* kernels : AllKernels()) {
    for (int dim : {1, 3, 8, 13, 32, 64, 100}) {
      for (int64_t n : {0, 1, 3, 4, 5, 17}) {
        const std::vector<float> query = Random(&rng, dim);
        const std::vector<float> rows = Random(&rng, static_cast<size_t>(n) * dim);
        std::vector<float> out(n + 1, -7.0f);
        kernels->inner_products(query.data(), rows.data(), n, dim, out.data());
        for (int64_t i = 0; i < n; ++i) {
          double want = 0, magnitude = 0;
          for (int j = 0; j < dim; ++j) {
            const double term = static_cast<double>(query[j]) * rows[static_cast<size_t>(i) * dim + j];
            want += term;
            magnitude += std::fabs(term);
          }
          ASSERT_NEAR(out[i], want, 1e-6 * magnitude + 1e-7)
              << kernels->name << " dim=" << dim << " row " << i << " of " << n;
        }
        EXPECT_EQ(out[n], -7.0f) << kernels->name << " wrote past n=" << n;
      }
    }
  }
}

TEST(SimdTest, IndicesAtLeastFindsExactlyTheRowsAtOrAboveTheThreshold) {
  std::mt19937 rng(11);
  for (const Kernels* kernels : AllKernels()) {
    for (int64_t n : {0, 1, 7, 8, 9, 64, 1000, 1029}) {
      std::vector<float> values = Random(&rng, static_cast<size_t>(n));
      if (n > 3) {
        values[1] = 0.25f;  // equal to the threshold: selected
        values[2] = std::nanf("");  // never selected
      }
      for (float threshold : {-2.0f, 0.25f, 0.9f, 2.0f}) {
        std::vector<int32_t> got(static_cast<size_t>(n) + 8, -1);
        const int64_t count = kernels->indices_at_least(values.data(), n, threshold, got.data());
        got.resize(static_cast<size_t>(count));
        std::vector<int32_t> want;
        for (int64_t i = 0; i < n; ++i) {
          if (values[i] >= threshold) want.push_back(static_cast<int32_t>(i));
        }
        EXPECT_EQ(got, want) << kernels->name << " n=" << n << " threshold=" << threshold;
      }
    }
  }
}

}  // namespace
}  // namespace simd
}  // namespace offerd
