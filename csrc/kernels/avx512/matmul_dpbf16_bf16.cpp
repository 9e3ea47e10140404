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

// float_to_bf16 on sixteen floats (round to nearest even, NaN kept quiet), packed in order.
__m256i round_to_bf16(__m512 v) {
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  const __m512i bias = _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff));
  const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(bits, bias), 16);
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(
      _mm512_and_si512(bits, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
  const __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(0x40));
  return _mm512_cvtepi32_epi16(_mm512_mask_mov_epi32(rounded, nan, quiet));
}

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
        if (i >= mr) {
          for (int64_t d = 0; d < depth; ++d) ap[d * MR + i] = 0;
          continue;
        }
        const float* src = a + (i0 + ir + i) * lda + p0;
        int64_t d = 0;
        for (; 2 * d + 32 <= kc; d += 16) {  // 32 values: 16 pairs, rounded as float_to_bf16
          const __m256i lo = round_to_bf16(_mm512_loadu_ps(src + 2 * d));
          const __m256i hi = round_to_bf16(_mm512_loadu_ps(src + 2 * d + 16));
          alignas(64) uint32_t pairs[16];
          _mm256_store_si256(reinterpret_cast<__m256i*>(pairs), lo);
          _mm256_store_si256(reinterpret_cast<__m256i*>(pairs + 8), hi);
          for (int e = 0; e < 16; ++e) ap[(d + e) * MR + i] = pairs[e];
        }
        for (; d < depth; ++d) {
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
    // A [n, k] weight holds each pair as one 32-bit word (k0 is even): packing is a transpose
    // of 32-bit words, eight by eight through registers; the ragged edges go one by one below.
    int64_t done = 0;  // pairs moved by the block transpose, for rows [0, nr - nr % 8)
    const int full_rows = nr - nr % 8;
    if (s.b_nk && s.ldb % 2 == 0 && p0 % 2 == 0) {
      done = kc / 2 - kc / 2 % 8;
      for (int j = 0; j < full_rows; j += 8)
        for (int64_t d = 0; d < done; d += 8)
          transpose8x8(reinterpret_cast<const float*>(b + (j0 + j) * s.ldb + p0) + d, s.ldb / 2,
                       reinterpret_cast<float*>(bp + d * NR + j), NR);
    }
    for (int64_t d = 0; d < depth; ++d) {
      const int64_t k0 = p0 + 2 * d;
      const bool has_hi = 2 * d + 1 < kc;
      uint32_t* dst = bp + d * NR;
      for (int j = d < done ? full_rows : 0; j < NR; ++j) {
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
