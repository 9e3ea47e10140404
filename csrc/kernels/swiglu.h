#pragma once
#include "core/tensor.h"

namespace infermode {

// out = silu(gate) * up, silu(g) = g / (1 + exp(-g)): the gated activation of Llama's MLP.
// gate, up, out: float32, same shape, contiguous; out may alias gate or up.
void swiglu(const Tensor& gate, const Tensor& up, Tensor& out, int threads = 0);

}  // namespace infermode
