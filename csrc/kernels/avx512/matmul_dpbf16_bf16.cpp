// bfloat16 GEMM on AVX512-BF16 (vdpbf16ps): for prefill with bfloat16 weights. A is rounded to
// bfloat16 as it is packed (as PyTorch's bfloat16 matmuls do), products are summed in float32.
// Compiled with -mavx512bf16 (the file name says so); used only when cpuid reports it.
#include <immintrin.h>

#include <cstring>

#include "core/bf16.h"
#include "kernels/avx512/avx512.h"
#include "kernels/avx512/tile_store.h"
#include "kernels/gemm_blocked.h"
#include "kernels/gemm_skinny.h"

namespace infermode::avx512 {
namespace {

uint32_t pair(uint16_t lo, uint16_t hi) { return uint32_t(lo) | (uint32_t(hi) << 16); }

// Packed element: two consecutive k values of one row (A) or column (B) as bfloat16, low half
// first: vdpbf16ps multiplies such pairs and adds both products into a float32 lane.
struct PairPacking {
  static constexpr int MR = 12, NR = 32;
  using Elem = uint32_t;
  static constexpr int64_t kDepth = 2;

  static void pack_a(const float* a, int64_t lda, int64_t i0, int64_t mc, int64_t p0, int64_t kc,
                     uint32_t* ap) {
    const int64_t depth = (kc + 1) / 2;
    for (int64_t ir = 0; ir < mc; ir += MR) {
      const int mr = int(std::min<int64_t>(MR, mc - ir));
      for (int i = 0; i < MR; ++i) {
        const float* src = a + (i0 + ir + i) * lda + p0;
        for (int64_t d = 0; d < depth; ++d) {
          if (i >= mr) {
            ap[d * MR + i] = 0;
            continue;
          }
          const uint16_t lo = float_to_bf16(src[2 * d]);
          const uint16_t hi = 2 * d + 1 < kc ? float_to_bf16(src[2 * d + 1]) : 0;
          ap[d * MR + i] = pair(lo, hi);
        }
      }
      ap += MR * depth;
    }
  }

  template <typename W>
  static void pack_b(const W* b, const GemmShape& s, int64_t p0, int64_t kc, int64_t j0, int nr,
                     uint32_t* bp) {
    static_assert(sizeof(W) == 2, "the bfloat16 GEMM packs bfloat16 weights only");
    const int64_t depth = (kc + 1) / 2;
    for (int64_t d = 0; d < depth; ++d) {
      const int64_t k0 = p0 + 2 * d;
      const bool has_hi = 2 * d + 1 < kc;
      uint32_t* dst = bp + d * NR;
      for (int j = 0; j < NR; ++j) {
        if (j >= nr) {
          dst[j] = 0;
          continue;
        }
        uint16_t lo, hi = 0;
        if (s.b_nk) {
          const W* row = b + (j0 + j) * s.ldb + k0;  // a [n, k] weight: the pair is adjacent
          lo = row[0];
          if (has_hi) hi = row[1];
        } else {
          lo = b[k0 * s.ldb + j0 + j];
          if (has_hi) hi = b[(k0 + 1) * s.ldb + j0 + j];
        }
        dst[j] = pair(lo, hi);
      }
    }
  }
};

// 12 x 32 tile: 24 zmm accumulators; per pair of k values two B loads and twelve broadcasts.
struct PairMicro : PairPacking {
  static constexpr int64_t KC = 512, MC = 12 * MR, NC = 4096;

  static void tile(int64_t depth, const uint32_t* ap, const uint32_t* bp, float* c, int64_t ldc,
                   int mr, int nr, bool accumulate) {
    __m512 c0[MR], c1[MR];
#pragma GCC unroll 12
    for (int i = 0; i < MR; ++i) c0[i] = c1[i] = _mm512_setzero_ps();
    for (int64_t d = 0; d < depth; ++d) {
      const __m512bh b0 = (__m512bh)_mm512_loadu_si512(bp);
      const __m512bh b1 = (__m512bh)_mm512_loadu_si512(bp + 16);
#pragma GCC unroll 12
      for (int i = 0; i < MR; ++i) {
        const __m512bh av = (__m512bh)_mm512_set1_epi32(int(ap[i]));
        c0[i] = _mm512_dpbf16_ps(c0[i], av, b0);
        c1[i] = _mm512_dpbf16_ps(c1[i], av, b1);
      }
      ap += MR;
      bp += NR;
    }
    store_tile<MR>(c0, c1, c, ldc, mr, nr, accumulate);
  }
};

}  // namespace

// Few rows (decode) stay on the widening path: it is bandwidth-bound, and exact in the weights.
bool matmul_bf16_dpbf16(const float* a, const uint16_t* b, float* c, const GemmShape& s,
                        float* work, int ith, int nth) {
  if (s.m <= skinny_rows(s)) return false;
  BlockedGemm<PairMicro>::run(a, b, c, s, work, ith, nth);
  return true;
}

size_t matmul_bf16_dpbf16_workspace(const GemmShape& s, int nth) {
  return BlockedGemm<PairMicro>::workspace_floats(s, nth);
}

}  // namespace infermode::avx512
