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

// Writes the positions and values of x[first, last)'s non-zero inputs to index/value (room
// for last - first + 8 entries) and returns how many. 8 at a time: compare, then left-pack the
// non-zero lanes with one permutation (no branch on the data-dependent zero pattern, no serial
// chain through the count beyond a popcount).
OFFERD_AVX2 inline int GatherNonZeroAvx2(const float* x, int first, int last, int* index,
                                         float* value) {
  int count = 0;
  for (int c = first; c < last; c += 8) {
    const __m256 xv = last - c >= 8 ? _mm256_loadu_ps(x + c)
                                    : _mm256_maskload_ps(x + c, TailMask(last - c));
    const int nonzero = _mm256_movemask_ps(_mm256_cmp_ps(xv, _mm256_setzero_ps(), _CMP_NEQ_UQ));
    const __m256i lanes =
        _mm256_load_si256(reinterpret_cast<const __m256i*>(kLeftPack.lanes[nonzero]));
    _mm256_storeu_ps(value + count, _mm256_permutevar8x32_ps(xv, lanes));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(index + count),
                        _mm256_add_epi32(_mm256_set1_epi32(c), lanes));
    count += __builtin_popcount(static_cast<unsigned>(nonzero));
  }
  return count;
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
    const int count = GatherNonZeroAvx2(x, first, last, index, value);
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


// AVX-512 (F): the same algorithms 16 lanes wide. dense_columns sums every output in the same
// order as the AVX2 kernel (bias, then the non-zero inputs in order, one FMA each), so the two
// agree bit for bit; inner_products adds its lanes in a different order (a few ulps apart).
#define OFFERD_AVX512 __attribute__((target("avx512f,avx2,fma")))

// See DenseBlockAvx2; `mask` selects the lanes of the layer's partial last vector.
template <int kVectors, bool kMaskLast>
OFFERD_AVX512 inline void DenseBlockAvx512(const float* columns, const float* init,
                                           const int* index, const float* value, int count,
                                           int out, int r0, __mmask16 mask, float* y) {
  __m512 acc[kVectors];
  for (int v = 0; v < kVectors; ++v) {
    acc[v] = kMaskLast && v == kVectors - 1 ? _mm512_maskz_loadu_ps(mask, init + r0 + 16 * v)
                                            : _mm512_loadu_ps(init + r0 + 16 * v);
  }
  for (int i = 0; i < count; ++i) {
    const __m512 xv = _mm512_set1_ps(value[i]);
    const float* column = columns + static_cast<size_t>(index[i]) * out + r0;
    for (int v = 0; v < kVectors; ++v) {
      const __m512 w = kMaskLast && v == kVectors - 1 ? _mm512_maskz_loadu_ps(mask, column + 16 * v)
                                                      : _mm512_loadu_ps(column + 16 * v);
      acc[v] = _mm512_fmadd_ps(xv, w, acc[v]);
    }
  }
  for (int v = 0; v < kVectors; ++v) {
    if (kMaskLast && v == kVectors - 1) {
      _mm512_mask_storeu_ps(y + r0 + 16 * v, mask, acc[v]);
    } else {
      _mm512_storeu_ps(y + r0 + 16 * v, acc[v]);
    }
  }
}

template <bool kMaskLast>
OFFERD_AVX512 inline void DenseBlockAvx512(int vectors, const float* columns, const float* init,
                                           const int* index, const float* value, int count,
                                           int out, int r0, __mmask16 mask, float* y) {
#define OFFERD_BLOCK(n)                                                                   \
  case n:                                                                                 \
    DenseBlockAvx512<n, kMaskLast>(columns, init, index, value, count, out, r0, mask, y); \
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

OFFERD_AVX512 void DenseColumnsAvx512(const float* columns, const float* bias, const float* x,
                                      int in, int out, float* y) {
  alignas(32) int index[kChunk + 8];
  alignas(32) float value[kChunk + 8];
  const int vectors = (out + 15) / 16;
  const bool tail = out % 16 != 0;
  const __mmask16 mask = static_cast<__mmask16>(tail ? (1u << (out % 16)) - 1 : 0xFFFFu);
  // Blocks of at most 8 vectors (128 outputs) in registers, sized evenly.
  const int blocks = (vectors + 7) / 8;
  int first = 0;
  do {
    const int last = in < first + kChunk ? in : first + kChunk;
    const int count = GatherNonZeroAvx2(x, first, last, index, value);
    const float* init = first == 0 ? bias : y;
    int v = 0;
    for (int b = 0; b < blocks; ++b) {
      const int size = (vectors - v) / (blocks - b);
      if (b + 1 == blocks && tail) {
        DenseBlockAvx512<true>(size, columns, init, index, value, count, out, 16 * v, mask, y);
      } else {
        DenseBlockAvx512<false>(size, columns, init, index, value, count, out, 16 * v, mask, y);
      }
      v += size;
    }
    first += kChunk;
  } while (first < in);
}

// The sum of v's 16 lanes. Zero-masked forms throughout: GCC 12 warns (-Wmaybe-uninitialized)
// inside the intrinsics built on _mm512_undefined_ps, _mm512_reduce_add_ps among them.
OFFERD_AVX512 inline float HorizontalSum512(__m512 v) {
  const __m512 high = _mm512_maskz_shuffle_f32x4(0xFFFF, v, v, _MM_SHUFFLE(3, 2, 3, 2));
  const __m512d sum = _mm512_castps_pd(_mm512_add_ps(v, high));
  return HorizontalSum(_mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xF, sum, 0)));
}

OFFERD_AVX512 void InnerProductsAvx512(const float* query, const float* rows, int64_t n, int dim,
                                       float* out) {
  const int full = dim / 16 * 16;
  const int rest = dim - full;
  const __mmask16 mask = static_cast<__mmask16>((1u << rest) - 1);
  int64_t i = 0;
  // Four rows at a time: each query load feeds four independent FMA chains.
  for (; i + 4 <= n; i += 4) {
    const float* r0 = rows + static_cast<size_t>(i) * dim;
    const float* r1 = r0 + dim;
    const float* r2 = r1 + dim;
    const float* r3 = r2 + dim;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(),
           a3 = _mm512_setzero_ps();
    int j = 0;
    for (; j < full; j += 16) {
      const __m512 q = _mm512_loadu_ps(query + j);
      a0 = _mm512_fmadd_ps(q, _mm512_loadu_ps(r0 + j), a0);
      a1 = _mm512_fmadd_ps(q, _mm512_loadu_ps(r1 + j), a1);
      a2 = _mm512_fmadd_ps(q, _mm512_loadu_ps(r2 + j), a2);
      a3 = _mm512_fmadd_ps(q, _mm512_loadu_ps(r3 + j), a3);
    }
    if (rest != 0) {
      const __m512 q = _mm512_maskz_loadu_ps(mask, query + j);
      a0 = _mm512_fmadd_ps(q, _mm512_maskz_loadu_ps(mask, r0 + j), a0);
      a1 = _mm512_fmadd_ps(q, _mm512_maskz_loadu_ps(mask, r1 + j), a1);
      a2 = _mm512_fmadd_ps(q, _mm512_maskz_loadu_ps(mask, r2 + j), a2);
      a3 = _mm512_fmadd_ps(q, _mm512_maskz_loadu_ps(mask, r3 + j), a3);
    }
    out[i] = HorizontalSum512(a0);
    out[i + 1] = HorizontalSum512(a1);
    out[i + 2] = HorizontalSum512(a2);
    out[i + 3] = HorizontalSum512(a3);
  }
  for (; i < n; ++i) {
    const float* row = rows + static_cast<size_t>(i) * dim;
    __m512 a = _mm512_setzero_ps();
    int j = 0;
    for (; j < full; j += 16) {
      a = _mm512_fmadd_ps(_mm512_loadu_ps(query + j), _mm512_loadu_ps(row + j), a);
    }
    if (rest != 0) {
      a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, query + j),
                          _mm512_maskz_loadu_ps(mask, row + j), a);
    }
    out[i] = HorizontalSum512(a);
  }
}

#undef OFFERD_AVX512

#undef OFFERD_AVX2

bool CpuHasAvx2Fma() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

bool CpuHasAvx512() {
  __builtin_cpu_init();
  return CpuHasAvx2Fma() && __builtin_cpu_supports("avx512f");
}

#endif  // OFFERD_HAVE_AVX2_KERNELS

const Kernels kGeneric{"generic", &DenseColumnsGeneric, &InnerProductsGeneric,
                       &IndicesAtLeastGeneric};

#ifdef OFFERD_HAVE_AVX2_KERNELS
const Kernels kAvx2{"avx2", &DenseColumnsAvx2, &InnerProductsAvx2, &IndicesAtLeastAvx2};
// indices_at_least stays 8 lanes wide: its 16-lane form needs a compress store, slow on some
// AVX-512 CPUs, for a scan step that is rarely taken.
const Kernels kAvx512{"avx512", &DenseColumnsAvx512, &InnerProductsAvx512, &IndicesAtLeastAvx2};
#endif

const Kernels& Choose() {
#ifdef OFFERD_HAVE_AVX2_KERNELS
  // OFFERD_SIMD=generic or =avx2 caps the kernels (comparisons; CPUs that slow down under
  // 512-bit work). Other values are ignored.
  const char* forced = std::getenv("OFFERD_SIMD");
  const bool generic = forced != nullptr && std::strcmp(forced, "generic") == 0;
  const bool avx2 = forced != nullptr && std::strcmp(forced, "avx2") == 0;
  if (generic) return kGeneric;
  if (!avx2 && Avx512() != nullptr) return kAvx512;
  if (Avx2() != nullptr) return kAvx2;
#endif
  return kGeneric;
}

}  // namespace

const Kernels& Generic() { return kGeneric; }

const Kernels* Avx2() {
#ifdef OFFERD_HAVE_AVX2_KERNELS
  static const bool supported = CpuHasAvx2Fma();
  if (supported) return &kAvx2;
#endif
  return nullptr;
}

const Kernels* Avx512() {
#ifdef OFFERD_HAVE_AVX2_KERNELS
  static const bool supported = CpuHasAvx512();
  if (supported) return &kAvx512;
#endif
  return nullptr;
}

const Kernels& Best() {
  static const Kernels& best = Choose();
  return best;
}

}  // namespace simd
}  // namespace offerd
