#include "kernels/ref/ref.h"

namespace infermode::ref {

void fill_table(KernelTable& t) {
  t.rms_norm = {&rms_norm, Isa::ref};
  t.matmul_f32 = {{&matmul_f32, &matmul_f32_workspace}, Isa::ref};
  t.matmul_bf16 = {{&matmul_bf16, &matmul_f32_workspace}, Isa::ref};
  t.sum_f32 = {&sum_f32, Isa::ref};
  t.rope = {&rope, Isa::ref};
  t.attention = {&attention, Isa::ref};
  t.swiglu = {&swiglu, Isa::ref};
  t.add = {&add, Isa::ref};
  t.matmul_quant = {&matmul_quant, Isa::ref};
}

}  // namespace infermode::ref
