#include "kernels/ref/ref.h"

namespace infermode::ref {

void fill_table(KernelTable& t) {
  t.rms_norm = {&rms_norm, Isa::ref};
  t.matmul_f32 = {{&matmul_f32, &matmul_f32_workspace}, Isa::ref};
  t.sum_f32 = {&sum_f32, Isa::ref};
}

}  // namespace infermode::ref
