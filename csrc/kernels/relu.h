#pragma once
#include "core/tensor.h"

namespace infermode {

// x = max(x, 0) in place: the activation of Chronos-2's (T5's) MLP. x: float32, contiguous.
// NaN stays NaN, as torch.relu keeps it.
void relu(Tensor& x, int threads = 0);

}  // namespace infermode
