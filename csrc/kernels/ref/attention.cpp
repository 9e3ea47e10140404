#include <algorithm>
#include <cmath>

#include "core/thread_pool.h"
#include "kernels/ref/ref.h"

namespace infermode::ref {

// One (token, kv head) pair at a time: the heads of the group read that kv head's keys and
// values; scores in float32 as the reference implementations compute them, sums in double.
void attention(const float* q, const float* k, const float* v, float* out,
               const AttentionShape& s, float* scores, int ith, int nth) {
  const int64_t group = s.heads / s.kv_heads;
  const int64_t context = s.context();
  float* mine = scores + int64_t(ith) * group * context;
  const Range pairs = split_range(s.tokens * s.kv_heads, ith, nth);
  for (int64_t pair = pairs.begin; pair < pairs.end; ++pair) {
    const int64_t t = pair / s.kv_heads, g = pair % s.kv_heads;
    const int64_t n = s.visible(t);
    const float* kg = k + g * s.capacity * s.head_dim;
    const float* vg = v + g * s.capacity * s.head_dim;
    for (int64_t h = g * group; h < (g + 1) * group; ++h) {
      const float* qh = q + t * s.q_stride + h * s.head_dim;
      float* sc = mine + (h - g * group) * context;
      float peak = -INFINITY;
      for (int64_t j = 0; j < n; ++j) {
        double dot = 0.0;
        for (int64_t d = 0; d < s.head_dim; ++d) dot += double(qh[d]) * kg[j * s.head_dim + d];
        sc[j] = float(dot) * s.scale + (s.key_bias ? s.key_bias[j] : 0.0f);
        peak = sc[j] > peak ? sc[j] : peak;
      }
      float* oh = out + (t * s.heads + h) * s.head_dim;
      if (!(peak > -INFINITY)) {  // every key hidden by key_bias
        std::fill(oh, oh + s.head_dim, 0.0f);
        continue;
      }
      double total = 0.0;
      for (int64_t j = 0; j < n; ++j) {
        sc[j] = std::exp(sc[j] - peak);
        total += sc[j];
      }
      for (int64_t d = 0; d < s.head_dim; ++d) {
        double acc = 0.0;
        for (int64_t j = 0; j < n; ++j) acc += double(sc[j]) * vg[j * s.head_dim + d];
        oh[d] = float(acc / total);
      }
    }
  }
}

}  // namespace infermode::ref
