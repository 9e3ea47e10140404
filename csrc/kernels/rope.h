#pragma once
#include "core/tensor.h"

namespace infermode {

// Rotary position embedding, in place, in Hugging Face's half-split convention: for each row
// x[t, h, :] with half = head_dim / 2 and angle index i < half,
//   x[i]        = x[i] * cos[t, i] - x[i + half] * sin[t, i]
//   x[i + half] = x[i + half] * cos[t, i] + x[i] * sin[t, i],
// where cos/sin[t] hold the angles of token t's position (models/rope_angles.h makes them).
// x: float32 [tokens, heads, head_dim], rows contiguous (row stride may exceed heads*head_dim);
// cos, sin: float32 [tokens, half], contiguous.
void rope(Tensor& x, const Tensor& cos, const Tensor& sin, int threads = 0);

}  // namespace infermode
