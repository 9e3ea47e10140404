#include <immintrin.h>

#include <algorithm>

#include "core/thread_pool.h"
#include "kernels/avx2/avx2.h"
#include "kernels/avx2/hsum.h"
#include "kernels/gemm_blocked.h"
#include "kernels/gemm_skinny.h"

namespace infermode::avx2 {
namespace {

// How many rows of a [k, n] B ahead the skinny kernel prefetches.
constexpr int64_t kPrefetchRows = 2;

// Lanes [0, n) on: for maskload / maskstore.
__m256i mask_upto(int64_t n) {
  const int v = int(n < 0 ? 0 : (n > 8 ? 8 : n));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(v), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Four horizontal sums at once: {sum(a0), sum(a1), sum(a2), sum(a3)}, one shuffle tree instead
// of four.
__m128 reduce4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
  const __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
  return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

// 6 x 16 tile: 12 ymm accumulators, 2 for B, 1 for the broadcast of A.
struct Micro : F32Packing<6, 16> {
  static constexpr int MR = 6, NR = 16;
  static constexpr int64_t KC = 256, MC = 24 * MR, NC = 4096;

  static void tile(int64_t kc, const float* ap, const float* bp, float* c, int64_t ldc, int mr,
                   int nr, bool accumulate) {
    __m256 c0[MR], c1[MR];
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) c0[i] = c1[i] = _mm256_setzero_ps();
    for (int64_t p = 0; p < kc; ++p) {
      const __m256 b0 = _mm256_loadu_ps(bp), b1 = _mm256_loadu_ps(bp + 8);
#pragma GCC unroll 6
      for (int i = 0; i < MR; ++i) {
        const __m256 av = _mm256_broadcast_ss(ap + i);
        c0[i] = _mm256_fmadd_ps(av, b0, c0[i]);
        c1[i] = _mm256_fmadd_ps(av, b1, c1[i]);
      }
      ap += MR;
      bp += NR;
    }
    const __m256i m0 = mask_upto(nr), m1 = mask_upto(nr - 8);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      if (i >= mr) break;
      float* ci = c + i * ldc;
      __m256 v0 = c0[i], v1 = c1[i];
      if (accumulate) {
        v0 = _mm256_add_ps(v0, _mm256_maskload_ps(ci, m0));
        v1 = _mm256_add_ps(v1, _mm256_maskload_ps(ci + 8, m1));
      }
      _mm256_maskstore_ps(ci, m0, v0);
      _mm256_maskstore_ps(ci + 8, m1, v1);
    }
  }
};

// The skinny path's kernels (see gemm_skinny.h): 3 rows of A per pass.
struct Skinny {
  static constexpr int kGroup = 3;
  static constexpr int64_t kTileCols = 1024;  // [k, n] B: columns per tile

  // B stored [n, k]: dot products of MI A rows with four B rows at a time.
  template <int MI, typename W>
  static void dot_rows4(const float* a, int64_t lda, const W* b, int64_t ldb, float* c,
                        int64_t ldc, int64_t k) {
    __m256 acc[MI][4];
    for (int i = 0; i < MI; ++i)
      for (int r = 0; r < 4; ++r) acc[i][r] = _mm256_setzero_ps();
    const int64_t kv = k - k % 8;
    const W* b0 = b;
    const W* b1 = b + ldb;
    const W* b2 = b + 2 * ldb;
    const W* b3 = b + 3 * ldb;
    // The next four rows usually follow these in memory: start pulling them into L2 while these
    // are summed, so DRAM always has requests in flight (the hardware prefetcher alone stops at
    // page ends). L2, not L1: a block of four long rows would not survive in L1 until its turn.
    // Two steps read 16 elements of each of the four rows: sizeof(W) cache lines in all.
    const char* next = reinterpret_cast<const char*>(b + 4 * ldb);
    for (int64_t p = 0; p < kv; p += 8) {
      if (p % 16 == 0)
        for (int line = 0; line < int(sizeof(W)); ++line)
          _mm_prefetch(next + 4 * int64_t(sizeof(W)) * p + 64 * line, _MM_HINT_T1);
      const __m256 w0 = load8(b0 + p), w1 = load8(b1 + p);
      const __m256 w2 = load8(b2 + p), w3 = load8(b3 + p);
      for (int i = 0; i < MI; ++i) {
        const __m256 x = _mm256_loadu_ps(a + i * lda + p);
        acc[i][0] = _mm256_fmadd_ps(x, w0, acc[i][0]);
        acc[i][1] = _mm256_fmadd_ps(x, w1, acc[i][1]);
        acc[i][2] = _mm256_fmadd_ps(x, w2, acc[i][2]);
        acc[i][3] = _mm256_fmadd_ps(x, w3, acc[i][3]);
      }
    }
    for (int i = 0; i < MI; ++i) {
      const float* ai = a + i * lda;
      alignas(16) float tail[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      for (int r = 0; r < 4; ++r)
        for (int64_t p = kv; p < k; ++p) tail[r] += ai[p] * widen(b[r * ldb + p]);
      const __m128 sums = reduce4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]);
      _mm_storeu_ps(c + i * ldc, _mm_add_ps(sums, _mm_load_ps(tail)));
    }
  }

  template <int MI, typename W>
  static void dot_rows1(const float* a, int64_t lda, const W* b, float* c, int64_t ldc,
                        int64_t k) {
    __m256 acc[MI];
    for (int i = 0; i < MI; ++i) acc[i] = _mm256_setzero_ps();
    const int64_t kv = k - k % 8;
    for (int64_t p = 0; p < kv; p += 8) {
      const __m256 w = load8(b + p);
      for (int i = 0; i < MI; ++i)
        acc[i] = _mm256_fmadd_ps(_mm256_loadu_ps(a + i * lda + p), w, acc[i]);
    }
    for (int i = 0; i < MI; ++i) {
      float t = hsum(acc[i]);
      for (int64_t p = kv; p < k; ++p) t += a[i * lda + p] * widen(b[p]);
      c[i * ldc] = t;
    }
  }

  // B stored [k, n]: C[i, j0:j0+width] = sum_p a[i, p] * B[p, j0:j0+width]. The partial sums live
  // in C (kTileCols wide, so they stay in L1) and every row of B is read as one long stream;
  // narrow register-only tiles would touch a new page of B for every 128 bytes they read.
  template <int MI, typename W>
  static void axpy_tile(const float* a, int64_t lda, const W* b, int64_t ldb, float* c,
                        int64_t ldc, int64_t k, int64_t width) {
    const int64_t wv = width - width % 8;
    for (int i = 0; i < MI; ++i)
      for (int64_t v = 0; v < width; ++v) c[i * ldc + v] = 0.0f;
    for (int64_t p = 0; p < k; ++p) {
      const W* bp = b + p * ldb;
      const char* ahead = reinterpret_cast<const char*>(bp + kPrefetchRows * ldb);
      __m256 x[MI];
      for (int i = 0; i < MI; ++i) x[i] = _mm256_set1_ps(a[i * lda + p]);
      for (int64_t v = 0; v < wv; v += 8) {
        if (v % 16 == 0) _mm_prefetch(ahead + int64_t(sizeof(W)) * v, _MM_HINT_T0);
        const __m256 w = load8(bp + v);
        for (int i = 0; i < MI; ++i) {
          float* ci = c + i * ldc + v;
          _mm256_storeu_ps(ci, _mm256_fmadd_ps(x[i], w, _mm256_loadu_ps(ci)));
        }
      }
      for (int64_t v = wv; v < width; ++v)
        for (int i = 0; i < MI; ++i) c[i * ldc + v] += a[i * lda + p] * widen(bp[v]);
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

}  // namespace infermode::avx2
