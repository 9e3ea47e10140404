#include "models/kv_cache.h"

#include <cstring>

#include "core/error.h"

namespace infermode {

KvCache::KvCache(int64_t layers, int64_t sequences, int64_t kv_heads, int64_t capacity,
                 int64_t head_dim)
    : layers_(layers), sequences_(sequences), kv_heads_(kv_heads), capacity_(capacity),
      head_dim_(head_dim) {
  IM_CHECK(layers > 0 && sequences > 0 && kv_heads > 0 && capacity > 0 && head_dim > 0,
           "kv cache: every size must be positive (layers {}, sequences {}, kv_heads {}, "
           "capacity {}, head_dim {})", layers, sequences, kv_heads, capacity, head_dim);
  k_ = Tensor::empty({layers, sequences, kv_heads, capacity, head_dim}, DType::f32);
  v_ = Tensor::empty({layers, sequences, kv_heads, capacity, head_dim}, DType::f32);
}

Tensor KvCache::block(const Tensor& all, int64_t layer, int64_t seq) const {
  return all.select(0, layer).select(0, seq);
}

void store_kv(const Tensor& rows, int64_t row, int64_t n, int64_t pos, const Tensor& block) {
  const int64_t kv_heads = block.size(0), capacity = block.size(1), head_dim = block.size(2);
  const float* src = static_cast<const float*>(rows.raw());
  float* dst = static_cast<float*>(block.raw());
  for (int64_t t = 0; t < n; ++t)
    for (int64_t g = 0; g < kv_heads; ++g)
      std::memcpy(dst + (g * capacity + pos + t) * head_dim,
                  src + ((row + t) * kv_heads + g) * head_dim, size_t(head_dim) * sizeof(float));
}

}  // namespace infermode
