#include <immintrin.h>

#include <cmath>

#include "kernels/avx512/avx512.h"

namespace infermode::avx512 {

void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps) {
  const __mmask16 tail = __mmask16((1u << (dim % 16)) - 1);
  const int64_t dv = dim - dim % 16;
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= dv; i += 32) {
      const __m512 v0 = _mm512_loadu_ps(xr + i), v1 = _mm512_loadu_ps(xr + i + 16);
      s0 = _mm512_fmadd_ps(v0, v0, s0);
      s1 = _mm512_fmadd_ps(v1, v1, s1);
    }
    for (; i < dv; i += 16) {
      const __m512 v = _mm512_loadu_ps(xr + i);
      s0 = _mm512_fmadd_ps(v, v, s0);
    }
    if (tail) {
      const __m512 v = _mm512_maskz_loadu_ps(tail, xr + dv);
      s1 = _mm512_fmadd_ps(v, v, s1);
    }
    const float ss = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
    // As in Hugging Face's LlamaRMSNorm: normalise first, then scale by the weight.
    const __m512 inv = _mm512_set1_ps(1.0f / std::sqrt(ss / float(dim) + eps));
    for (i = 0; i < dv; i += 16) {
      const __m512 v = _mm512_mul_ps(_mm512_loadu_ps(xr + i), inv);
      _mm512_storeu_ps(yr + i, _mm512_mul_ps(v, _mm512_loadu_ps(w + i)));
    }
    if (tail) {
      const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, xr + dv), inv);
      _mm512_mask_storeu_ps(yr + dv, tail, _mm512_mul_ps(v, _mm512_maskz_loadu_ps(tail, w + dv)));
    }
  }
}

}  // namespace infermode::avx512
