#pragma once
#include "core/quant_blocks.h"
#include "core/tensor.h"

namespace infermode {

// out[t, :] = table[ids[t], :]. table: float32 or bfloat16 (widened) [vocab, hidden];
// ids: int32 [tokens];
// out: float32 [tokens, hidden]. An id outside [0, vocab) is a ValueError naming it.
void embedding(const Tensor& table, const Tensor& ids, Tensor& out);
// The same from a table of GGUF blocks (a quantized token embedding), dequantized row by row.
void embedding(const QuantView& table, const Tensor& ids, Tensor& out);

}  // namespace infermode
