#pragma once
#include "core/tensor.h"

namespace infermode {

// Causal grouped-query attention of one sequence's new tokens over its KV cache:
//   out[t, h] = softmax_j(q[t, h] . k[g, j] * scale) @ v[g, j],  j in [0, first_pos + t],
// g = h / (heads / kv_heads); scores and softmax in float32 (as Hugging Face's eager attention).
// q:    float32 [tokens, heads, head_dim], rows contiguous (row stride >= heads * head_dim);
// k, v: float32 [kv_heads, capacity, head_dim], contiguous, filled up to first_pos + tokens;
// out:  float32 [tokens, heads, head_dim], contiguous.
void attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t first_pos, float scale,
               Tensor& out, int threads = 0);

// Bidirectional attention: every token attends over keys [0, keys) of the block,
//   out[t, h] = softmax_j(q[t, h] . k[g, j] * scale + key_bias[j]) @ v[g, j],
// key_bias: float32 [keys] (an additive mask: -inf hides a key) or undefined for none; a token
// that sees no key comes out zero. Other arguments as above.
void attention_bidirectional(const Tensor& q, const Tensor& k, const Tensor& v, int64_t keys,
                             float scale, const Tensor& key_bias, Tensor& out, int threads = 0);

}  // namespace infermode
