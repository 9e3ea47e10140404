#include <algorithm>
#include <cmath>

#include "core/thread_pool.h"
#include "kernels/ref/ref.h"

namespace infermode::ref {

// One share (see heads_per_share) at a time: the heads of a kv head's group read its keys and
// values together; scores in float32 as the reference implementations compute them, sums in double.
void attention(const float* q, const float* k, const float* v, float* out,
               const AttentionShape& s, float* scores, int ith, int nth) {
  const int64_t group = s.heads / s.kv_heads;
  const int64_t context = s.context();
  float* mine = scores + int64_t(ith) * s.scratch_floats();
  const int64_t per = s.heads_per_share(nth);
  const Range shares = split_range(s.tokens * s.heads / per, ith, nth);
  for (int64_t share = shares.begin; share < shares.end; ++share) {
    const int64_t t = share * per / s.heads, h0 = share * per % s.heads, g = h0 / group;
    const int64_t n = s.visible(t);
    const float* kg = k + g * s.capacity * s.head_dim;
    const float* vg = v + g * s.capacity * s.head_dim;
    for (int64_t h = h0; h < h0 + per; ++h) {
      const float* qh = q + t * s.q_stride + h * s.head_dim;
      float* sc = mine + (h - h0) * context;
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
