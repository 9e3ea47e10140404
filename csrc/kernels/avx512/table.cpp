#include "core/cpu_features.h"
#include "kernels/avx512/avx512.h"

namespace infermode::avx512 {

void fill_table(KernelTable& t) {
  t.rms_norm = {&rms_norm, Isa::avx512};
  t.matmul_f32 = {{&matmul_f32, &matmul_f32_workspace, &matmul_f32_packed_floats,
                   &matmul_f32_pack, &matmul_f32_packed, &matmul_f32_packed_workspace},
                  Isa::avx512};
  // Same tiles and workspace: bfloat16 B is widened while it is packed or streamed.
  t.matmul_bf16 = {{&matmul_bf16, &matmul_f32_workspace}, Isa::avx512};
  // AVX512-BF16 doubles the multiply rate on AMD (Zen 4/5); on Intel vdpbf16ps runs at half the
  // float32 rate (ENVIRONMENT.md), so there bfloat16 prefill waits for AMX tiles instead.
  const CpuFeatures& f = cpu_features();
  if (f.avx512_bf16 && f.vendor != "GenuineIntel")
    t.matmul_bf16 = {{&matmul_bf16_dot, &matmul_bf16_dot_workspace, true}, Isa::avx512};
  // Without VNNI the AVX2 kernel (maddubs) stays: it is as fast as a 512-bit emulation.
  if (f.avx512_vnni) t.matmul_quant = {&matmul_quant_vnni, Isa::avx512};
  t.sum_f32 = {&sum_f32, Isa::avx512};
  t.attention = {&attention, Isa::avx512};
  t.swiglu = {&swiglu, Isa::avx512};
}

}  // namespace infermode::avx512
