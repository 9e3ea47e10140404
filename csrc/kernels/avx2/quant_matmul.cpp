// Quantized matmul on AVX2: vpmaddubsw multiplies 32 unsigned by 32 signed bytes and adds pairs
// into 16-bit lanes; vpmaddwd with ones then sums those pairs into the 32-bit lane of each row.
// A ymm register is half a packed group: eight rows of four values.
//   Q4_0/Q4_1: nibbles (unsigned, <= 15) times codes (|q| <= 127): a block's eight products per
//   lane fit in 16 bits (8 * 2 * 15 * 127 < 32768), so they are summed before widening.
//   Q8_0: both signed; |w| times q carrying w's sign (vpsignb) keeps each pair under 32768.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/avx2/avx2.h"
#include "kernels/quant_driver.h"

namespace infermode::avx2 {
namespace {

inline __m256i broadcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

inline __m256 widen_f16(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

inline int32_t hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

// Codes as ref::quantize_row makes them (same operations, same rounding).
void quantize_row(const float* x, const QuantizedRows& out, int64_t row) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  for (int64_t b = 0; b < out.blocks; ++b) {
    __m256 v[4], m = _mm256_setzero_ps();
    for (int i = 0; i < 4; ++i) {
      v[i] = _mm256_loadu_ps(x + b * 32 + 8 * i);
      m = _mm256_max_ps(m, _mm256_and_ps(v[i], abs_mask));
    }
    const float amax = hmax(m);
    const float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
    __m256i q[4];
    for (int i = 0; i < 4; ++i) q[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], _mm256_set1_ps(id)));
    const int32_t sum =
        hsum_i32(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
    // Narrow 32 -> 16 -> 8 bits; the packs interleave 128-bit lanes, the permute undoes it.
    const __m256i q16a = _mm256_packs_epi32(q[0], q[1]), q16b = _mm256_packs_epi32(q[2], q[3]);
    const __m256i q8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(q16a, q16b),
                                                   _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out.q + row * out.cols + b * 32), q8);
    set_block_scale(out, row * out.blocks + b, d, sum);
  }
}

// c[t0 + t, 16 g + 8 h + lane] for t < T and both halves h of group g.
template <QuantFormat F, int T>
void tile(const QuantTile& p, int64_t g, int64_t t0) {
  const PackedMatrix& w = p.w;
  const QuantizedRows& x = p.x;
  const int64_t nb = w.blocks();
  const __m256i nibble = _mm256_set1_epi8(0x0f), ones16 = _mm256_set1_epi16(1);
  const uint8_t* wq = w.quants(g);
  const uint16_t* wd = w.scales(g);
  const uint16_t* wm = w.offsets(g);
  const int8_t* xq[T];
  for (int t = 0; t < T; ++t) xq[t] = x.q + (t0 + t) * x.cols;
  __m256 acc[T][2];
  for (int t = 0; t < T; ++t) acc[t][0] = acc[t][1] = _mm256_setzero_ps();

  // The next group usually comes next: pull its bytes into L2 while this one is summed, so DRAM
  // always has requests in flight. A prefetch past the matrix is harmless.
  constexpr int kVectors = F == QuantFormat::q8_0 ? 8 : 4;
  const char* next = reinterpret_cast<const char*>(wq) + w.group_bytes();
  const char* next_scales = reinterpret_cast<const char*>(wd) + w.group_bytes();
  const char* next_offsets = reinterpret_cast<const char*>(wm) + w.group_bytes();
  for (int64_t b = 0; b < nb; ++b) {
    for (int j = 0; j < kVectors; ++j) _mm_prefetch(next + (b * kVectors + j) * 64, _MM_HINT_T1);
    if (b % 2 == 0) {  // a cache line holds two blocks' scales (and offsets)
      _mm_prefetch(next_scales + b * kPackRows * 2, _MM_HINT_T1);
      if constexpr (F == QuantFormat::q4_1)
        _mm_prefetch(next_offsets + b * kPackRows * 2, _MM_HINT_T1);
    }
    __m256i isum[T][2];
    for (int t = 0; t < T; ++t) isum[t][0] = isum[t][1] = _mm256_setzero_si256();
    if constexpr (F == QuantFormat::q8_0) {
      for (int j = 0; j < 8; ++j) {
        for (int h = 0; h < 2; ++h) {
          const __m256i wv =
              _mm256_load_si256(reinterpret_cast<const __m256i*>(wq + (b * 8 + j) * 64 + 32 * h));
          const __m256i wabs = _mm256_abs_epi8(wv);
          for (int t = 0; t < T; ++t) {
            const __m256i xs = _mm256_sign_epi8(broadcast4(xq[t] + b * 32 + 4 * j), wv);
            const __m256i pairs = _mm256_maddubs_epi16(wabs, xs);
            isum[t][h] = _mm256_add_epi32(isum[t][h], _mm256_madd_epi16(pairs, ones16));
          }
        }
      }
    } else {
      for (int h = 0; h < 2; ++h) {
        __m256i s16[T];
        for (int t = 0; t < T; ++t) s16[t] = _mm256_setzero_si256();
        for (int j = 0; j < 4; ++j) {
          const __m256i v =
              _mm256_load_si256(reinterpret_cast<const __m256i*>(wq + (b * 4 + j) * 64 + 32 * h));
          const __m256i lo = _mm256_and_si256(v, nibble);
          const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble);
          for (int t = 0; t < T; ++t) {
            const __m256i xl = broadcast4(xq[t] + b * 32 + 8 * j);
            const __m256i xh = broadcast4(xq[t] + b * 32 + 8 * j + 4);
            s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(lo, xl));
            s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(hi, xh));
          }
        }
        for (int t = 0; t < T; ++t) isum[t][h] = _mm256_madd_epi16(s16[t], ones16);
      }
    }
    for (int h = 0; h < 2; ++h) {
      const __m256 dw = widen_f16(wd + b * kPackRows + 8 * h);
      for (int t = 0; t < T; ++t) {
        const int64_t k = (t0 + t) * x.blocks + b;
        __m256i s = isum[t][h];
        if constexpr (F == QuantFormat::q4_0) s = _mm256_sub_epi32(s, _mm256_set1_epi32(8 * x.sum[k]));
        const __m256 scale = _mm256_mul_ps(dw, _mm256_set1_ps(x.d[k]));
        acc[t][h] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(s), acc[t][h]);
        if constexpr (F == QuantFormat::q4_1)
          acc[t][h] = _mm256_fmadd_ps(widen_f16(wm + b * kPackRows + 8 * h),
                                      _mm256_set1_ps(x.s[k]), acc[t][h]);
      }
    }
  }
  const int64_t row0 = g * kPackRows, left = w.rows() - row0;
  for (int t = 0; t < T; ++t) {
    float* out = p.c + (t0 + t) * p.ldc + row0;
    if (left >= 16) {
      _mm256_storeu_ps(out, acc[t][0]);
      _mm256_storeu_ps(out + 8, acc[t][1]);
    } else {
      alignas(32) float tmp[16];
      _mm256_store_ps(tmp, acc[t][0]);
      _mm256_store_ps(tmp + 8, acc[t][1]);
      std::memcpy(out, tmp, size_t(left) * sizeof(float));
    }
  }
}

struct Avx2 {
  static constexpr int64_t kRows = 2;
  static int64_t group_step(int64_t) { return 1; }
  static void quantize_row(const float* x, const QuantizedRows& out, int64_t row) {
    avx2::quantize_row(x, out, row);  // Q8_0 takes signed codes too (vpsignb, not a bias)
  }
  template <QuantFormat F>
  static void tiles(const QuantTile& p, int64_t g, int64_t t0, int64_t rows, int64_t) {
    if (rows >= 2) return tile<F, 2>(p, g, t0);
    tile<F, 1>(p, g, t0);
  }
};

}  // namespace

void matmul_quant(const float* a, const PackedMatrix& w, float* c, const QuantGemmShape& s,
                  void* work, int ith, int nth) {
  matmul_quant_with<Avx2>(a, w, c, s, work, ith, nth);
}

}  // namespace infermode::avx2
