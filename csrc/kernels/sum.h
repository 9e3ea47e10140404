#pragma once
#include "core/tensor.h"

namespace infermode {

// Sum of every element of a contiguous float32 tensor: float32 within blocks of a few thousand
// elements, float64 across blocks and threads.
// It reads each byte once and does almost no arithmetic, so the benchmarks time it to measure
// the machine's read bandwidth with the same threads as the kernels they judge.
double sum(const Tensor& x, int threads = 0);

}  // namespace infermode
