#pragma once
// One table of function pointers per kernel family, filled once from cpuid. Ops call through
// kernels(); tests and benchmarks can ask for the table of any ISA the host supports.
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "core/cpu_features.h"

namespace infermode {

class PackedMatrix;  // kernels/quant_pack.h

// C[m, n] = A[m, k] @ B, where B is stored as [k, n] rows (ldb >= n) or, when b_nk, as [n, k]
// rows (a Linear weight, ldb >= k). A rows are lda apart, C rows ldc apart.
struct GemmShape {
  int64_t m, n, k;
  int64_t lda, ldb, ldc;
  bool b_nk;
};

// y[r, :] = x[r, :] * rsqrt(mean(x[r, :]^2) + eps) * w, over rows [0, rows).
using RmsNormKernel = void (*)(const float* x, const float* w, float* y, int64_t rows,
                               int64_t dim, float eps);
// Thread ith of nth computes its share of C; threads meet at barrier() between phases and share
// `work` (workspace_floats(shape, nth) floats, 64-byte aligned).
struct MatmulF32Kernel {
  void (*run)(const float* a, const float* b, float* c, const GemmShape& s, float* work, int ith,
              int nth);
  size_t (*workspace_floats)(const GemmShape& s, int nth);
  // Optional (null where the ISA has no blocked GEMM): B packed once, ahead, into the panels the
  // blocked GEMM would pack on every call (kernels/matmul_packed.h). pack: thread ith of nth packs
  // its share of a B stored [n, k] (s.b_nk) into packed_floats(n, k) floats. run_packed computes
  // C with that packing, or from b itself for the few-row products that stream B unpacked.
  int64_t (*packed_floats)(int64_t n, int64_t k) = nullptr;
  void (*pack)(const float* b, const GemmShape& s, float* packed, int ith, int nth) = nullptr;
  void (*run_packed)(const float* a, const float* b, const float* packed, float* c,
                     const GemmShape& s, float* work, int ith, int nth) = nullptr;
  size_t (*packed_workspace_floats)(const GemmShape& s, int nth) = nullptr;
};
// Attention of one sequence (see attention.h); q_stride is q's row stride in floats.
// Causal: token t sees keys [0, first_pos + t]. Bidirectional (causal false): every token sees
// keys [0, keys), each score shifted by key_bias[j] when given (an additive mask: -inf hides a
// key; a row that sees no key at all comes out zero).
struct AttentionShape {
  int64_t tokens, first_pos, heads, kv_heads, head_dim, capacity, q_stride;
  float scale;
  bool causal = true;
  int64_t keys = 0;
  const float* key_bias = nullptr;
  int64_t context() const { return causal ? first_pos + tokens : keys; }
  int64_t visible(int64_t t) const { return causal ? first_pos + t + 1 : keys; }
  // The query heads one share of the work takes, for one token: a kv head's whole group (its
  // keys and values read once for them all), unless the (token, kv head) pairs are too few to
  // keep nth threads even (decoding one token of a model with 2 or 3 kv heads): then one head.
  int64_t heads_per_share(int nth) const {
    return tokens * kv_heads >= 4 * int64_t(nth) ? heads / kv_heads : 1;
  }
  // The floats of the kernel's scratch each thread owns: a kv group's scores, or the transposed
  // keys and a block of score rows of the many-token kernel (kernels/attention_blocked.h).
  int64_t scratch_floats() const {
    const int64_t padded = (context() + 31) / 32 * 32;
    const int64_t most = std::max(heads / kv_heads * context(), (head_dim + 8) * padded);
    return (most + 15) / 16 * 16;
  }
};

// The same with B in bfloat16 (a weight stored at half the bytes); A and C stay float32 and the
// arithmetic is float32: B is widened as it is loaded.
struct MatmulBf16Kernel {
  void (*run)(const float* a, const uint16_t* b, float* c, const GemmShape& s, float* work,
              int ith, int nth);
  size_t (*workspace_floats)(const GemmShape& s, int nth);
  // True when large products round A to bfloat16 too (a bfloat16 dot-product GEMM): results
  // then carry bfloat16 rounding of the activations, as PyTorch's bfloat16 matmuls do.
  bool rounds_a = false;
};
// C[m, :] = A[m, :] @ W^T for a quantized W (PackedMatrix: rows = C's columns). Thread ith of nth
// quantizes its share of A's rows into `work` (quantized_rows_bytes(m, W.cols())), meets the
// others at barrier(), then computes its share of W's row groups for every row of A.
struct QuantGemmShape {
  int64_t m, lda, ldc;
};
using QuantMatmulKernel = void (*)(const float* a, const PackedMatrix& w, float* c,
                                   const QuantGemmShape& s, void* work, int ith, int nth);
// Sum of x[0, n): float within blocks of a few thousand elements, double across blocks.
using SumF32Kernel = double (*)(const float* x, int64_t n);
// Rotates tokens rows of x in place (see rope.h); cos/sin: one row of head_dim / 2 per token.
using RopeKernel = void (*)(float* x, const float* cos, const float* sin, int64_t tokens,
                            int64_t heads, int64_t head_dim, int64_t row_stride);
// Thread ith of nth computes its shares (AttentionShape::heads_per_share, or blocks of tokens);
// `scores` holds nth * AttentionShape::scratch_floats() floats.
using AttentionKernel = void (*)(const float* q, const float* k, const float* v, float* out,
                                 const AttentionShape& s, float* scores, int ith, int nth);
// y[i] = silu(g[i]) * u[i] over [0, n).
using SwigluKernel = void (*)(const float* g, const float* u, float* y, int64_t n);
// y[r, :] += a[r * a_stride + :] over rows [0, rows); a_stride 0 broadcasts one row.
using AddKernel = void (*)(const float* a, float* y, int64_t rows, int64_t cols,
                           int64_t a_stride);

template <typename Fn>
struct KernelEntry {
  Fn fn{};
  Isa isa = Isa::ref;  // which implementation filled it
};

struct KernelTable {
  Isa cap = Isa::ref;
  KernelEntry<RmsNormKernel> rms_norm;
  KernelEntry<MatmulF32Kernel> matmul_f32;
  KernelEntry<MatmulBf16Kernel> matmul_bf16;
  KernelEntry<SumF32Kernel> sum_f32;
  KernelEntry<RopeKernel> rope;
  KernelEntry<AttentionKernel> attention;
  KernelEntry<SwigluKernel> swiglu;
  KernelEntry<AddKernel> add;
  KernelEntry<QuantMatmulKernel> matmul_quant;
};

// The active table: the best ISA this CPU has, capped by INFERMODE_ISA or set_isa().
const KernelTable& kernels();
// The table capped at `isa`; ValueError if this CPU cannot run it.
const KernelTable& kernels_for(Isa isa);
// Changes the active cap for the whole process; ValueError if this CPU cannot run it.
void set_isa(Isa isa);
Isa active_isa();

// Each ISA folder overwrites the entries it implements.
namespace ref { void fill_table(KernelTable& t); }
namespace avx2 { void fill_table(KernelTable& t); }
namespace avx512 { void fill_table(KernelTable& t); }

}  // namespace infermode
