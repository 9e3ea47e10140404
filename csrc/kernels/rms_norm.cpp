#include "kernels/rms_norm.h"

#include <cmath>

#include "core/error.h"
#include "core/thread_pool.h"
#include "kernels/dispatch.h"
#include "kernels/validate.h"

namespace infermode {

void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& y, int threads) {
  check_dtype("rms_norm", "x", x, DType::f32);
  check_dtype("rms_norm", "weight", weight, DType::f32);
  check_dtype("rms_norm", "out", y, DType::f32);
  IM_CHECK(x.ndim() >= 1, "rms_norm: x must have at least 1 dim, got a scalar");
  const int64_t dim = x.size(-1);
  IM_CHECK(weight.ndim() == 1 && weight.numel() == dim,
           "rms_norm: weight has shape {}, expected [{}] (the last dim of x {})",
           weight.shape().str(), dim, x.shape().str());
  IM_CHECK(y.shape() == x.shape(), "rms_norm: out has shape {}, expected {} (the shape of x)",
           y.shape().str(), x.shape().str());
  check_contiguous("rms_norm", "x", x);
  check_contiguous("rms_norm", "weight", weight);
  check_contiguous("rms_norm", "out", y);
  IM_CHECK(std::isfinite(eps) && eps >= 0.0f, "rms_norm: eps must be finite and >= 0, got {}",
           eps);
  if (x.numel() == 0) return;
  IM_CHECK(dim > 0, "rms_norm: the last dim of x {} is empty", x.shape().str());

  const int64_t rows = x.numel() / dim;
  auto kernel = kernels().rms_norm.fn;
  const float* xp = static_cast<const float*>(x.raw());
  const float* wp = static_cast<const float*>(weight.raw());
  float* yp = static_cast<float*>(y.raw());
  // Below ~64 KiB of input a second thread costs more to wake than it saves.
  int nth = x.numel() < (1 << 14) ? 1 : resolve_threads(threads);
  if (nth > rows) nth = int(rows);
  parallel_run(nth, [&](int ith, int n) {
    Range r = split_range(rows, ith, n);
    if (r.end > r.begin)
      kernel(xp + r.begin * dim, wp, yp + r.begin * dim, r.end - r.begin, dim, eps);
  });
}

}  // namespace infermode
