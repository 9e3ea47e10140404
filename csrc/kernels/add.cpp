#include "kernels/add.h"

#include "core/thread_pool.h"
#include "kernels/dispatch.h"
#include "kernels/validate.h"

namespace infermode {

void add(const Tensor& a, Tensor& y, int threads) {
  check_dtype("add", "a", a, DType::f32);
  check_dtype("add", "y", y, DType::f32);
  check_contiguous("add", "a", a);
  check_contiguous("add", "y", y);
  IM_CHECK(y.ndim() >= 1, "add: y must have at least 1 dim");
  const int64_t cols = y.size(-1);
  const bool broadcast = a.ndim() == 1 && a.size(0) == cols && y.ndim() > 1;
  IM_CHECK(broadcast || a.shape() == y.shape(),
           "add: a has shape {}; expected {} or [{}] (broadcast over rows)", a.shape().str(),
           y.shape().str(), cols);
  const int64_t rows = cols > 0 ? y.numel() / cols : 0;
  auto kernel = kernels().add.fn;
  const float* ap = static_cast<const float*>(a.raw());
  float* yp = static_cast<float*>(y.raw());
  int nth = y.numel() < (1 << 15) ? 1 : resolve_threads(threads);
  parallel_run(nth, [&](int ith, int team) {
    Range r = split_range(rows, ith, team);
    if (r.end > r.begin)
      kernel(broadcast ? ap : ap + r.begin * cols, yp + r.begin * cols, r.end - r.begin, cols,
             broadcast ? 0 : cols);
  });
}

}  // namespace infermode
