#include <immintrin.h>

#include <cmath>

#include "kernels/avx2/avx2.h"
#include "kernels/avx2/hsum.h"

namespace infermode::avx2 {
void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps) {
  const int64_t dv = dim - dim % 8;
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= dv; i += 16) {
      const __m256 v0 = _mm256_loadu_ps(xr + i), v1 = _mm256_loadu_ps(xr + i + 8);
      s0 = _mm256_fmadd_ps(v0, v0, s0);
      s1 = _mm256_fmadd_ps(v1, v1, s1);
    }
    for (; i < dv; i += 8) {
      const __m256 v = _mm256_loadu_ps(xr + i);
      s0 = _mm256_fmadd_ps(v, v, s0);
    }
    float ss = hsum(_mm256_add_ps(s0, s1));
    for (; i < dim; ++i) ss += xr[i] * xr[i];
    // As in Hugging Face's LlamaRMSNorm: normalise first, then scale by the weight.
    const float inv = 1.0f / std::sqrt(ss / float(dim) + eps);
    const __m256 vinv = _mm256_set1_ps(inv);
    for (i = 0; i < dv; i += 8) {
      const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(xr + i), vinv);
      _mm256_storeu_ps(yr + i, _mm256_mul_ps(v, _mm256_loadu_ps(w + i)));
    }
    for (; i < dim; ++i) yr[i] = (xr[i] * inv) * w[i];
  }
}

}  // namespace infermode::avx2
