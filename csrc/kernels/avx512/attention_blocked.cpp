// The many-token attention kernel (kernels/attention_blocked.h) on AVX-512: scores of eight
// query rows times 32 keys at once (16 accumulators), outputs of four rows over up to 64 floats
// of head_dim (16 accumulators); the softmax and value steps are attention_steps.h's.
#include <immintrin.h>

#include "kernels/attention_blocked.h"
#include "kernels/avx512/attention_steps.h"
#include "kernels/avx512/avx512.h"

namespace infermode::avx512 {
namespace {

struct Micro {
  static constexpr int kScoreRows = 8, kValueRows = 4, kLanes = 16, kColumns = 32;

  // sc[r * ld + j] = (q[r] . k[j]) * scale + key_bias[j] for R rows and keys [0, cols), cols a
  // multiple of 32 within kt's zero padding.
  template <int R>
  static void score_rows(const float* const* q, const float* kt, int64_t ld, int64_t hd,
                         int64_t cols, float scale, const float* key_bias, int64_t keys,
                         float* sc) {
    const __m512 vscale = _mm512_set1_ps(scale);
    for (int64_t j = 0; j < cols; j += 32) {
      __m512 a0[R], a1[R];
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) a0[r] = a1[r] = _mm512_setzero_ps();
      const float* kd = kt + j;
      for (int64_t d = 0; d < hd; ++d, kd += ld) {
        const __m512 k0 = _mm512_loadu_ps(kd), k1 = _mm512_loadu_ps(kd + 16);
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
          const __m512 qv = _mm512_set1_ps(q[r][d]);
          a0[r] = _mm512_fmadd_ps(qv, k0, a0[r]);
          a1[r] = _mm512_fmadd_ps(qv, k1, a1[r]);
        }
      }
      __m512 b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps();
      if (key_bias) {
        b0 = _mm512_maskz_loadu_ps(mask_upto(keys - j), key_bias + j);
        b1 = _mm512_maskz_loadu_ps(mask_upto(keys - j - 16), key_bias + j + 16);
      }
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        _mm512_storeu_ps(sc + r * ld + j, _mm512_add_ps(_mm512_mul_ps(a0[r], vscale), b0));
        _mm512_storeu_ps(sc + r * ld + j + 16, _mm512_add_ps(_mm512_mul_ps(a1[r], vscale), b1));
      }
    }
  }

  static float softmax_row(float* sc, int64_t n, int64_t upto) {
    return avx512::softmax_row(sc, n, upto);
  }
  template <int R>
  static void weigh_values(const float* p, int64_t ld, const float* v, int64_t hd, int64_t n,
                           const float* inv, float* const* out) {
    avx512::weigh_values<R>(p, ld, v, hd, n, inv, out);
  }
};

}  // namespace

void attention_blocked(const float* q, const float* k, const float* v, float* out,
                       const AttentionShape& s, float* scratch, int ith, int nth) {
  blocked_attention<Micro>(q, k, v, out, s, scratch, ith, nth);
}

}  // namespace infermode::avx512
