#include "kernels/validate.h"

#include <cstdint>

namespace infermode {
namespace {

// [first, last) bytes a strided tensor can touch.
void extent(const Tensor& t, uintptr_t& first, uintptr_t& last) {
  uintptr_t base = reinterpret_cast<uintptr_t>(t.raw());
  int64_t lo = 0, hi = 0;
  for (int i = 0; i < t.ndim(); ++i) {
    int64_t span = (t.size(i) - 1) * t.stride(i);
    (span < 0 ? lo : hi) += span;
  }
  int64_t es = int64_t(dtype_size(t.dtype()));
  first = base + lo * es;
  last = base + (hi + 1) * es;
}

}  // namespace

bool overlaps(const Tensor& a, const Tensor& b) {
  if (a.numel() == 0 || b.numel() == 0) return false;
  uintptr_t a0, a1, b0, b1;
  extent(a, a0, a1);
  extent(b, b0, b1);
  return a0 < b1 && b0 < a1;
}

}  // namespace infermode
