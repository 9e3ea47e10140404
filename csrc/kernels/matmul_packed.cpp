#include "kernels/matmul_packed.h"

#include "core/scratch.h"
#include "core/thread_pool.h"
#include "kernels/dispatch.h"
#include "kernels/matmul.h"
#include "kernels/validate.h"

namespace infermode {
namespace {

// The shape of x @ w^T for a [n, k] weight: B is w's transpose, column-major.
GemmShape weight_shape(const Tensor& w) {
  GemmShape s{};
  s.n = w.size(0);
  s.k = w.size(1);
  s.ldb = s.k;
  s.b_nk = true;
  return s;
}

}  // namespace

PackedF32Matrix::PackedF32Matrix(const Tensor& w, int threads) : weight_(w) {
  check_dtype("PackedF32Matrix", "w", w, DType::f32);
  IM_CHECK(w.ndim() == 2, "PackedF32Matrix: w must be 2-d [n, k], got shape {}", w.shape().str());
  check_contiguous("PackedF32Matrix", "w", w);
  const KernelEntry<MatmulF32Kernel>& entry = kernels().matmul_f32;
  const MatmulF32Kernel& kernel = entry.fn;
  if (!kernel.pack || w.numel() == 0) return;
  const GemmShape s = weight_shape(w);
  packed_ = Tensor::owned({kernel.packed_floats(s.n, s.k)}, DType::f32);
  isa_ = entry.isa;
  const float* b = w.data<float>();
  float* out = packed_.data<float>();
  parallel_run(resolve_threads(threads),
               [&](int ith, int nth) { kernel.pack(b, s, out, ith, nth); });
}

void matmul(const Tensor& a, const PackedF32Matrix& w, Tensor& out, int threads) {
  const KernelEntry<MatmulF32Kernel>& entry = kernels().matmul_f32;
  if (!w.packed_for(entry.isa)) {
    matmul(a, w.weight().transpose(0, 1), out, threads);
    return;
  }
  const GemmShape s = matmul_shape(a, w.weight().transpose(0, 1), out);
  if (s.m == 0 || s.n == 0) return;
  if (s.k == 0) {
    matmul(a, w.weight().transpose(0, 1), out, threads);
    return;
  }
  const int nth = matmul_threads(s, threads);
  const MatmulF32Kernel& kernel = entry.fn;
  Scratch work(kernel.packed_workspace_floats(s, nth) * sizeof(float));
  const float* ap = static_cast<const float*>(a.raw());
  const float* bp = w.weight().data<float>();
  const float* panels = w.panels();
  float* c = static_cast<float*>(out.raw());
  float* wp = work.as<float>();
  parallel_run(nth, [&](int ith, int team) {
    kernel.run_packed(ap, bp, panels, c, s, wp, ith, team);
  });
}

}  // namespace infermode
