#pragma once
// AVX2 + FMA + F16C kernels. Compiled with those flags only; called only after cpuid says
// the CPU and the OS support them.
#include <cstddef>
#include <cstdint>

#include "kernels/dispatch.h"

namespace infermode::avx2 {

void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps);
void matmul_f32(const float* a, const float* b, float* c, const GemmShape& s, float* work,
                int ith, int nth);
size_t matmul_f32_workspace(const GemmShape& s, int nth);
int64_t matmul_f32_packed_floats(int64_t n, int64_t k);
void matmul_f32_pack(const float* b, const GemmShape& s, float* packed, int ith, int nth);
void matmul_f32_packed(const float* a, const float* b, const float* packed, float* c,
                       const GemmShape& s, float* work, int ith, int nth);
size_t matmul_f32_packed_workspace(const GemmShape& s, int nth);
void matmul_bf16(const float* a, const uint16_t* b, float* c, const GemmShape& s, float* work,
                 int ith, int nth);
double sum_f32(const float* x, int64_t n);
void attention(const float* q, const float* k, const float* v, float* out,
               const AttentionShape& s, float* scores, int ith, int nth);
// In attention_blocked.cpp: the same for many query tokens (attention() hands them over).
void attention_blocked(const float* q, const float* k, const float* v, float* out,
                       const AttentionShape& s, float* scratch, int ith, int nth);
void swiglu(const float* g, const float* u, float* y, int64_t n);

void matmul_quant(const float* a, const PackedMatrix& w, float* c, const QuantGemmShape& s,
                  void* work, int ith, int nth);

}  // namespace infermode::avx2
