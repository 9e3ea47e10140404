#pragma once
// The cache-blocked GEMM driver shared by the ISA folders (the Goto/BLIS loop nest):
//   for each NC-wide panel of B, for each KC-deep slice:
//     the team packs B[pc:pc+kc, jc:jc+nc] into NR-wide micro-panels (shared, L3-resident);
//     each thread packs its MC rows of A into MR-tall micro-panels (private, L2-resident)
//     and runs the MR x NR micro-kernel over every (A micro-panel, B micro-panel) pair.
// Only ISA folders include this file, each compiled with its own flags (AVX2 at least), so
// everything here has internal linkage: two folders' copies must never be merged by the linker.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "core/thread_pool.h"
#include "kernels/dispatch.h"

namespace infermode {
namespace {

// B elements: float32, or bfloat16 bits (uint16_t) widened to float32 as they are packed.
inline float widen(float v) { return v; }
inline float widen(uint16_t v) {
  const uint32_t bits = uint32_t(v) << 16;
  float f;
  __builtin_memcpy(&f, &bits, sizeof(f));
  return f;
}
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// dst[i * ld_dst + j] = src[j * ld_src + i] for an 8 x 8 block: the classic unpack/shuffle/permute
// transpose, three rounds of eight shuffles instead of 64 scalar moves.
template <typename W>
void transpose8x8(const W* src, int64_t ld_src, float* dst, int64_t ld_dst) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = load8(src + i * ld_src);
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int h = 0; h < 2; ++h) {
    for (int q = 0; q < 2; ++q) {
      const __m256 a = t[4 * h + q], b = t[4 * h + q + 2];
      r[4 * h + 2 * q] = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(1, 0, 1, 0));
      r[4 * h + 2 * q + 1] = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 2, 3, 2));
    }
  }
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(dst + i * ld_dst, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
    _mm256_storeu_ps(dst + (i + 4) * ld_dst, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
  }
}

// The float32 packing: A in MR-tall micro-panels, B in NR-wide ones, both k-major, one float
// per k. Micro-kernels that multiply float32 inherit it.
template <int MR, int NR>
struct F32Packing {
  using Elem = float;
  static constexpr int64_t kDepth = 1;  // k values per packed element

  // Rows [i0, i0+mc) of A, columns [p0, p0+kc), into MR-tall panels; rows past mc are zero.
  static void pack_a(const float* a, int64_t lda, int64_t i0, int64_t mc, int64_t p0, int64_t kc,
                     float* ap) {
    for (int64_t ir = 0; ir < mc; ir += MR) {
      const int mr = int(std::min<int64_t>(MR, mc - ir));
      for (int i = 0; i < MR; ++i) {
        if (i < mr) {
          const float* src = a + (i0 + ir + i) * lda + p0;
          for (int64_t p = 0; p < kc; ++p) ap[p * MR + i] = src[p];
        } else {
          for (int64_t p = 0; p < kc; ++p) ap[p * MR + i] = 0.0f;
        }
      }
      ap += MR * kc;
    }
  }

  // Columns [j0, j0+nr) of B, rows [p0, p0+kc), into one NR-wide panel; columns past nr are zero.
  template <typename W>
  static void pack_b(const W* b, const GemmShape& s, int64_t p0, int64_t kc, int64_t j0, int nr,
                     float* bp) {
    if (!s.b_nk) {
      for (int64_t p = 0; p < kc; ++p) {
        const W* src = b + (p0 + p) * s.ldb + j0;
        float* dst = bp + p * NR;
        for (int j = 0; j < nr; ++j) dst[j] = widen(src[j]);
        for (int j = nr; j < NR; ++j) dst[j] = 0.0f;
      }
    } else {
      // B rows are [n, k]: a transpose. Whole 8 x 8 blocks go through registers; the ragged
      // edges (k % 8 columns, rows past nr) are moved one by one.
      const int full_rows = nr - nr % 8;
      const int64_t full_k = kc - kc % 8;
      for (int j = 0; j < full_rows; j += 8)
        for (int64_t p = 0; p < full_k; p += 8)
          transpose8x8(b + (j0 + j) * s.ldb + p0 + p, s.ldb, bp + p * NR + j, NR);
      for (int j = 0; j < NR; ++j) {
        const bool real = j < nr;
        const W* src = b + (j0 + j) * s.ldb + p0;
        for (int64_t p = (j < full_rows ? full_k : 0); p < kc; ++p)
          bp[p * NR + j] = real ? widen(src[p]) : 0.0f;
      }
    }
  }
};

// Micro must provide MR, NR, KC, MC, NC, a packing (Elem, kDepth, pack_a, pack_b: see
// F32Packing) and
//   static void tile(int64_t depth, const Elem* ap, const Elem* bp, float* c, int64_t ldc,
//                    int mr, int nr, bool accumulate);
// computing C[0:mr, 0:nr] (+)= Ap (depth x MR, k-major) * Bp (depth x NR, k-major), where depth
// counts packed elements (kDepth k values each).
template <typename Micro>
struct BlockedGemm {
  static constexpr int MR = Micro::MR, NR = Micro::NR;
  static constexpr int64_t KC = Micro::KC, MC = Micro::MC, NC = Micro::NC;
  using Elem = typename Micro::Elem;
  static constexpr int64_t kDepth = Micro::kDepth;
  static_assert(sizeof(Elem) == sizeof(float), "workspace is counted in 4-byte elements");
  static_assert(KC % kDepth == 0, "a K slice must hold whole packed elements");

  static int64_t depth(int64_t kc) { return (kc + kDepth - 1) / kDepth; }
  static int64_t kc_max(const GemmShape& s) { return std::min<int64_t>(s.k, KC); }
  static int64_t nc_max(const GemmShape& s) {
    return std::min<int64_t>((s.n + NR - 1) / NR * NR, NC);
  }

  static size_t workspace_floats(const GemmShape& s, int nth) {
    const int64_t d = depth(kc_max(s));
    return size_t(d * nc_max(s) + int64_t(nth) * MC * d + 64);
  }

  // Few rows: every thread takes all of them and a share of B's panels, so no thread is left
  // with a ragged remainder (37 rows on 2 threads would split 24 : 13). Many: threads split rows.
  static bool split_rows(const GemmShape& s, int nth) { return (s.m + MR - 1) / MR >= 4 * nth; }

  template <typename W>
  static void run(const float* a, const W* b, float* c, const GemmShape& s, float* work, int ith,
                  int nth) {
    const int64_t dmax = depth(kc_max(s));
    Elem* bpack = reinterpret_cast<Elem*>(work);
    Elem* apack = bpack + dmax * nc_max(s) + int64_t(ith) * MC * dmax;
    const bool by_rows = split_rows(s, nth);
    const Range rows = by_rows ? split_range(s.m, ith, nth, MR) : Range{0, s.m};

    for (int64_t jc = 0; jc < s.n; jc += NC) {
      const int64_t nc = std::min(NC, s.n - jc);
      const int64_t panels = (nc + NR - 1) / NR;
      for (int64_t pc = 0; pc < s.k; pc += KC) {
        const int64_t kc = std::min(KC, s.k - pc);
        const int64_t d = depth(kc);
        const Range mine = split_range(panels, ith, nth);
        for (int64_t q = mine.begin; q < mine.end; ++q)
          Micro::pack_b(b, s, pc, kc, jc + q * NR, int(std::min<int64_t>(NR, nc - q * NR)),
                        bpack + q * NR * d);
        barrier();
        multiply_slice(a, s, apack, bpack, d, rows, by_rows ? Range{0, panels} : mine, jc, nc,
                       pc, kc, c);
        barrier();  // nobody may repack B while another thread still reads it
      }
    }
  }

  // B packed ahead, once, in the order run() packs it (pack_whole): the same products with no
  // packing of B and no barriers. Float32 packings only (one k per element).
  static int64_t packed_floats(int64_t n, int64_t k) { return (n + NR - 1) / NR * NR * k; }

  // Where the panels of column block jc, slice pc start in the whole packing: every earlier
  // column block holds NC columns (a multiple of NR) by all k rows; every earlier slice of this
  // block holds `panels` panels by KC rows.
  static int64_t packed_offset(const GemmShape& s, int64_t jc, int64_t pc, int64_t panels) {
    return jc * s.k + pc * panels * NR;
  }

  // Thread ith of nth packs its share of B's panels into `out` (packed_floats(n, k) floats).
  template <typename W>
  static void pack_whole(const W* b, const GemmShape& s, Elem* out, int ith, int nth) {
    static_assert(kDepth == 1, "packed ahead: float32 packings only");
    for (int64_t jc = 0; jc < s.n; jc += NC) {
      const int64_t nc = std::min(NC, s.n - jc);
      const int64_t panels = (nc + NR - 1) / NR;
      for (int64_t pc = 0; pc < s.k; pc += KC) {
        const int64_t kc = std::min(KC, s.k - pc);
        Elem* slice = out + packed_offset(s, jc, pc, panels);
        const Range mine = split_range(panels, ith, nth);
        for (int64_t q = mine.begin; q < mine.end; ++q)
          Micro::pack_b(b, s, pc, kc, jc + q * NR, int(std::min<int64_t>(NR, nc - q * NR)),
                        slice + q * NR * kc);
      }
    }
  }

  static size_t packed_workspace_floats(const GemmShape& s, int nth) {
    return size_t(int64_t(nth) * MC * kc_max(s) + 64);
  }

  static void run_packed(const float* a, const Elem* packed, float* c, const GemmShape& s,
                         float* work, int ith, int nth) {
    static_assert(kDepth == 1, "packed ahead: float32 packings only");
    Elem* apack = reinterpret_cast<Elem*>(work) + int64_t(ith) * MC * kc_max(s);
    const bool by_rows = split_rows(s, nth);
    const Range rows = by_rows ? split_range(s.m, ith, nth, MR) : Range{0, s.m};
    for (int64_t jc = 0; jc < s.n; jc += NC) {
      const int64_t nc = std::min(NC, s.n - jc);
      const int64_t panels = (nc + NR - 1) / NR;
      const Range cols = by_rows ? Range{0, panels} : split_range(panels, ith, nth);
      for (int64_t pc = 0; pc < s.k; pc += KC) {
        const int64_t kc = std::min(KC, s.k - pc);
        multiply_slice(a, s, apack, packed + packed_offset(s, jc, pc, panels), kc, rows, cols,
                       jc, nc, pc, kc, c);
      }
    }
  }

 private:
  // C[rows, panels `cols` of block jc] (+)= A[rows, pc:pc+kc] @ the packed panels of B.
  static void multiply_slice(const float* a, const GemmShape& s, Elem* apack, const Elem* bpack,
                             int64_t d, Range rows, Range cols, int64_t jc, int64_t nc,
                             int64_t pc, int64_t kc, float* c) {
    for (int64_t ic = rows.begin; ic < rows.end; ic += MC) {
      const int64_t mc = std::min(MC, rows.end - ic);
      Micro::pack_a(a, s.lda, ic, mc, pc, kc, apack);
      for (int64_t q = cols.begin; q < cols.end; ++q) {
        const int nr = int(std::min<int64_t>(NR, nc - q * NR));
        const Elem* bp = bpack + q * NR * d;
        for (int64_t ir = 0; ir < mc; ir += MR) {
          const int mr = int(std::min<int64_t>(MR, mc - ir));
          Micro::tile(d, apack + ir * d, bp, c + (ic + ir) * s.ldc + jc + q * NR, s.ldc, mr, nr,
                      pc > 0);
        }
      }
    }
  }
};

}  // namespace
}  // namespace infermode
