// The many-token attention kernel (kernels/attention_blocked.h) on AVX2: scores of six query
// rows times 16 keys at once (12 of the 16 ymm registers), outputs of two rows over up to 32
// floats of head_dim (8 accumulators), exp eight lanes at a time.
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "kernels/attention_blocked.h"
#include "kernels/avx2/avx2.h"
#include "kernels/avx2/exp.h"
#include "kernels/avx2/hsum.h"

namespace infermode::avx2 {
namespace {

// Lanes [0, n) of eight: all ones where the lane is below n (maskload/maskstore's mask).
__m256i lanes_below(int64_t n) {
  const __m256i index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const int32_t limit = int32_t(std::clamp<int64_t>(n, 0, 8));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(limit), index);
}

float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

struct Micro {
  static constexpr int kScoreRows = 6, kValueRows = 2, kLanes = 8, kColumns = 16;

  template <int R>
  static void score_rows(const float* const* q, const float* kt, int64_t ld, int64_t hd,
                         int64_t cols, float scale, const float* key_bias, int64_t keys,
                         float* sc) {
    const __m256 vscale = _mm256_set1_ps(scale);
    for (int64_t j = 0; j < cols; j += 16) {
      __m256 a0[R], a1[R];
#pragma GCC unroll 6
      for (int r = 0; r < R; ++r) a0[r] = a1[r] = _mm256_setzero_ps();
      const float* kd = kt + j;
      for (int64_t d = 0; d < hd; ++d, kd += ld) {
        const __m256 k0 = _mm256_loadu_ps(kd), k1 = _mm256_loadu_ps(kd + 8);
#pragma GCC unroll 6
        for (int r = 0; r < R; ++r) {
          const __m256 qv = _mm256_broadcast_ss(q[r] + d);
          a0[r] = _mm256_fmadd_ps(qv, k0, a0[r]);
          a1[r] = _mm256_fmadd_ps(qv, k1, a1[r]);
        }
      }
      __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
      if (key_bias) {
        b0 = _mm256_maskload_ps(key_bias + j, lanes_below(keys - j));
        b1 = _mm256_maskload_ps(key_bias + j + 8, lanes_below(keys - j - 8));
      }
#pragma GCC unroll 6
      for (int r = 0; r < R; ++r) {
        _mm256_storeu_ps(sc + r * ld + j, _mm256_add_ps(_mm256_mul_ps(a0[r], vscale), b0));
        _mm256_storeu_ps(sc + r * ld + j + 8, _mm256_add_ps(_mm256_mul_ps(a1[r], vscale), b1));
      }
    }
  }

  static float softmax_row(float* sc, int64_t n, int64_t upto) {
    const __m256 hidden = _mm256_set1_ps(-INFINITY);
    __m256 peak = hidden;
    for (int64_t j = 0; j < n; j += 8) {
      const __m256 m = _mm256_castsi256_ps(lanes_below(n - j));
      peak = _mm256_max_ps(peak, _mm256_blendv_ps(hidden, _mm256_loadu_ps(sc + j), m));
    }
    const float top1 = hmax(peak);
    if (!(top1 > -INFINITY)) {
      std::fill(sc, sc + upto, 0.0f);
      return 0.0f;
    }
    const __m256 top = _mm256_set1_ps(top1);
    __m256 total = _mm256_setzero_ps();
    for (int64_t j = 0; j < upto; j += 8) {
      const __m256 m = _mm256_castsi256_ps(lanes_below(n - j));
      const __m256 e = _mm256_and_ps(m, exp8(_mm256_sub_ps(_mm256_loadu_ps(sc + j), top)));
      _mm256_storeu_ps(sc + j, e);
      total = _mm256_add_ps(total, e);
    }
    return 1.0f / hsum(total);
  }

  template <int R>
  static void weigh_values(const float* p, int64_t ld, const float* v, int64_t hd, int64_t n,
                           const float* inv, float* const* out) {
    for (int64_t d = 0; d < hd; d += 32) {
      __m256i m[4];
      for (int q4 = 0; q4 < 4; ++q4) m[q4] = lanes_below(hd - d - 8 * q4);
      __m256 acc[R][4];
      for (int r = 0; r < R; ++r)
        for (int q4 = 0; q4 < 4; ++q4) acc[r][q4] = _mm256_setzero_ps();
      const float* vj = v + d;
      for (int64_t j = 0; j < n; ++j, vj += hd) {
        __m256 vv[4];
        for (int q4 = 0; q4 < 4; ++q4) vv[q4] = _mm256_maskload_ps(vj + 8 * q4, m[q4]);
        for (int r = 0; r < R; ++r) {
          const __m256 pr = _mm256_broadcast_ss(p + r * ld + j);
          for (int q4 = 0; q4 < 4; ++q4) acc[r][q4] = _mm256_fmadd_ps(pr, vv[q4], acc[r][q4]);
        }
      }
      for (int r = 0; r < R; ++r) {
        const __m256 scale = _mm256_set1_ps(inv[r]);
        for (int q4 = 0; q4 < 4; ++q4)
          _mm256_maskstore_ps(out[r] + d + 8 * q4, m[q4], _mm256_mul_ps(acc[r][q4], scale));
      }
    }
  }
};

}  // namespace

void attention_blocked(const float* q, const float* k, const float* v, float* out,
                       const AttentionShape& s, float* scratch, int ith, int nth) {
  blocked_attention<Micro>(q, k, v, out, s, scratch, ith, nth);
}

}  // namespace infermode::avx2
