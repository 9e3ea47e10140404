#pragma once
#include "core/tensor.h"

namespace infermode {

// y += a, where a has y's shape or is a [n] row broadcast over y's rows (a bias). float32,
// contiguous. The residual connections and the q/k/v biases of the decoder.
void add(const Tensor& a, Tensor& y, int threads = 0);

}  // namespace infermode
