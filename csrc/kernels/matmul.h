#pragma once
#include "core/tensor.h"
#include "kernels/dispatch.h"

namespace infermode {

// out = a @ b in float32.
//   a:   [..., k], rows contiguous (a 2-d a may have a row stride >= k);
//   b:   [k, n], either row-major ([k, n] rows) or column-major (a transposed [n, k] Linear
//        weight, as `w.T` gives in NumPy and torch: no copy is made either way);
//   out: [..., n], contiguous, not overlapping a or b.
// One-row and few-row products (decode) stream b once without packing; larger ones run a
// cache-blocked GEMM that packs panels of a and b into scratch memory (the thread's arena inside
// the inference mode). threads = 0 uses the default count.
void matmul(const Tensor& a, const Tensor& b, Tensor& out, int threads = 0);

// The checks matmul(a, b, out) makes (ValueError/TypeError naming the argument) and the shape of
// the product they describe.
GemmShape matmul_shape(const Tensor& a, const Tensor& b, const Tensor& out);

// The threads a product of shape s runs on: one below ~2e5 flops, where starting a parallel
// region costs more than it saves; otherwise `threads` (0: the default).
int matmul_threads(const GemmShape& s, int threads);

}  // namespace infermode
