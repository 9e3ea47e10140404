#pragma once
// The skinny matmul driver shared by the ISA folders: a few rows of A (decode, small batches),
// B streamed once and never packed. Like gemm_blocked.h it is included only by ISA folders,
// each with its own flags, so everything here has internal linkage.
#include <algorithm>
#include <cstdint>

#include "core/thread_pool.h"
#include "kernels/dispatch.h"

namespace infermode {
namespace {

// Up to this many rows of A, B is streamed once, unpacked: decode reads each weight exactly once.
// A Linear weight ([n, k] rows) serves more rows that way, since a block of its rows stays in L1
// while every row of A passes over it; a [k, n] B is re-read from L2/L3 per group of rows.
inline int64_t skinny_rows(const GemmShape& s) { return s.b_nk ? 16 : 8; }

// K (the ISA's kernels) provides kGroup (rows of A per pass), kTileCols, and for MI <= kGroup and
// B's element type W:
//   dot_rows4<MI>(a, lda, b, ldb, c, ldc, k): c[i, 0:4] = a[i, :] . b[0:4, :]  (B as [n, k])
//   dot_rows1<MI>(a, lda, b, c, ldc, k):      c[i, 0]   = a[i, :] . b[0, :]
//   axpy_tile<MI>(a, lda, b, ldb, c, ldc, k, width): c[i, 0:width] = a[i, :] @ b[:, 0:width]
template <typename K, int MI, typename W>
void skinny_group(const float* a, const W* b, float* c, const GemmShape& s, int64_t j0,
                  int64_t j1) {
  if (s.b_nk) {
    int64_t j = j0;
    for (; j + 4 <= j1; j += 4)
      K::template dot_rows4<MI>(a, s.lda, b + j * s.ldb, s.ldb, c + j, s.ldc, s.k);
    for (; j < j1; ++j) K::template dot_rows1<MI>(a, s.lda, b + j * s.ldb, c + j, s.ldc, s.k);
  } else {
    for (int64_t j = j0; j < j1; j += K::kTileCols)
      K::template axpy_tile<MI>(a, s.lda, b + j, s.ldb, c + j, s.ldc, s.k,
                                std::min<int64_t>(K::kTileCols, j1 - j));
  }
}

// The instance for exactly `mi` rows (1..MI), so each keeps its accumulators in registers.
template <typename K, int MI = K::kGroup, typename W>
void skinny_group_of(int64_t mi, const float* a, const W* b, float* c, const GemmShape& s,
                     int64_t j0, int64_t j1) {
  if constexpr (MI > 1) {
    if (mi < MI) {
      skinny_group_of<K, MI - 1>(mi, a, b, c, s, j0, j1);
      return;
    }
  }
  skinny_group<K, MI>(a, b, c, s, j0, j1);
}

// Thread ith of nth computes its share of C's columns for every row of A. W: float, or uint16_t
// for bfloat16 weights. Blocks of B's columns are the outer loop and the groups of A's rows the
// inner one: each block comes from memory once and serves every group from L1/L2, so a batch of
// eight decodes reads the weights once, not once per group.
template <typename K, typename W>
void skinny_run(const float* a, const W* b, float* c, const GemmShape& s, int ith, int nth) {
  const Range cols = split_range(s.n, ith, nth, s.b_nk ? 4 : 16);
  const int64_t block = s.b_nk ? 4 : K::kTileCols;
  for (int64_t j = cols.begin; j < cols.end; j += block) {
    const int64_t j1 = std::min(j + block, cols.end);
    for (int64_t i = 0; i < s.m; i += K::kGroup)
      skinny_group_of<K>(std::min<int64_t>(K::kGroup, s.m - i), a + i * s.lda, b, c + i * s.ldc,
                         s, j, j1);
  }
}

}  // namespace
}  // namespace infermode
