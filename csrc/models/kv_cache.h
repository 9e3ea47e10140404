#pragma once
// Keys and values of every layer for a batch of sequences, allocated once per generation call for
// prompt + max_new_tokens positions. Layout per (layer, sequence): [kv_heads, capacity, head_dim],
// so attention reads one kv head's keys as one contiguous block.
#include <cstdint>

#include "core/tensor.h"

namespace infermode {

class KvCache {
 public:
  // The memory comes from the thread's arena inside the inference mode (a cache that lives for
  // one call), unless `owned`: then from the heap, for a cache that outlives the call making it.
  KvCache(int64_t layers, int64_t sequences, int64_t kv_heads, int64_t capacity, int64_t head_dim,
          bool owned = false);

  // (kv_heads, capacity, head_dim) views of one layer and sequence.
  Tensor keys(int64_t layer, int64_t seq) const { return block(k_, layer, seq); }
  Tensor values(int64_t layer, int64_t seq) const { return block(v_, layer, seq); }

  int64_t capacity() const { return capacity_; }
  int64_t sequences() const { return sequences_; }

  // Positions [0, positions) of sequence `from_seq` of `from`, every layer, copied into sequence
  // `to_seq` of this cache: a prefix encoded once and continued several ways (a forecaster's
  // sample paths). The caches must match in layers, kv heads and head_dim.
  void copy_prefix(const KvCache& from, int64_t from_seq, int64_t to_seq, int64_t positions);

 private:
  Tensor block(const Tensor& all, int64_t layer, int64_t seq) const;

  int64_t layers_, sequences_, kv_heads_, capacity_, head_dim_;
  Tensor k_;  // (layers, sequences, kv_heads, capacity, head_dim)
  Tensor v_;
};

// Writes rows [row, row + n) of `rows` ((rows, kv_heads * head_dim) float32, contiguous) into a
// cache block ((kv_heads, capacity, head_dim)) at positions [pos, pos + n).
void store_kv(const Tensor& rows, int64_t row, int64_t n, int64_t pos, const Tensor& block);

}  // namespace infermode
