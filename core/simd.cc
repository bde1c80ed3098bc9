#include "core/simd.h"

#include <cstddef>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define OFFERD_HAVE_AVX2_KERNELS 1
#endif

namespace offerd {
namespace simd {
namespace {

// Inputs per pass of dense_columns: the non-zero inputs of a pass are gathered on the stack.
constexpr int kChunk = 512;

void DenseColumnsGeneric(const float* columns, const float* bias, const float* x, int in, int out,
                         float* y) {
  for (int r = 0; r < out; ++r) y[r] = bias[r];
  for (int c = 0; c < in; ++c) {
    const float xc = x[c];
    if (xc == 0.0f) continue;
    const float* column = columns + static_cast<size_t>(c) * out;
    for (int r = 0; r < out; ++r) y[r] += xc * column[r];
  }
}

void InnerProductsGeneric(const float* query, const float* rows, int64_t n, int dim, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    const float* row = rows + static_cast<size_t>(i) * dim;
    // Four partial sums: independent chains the CPU can overlap.
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int j = 0;
    for (; j + 4 <= dim; j += 4) {
      s0 += query[j] * row[j];
      s1 += query[j + 1] * row[j + 1];
      s2 += query[j + 2] * row[j + 2];
      s3 += query[j + 3] * row[j + 3];
    }
    for (; j < dim; ++j) s0 += query[j] * row[j];
    out[i] = (s0 + s1) + (s2 + s3);
  }
}

int64_t IndicesAtLeastGeneric(const float* values, int64_t n, float threshold, int32_t* out) {
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) {
    out[count] = static_cast<int32_t>(i);
    count += values[i] >= threshold;
  }
  return count;
}

#ifdef OFFERD_HAVE_AVX2_KERNELS

#define OFFERD_AVX2 __attribute__((target("avx2,fma")))

// For each 8-bit mask of non-zero lanes, the lanes in order, then zeros: the permutation
// that packs a vector's selected lanes to its front.
struct LeftPackTable {
  alignas(32) int lanes[256][8];
  constexpr LeftPackTable() : lanes() {
    for (int mask = 0; mask < 256; ++mask) {
      int at = 0;
      for (int lane = 0; lane < 8; ++lane) {
        if (mask & (1 << lane)) lanes[mask][at++] = lane;
      }
      while (at < 8) lanes[mask][at++] = 0;
    }
  }
};
constexpr LeftPackTable kLeftPack;

// Lanes [0, count) of a vector load mask.
OFFERD_AVX2 inline __m256i TailMask(int count) {
  alignas(32) static const int kLanes[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kLanes + 8 - count));
}

// Outputs [r0, r0 + 8 * kVectors) of dense_columns over the gathered non-zero inputs, the
// sums held in registers for the whole pass (kVectors independent FMA chains). `init` holds
// the starting sums (bias or the previous pass's y). With kMaskLast the last vector is the
// layer's partial tail, loaded and stored through `mask` (nothing past a column's end is read).
template <int kVectors, bool kMaskLast>
OFFERD_AVX2 inline void DenseBlockAvx2(const float* columns, const float* init, const int* index,
                                       const float* value, int count, int out, int r0,
                                       __m256i mask, float* y) {
  __m256 acc[kVectors];
  for (int v = 0; v < kVectors; ++v) {
    acc[v] = kMaskLast && v == kVectors - 1 ? _mm256_maskload_ps(init + r0 + 8 * v, mask)
                                            : _mm256_loadu_ps(init + r0 + 8 * v);
  }
  for (int i = 0; i < count; ++i) {
    const __m256 xv = _mm256_set1_ps(value[i]);
    const float* column = columns + static_cast<size_t>(index[i]) * out + r0;
    for (int v = 0; v < kVectors; ++v) {
      const __m256 w = kMaskLast && v == kVectors - 1 ? _mm256_maskload_ps(column + 8 * v, mask)
                                                      : _mm256_loadu_ps(column + 8 * v);
      acc[v] = _mm256_fmadd_ps(xv, w, acc[v]);
    }
  }
  for (int v = 0; v < kVectors; ++v) {
    if (kMaskLast && v == kVectors - 1) {
      _mm256_maskstore_ps(y + r0 + 8 * v, mask, acc[v]);
    } else {
      _mm256_storeu_ps(y + r0 + 8 * v, acc[v]);
    }
  }
}

template <bool kMaskLast>
OFFERD_AVX2 inline void DenseBlockAvx2(int vectors, const float* columns, const float* init,
                                       const int* index, const float* value, int count, int out,
                                       int r0, __m256i mask, float* y) {
#define OFFERD_BLOCK(n)                                                                 \
  case n:                                                                               \
    DenseBlockAvx2<n, kMaskLast>(columns, init, index, value, count, out, r0, mask, y); \
    break;
  switch (vectors) {
    OFFERD_BLOCK(1)
    OFFERD_BLOCK(2)
    OFFERD_BLOCK(3)
    OFFERD_BLOCK(4)
    OFFERD_BLOCK(5)
    OFFERD_BLOCK(6)
    OFFERD_BLOCK(7)
    OFFERD_BLOCK(8)
    default:
      break;
  }
#undef OFFERD_BLOCK
}

OFFERD_AVX2 void DenseColumnsAvx2(const float* columns, const float* bias, const float* x, int in,
                                  int out, float* y) {
  // Room for a full vector stored at the last gathered position.
  alignas(32) int index[kChunk + 8];
  alignas(32) float value[kChunk + 8];
  const int vectors = (out + 7) / 8;
  const bool tail = out % 8 != 0;
  const __m256i mask = TailMask(tail ? out % 8 : 8);
  // Blocks of at most 8 vectors (8 sums, the broadcast input and a load fit the 16 registers),
  // sized evenly so that every block has enough independent chains to hide the FMA latency.
  const int blocks = (vectors + 7) / 8;
  // Passes over kChunk inputs at a time; a layer with no inputs still gets its bias.
  int first = 0;
  do {
    const int last = in < first + kChunk ? in : first + kChunk;
    // Gather the non-zero inputs 8 at a time: compare, then left-pack the non-zero lanes with
    // one permutation (no branch on the data-dependent zero pattern, no serial chain through
    // the count beyond a popcount).
    int count = 0;
    for (int c = first; c < last; c += 8) {
      const __m256 xv = last - c >= 8 ? _mm256_loadu_ps(x + c)
                                      : _mm256_maskload_ps(x + c, TailMask(last - c));
      const int nonzero =
          _mm256_movemask_ps(_mm256_cmp_ps(xv, _mm256_setzero_ps(), _CMP_NEQ_UQ));
      const __m256i lanes =
          _mm256_load_si256(reinterpret_cast<const __m256i*>(kLeftPack.lanes[nonzero]));
      _mm256_storeu_ps(value + count, _mm256_permutevar8x32_ps(xv, lanes));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(index + count),
                          _mm256_add_epi32(_mm256_set1_epi32(c), lanes));
      count += __builtin_popcount(static_cast<unsigned>(nonzero));
    }
    const float* init = first == 0 ? bias : y;
    int v = 0;
    for (int b = 0; b < blocks; ++b) {
      const int size = (vectors - v) / (blocks - b);
      if (b + 1 == blocks && tail) {
        DenseBlockAvx2<true>(size, columns, init, index, value, count, out, 8 * v, mask, y);
      } else {
        DenseBlockAvx2<false>(size, columns, init, index, value, count, out, 8 * v, mask, y);
      }
      v += size;
    }
    first += kChunk;
  } while (first < in);
}

OFFERD_AVX2 int64_t IndicesAtLeastAvx2(const float* values, int64_t n, float threshold,
                                        int32_t* out) {
  const __m256 limit = _mm256_set1_ps(threshold);
  int64_t count = 0;
  for (int64_t i = 0; i < n; i += 8) {
    const int64_t rest = n - i;
    int selected;
    if (rest >= 8) {
      selected = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(values + i), limit, _CMP_GE_OQ));
    } else {
      const __m256 v = _mm256_maskload_ps(values + i, TailMask(static_cast<int>(rest)));
      selected = _mm256_movemask_ps(_mm256_cmp_ps(v, limit, _CMP_GE_OQ)) & ((1 << rest) - 1);
    }
    if (selected == 0) continue;  // the common case once a scan's threshold has risen
    const __m256i lanes =
        _mm256_load_si256(reinterpret_cast<const __m256i*>(kLeftPack.lanes[selected]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + count),
                        _mm256_add_epi32(_mm256_set1_epi32(static_cast<int32_t>(i)), lanes));
    count += __builtin_popcount(static_cast<unsigned>(selected));
  }
  return count;
}

OFFERD_AVX2 inline float HorizontalSum(__m256 v) {
  const __m128 pair = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 quad = _mm_add_ps(pair, _mm_movehl_ps(pair, pair));
  return _mm_cvtss_f32(_mm_add_ss(quad, _mm_shuffle_ps(quad, quad, 1)));
}

OFFERD_AVX2 void InnerProductsAvx2(const float* query, const float* rows, int64_t n, int dim,
                                   float* out) {
  const int full = dim / 8 * 8;
  const int rest = dim - full;
  const __m256i mask = TailMask(rest == 0 ? 8 : rest);
  int64_t i = 0;
  // Four rows at a time: each query load feeds four independent FMA chains.
  for (; i + 4 <= n; i += 4) {
    const float* r0 = rows + static_cast<size_t>(i) * dim;
    const float* r1 = r0 + dim;
    const float* r2 = r1 + dim;
    const float* r3 = r2 + dim;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
           a3 = _mm256_setzero_ps();
    int j = 0;
    for (; j < full; j += 8) {
      const __m256 q = _mm256_loadu_ps(query + j);
      a0 = _mm256_fmadd_ps(q, _mm256_loadu_ps(r0 + j), a0);
      a1 = _mm256_fmadd_ps(q, _mm256_loadu_ps(r1 + j), a1);
      a2 = _mm256_fmadd_ps(q, _mm256_loadu_ps(r2 + j), a2);
      a3 = _mm256_fmadd_ps(q, _mm256_loadu_ps(r3 + j), a3);
    }
    if (rest != 0) {
      const __m256 q = _mm256_maskload_ps(query + j, mask);
      a0 = _mm256_fmadd_ps(q, _mm256_maskload_ps(r0 + j, mask), a0);
      a1 = _mm256_fmadd_ps(q, _mm256_maskload_ps(r1 + j, mask), a1);
      a2 = _mm256_fmadd_ps(q, _mm256_maskload_ps(r2 + j, mask), a2);
      a3 = _mm256_fmadd_ps(q, _mm256_maskload_ps(r3 + j, mask), a3);
    }
    out[i] = HorizontalSum(a0);
    out[i + 1] = HorizontalSum(a1);
    out[i + 2] = HorizontalSum(a2);
    out[i + 3] = HorizontalSum(a3);
  }
  for (; i < n; ++i) {
    const float* row = rows + static_cast<size_t>(i) * dim;
    __m256 a = _mm256_setzero_ps();
    int j = 0;
    for (; j < full; j += 8) {
      a = _mm256_fmadd_ps(_mm256_loadu_ps(query + j), _mm256_loadu_ps(row + j), a);
    }
    if (rest != 0) {
      a = _mm256_fmadd_ps(_mm256_maskload_ps(query + j, mask), _mm256_maskload_ps(row + j, mask),
                          a);
    }
    out[i] = HorizontalSum(a);
  }
}

#undef OFFERD_AVX2

bool CpuHasAvx2Fma() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

#endif  // OFFERD_HAVE_AVX2_KERNELS

const Kernels kGeneric{"generic", &DenseColumnsGeneric, &InnerProductsGeneric,
                       &IndicesAtLeastGeneric};

const Kernels& Choose() {
#ifdef OFFERD_HAVE_AVX2_KERNELS
  static const Kernels kAvx2{"avx2", &DenseColumnsAvx2, &InnerProductsAvx2, &IndicesAtLeastAvx2};
  // OFFERD_SIMD=generic forces the portable kernels (benchmarks compare the two in one run).
  const char* forced = std::getenv("OFFERD_SIMD");
  if (forced != nullptr && std::strcmp(forced, "generic") == 0) return kGeneric;
  if (CpuHasAvx2Fma()) return kAvx2;
#endif
  return kGeneric;
}

}  // namespace

const Kernels& Generic() { return kGeneric; }

const Kernels& Best() {
  static const Kernels& best = Choose();
  return best;
}

}  // namespace simd
}  // namespace offerd
