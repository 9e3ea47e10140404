#pragma once
#include "core/tensor.h"

namespace infermode {

// y[r, :] = x[r, :] * rsqrt(mean(x[r, :]^2) + eps) * weight, accumulated in float32 or wider
// whatever the storage. x and y: float32 [..., dim], contiguous; weight: float32 [dim].
// y may be x (in place). threads = 0 uses the default count.
void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& y, int threads = 0);

}  // namespace infermode
