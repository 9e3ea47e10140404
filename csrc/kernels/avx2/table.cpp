#include "kernels/avx2/avx2.h"

namespace infermode::avx2 {

void fill_table(KernelTable& t) {
  t.rms_norm = {&rms_norm, Isa::avx2};
  t.matmul_f32 = {{&matmul_f32, &matmul_f32_workspace, &matmul_f32_packed_floats,
                   &matmul_f32_pack, &matmul_f32_packed, &matmul_f32_packed_workspace},
                  Isa::avx2};
  // Same tiles and workspace: bfloat16 B is widened while it is packed or streamed.
  t.matmul_bf16 = {{&matmul_bf16, &matmul_f32_workspace}, Isa::avx2};
  t.sum_f32 = {&sum_f32, Isa::avx2};
  t.attention = {&attention, Isa::avx2};
  t.swiglu = {&swiglu, Isa::avx2};
  t.matmul_quant = {&matmul_quant, Isa::avx2};
}

}  // namespace infermode::avx2
