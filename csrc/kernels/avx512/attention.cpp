#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "core/thread_pool.h"
#include "kernels/avx512/attention_steps.h"
#include "kernels/avx512/avx512.h"

namespace infermode::avx512 {
namespace {

// Sixteen vectors' lane sums, lane i holding v[i]'s: pairs of registers are interleaved and
// added three times over (within 128-bit lanes by 32 and 64 bits, then across them), 48
// instructions where sixteen separate reductions take about 130.
__m512 lane_sums(const __m512* v) {
  __m512 w[8], x[4];
  for (int i = 0; i < 8; ++i)
    w[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]),
                         _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 4; ++i) {
    const __m512d a = _mm512_castps_pd(w[2 * i]), b = _mm512_castps_pd(w[2 * i + 1]);
    x[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
                         _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
  }
  // x[i] holds, in each 128-bit lane L, that lane's sums of v[4i .. 4i + 3].
  const __m512 z01 = _mm512_add_ps(_mm512_shuffle_f32x4(x[0], x[1], 0x88),
                                   _mm512_shuffle_f32x4(x[0], x[1], 0xDD));
  const __m512 z23 = _mm512_add_ps(_mm512_shuffle_f32x4(x[2], x[3], 0x88),
                                   _mm512_shuffle_f32x4(x[2], x[3], 0xDD));
  return _mm512_add_ps(_mm512_shuffle_f32x4(z01, z23, 0x88), _mm512_shuffle_f32x4(z01, z23, 0xDD));
}

float dot(const float* a, const float* b, int64_t n) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t d = 0; d < n; d += 16) {
    const __mmask16 m = mask_upto(n - d);
    acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + d), _mm512_maskz_loadu_ps(m, b + d), acc);
  }
  return _mm512_reduce_add_ps(acc);
}

// sc[j] = (q . k[j]) * scale + key_bias[j] for keys [0, n). Sixteen keys at a time, each key's
// products kept in one register over head_dim and the sixteen reduced together (lane_sums);
// the last n % 16 keys one by one.
void key_scores(const float* q, const float* k, int64_t hd, int64_t n, float scale,
                const float* key_bias, float* sc) {
  const __m512 vscale = _mm512_set1_ps(scale);
  int64_t j0 = 0;
  for (; j0 + 16 <= n; j0 += 16) {
    __m512 part[16];
#pragma GCC unroll 16
    for (int jj = 0; jj < 16; ++jj) part[jj] = _mm512_setzero_ps();
    for (int64_t d = 0; d < hd; d += 16) {
      const __mmask16 m = mask_upto(hd - d);
      const __m512 qd = _mm512_maskz_loadu_ps(m, q + d);
      const float* kd = k + j0 * hd + d;
#pragma GCC unroll 16
      for (int jj = 0; jj < 16; ++jj)
        part[jj] = _mm512_fmadd_ps(qd, _mm512_maskz_loadu_ps(m, kd + jj * hd), part[jj]);
    }
    __m512 s = _mm512_mul_ps(lane_sums(part), vscale);
    if (key_bias) s = _mm512_add_ps(s, _mm512_loadu_ps(key_bias + j0));
    _mm512_storeu_ps(sc + j0, s);
  }
  for (int64_t j = j0; j < n; ++j)
    sc[j] = dot(q, k + j * hd, hd) * scale + (key_bias ? key_bias[j] : 0.0f);
}

}  // namespace

// As ref::attention, vectorised: scores are dot products over head_dim, then the softmax and the
// probability-weighted value rows of attention_steps.h, one query row at a time.
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
      key_scores(qh, kg, hd, n, s.scale, s.key_bias, sc);
      const float inv = softmax_row(sc, n, n);
      float* oh = out + (t * s.heads + h) * hd;
      if (inv == 0.0f) {  // every key hidden by key_bias
        std::fill(oh, oh + hd, 0.0f);
        continue;
      }
      weigh_values<1>(sc, context, vg, hd, n, &inv, &oh);
    }
  }
}

}  // namespace infermode::avx512
