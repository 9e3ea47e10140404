#pragma once
#include "core/tensor.h"

namespace infermode {

// Attention across sequences at each token position: Chronos-2's group attention (the series of
// one task attend to each other at every time step) and Toto's space-wise layers (the variates of
// one series). For sequence s and token t,
//   out[s, t, h] = softmax_r(q[s, t, h] . k[r, t, h] * scale + key_bias[r, t]) @ v[r, t, h]
// over the sequences r with group[r] == group[s]; an (s, t) that sees no key comes out zero.
// q, k, v, out: float32 [sequences, tokens, heads, head_dim], contiguous;
// group: int64 [sequences] (any ids; members need not be adjacent);
// key_bias: float32 [sequences, tokens] (an additive mask: -inf hides a key) or undefined.
// Scores and softmax in float32, on the attention kernel of this CPU.
void group_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& group,
                     float scale, const Tensor& key_bias, Tensor& out, int threads = 0);

}  // namespace infermode
