#include "kernels/rope_interleaved.h"

#include "core/thread_pool.h"
#include "kernels/validate.h"

namespace infermode {

void rope_interleaved(Tensor& x, const Tensor& cos, const Tensor& sin, const Tensor& scale,
                      bool inverse, int threads) {
  constexpr const char* op = "rope_interleaved";
  check_dtype(op, "x", x, DType::f32);
  check_dtype(op, "cos", cos, DType::f32);
  check_dtype(op, "sin", sin, DType::f32);
  IM_CHECK(x.ndim() == 3, "{}: x must be [tokens, heads, head_dim], got shape {}", op,
           x.shape().str());
  const int64_t tokens = x.size(0), heads = x.size(1), head_dim = x.size(2), half = head_dim / 2;
  IM_CHECK(head_dim % 2 == 0, "{}: head_dim must be even, got {}", op, head_dim);
  IM_CHECK(x.stride(2) == 1 && x.stride(1) == head_dim && x.stride(0) >= heads * head_dim,
           "{}: x rows must be contiguous [heads, head_dim] blocks, got strides {}", op,
           x.strides().str());
  const Shape table{tokens, half};
  IM_CHECK(cos.shape() == table && sin.shape() == table, "{}: cos {} and sin {} must both be "
           "[{}, {}]", op, cos.shape().str(), sin.shape().str(), tokens, half);
  check_contiguous(op, "cos", cos);
  check_contiguous(op, "sin", sin);
  if (scale.defined()) {
    check_dtype(op, "scale", scale, DType::f32);
    check_contiguous(op, "scale", scale);
    IM_CHECK(scale.shape() == table, "{}: scale has shape {}, expected [{}, {}]", op,
             scale.shape().str(), tokens, half);
  }
  if (tokens == 0) return;
  float* xp = x.data<float>();
  const float* cp = cos.data<float>();
  const float* sp = sin.data<float>();
  const float* scp = scale.defined() ? scale.data<float>() : nullptr;
  const int64_t row_stride = x.stride(0);
  const int nth = tokens * heads * head_dim < (1 << 15) ? 1 : resolve_threads(threads);
  parallel_run(nth, [&](int ith, int team) {
    const Range r = split_range(tokens, ith, team);
    for (int64_t t = r.begin; t < r.end; ++t) {
      const float* c = cp + t * half;
      const float* s = sp + t * half;
      const float* sc = scp ? scp + t * half : nullptr;
      for (int64_t h = 0; h < heads; ++h) {
        float* row = xp + t * row_stride + h * head_dim;
        for (int64_t m = 0; m < half; ++m) {
          const float a = row[2 * m], b = row[2 * m + 1];
          float sa = 1.0f, sb = 1.0f;
          if (sc) {
            sa = sc[(2 * m) % half];
            sb = sc[(2 * m + 1) % half];
            if (inverse) {
              sa = 1.0f / sa;
              sb = 1.0f / sb;
            }
          }
          row[2 * m] = a * c[m] * sa - b * s[m] * sa;
          row[2 * m + 1] = b * c[m] * sb + a * s[m] * sb;
        }
      }
    }
  });
}

}  // namespace infermode
