#ifndef OFFERD_CORE_SIMD_H_
#define OFFERD_CORE_SIMD_H_

#include <cstdint>

namespace offerd {
namespace simd {

// The float32 kernels of the request hot path (candidate scoring, retrieval scans), chosen once
// per process from what the CPU offers. Debian's FAISS and our default flags target generic
// x86-64 (SSE2); on a CPU with AVX2 and FMA the AVX2 kernels run 8 lanes with fused
// multiply-adds, and with AVX-512 16 lanes, selected at run time so one binary serves every
// machine.
//
// The implementations may round differently (FMA versus multiply-then-add, lane order in a
// dot product), within a few float32 ulps of the sum of |terms|; each is deterministic.
struct Kernels {
  const char* name;  // "avx512", "avx2" or "generic"

  // y[r] = bias[r] + sum over c in [0, in) with x[c] != 0 of x[c] * columns[c * out + r],
  // for r in [0, out), accumulated in float32 in column order. `columns` is a dense layer's
  // weight matrix transposed ([in, out], one input's weights contiguous); skipping zero inputs
  // (one-hot sections, ReLU outputs) leaves the result unchanged. `y` must not alias `x`.
  void (*dense_columns)(const float* columns, const float* bias, const float* x, int in, int out,
                        float* y);

  // out[i] = <query, rows[i * dim .. i * dim + dim)> for i in [0, n).
  void (*inner_products)(const float* query, const float* rows, int64_t n, int dim, float* out);

  // Writes the indices i in [0, n) with values[i] >= threshold (never a NaN value) to `out`,
  // ascending, and returns how many. `out` must have room for n + 8 entries (the vector
  // kernels store 8 at a time). A scan's top-K keeps only rows that beat its current K-th
  // score; this finds the few that do without a branch per row.
  int64_t (*indices_at_least)(const float* values, int64_t n, float threshold, int32_t* out);
};

// The portable kernels (any x86-64 or other CPU).
const Kernels& Generic();
// The AVX2+FMA kernels, or nullptr when this CPU lacks them.
const Kernels* Avx2();
// The AVX-512 kernels (AVX-512F with AVX2+FMA), or nullptr when this CPU lacks them.
const Kernels* Avx512();
// The widest kernels this CPU runs: Avx512(), else Avx2(), else Generic(). Decided on first
// use; the environment variable OFFERD_SIMD=avx2 or =generic caps the choice.
const Kernels& Best();

}  // namespace simd
}  // namespace offerd

#endif  // OFFERD_CORE_SIMD_H_
