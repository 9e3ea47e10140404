#include "models/linear.h"

#include "kernels/matmul.h"
#include "kernels/quant_matmul.h"

namespace infermode {

void linear(const Tensor& x, const Linear& w, Tensor& out, int threads) {
  if (w.packed) {
    matmul(x, *w.packed, out, threads);
  } else {
    matmul(x, w.dense.transpose(0, 1), out, threads);
  }
}

}  // namespace infermode
