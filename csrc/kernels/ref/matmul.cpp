#include "core/thread_pool.h"
#include "kernels/ref/ref.h"

namespace infermode::ref {

// Each thread takes a share of the rows of C, or of its columns when there are fewer rows
// than threads (decode).
void matmul_f32(const float* a, const float* b, float* c, const GemmShape& s, float* work,
                int ith, int nth) {
  const bool by_rows = s.m >= nth;
  Range rows = by_rows ? split_range(s.m, ith, nth) : Range{0, s.m};
  Range cols = by_rows ? Range{0, s.n} : split_range(s.n, ith, nth);
  for (int64_t i = rows.begin; i < rows.end; ++i) {
    for (int64_t j = cols.begin; j < cols.end; ++j) {
      double acc = 0.0;
      for (int64_t p = 0; p < s.k; ++p) {
        const float bv = s.b_nk ? b[j * s.ldb + p] : b[p * s.ldb + j];
        acc += double(a[i * s.lda + p]) * double(bv);
      }
      c[i * s.ldc + j] = float(acc);
    }
  }
}

size_t matmul_f32_workspace(const GemmShape&, int) { return 0; }

}  // namespace infermode::ref
