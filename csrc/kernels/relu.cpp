#include "kernels/relu.h"

#include "core/thread_pool.h"
#include "kernels/validate.h"

namespace infermode {

// One portable loop and no per-ISA kernels: the pass is bound by memory, and the compiler turns
// the comparison below into vector blends on every target.
void relu(Tensor& x, int threads) {
  check_dtype("relu", "x", x, DType::f32);
  check_contiguous("relu", "x", x);
  const int64_t n = x.numel();
  float* p = x.data<float>();
  int nth = n < (1 << 15) ? 1 : resolve_threads(threads);
  parallel_run(nth, [&](int ith, int team) {
    const Range r = split_range(n, ith, team, 16);
    for (int64_t i = r.begin; i < r.end; ++i) p[i] = p[i] < 0.0f ? 0.0f : p[i];
  });
}

}  // namespace infermode
