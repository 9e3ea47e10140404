#include <immintrin.h>

#include <algorithm>

#include "kernels/avx2/avx2.h"
#include "kernels/avx2/hsum.h"

namespace infermode::avx2 {
// Float sums over blocks of kBlock elements (eight independent chains), added up in double
// between blocks: as accurate as a 4096-element float sum, and fast enough that the benchmarks
// can time it as the read bandwidth even when the data sits in cache.
double sum_f32(const float* x, int64_t n) {
  constexpr int64_t kBlock = 4096;
  double total = 0.0;
  int64_t i = 0;
  for (; i + 64 <= n;) {
    const int64_t end = std::min(n - n % 64, i + kBlock);
    __m256 a[8];
    for (int q = 0; q < 8; ++q) a[q] = _mm256_setzero_ps();
    for (; i < end; i += 64)
      for (int q = 0; q < 8; ++q) a[q] = _mm256_add_ps(a[q], _mm256_loadu_ps(x + i + 8 * q));
    for (int q = 1; q < 8; ++q) a[0] = _mm256_add_ps(a[0], a[q]);
    total += double(hsum(a[0]));
  }
  for (; i < n; ++i) total += x[i];
  return total;
}

}  // namespace infermode::avx2
