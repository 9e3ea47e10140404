#include "kernels/quant_matmul.h"

#include "core/scratch.h"
#include "core/thread_pool.h"
#include "kernels/dispatch.h"
#include "kernels/quant_activations.h"
#include "kernels/validate.h"

namespace infermode {

void matmul(const Tensor& a, const PackedMatrix& w, Tensor& out, int threads) {
  IM_CHECK(w.defined(), "matmul: the quantized weight is empty");
  check_dtype("matmul", "a", a, DType::f32);
  check_dtype("matmul", "out", out, DType::f32);
  IM_CHECK(a.ndim() >= 1, "matmul: a must have at least 1 dim, got a scalar");
  const int64_t k = a.size(-1), n = w.rows();
  IM_CHECK(k == w.cols(), "matmul: a has shape {} but the {} weight has {} columns", a.shape().str(),
           quant_format_name(w.format()), w.cols());
  QuantGemmShape s{};
  if (a.ndim() == 2 && a.stride(1) == 1 && a.stride(0) >= k) {
    s.m = a.size(0);
    s.lda = a.stride(0);
  } else {
    check_contiguous("matmul", "a", a);
    s.m = a.numel() / k;
    s.lda = k;
  }
  Shape expected = a.shape();
  expected[expected.ndim - 1] = n;
  IM_CHECK(out.shape() == expected, "matmul: out has shape {}, expected {}", out.shape().str(),
           expected.str());
  check_contiguous("matmul", "out", out);
  IM_CHECK(!overlaps(out, a), "matmul: out shares memory with a; pass a separate output buffer");
  s.ldc = n;
  if (s.m == 0) return;

  const double ops = 2.0 * double(s.m) * double(n) * double(k);
  const int nth = ops < 2e5 ? 1 : std::min<int>(resolve_threads(threads), int(w.groups()));
  Scratch work(quantized_rows_bytes(s.m, k));
  const QuantMatmulKernel kernel = kernels().matmul_quant.fn;
  const float* ap = static_cast<const float*>(a.raw());
  float* cp = static_cast<float*>(out.raw());
  void* wp = work.as<void>();
  parallel_run(nth, [&](int ith, int team) { kernel(ap, w, cp, s, wp, ith, team); });
}

}  // namespace infermode
