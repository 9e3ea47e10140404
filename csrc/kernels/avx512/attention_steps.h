#pragma once
// The softmax and value steps of attention on AVX-512 (avx512/ files only), shared by the
// one-token kernel (attention.cpp) and the many-token one (attention_blocked.cpp).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/avx512/exp.h"

namespace infermode::avx512 {
namespace {

// Lanes [0, n) of sixteen.
inline __mmask16 mask_upto(int64_t n) {
  return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}

// Turns a row of n scores into unnormalised probabilities, zero from n up to `upto`; returns
// 1 / their sum, or 0 when every key is hidden (the row's output is then zero).
inline float softmax_row(float* sc, int64_t n, int64_t upto) {
  __m512 peak = _mm512_set1_ps(-INFINITY);
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = mask_upto(n - j);
    peak = _mm512_mask_max_ps(peak, m, peak, _mm512_maskz_loadu_ps(m, sc + j));
  }
  const float top1 = _mm512_reduce_max_ps(peak);
  if (!(top1 > -INFINITY)) {
    std::fill(sc, sc + upto, 0.0f);
    return 0.0f;
  }
  const __m512 top = _mm512_set1_ps(top1);
  __m512 total = _mm512_setzero_ps();
  for (int64_t j = 0; j < upto; j += 16) {
    const __mmask16 m = mask_upto(n - j);
    const __m512 e =
        _mm512_maskz_mov_ps(m, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, sc + j), top)));
    _mm512_mask_storeu_ps(sc + j, mask_upto(upto - j), e);
    total = _mm512_add_ps(total, e);
  }
  return 1.0f / _mm512_reduce_add_ps(total);
}

// out[r] = inv[r] * sum_j p[r][j] v[j] for R rows over keys [0, n); p is zero past a row's own
// keys, so the rows can share the loop.
template <int R>
void weigh_values(const float* p, int64_t ld, const float* v, int64_t hd, int64_t n,
                  const float* inv, float* const* out) {
  for (int64_t d = 0; d < hd; d += 64) {
    __mmask16 m[4];
    for (int q4 = 0; q4 < 4; ++q4) m[q4] = mask_upto(hd - d - 16 * q4);
    __m512 acc[R][4];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r)
      for (int q4 = 0; q4 < 4; ++q4) acc[r][q4] = _mm512_setzero_ps();
    const float* vj = v + d;
    for (int64_t j = 0; j < n; ++j, vj += hd) {
      __m512 vv[4];
      for (int q4 = 0; q4 < 4; ++q4) vv[q4] = _mm512_maskz_loadu_ps(m[q4], vj + 16 * q4);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const __m512 pr = _mm512_set1_ps(p[r * ld + j]);
        for (int q4 = 0; q4 < 4; ++q4) acc[r][q4] = _mm512_fmadd_ps(pr, vv[q4], acc[r][q4]);
      }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m512 scale = _mm512_set1_ps(inv[r]);
      for (int q4 = 0; q4 < 4; ++q4)
        _mm512_mask_storeu_ps(out[r] + d + 16 * q4, m[q4], _mm512_mul_ps(acc[r][q4], scale));
    }
  }
}

}  // namespace
}  // namespace infermode::avx512
