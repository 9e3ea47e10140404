#include "kernels/sum.h"

#include "core/thread_pool.h"
#include "kernels/dispatch.h"
#include "kernels/validate.h"

namespace infermode {

double sum(const Tensor& x, int threads) {
  check_dtype("sum", "x", x, DType::f32);
  check_contiguous("sum", "x", x);
  const int64_t n = x.numel();
  if (n == 0) return 0.0;
  auto kernel = kernels().sum_f32.fn;
  const float* xp = static_cast<const float*>(x.raw());
  int nth = n < (1 << 16) ? 1 : resolve_threads(threads);
  double partial[kMaxThreads] = {};  // resolve_threads gives at most kMaxThreads
  parallel_run(nth, [&](int ith, int team) {
    Range r = split_range(n, ith, team, 16);  // 64-byte pieces: no cache line is shared
    partial[ith] = r.end > r.begin ? kernel(xp + r.begin, r.end - r.begin) : 0.0;
  });
  double total = 0.0;
  for (int i = 0; i < nth; ++i) total += partial[i];
  return total;
}

}  // namespace infermode
