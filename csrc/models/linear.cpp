#include "models/linear.h"

#include "kernels/matmul.h"
#include "kernels/matmul_packed.h"
#include "kernels/quant_matmul.h"

namespace infermode {

void linear(const Tensor& x, const Linear& w, Tensor& out, int threads) {
  if (w.packed) {
    matmul(x, *w.packed, out, threads);
  } else if (w.panels) {
    matmul(x, *w.panels, out, threads);
  } else {
    matmul(x, w.dense.transpose(0, 1), out, threads);
  }
}

}  // namespace infermode
