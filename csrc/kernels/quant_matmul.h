#pragma once
#include "core/tensor.h"
#include "kernels/quant_pack.h"

namespace infermode {

// out = a @ w^T for a quantized weight w (rows = output features): a Linear layer.
//   a:   float32 [..., w.cols()], rows contiguous (a 2-d a may have a row stride >= cols);
//   out: float32 [..., w.rows()], contiguous, not overlapping a.
// Rows of a are quantized once per call, per 32-value block (quant_activations.h), and
// multiplied with integer dot products; threads split w's row groups.
void matmul(const Tensor& a, const PackedMatrix& w, Tensor& out, int threads = 0);

}  // namespace infermode
