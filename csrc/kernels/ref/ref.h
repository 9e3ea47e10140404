#pragma once
// Scalar reference kernels: always built, obviously correct, accumulated in double. Every ISA
// implementation is tested against these.
#include <cstddef>
#include <cstdint>

#include "kernels/dispatch.h"

namespace infermode::ref {

void rms_norm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps);
void matmul_f32(const float* a, const float* b, float* c, const GemmShape& s, float* work,
                int ith, int nth);
size_t matmul_f32_workspace(const GemmShape& s, int nth);
double sum_f32(const float* x, int64_t n);

}  // namespace infermode::ref
