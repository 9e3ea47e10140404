#include "kernels/ref/ref.h"

namespace infermode::ref {

double sum_f32(const float* x, int64_t n) {
  double acc = 0.0;
  for (int64_t i = 0; i < n; ++i) acc += x[i];
  return acc;
}

}  // namespace infermode::ref
