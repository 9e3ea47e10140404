#pragma once
// Scalar reference kernels: always built, obviously correct, accumulated in double. Every ISA
// implementation is tested against these.
#include <cstddef>
#include <cstdint>

#include "kernels/dispatch.h"
#include "kernels/quant_activations.h"

namespace infermode::ref {

void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps);
void matmul_f32(const float* a, const float* b, float* c, const GemmShape& s, float* work,
                int ith, int nth);
size_t matmul_f32_workspace(const GemmShape& s, int nth);
void matmul_bf16(const float* a, const uint16_t* b, float* c, const GemmShape& s, float* work,
                 int ith, int nth);
double sum_f32(const float* x, int64_t n);
void rope(float* x, const float* cos, const float* sin, int64_t tokens, int64_t heads,
          int64_t head_dim, int64_t row_stride);
void attention(const float* q, const float* k, const float* v, float* out,
               const AttentionShape& s, float* scores, int ith, int nth);
void swiglu(const float* g, const float* u, float* y, int64_t n);
void add(const float* a, float* y, int64_t rows, int64_t cols, int64_t a_stride);
void matmul_quant(const float* a, const PackedMatrix& w, float* c, const QuantGemmShape& s,
                  void* work, int ith, int nth);
// Quantizes one row of activations into row `row` of `out` (see quant_activations.h).
void quantize_row(const float* x, const QuantizedRows& out, int64_t row);

}  // namespace infermode::ref
