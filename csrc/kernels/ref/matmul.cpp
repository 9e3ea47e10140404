#include "core/bf16.h"
#include "core/thread_pool.h"
#include "kernels/ref/ref.h"

namespace infermode::ref {
namespace {

float widen(float v) { return v; }
float widen(uint16_t v) { return bf16_to_float(v); }

// Each thread takes a share of the rows of C, or of its columns when there are fewer rows
// than threads (decode).
template <typename W>
void matmul(const float* a, const W* b, float* c, const GemmShape& s, int ith, int nth) {
  const bool by_rows = s.m >= nth;
  Range rows = by_rows ? split_range(s.m, ith, nth) : Range{0, s.m};
  Range cols = by_rows ? Range{0, s.n} : split_range(s.n, ith, nth);
  for (int64_t i = rows.begin; i < rows.end; ++i) {
    for (int64_t j = cols.begin; j < cols.end; ++j) {
      double acc = 0.0;
      for (int64_t p = 0; p < s.k; ++p) {
        const float bv = widen(s.b_nk ? b[j * s.ldb + p] : b[p * s.ldb + j]);
        acc += double(a[i * s.lda + p]) * double(bv);
      }
      c[i * s.ldc + j] = float(acc);
    }
  }
}

}  // namespace

void matmul_f32(const float* a, const float* b, float* c, const GemmShape& s, float*, int ith,
                int nth) {
  matmul(a, b, c, s, ith, nth);
}

void matmul_bf16(const float* a, const uint16_t* b, float* c, const GemmShape& s, float*, int ith,
                 int nth) {
  matmul(a, b, c, s, ith, nth);
}

size_t matmul_f32_workspace(const GemmShape&, int) { return 0; }

}  // namespace infermode::ref
