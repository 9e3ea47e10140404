#include <immintrin.h>

#include <algorithm>

#include "core/thread_pool.h"
#include "kernels/avx512/avx512.h"
#include "kernels/avx512/tile_store.h"
#include "kernels/gemm_blocked.h"
#include "kernels/gemm_skinny.h"

namespace infermode::avx512 {
namespace {

// How many rows of a [k, n] B ahead the skinny kernel prefetches.
constexpr int64_t kPrefetchRows = 2;

__mmask16 mask_upto(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1); }

// Sixteen B elements as float32: float32 as they are, bfloat16 widened by a shift.
__m512 load16(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
__m512 load16(const uint16_t* p, __mmask16 m) {
  const __m256i h = _mm256_maskz_loadu_epi16(m, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// 12 x 32 tile: 24 zmm accumulators + 2 for B; A is broadcast from memory. A partial tile (the
// last rows of a product) multiplies only its real rows: 37 rows cost 37 rows, not 48.
struct Micro : F32Packing<12, 32> {
  static constexpr int MR = 12, NR = 32;
  static constexpr int64_t KC = 256, MC = 12 * MR, NC = 4096;

  template <int R>
  static void tile_rows(int64_t kc, const float* ap, const float* bp, float* c, int64_t ldc,
                        int nr, bool accumulate) {
    __m512 c0[R], c1[R];
#pragma GCC unroll 12
    for (int i = 0; i < R; ++i) c0[i] = c1[i] = _mm512_setzero_ps();
    for (int64_t p = 0; p < kc; ++p) {
      const __m512 b0 = _mm512_loadu_ps(bp), b1 = _mm512_loadu_ps(bp + 16);
#pragma GCC unroll 12
      for (int i = 0; i < R; ++i) {
        const __m512 av = _mm512_set1_ps(ap[i]);
        c0[i] = _mm512_fmadd_ps(av, b0, c0[i]);
        c1[i] = _mm512_fmadd_ps(av, b1, c1[i]);
      }
      ap += MR;
      bp += NR;
    }
    store_tile<R>(c0, c1, c, ldc, R, nr, accumulate);
  }

  template <int R = MR>
  static void tile(int64_t kc, const float* ap, const float* bp, float* c, int64_t ldc, int mr,
                   int nr, bool accumulate) {
    if constexpr (R > 1) {
      if (mr < R) {
        tile<R - 1>(kc, ap, bp, c, ldc, mr, nr, accumulate);
        return;
      }
    }
    tile_rows<R>(kc, ap, bp, c, ldc, nr, accumulate);
  }
};

// Four horizontal sums at once: {sum(a0), sum(a1), sum(a2), sum(a3)}. Reducing each vector on
// its own costs a chain of shuffles per row, a fifth of the time when rows are short.
__m128 reduce4(__m512 a0, __m512 a1, __m512 a2, __m512 a3) {
  const __m512 s01 = _mm512_add_ps(_mm512_unpacklo_ps(a0, a1), _mm512_unpackhi_ps(a0, a1));
  const __m512 s23 = _mm512_add_ps(_mm512_unpacklo_ps(a2, a3), _mm512_unpackhi_ps(a2, a3));
  // Per 128-bit lane: {a0, a1, a2, a3} partial sums.
  const __m512 s = _mm512_add_ps(_mm512_shuffle_ps(s01, s23, _MM_SHUFFLE(1, 0, 1, 0)),
                                 _mm512_shuffle_ps(s01, s23, _MM_SHUFFLE(3, 2, 3, 2)));
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(s), _mm512_extractf32x8_ps(s, 1));
  return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

// The skinny path's kernels (see gemm_skinny.h): 4 rows of A per pass.
struct Skinny {
  static constexpr int kGroup = 4;
  static constexpr int64_t kTileCols = 1024;  // [k, n] B: columns per tile

  // B stored [n, k] (a Linear weight): every output is a dot product of an A row with a B row.
  // Four B rows are read together so each load of A feeds four FMAs; MI rows of A at a time.
  template <int MI, typename W>
  static void dot_rows4(const float* a, int64_t lda, const W* b, int64_t ldb, float* c,
                        int64_t ldc, int64_t k) {
    __m512 acc[MI][4];
    for (int i = 0; i < MI; ++i)
      for (int r = 0; r < 4; ++r) acc[i][r] = _mm512_setzero_ps();
    const int64_t kv = k - k % 16;
    const W* b0 = b;
    const W* b1 = b + ldb;
    const W* b2 = b + 2 * ldb;
    const W* b3 = b + 3 * ldb;
    // The next four rows usually follow these in memory: start pulling them into L2 while these
    // are summed, so DRAM always has requests in flight (the hardware prefetcher alone stops at
    // page ends). L2, not L1: a block of four long rows would not survive in L1 until its turn.
    // One step reads 16 elements of each of the four rows: sizeof(W) cache lines in all.
    const char* next = reinterpret_cast<const char*>(b + 4 * ldb);
    auto step = [&](int64_t p, __mmask16 m) {
      for (int line = 0; line < int(sizeof(W)); ++line)
        _mm_prefetch(next + 4 * int64_t(sizeof(W)) * p + 64 * line, _MM_HINT_T1);
      const __m512 w0 = load16(b0 + p, m), w1 = load16(b1 + p, m);
      const __m512 w2 = load16(b2 + p, m), w3 = load16(b3 + p, m);
      for (int i = 0; i < MI; ++i) {
        const __m512 x = _mm512_maskz_loadu_ps(m, a + i * lda + p);
        acc[i][0] = _mm512_fmadd_ps(x, w0, acc[i][0]);
        acc[i][1] = _mm512_fmadd_ps(x, w1, acc[i][1]);
        acc[i][2] = _mm512_fmadd_ps(x, w2, acc[i][2]);
        acc[i][3] = _mm512_fmadd_ps(x, w3, acc[i][3]);
      }
    };
    int64_t p = 0;
    for (; p + 32 <= kv; p += 32) {
      step(p, 0xFFFF);
      step(p + 16, 0xFFFF);
    }
    for (; p < kv; p += 16) step(p, 0xFFFF);
    if (kv < k) step(kv, mask_upto(k - kv));
    for (int i = 0; i < MI; ++i)
      _mm_storeu_ps(c + i * ldc, reduce4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]));
  }

  template <int MI, typename W>
  static void dot_rows1(const float* a, int64_t lda, const W* b, float* c, int64_t ldc,
                        int64_t k) {
    __m512 acc[MI];
    for (int i = 0; i < MI; ++i) acc[i] = _mm512_setzero_ps();
    for (int64_t p = 0; p < k; p += 16) {
      const __mmask16 m = mask_upto(k - p);
      const __m512 w = load16(b + p, m);
      for (int i = 0; i < MI; ++i)
        acc[i] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i * lda + p), w, acc[i]);
    }
    for (int i = 0; i < MI; ++i) c[i * ldc] = _mm512_reduce_add_ps(acc[i]);
  }

  // B stored [k, n]: C[i, j0:j0+width] = sum_p a[i, p] * B[p, j0:j0+width]. The partial sums live
  // in C (kTileCols wide, so they stay in L1) and every row of B is read as one long stream;
  // narrow register-only tiles would touch a new page of B for every 256 bytes they read.
  template <int MI, typename W>
  static void axpy_tile(const float* a, int64_t lda, const W* b, int64_t ldb, float* c,
                        int64_t ldc, int64_t k, int64_t width) {
    const int64_t wv = width - width % 16;
    const __mmask16 tail = mask_upto(width - wv);
    for (int i = 0; i < MI; ++i)
      for (int64_t v = 0; v < width; ++v) c[i * ldc + v] = 0.0f;
    for (int64_t p = 0; p < k; ++p) {
      const W* bp = b + p * ldb;
      const char* ahead = reinterpret_cast<const char*>(bp + kPrefetchRows * ldb);
      __m512 x[MI];
      for (int i = 0; i < MI; ++i) x[i] = _mm512_set1_ps(a[i * lda + p]);
      for (int64_t v = 0; v < wv; v += 16) {
        _mm_prefetch(ahead + int64_t(sizeof(W)) * v, _MM_HINT_T0);
        const __m512 w = load16(bp + v, 0xFFFF);
        for (int i = 0; i < MI; ++i) {
          float* ci = c + i * ldc + v;
          _mm512_storeu_ps(ci, _mm512_fmadd_ps(x[i], w, _mm512_loadu_ps(ci)));
        }
      }
      if (tail) {
        const __m512 w = load16(bp + wv, tail);
        for (int i = 0; i < MI; ++i) {
          float* ci = c + i * ldc + wv;
          const __m512 sum = _mm512_fmadd_ps(x[i], w, _mm512_maskz_loadu_ps(tail, ci));
          _mm512_mask_storeu_ps(ci, tail, sum);
        }
      }
    }
  }
};

template <typename W>
void matmul(const float* a, const W* b, float* c, const GemmShape& s, float* work, int ith,
            int nth) {
  if (s.m <= skinny_rows(s)) {
    skinny_run<Skinny>(a, b, c, s, ith, nth);
    return;
  }
  BlockedGemm<Micro>::run(a, b, c, s, work, ith, nth);
}

}  // namespace

void matmul_f32(const float* a, const float* b, float* c, const GemmShape& s, float* work,
                int ith, int nth) {
  matmul(a, b, c, s, work, ith, nth);
}

void matmul_bf16(const float* a, const uint16_t* b, float* c, const GemmShape& s, float* work,
                 int ith, int nth) {
  matmul(a, b, c, s, work, ith, nth);
}

void matmul_bf16_dot(const float* a, const uint16_t* b, float* c, const GemmShape& s,
                     float* work, int ith, int nth) {
  if (!matmul_bf16_dpbf16(a, b, c, s, work, ith, nth)) matmul(a, b, c, s, work, ith, nth);
}

size_t matmul_bf16_dot_workspace(const GemmShape& s, int nth) {
  return s.m <= skinny_rows(s) ? 0 : matmul_bf16_dpbf16_workspace(s, nth);
}

size_t matmul_f32_workspace(const GemmShape& s, int nth) {
  return s.m <= skinny_rows(s) ? 0 : BlockedGemm<Micro>::workspace_floats(s, nth);
}

int64_t matmul_f32_packed_floats(int64_t n, int64_t k) {
  return BlockedGemm<Micro>::packed_floats(n, k);
}

void matmul_f32_pack(const float* b, const GemmShape& s, float* packed, int ith, int nth) {
  BlockedGemm<Micro>::pack_whole(b, s, packed, ith, nth);
}

void matmul_f32_packed(const float* a, const float* b, const float* packed, float* c,
                       const GemmShape& s, float* work, int ith, int nth) {
  if (s.m <= skinny_rows(s)) {
    skinny_run<Skinny>(a, b, c, s, ith, nth);
    return;
  }
  BlockedGemm<Micro>::run_packed(a, packed, c, s, work, ith, nth);
}

size_t matmul_f32_packed_workspace(const GemmShape& s, int nth) {
  return s.m <= skinny_rows(s) ? 0 : BlockedGemm<Micro>::packed_workspace_floats(s, nth);
}

}  // namespace infermode::avx512
