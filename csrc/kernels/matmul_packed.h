#pragma once
// A float32 Linear weight [n, k] packed once, at load, into the panels this CPU's blocked GEMM
// reads. A prefill-sized product then streams the panels instead of transposing the weight on
// every call, which costs as much as the multiply itself when the product has few rows (a
// forecaster's 37 tokens). The packing is an owned copy of the weight, beside it: the plain
// weight still serves few-row products (decode streams it once, unpacked) and any ISA other
// than the one that packed.
#include "core/cpu_features.h"
#include "core/tensor.h"

namespace infermode {

class PackedF32Matrix {
 public:
  // w: float32 [n, k], contiguous; borrowed, so it must outlive this. Packs for the active ISA's
  // GEMM; where that has no packed path, holds the weight alone.
  explicit PackedF32Matrix(const Tensor& w, int threads = 0);

  const Tensor& weight() const { return weight_; }
  // True when `isa` multiplies with this packing.
  bool packed_for(Isa isa) const { return packed_.defined() && isa == isa_; }
  const float* panels() const { return packed_.data<float>(); }

 private:
  Tensor weight_;
  Tensor packed_;  // float32 [packed_floats(n, k)], or undefined
  Isa isa_ = Isa::ref;
};

// out = a @ w^T as matmul(a, w.weight().T, out) computes it, with the packing where it applies.
void matmul(const Tensor& a, const PackedF32Matrix& w, Tensor& out, int threads = 0);

}  // namespace infermode
