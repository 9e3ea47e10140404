#include "kernels/avx512/avx512.h"

namespace infermode::avx512 {

void fill_table(KernelTable& t) {
  t.rms_norm = {&rms_norm, Isa::avx512};
  t.matmul_f32 = {{&matmul_f32, &matmul_f32_workspace}, Isa::avx512};
  t.sum_f32 = {&sum_f32, Isa::avx512};
}

}  // namespace infermode::avx512
