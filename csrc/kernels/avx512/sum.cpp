#include <immintrin.h>

#include <algorithm>

#include "kernels/avx512/avx512.h"

namespace infermode::avx512 {

// Float sums over blocks of kBlock elements (eight independent chains, so the adds never wait),
// added up in double between blocks: the rounding error stays that of a 4096-element float sum
// while the loop runs at the speed loads arrive, even from L2/L3. Benchmarks time this kernel
// as the machine's read bandwidth, so it must not be compute-bound anywhere.
double sum_f32(const float* x, int64_t n) {
  constexpr int64_t kBlock = 4096;
  double total = 0.0;
  int64_t i = 0;
  for (; i + 128 <= n;) {
    const int64_t end = std::min(n - n % 128, i + kBlock);
    __m512 a[8];
    for (int q = 0; q < 8; ++q) a[q] = _mm512_setzero_ps();
    for (; i < end; i += 128)
      for (int q = 0; q < 8; ++q) a[q] = _mm512_add_ps(a[q], _mm512_loadu_ps(x + i + 16 * q));
    for (int q = 1; q < 8; ++q) a[0] = _mm512_add_ps(a[0], a[q]);
    total += double(_mm512_reduce_add_ps(a[0]));
  }
  for (; i < n; ++i) total += x[i];
  return total;
}

}  // namespace infermode::avx512
