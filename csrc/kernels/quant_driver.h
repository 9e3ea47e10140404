#pragma once
// The quantized-matmul driver shared by the ISA folders (see QuantMatmulKernel): each thread
// quantizes its share of A's rows, the team meets, then each thread walks its share of W's row
// groups in chunks that stay in L2 while every row of A passes them, tile by tile. An ISA
// supplies the codes and the tiles as a policy:
//   static void quantize_row(const float* x, const QuantizedRows& out, int64_t row)
//   template <QuantFormat F> static void tiles(const QuantTile& p, int64_t g0, int64_t t0,
//                                              int64_t rows_of_a, int64_t groups)
//     computes min(rows_of_a, kRows) rows of A against `groups` (<= group_step) row groups;
//   static constexpr int64_t kRows;  static int64_t group_step(int64_t m);
// Only ISA folders include this file, each with its own flags, so everything here has internal
// linkage: two folders' copies must never be merged by the linker.
#include <algorithm>
#include <cstdint>

#include "core/thread_pool.h"
#include "kernels/dispatch.h"
#include "kernels/quant_activations.h"
#include "kernels/quant_pack.h"

namespace infermode {
namespace {

struct QuantTile {
  const PackedMatrix& w;
  const QuantizedRows& x;
  float* c;
  int64_t ldc;
};

template <typename Isa, QuantFormat F>
void run_quant(const float* a, const PackedMatrix& w, float* c, const QuantGemmShape& s,
               void* work, int ith, int nth) {
  const QuantizedRows x = quantized_rows(work, s.m, w.cols());
  const Range mine = split_range(s.m, ith, nth);
  for (int64_t i = mine.begin; i < mine.end; ++i) Isa::quantize_row(a + i * s.lda, x, i);
  if (nth > 1) barrier();
  const QuantTile p{w, x, c, s.ldc};
  const Range groups = split_range(w.groups(), ith, nth);
  const int64_t step = Isa::group_step(s.m);
  const int64_t chunk =
      std::max<int64_t>(step, int64_t(256 * 1024 / w.group_bytes()) / step * step);
  for (int64_t c0 = groups.begin; c0 < groups.end; c0 += chunk) {
    const int64_t c1 = std::min(groups.end, c0 + chunk);
    for (int64_t t0 = 0; t0 < s.m; t0 += Isa::kRows)
      for (int64_t g0 = c0; g0 < c1; g0 += step)
        Isa::template tiles<F>(p, g0, t0, s.m - t0, std::min(step, c1 - g0));
  }
}

template <typename Isa>
void matmul_quant_with(const float* a, const PackedMatrix& w, float* c, const QuantGemmShape& s,
                       void* work, int ith, int nth) {
  switch (w.format()) {
    case QuantFormat::q8_0: return run_quant<Isa, QuantFormat::q8_0>(a, w, c, s, work, ith, nth);
    case QuantFormat::q4_0: return run_quant<Isa, QuantFormat::q4_0>(a, w, c, s, work, ith, nth);
    case QuantFormat::q4_1: return run_quant<Isa, QuantFormat::q4_1>(a, w, c, s, work, ith, nth);
  }
}

}  // namespace
}  // namespace infermode
