#include <algorithm>
#include <cmath>

#include "core/thread_pool.h"
#include "kernels/quant_activations.h"
#include "kernels/quant_pack.h"
#include "kernels/ref/ref.h"

namespace infermode::ref {

void quantize_row(const float* x, const QuantizedRows& out, int64_t row) {
  for (int64_t b = 0; b < out.blocks; ++b) {
    const float* v = x + b * 32;
    float amax = 0.0f;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(v[i]));
    const float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
    int8_t* q = out.q + row * out.cols + b * 32;
    int32_t sum = 0;
    for (int i = 0; i < 32; ++i) {
      q[i] = int8_t(std::nearbyint(v[i] * id));  // the default rounding mode: half to even
      sum += q[i];
    }
    set_block_scale(out, row * out.blocks + b, d, sum);
  }
}

// One output: row r of W against row i of the quantized activations, block by block in the
// order every ISA kernel uses (so they agree to the last bit).
float dot_row(const PackedMatrix& w, const QuantizedRows& x, int64_t i, int64_t r) {
  float acc = 0.0f;
  for (int64_t b = 0; b < x.blocks; ++b) {
    int32_t isum = 0;
    float d = 0.0f, offset = 0.0f;
    for (int p = 0; p < 32; ++p) {
      int q;
      w.code(r, b * 32 + p, &q, &d, &offset);
      if (w.format() == QuantFormat::q4_0) q -= 8;  // the offset, -8 d, kept in the integers
      isum += q * x.q[i * x.cols + b * 32 + p];
    }
    const int64_t k = i * x.blocks + b;
    acc = std::fma(d * x.d[k], float(isum), acc);
    if (w.format() == QuantFormat::q4_1) acc = std::fma(offset, x.s[k], acc);
  }
  return acc;
}

void matmul_quant(const float* a, const PackedMatrix& w, float* c, const QuantGemmShape& s,
                  void* work, int ith, int nth) {
  const QuantizedRows x = quantized_rows(work, s.m, w.cols());
  const Range mine = split_range(s.m, ith, nth);
  for (int64_t i = mine.begin; i < mine.end; ++i) quantize_row(a + i * s.lda, x, i);
  if (nth > 1) barrier();
  const Range rows = split_range(w.rows(), ith, nth);
  for (int64_t i = 0; i < s.m; ++i)
    for (int64_t r = rows.begin; r < rows.end; ++r) c[i * s.ldc + r] = dot_row(w, x, i, r);
}

}  // namespace infermode::ref
