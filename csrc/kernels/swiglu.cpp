#include "kernels/swiglu.h"

#include "core/thread_pool.h"
#include "kernels/dispatch.h"
#include "kernels/validate.h"

namespace infermode {

void swiglu(const Tensor& gate, const Tensor& up, Tensor& out, int threads) {
  check_dtype("swiglu", "gate", gate, DType::f32);
  check_dtype("swiglu", "up", up, DType::f32);
  check_dtype("swiglu", "out", out, DType::f32);
  IM_CHECK(up.shape() == gate.shape() && out.shape() == gate.shape(),
           "swiglu: gate {}, up {} and out {} must have one shape", gate.shape().str(),
           up.shape().str(), out.shape().str());
  check_contiguous("swiglu", "gate", gate);
  check_contiguous("swiglu", "up", up);
  check_contiguous("swiglu", "out", out);
  const int64_t n = gate.numel();
  auto kernel = kernels().swiglu.fn;
  const float* g = static_cast<const float*>(gate.raw());
  const float* u = static_cast<const float*>(up.raw());
  float* y = static_cast<float*>(out.raw());
  int nth = n < (1 << 15) ? 1 : resolve_threads(threads);
  parallel_run(nth, [&](int ith, int team) {
    Range r = split_range(n, ith, team, 16);
    if (r.end > r.begin) kernel(g + r.begin, u + r.begin, y + r.begin, r.end - r.begin);
  });
}

}  // namespace infermode
