#pragma once
// A weight matrix (out_features, in_features) as a Linear layer holds it: dense float32 or
// bfloat16, borrowed from the caller (a memory-mapped checkpoint), optionally with a float32
// copy packed for the blocked GEMM (kernels/matmul_packed.h), or quantized and repacked for the
// integer kernels at load (owned, shared by copies).
#include <memory>
#include <vector>

#include "core/quant_blocks.h"
#include "core/tensor.h"
#include "kernels/matmul_packed.h"
#include "kernels/quant_pack.h"

namespace infermode {

struct Linear {
  Tensor dense;
  std::shared_ptr<const PackedMatrix> packed;
  std::shared_ptr<const PackedF32Matrix> panels;  // dense's float32 packing, when made

  static Linear borrow(const Tensor& w) { return Linear{w, nullptr, nullptr}; }
  // A borrowed float32 weight and its packing for this CPU's GEMM (memory: a second copy).
  static Linear borrow_packed(const Tensor& w) {
    return Linear{w, nullptr, std::make_shared<PackedF32Matrix>(w)};
  }
  // Several quantized matrices stacked by rows into one (see pack_blocks).
  static Linear pack(const std::vector<QuantView>& parts) {
    return Linear{Tensor(), std::make_shared<PackedMatrix>(pack_blocks(parts)), nullptr};
  }
  int64_t rows() const { return packed ? packed->rows() : dense.size(0); }
  int64_t cols() const { return packed ? packed->cols() : dense.size(1); }
};

// out = x @ w^T: x float32 [..., cols], out float32 [..., rows].
void linear(const Tensor& x, const Linear& w, Tensor& out, int threads);

}  // namespace infermode
