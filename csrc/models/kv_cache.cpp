#include "models/kv_cache.h"

#include <cstring>

#include "core/error.h"

namespace infermode {

KvCache::KvCache(int64_t layers, int64_t sequences, int64_t kv_heads, int64_t capacity,
                 int64_t head_dim, bool owned)
    : layers_(layers), sequences_(sequences), kv_heads_(kv_heads), capacity_(capacity),
      head_dim_(head_dim) {
  IM_CHECK(layers > 0 && sequences > 0 && kv_heads > 0 && capacity > 0 && head_dim > 0,
           "kv cache: every size must be positive (layers {}, sequences {}, kv_heads {}, "
           "capacity {}, head_dim {})", layers, sequences, kv_heads, capacity, head_dim);
  const Shape shape{layers, sequences, kv_heads, capacity, head_dim};
  k_ = owned ? Tensor::owned(shape, DType::f32) : Tensor::empty(shape, DType::f32);
  v_ = owned ? Tensor::owned(shape, DType::f32) : Tensor::empty(shape, DType::f32);
}

Tensor KvCache::block(const Tensor& all, int64_t layer, int64_t seq) const {
  return all.select(0, layer).select(0, seq);
}

void KvCache::copy_prefix(const KvCache& from, int64_t from_seq, int64_t to_seq,
                          int64_t positions) {
  IM_CHECK(from.layers_ == layers_ && from.kv_heads_ == kv_heads_ && from.head_dim_ == head_dim_,
           "kv cache: cannot copy from a cache of {} layers x {} kv heads x {} head_dim into one "
           "of {} x {} x {}", from.layers_, from.kv_heads_, from.head_dim_, layers_, kv_heads_,
           head_dim_);
  IM_CHECK(from_seq >= 0 && from_seq < from.sequences_ && to_seq >= 0 && to_seq < sequences_,
           "kv cache: sequence {} -> {} is outside the caches' {} and {} sequences", from_seq,
           to_seq, from.sequences_, sequences_);
  IM_CHECK(positions >= 0 && positions <= from.capacity_ && positions <= capacity_,
           "kv cache: {} positions do not fit capacities {} and {}", positions, from.capacity_,
           capacity_);
  for (int64_t l = 0; l < layers_; ++l)
    for (const auto& [src_all, dst_all] : {std::pair{&from.k_, &k_}, {&from.v_, &v_}}) {
      const Tensor src = block(*src_all, l, from_seq), dst = block(*dst_all, l, to_seq);
      for (int64_t g = 0; g < kv_heads_; ++g)
        std::memcpy(dst.data<float>() + g * capacity_ * head_dim_,
                    src.data<float>() + g * from.capacity_ * head_dim_,
                    size_t(positions * head_dim_) * sizeof(float));
    }
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
