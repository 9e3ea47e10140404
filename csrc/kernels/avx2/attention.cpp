#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "core/thread_pool.h"
#include "kernels/avx2/avx2.h"
#include "kernels/avx2/exp.h"
#include "kernels/avx2/hsum.h"

namespace infermode::avx2 {
namespace {

float dot(const float* a, const float* b, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t d = 0;
  for (; d + 8 <= n; d += 8)
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + d), _mm256_loadu_ps(b + d), acc);
  float total = hsum(acc);
  for (; d < n; ++d) total += a[d] * b[d];
  return total;
}

}  // namespace

// As ref::attention, vectorised eight lanes wide (see avx512/attention.cpp); eight or more query
// tokens go to the blocked kernel.
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
      float peak = -INFINITY;
      for (int64_t j = 0; j < n; ++j) {
        sc[j] = dot(qh, kg + j * hd, hd) * s.scale + (s.key_bias ? s.key_bias[j] : 0.0f);
        peak = sc[j] > peak ? sc[j] : peak;
      }
      float* oh = out + (t * s.heads + h) * hd;
      if (!(peak > -INFINITY)) {  // every key hidden by key_bias
        std::fill(oh, oh + hd, 0.0f);
        continue;
      }
      const __m256 top = _mm256_set1_ps(peak);
      __m256 total8 = _mm256_setzero_ps();
      int64_t j = 0;
      for (; j + 8 <= n; j += 8) {
        const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(sc + j), top));
        _mm256_storeu_ps(sc + j, e);
        total8 = _mm256_add_ps(total8, e);
      }
      float total = hsum(total8);
      for (; j < n; ++j) {
        sc[j] = std::exp(sc[j] - peak);
        total += sc[j];
      }
      const float inv = 1.0f / total;
      int64_t d = 0;
      for (; d + 32 <= hd; d += 32) {
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                         _mm256_setzero_ps()};
        for (int64_t i = 0; i < n; ++i) {
          const __m256 p = _mm256_set1_ps(sc[i]);
          const float* vi = vg + i * hd + d;
          for (int q4 = 0; q4 < 4; ++q4)
            acc[q4] = _mm256_fmadd_ps(p, _mm256_loadu_ps(vi + 8 * q4), acc[q4]);
        }
        for (int q4 = 0; q4 < 4; ++q4)
          _mm256_storeu_ps(oh + d + 8 * q4, _mm256_mul_ps(acc[q4], _mm256_set1_ps(inv)));
      }
      for (; d < hd; ++d) {
        float acc = 0.0f;
        for (int64_t i = 0; i < n; ++i) acc += sc[i] * vg[i * hd + d];
        oh[d] = acc * inv;
      }
    }
  }
}

}  // namespace infermode::avx2
