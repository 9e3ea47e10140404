// Quantized matmul on AVX512-VNNI: vpdpbusd multiplies 64 unsigned bytes by 64 signed bytes and
// adds each group of four products into a 32-bit lane, so one instruction feeds sixteen output
// rows (the packed layout's lanes) with four values each.
//   Q4_0/Q4_1: the weight nibbles are the unsigned operand, the activation codes the signed one.
//   Q8_0: both are signed, so each weight vector is flipped to w + 128 (unsigned: one xor of the
//   sign bits) as it is loaded, and 128 * sum(a) is taken off once per block, as Q4_0 takes off
//   8 * sum(a). (Biasing the activations instead needs sum(w) per row: a second vpdpbusd for
//   every weight vector.)
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/avx512/avx512.h"
#include "kernels/quant_driver.h"

namespace infermode::avx512 {
namespace {

inline __m512i broadcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

inline __m512 widen_f16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// Codes as ref::quantize_row makes them (same operations, same rounding).
void quantize_row(const float* x, const QuantizedRows& out, int64_t row) {
  for (int64_t b = 0; b < out.blocks; ++b) {
    const __m512 v0 = _mm512_loadu_ps(x + b * 32), v1 = _mm512_loadu_ps(x + b * 32 + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    const float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
    const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, _mm512_set1_ps(id)));
    const __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, _mm512_set1_ps(id)));
    const int32_t sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
    const __m128i b0 = _mm512_cvtsepi32_epi8(q0), b1 = _mm512_cvtsepi32_epi8(q1);
    int8_t* q = out.q + row * out.cols + b * 32;
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q), b0);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 16), b1);
    set_block_scale(out, row * out.blocks + b, d, sum);
  }
}

// c[t0 + t, 16 (g0 + g) + lane] for t < T, g < G: T rows of activations against G row groups.
template <QuantFormat F, int T, int G>
void tile(const QuantTile& p, int64_t g0, int64_t t0) {
  const PackedMatrix& w = p.w;
  const QuantizedRows& x = p.x;
  const int64_t nb = w.blocks();
  constexpr int kVectors = F == QuantFormat::q8_0 ? 8 : 4;
  const __m512i nibble = _mm512_set1_epi8(0x0f), sign = _mm512_set1_epi8(char(0x80));
  const uint8_t* wq[G];
  const uint16_t* wd[G];
  const uint16_t* wm[G];
  for (int g = 0; g < G; ++g) {
    wq[g] = w.quants(g0 + g);
    wd[g] = w.scales(g0 + g);
    wm[g] = w.offsets(g0 + g);
  }
  const int8_t* xq[T];
  for (int t = 0; t < T; ++t) xq[t] = x.q + (t0 + t) * x.cols;
  __m512 acc[T][G];
  for (int t = 0; t < T; ++t)
    for (int g = 0; g < G; ++g) acc[t][g] = _mm512_setzero_ps();

  // The G groups after these usually come next: pull their bytes into L2 while these are
  // summed, so DRAM always has requests in flight (the hardware prefetcher alone stops at page
  // ends and follows few streams). A prefetch past the matrix is harmless.
  const int64_t ahead = int64_t(w.group_bytes()) * G;
  for (int64_t b = 0; b < nb; ++b) {
    for (int g = 0; g < G; ++g) {
      const char* next = reinterpret_cast<const char*>(wq[g]) + ahead + b * kVectors * 64;
      for (int j = 0; j < kVectors; ++j) _mm_prefetch(next + 64 * j, _MM_HINT_T1);
      if (b % 2 == 1) continue;  // a cache line holds two blocks' scales (and offsets)
      _mm_prefetch(reinterpret_cast<const char*>(wd[g] + b * kPackRows) + ahead, _MM_HINT_T1);
      if constexpr (F == QuantFormat::q4_1)
        _mm_prefetch(reinterpret_cast<const char*>(wm[g] + b * kPackRows) + ahead, _MM_HINT_T1);
    }
    __m512i isum[T][G];
    for (int g = 0; g < G; ++g)
      for (int t = 0; t < T; ++t) isum[t][g] = _mm512_setzero_si512();
    for (int j = 0; j < kVectors; ++j) {
      if constexpr (F == QuantFormat::q8_0) {
        __m512i wv[G];
        for (int g = 0; g < G; ++g)
          wv[g] = _mm512_xor_si512(_mm512_load_si512(wq[g] + (b * 8 + j) * 64), sign);
        for (int t = 0; t < T; ++t) {
          const __m512i xb = broadcast4(xq[t] + b * 32 + 4 * j);
          for (int g = 0; g < G; ++g) isum[t][g] = _mm512_dpbusd_epi32(isum[t][g], wv[g], xb);
        }
      } else {
        __m512i lo[G], hi[G];
        for (int g = 0; g < G; ++g) {
          const __m512i v = _mm512_load_si512(wq[g] + (b * 4 + j) * 64);
          lo[g] = _mm512_and_si512(v, nibble);
          hi[g] = _mm512_and_si512(_mm512_srli_epi16(v, 4), nibble);
        }
        for (int t = 0; t < T; ++t) {
          const __m512i xl = broadcast4(xq[t] + b * 32 + 8 * j);
          const __m512i xh = broadcast4(xq[t] + b * 32 + 8 * j + 4);
          for (int g = 0; g < G; ++g) {
            isum[t][g] = _mm512_dpbusd_epi32(isum[t][g], lo[g], xl);
            isum[t][g] = _mm512_dpbusd_epi32(isum[t][g], hi[g], xh);
          }
        }
      }
    }
    for (int g = 0; g < G; ++g) {
      const __m512 dw = widen_f16(wd[g] + b * kPackRows);
      for (int t = 0; t < T; ++t) {
        const int64_t k = (t0 + t) * x.blocks + b;
        __m512i s = isum[t][g];
        if constexpr (F == QuantFormat::q8_0)
          s = _mm512_sub_epi32(s, _mm512_set1_epi32(128 * x.sum[k]));
        if constexpr (F == QuantFormat::q4_0) s = _mm512_sub_epi32(s, _mm512_set1_epi32(8 * x.sum[k]));
        const __m512 scale = _mm512_mul_ps(dw, _mm512_set1_ps(x.d[k]));
        acc[t][g] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(s), acc[t][g]);
        if constexpr (F == QuantFormat::q4_1)
          acc[t][g] = _mm512_fmadd_ps(widen_f16(wm[g] + b * kPackRows), _mm512_set1_ps(x.s[k]),
                                      acc[t][g]);
      }
    }
  }
  for (int g = 0; g < G; ++g) {
    const int64_t row0 = (g0 + g) * kPackRows, left = w.rows() - row0;
    const __mmask16 mask = left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
    for (int t = 0; t < T; ++t) _mm512_mask_storeu_ps(p.c + (t0 + t) * p.ldc + row0, mask, acc[t][g]);
  }
}

template <QuantFormat F, int T>
void tile_g(const QuantTile& p, int64_t g0, int64_t t0, int64_t groups) {
  if constexpr (T == 1) {
    if (groups >= 4) return tile<F, 1, 4>(p, g0, t0);
    if (groups == 3) return tile<F, 1, 3>(p, g0, t0);
  }
  if (groups >= 2) return tile<F, T, 2>(p, g0, t0);
  tile<F, T, 1>(p, g0, t0);
}

struct Avx512Vnni {
  static constexpr int64_t kRows = 4;
  static int64_t group_step(int64_t m) { return m == 1 ? 4 : 2; }  // decode: 4 groups per load
  static void quantize_row(const float* x, const QuantizedRows& out, int64_t row) {
    avx512::quantize_row(x, out, row);
  }
  template <QuantFormat F>
  static void tiles(const QuantTile& p, int64_t g0, int64_t t0, int64_t rows, int64_t groups) {
    switch (std::min<int64_t>(rows, kRows)) {
      case 4: return tile_g<F, 4>(p, g0, t0, groups);
      case 3: return tile_g<F, 3>(p, g0, t0, groups);
      case 2: return tile_g<F, 2>(p, g0, t0, groups);
      default: return tile_g<F, 1>(p, g0, t0, groups);
    }
  }
};

}  // namespace

void matmul_quant_vnni(const float* a, const PackedMatrix& w, float* c, const QuantGemmShape& s,
                       void* work, int ith, int nth) {
  matmul_quant_with<Avx512Vnni>(a, w, c, s, work, ith, nth);
}

}  // namespace infermode::avx512
