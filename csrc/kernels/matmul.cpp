#include "kernels/matmul.h"

#include <cstring>

#include "core/scratch.h"
#include "core/thread_pool.h"
#include "kernels/dispatch.h"
#include "kernels/validate.h"

namespace infermode {

GemmShape matmul_shape(const Tensor& a, const Tensor& b, const Tensor& out) {
  check_dtype("matmul", "a", a, DType::f32);
  IM_CHECK(b.defined(), "matmul: b is missing");
  IM_CHECK_TYPE(b.dtype() == DType::f32 || b.dtype() == DType::bf16,
                "matmul: b has dtype {}, expected float32 or bfloat16", dtype_name(b.dtype()));
  check_dtype("matmul", "out", out, DType::f32);
  IM_CHECK(a.ndim() >= 1, "matmul: a must have at least 1 dim, got a scalar");
  IM_CHECK(b.ndim() == 2, "matmul: b must be 2-d [k, n], got shape {}", b.shape().str());
  const int64_t k = a.size(-1), n = b.size(1);
  IM_CHECK(b.size(0) == k, "matmul: a has shape {} and b has shape {}: the last dim of a ({}) "
           "must equal the first dim of b ({})", a.shape().str(), b.shape().str(), k, b.size(0));

  GemmShape s{};
  s.k = k;
  s.n = n;
  if (a.ndim() == 2 && a.stride(1) == 1 && a.stride(0) >= k) {
    s.lda = a.stride(0);
    s.m = a.size(0);
  } else {
    check_contiguous("matmul", "a", a);
    s.lda = k;
    s.m = 1;
    for (int i = 0; i + 1 < a.ndim(); ++i) s.m *= a.size(i);
  }
  if (b.stride(1) == 1 && b.stride(0) >= n) {
    s.b_nk = false;
    s.ldb = b.stride(0);
  } else if (b.stride(0) == 1 && b.stride(1) >= k) {
    s.b_nk = true;
    s.ldb = b.stride(1);
  } else {
    IM_CHECK(false, "matmul: b with shape {} and strides {} is neither row- nor column-"
             "contiguous; pass a contiguous copy", b.shape().str(), b.strides().str());
  }

  Shape expected = a.shape();
  expected[expected.ndim - 1] = n;
  IM_CHECK(out.shape() == expected, "matmul: out has shape {}, expected {}", out.shape().str(),
           expected.str());
  check_contiguous("matmul", "out", out);
  s.ldc = n;
  IM_CHECK(!overlaps(out, a) && !overlaps(out, b),
           "matmul: out shares memory with {}; pass a separate output buffer",
           overlaps(out, a) ? "a" : "b");
  return s;
}

int matmul_threads(const GemmShape& s, int threads) {
  const double flops = 2.0 * double(s.m) * double(s.n) * double(s.k);
  return flops < 2e5 ? 1 : resolve_threads(threads);
}

void matmul(const Tensor& a, const Tensor& b, Tensor& out, int threads) {
  const GemmShape s = matmul_shape(a, b, out);
  if (s.m == 0 || s.n == 0) return;
  float* c = static_cast<float*>(out.raw());
  if (s.k == 0) {
    std::memset(c, 0, out.nbytes());
    return;
  }
  const int nth = matmul_threads(s, threads);
  const float* ap = static_cast<const float*>(a.raw());
  if (b.dtype() == DType::bf16) {
    const MatmulBf16Kernel& kernel = kernels().matmul_bf16.fn;
    Scratch work(kernel.workspace_floats(s, nth) * sizeof(float));
    const uint16_t* bp = static_cast<const uint16_t*>(b.raw());
    float* wp = work.as<float>();
    parallel_run(nth, [&](int ith, int team) { kernel.run(ap, bp, c, s, wp, ith, team); });
    return;
  }
  const MatmulF32Kernel& kernel = kernels().matmul_f32.fn;
  Scratch work(kernel.workspace_floats(s, nth) * sizeof(float));
  const float* bp = static_cast<const float*>(b.raw());
  float* wp = work.as<float>();
  parallel_run(nth, [&](int ith, int team) { kernel.run(ap, bp, c, s, wp, ith, team); });
}

}  // namespace infermode
