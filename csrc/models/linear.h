#pragma once
// A weight matrix (out_features, in_features) as a Linear layer holds it: dense float32 or
// bfloat16, borrowed from the caller (a memory-mapped checkpoint), or quantized and repacked
// for the integer kernels at load (owned, shared by copies).
#include <memory>
#include <vector>

#include "core/quant_blocks.h"
#include "core/tensor.h"
#include "kernels/quant_pack.h"

namespace infermode {

struct Linear {
  Tensor dense;
  std::shared_ptr<const PackedMatrix> packed;

  static Linear borrow(const Tensor& w) { return Linear{w, nullptr}; }
  // Several quantized matrices stacked by rows into one (see pack_blocks).
  static Linear pack(const std::vector<QuantView>& parts) {
    return Linear{Tensor(), std::make_shared<PackedMatrix>(pack_blocks(parts))};
  }
  int64_t rows() const { return packed ? packed->rows() : dense.size(0); }
  int64_t cols() const { return packed ? packed->cols() : dense.size(1); }
};

// out = x @ w^T: x float32 [..., cols], out float32 [..., rows].
void linear(const Tensor& x, const Linear& w, Tensor& out, int threads);

}  // namespace infermode
