#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "core/thread_pool.h"
#include "kernels/avx512/avx512.h"
#include "kernels/avx512/exp.h"

namespace infermode::avx512 {
namespace {

__mmask16 mask_upto(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1); }

float dot(const float* a, const float* b, int64_t n) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t d = 0; d < n; d += 16) {
    const __mmask16 m = mask_upto(n - d);
    acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + d), _mm512_maskz_loadu_ps(m, b + d), acc);
  }
  return _mm512_reduce_add_ps(acc);
}

}  // namespace

// As ref::attention, vectorised: scores are dot products over head_dim, the softmax runs sixteen
// scores at a time with exp16, and the output accumulates probability-weighted value rows.
// Eight or more query tokens go to the blocked kernel, which reads each key and value row once
// for several query rows.
void attention(const float* q, const float* k, const float* v, float* out,
               const AttentionShape& s, float* scores, int ith, int nth) {
  if (s.tokens >= 8) return attention_blocked(q, k, v, out, s, scores, ith, nth);
  const int64_t group = s.heads / s.kv_heads;
  const int64_t context = s.context();
  const int64_t hd = s.head_dim;
  float* mine = scores + int64_t(ith) * s.scratch_floats();
  const int64_t per = s.heads_per_share(nth);
  const Range shares = split_range(s.tokens * s.heads / per, ith, nth);
  for (int64_t share = shares.begin; share < shares.end; ++share) {
    const int64_t t = share * per / s.heads, h0 = share * per % s.heads, g = h0 / group;
    const int64_t n = s.visible(t);
    const float* kg = k + g * s.capacity * hd;
    const float* vg = v + g * s.capacity * hd;
    for (int64_t h = h0; h < h0 + per; ++h) {
      const float* qh = q + t * s.q_stride + h * hd;
      float* sc = mine + (h - h0) * context;
      __m512 peak = _mm512_set1_ps(-INFINITY);
      for (int64_t j = 0; j < n; ++j)
        sc[j] = dot(qh, kg + j * hd, hd) * s.scale + (s.key_bias ? s.key_bias[j] : 0.0f);
      for (int64_t j = 0; j < n; j += 16) {
        const __mmask16 m = mask_upto(n - j);
        peak = _mm512_mask_max_ps(peak, m, peak, _mm512_maskz_loadu_ps(m, sc + j));
      }
      const float top1 = _mm512_reduce_max_ps(peak);
      float* oh = out + (t * s.heads + h) * hd;
      if (!(top1 > -INFINITY)) {  // every key hidden by key_bias
        std::fill(oh, oh + hd, 0.0f);
        continue;
      }
      const __m512 top = _mm512_set1_ps(top1);
      __m512 total = _mm512_setzero_ps();
      for (int64_t j = 0; j < n; j += 16) {
        const __mmask16 m = mask_upto(n - j);
        const __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, sc + j), top));
        _mm512_mask_storeu_ps(sc + j, m, e);
        total = _mm512_add_ps(total, _mm512_maskz_mov_ps(m, e));
      }
      const float inv = 1.0f / _mm512_reduce_add_ps(total);
      for (int64_t d = 0; d < hd; d += 64) {
        // Up to four zmm of the output row stay in registers while every value row passes.
        const int64_t w = hd - d < 64 ? hd - d : 64;
        __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                         _mm512_setzero_ps()};
        __mmask16 m[4];
        for (int q4 = 0; q4 < 4; ++q4) m[q4] = mask_upto(w - 16 * q4 > 0 ? w - 16 * q4 : 0);
        for (int64_t j = 0; j < n; ++j) {
          const __m512 p = _mm512_set1_ps(sc[j]);
          const float* vj = vg + j * hd + d;
          for (int q4 = 0; q4 < 4; ++q4)
            acc[q4] = _mm512_fmadd_ps(p, _mm512_maskz_loadu_ps(m[q4], vj + 16 * q4), acc[q4]);
        }
        const __m512 scale = _mm512_set1_ps(inv);
        for (int q4 = 0; q4 < 4; ++q4)
          _mm512_mask_storeu_ps(oh + d + 16 * q4, m[q4], _mm512_mul_ps(acc[q4], scale));
      }
    }
  }
}

}  // namespace infermode::avx512
