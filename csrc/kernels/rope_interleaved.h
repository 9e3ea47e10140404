#pragma once
#include "core/tensor.h"

namespace infermode {

// Rotary position embedding with adjacent pairs (the original RoFormer / rotary-embedding-torch
// convention, Toto's), in place, optionally with an xPos scale. For each row x[t, h, :], pair
// m < half = head_dim / 2 rotates (x[2m], x[2m + 1]) by angle m:
//   x[2m]     = (x[2m] * cos[t, m] - x[2m + 1] * sin[t, m]) * s(2m)
//   x[2m + 1] = (x[2m + 1] * cos[t, m] + x[2m] * sin[t, m]) * s(2m + 1)
// with s(j) = scale[t, j % half] (or its inverse when `inverse`, for keys): the scale table is
// the half-length one repeated, which is how Toto lays out xPos against adjacent pairs.
// scale undefined: s = 1. x: float32 [tokens, heads, head_dim], rows contiguous (row stride may
// exceed heads*head_dim); cos, sin, scale: float32 [tokens, half], contiguous.
// One portable loop: a few multiplies per element beside the projections' GEMMs.
void rope_interleaved(Tensor& x, const Tensor& cos, const Tensor& sin, const Tensor& scale,
                      bool inverse, int threads = 0);

}  // namespace infermode
