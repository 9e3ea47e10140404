#include "kernels/avx512/avx512.h"

namespace infermode::avx512 {

void fill_table(KernelTable& t) {
  t.rms_norm = {&rms_norm, Isa::avx512};
  t.matmul_f32 = {{&matmul_f32, &matmul_f32_workspace}, Isa::avx512};
  // Same tiles and workspace: bfloat16 B is widened while it is packed or streamed.
  t.matmul_bf16 = {{&matmul_bf16, &matmul_f32_workspace}, Isa::avx512};
  t.sum_f32 = {&sum_f32, Isa::avx512};
  t.attention = {&attention, Isa::avx512};
  t.swiglu = {&swiglu, Isa::avx512};
}

}  // namespace infermode::avx512
