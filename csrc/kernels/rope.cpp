#include "kernels/rope.h"

#include "core/thread_pool.h"
#include "kernels/dispatch.h"
#include "kernels/validate.h"

namespace infermode {

void rope(Tensor& x, const Tensor& cos, const Tensor& sin, int threads) {
  check_dtype("rope", "x", x, DType::f32);
  check_dtype("rope", "cos", cos, DType::f32);
  check_dtype("rope", "sin", sin, DType::f32);
  IM_CHECK(x.ndim() == 3, "rope: x must be [tokens, heads, head_dim], got shape {}",
           x.shape().str());
  const int64_t tokens = x.size(0), heads = x.size(1), head_dim = x.size(2);
  IM_CHECK(head_dim % 2 == 0, "rope: head_dim must be even, got {}", head_dim);
  IM_CHECK(x.stride(2) == 1 && x.stride(1) == head_dim && x.stride(0) >= heads * head_dim,
           "rope: x rows must be contiguous [heads, head_dim] blocks, got strides {}",
           x.strides().str());
  IM_CHECK(cos.shape() == Shape({tokens, head_dim / 2}) && sin.shape() == cos.shape(),
           "rope: cos {} and sin {} must both be [{}, {}]", cos.shape().str(), sin.shape().str(),
           tokens, head_dim / 2);
  check_contiguous("rope", "cos", cos);
  check_contiguous("rope", "sin", sin);
  if (tokens == 0) return;
  auto kernel = kernels().rope.fn;
  float* xp = static_cast<float*>(x.raw());
  const float* cp = static_cast<const float*>(cos.raw());
  const float* sp = static_cast<const float*>(sin.raw());
  const int64_t row_stride = x.stride(0);
  int nth = tokens * heads * head_dim < (1 << 15) ? 1 : resolve_threads(threads);
  parallel_run(nth, [&](int ith, int n) {
    Range r = split_range(tokens, ith, n);
    if (r.end > r.begin)
      kernel(xp + r.begin * row_stride, cp + r.begin * (head_dim / 2),
             sp + r.begin * (head_dim / 2), r.end - r.begin, heads, head_dim, row_stride);
  });
}

}  // namespace infermode
