#pragma once
// The epilogue every AVX-512 12x32 micro-tile shares (avx512/ files only): rows [0, mr) of two
// accumulator columns written to C, added to what is there after the first K slice, with masks
// for a ragged right edge. Internal linkage: files of this folder are built with different extras
// (-mavx512bf16), and their copies must not be merged.
#include <immintrin.h>

#include <cstdint>

namespace infermode::avx512 {
namespace {

template <int MR>
__attribute__((always_inline)) inline void store_tile(const __m512 (&c0)[MR],
                                                      const __m512 (&c1)[MR], float* c,
                                                      int64_t ldc, int mr, int nr,
                                                      bool accumulate) {
  const __mmask16 m0 = nr >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << nr) - 1);
  const __mmask16 m1 =
      nr >= 32 ? __mmask16(0xFFFF) : nr > 16 ? __mmask16((1u << (nr - 16)) - 1) : __mmask16(0);
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i) {
    if (i >= mr) break;
    float* ci = c + i * ldc;
    __m512 v0 = c0[i], v1 = c1[i];
    if (accumulate) {
      v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, ci));
      v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, ci + 16));
    }
    _mm512_mask_storeu_ps(ci, m0, v0);
    _mm512_mask_storeu_ps(ci + 16, m1, v1);
  }
}

}  // namespace
}  // namespace infermode::avx512
