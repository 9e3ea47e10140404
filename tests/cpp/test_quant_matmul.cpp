#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/f16.h"
#include "core/inference_mode.h"
#include "core/memory_stats.h"
#include "core/quant_blocks.h"
#include "core/tensor.h"
#include "isa_params.h"
#include "kernels/quant_matmul.h"
#include "kernels/quant_pack.h"

namespace infermode {
namespace {

using testing::random_floats;
using testing::ScopedIsa;

constexpr QuantFormat kFormats[] = {QuantFormat::q8_0, QuantFormat::q4_0, QuantFormat::q4_1};

std::vector<uint8_t> quantized(QuantFormat f, const std::vector<float>& w, int64_t rows,
                               int64_t cols) {
  std::vector<uint8_t> blocks(size_t(rows * cols / kQuantBlock) * quant_block_bytes(f));
  quantize_blocks(f, w.data(), blocks.data(), rows, cols);
  return blocks;
}

TEST(QuantBlocks, ParseNamesEveryFormatAndRejectsOthers) {
  for (QuantFormat f : kFormats) EXPECT_EQ(parse_quant_format(quant_format_name(f)), f);
  EXPECT_THROW(parse_quant_format("q5_k"), ValueError);
}

// Quantizing then dequantizing stays within half a step of each block's grid (a whole step for
// Q4_0, whose grid [-8d, 7d] clips values on the side opposite the largest one).
TEST(QuantBlocks, RoundTripWithinHalfAStep) {
  const int64_t rows = 3, cols = 96;
  auto w = random_floats(rows * cols, 5);
  for (QuantFormat f : kFormats) {
    auto blocks = quantized(f, w, rows, cols);
    std::vector<float> back(w.size());
    dequantize_blocks(f, blocks.data(), back.data(), rows, cols);
    for (int64_t b = 0; b < rows * cols / kQuantBlock; ++b) {
      float lo = w[b * 32], hi = w[b * 32], amax = 0;
      for (int i = 0; i < 32; ++i) {
        lo = std::min(lo, w[b * 32 + i]);
        hi = std::max(hi, w[b * 32 + i]);
        amax = std::max(amax, std::fabs(w[b * 32 + i]));
      }
      const float step = f == QuantFormat::q8_0 ? amax / 127 : f == QuantFormat::q4_0 ? amax / 8
                                                                                    : (hi - lo) / 15;
      for (int i = 0; i < 32; ++i)
        EXPECT_NEAR(back[b * 32 + i], w[b * 32 + i],
                    (f == QuantFormat::q4_0 ? 1.0f : 0.5f) * step * 1.01f + 1e-3f * amax)
            << quant_format_name(f) << " block " << b << " value " << i;
    }
  }
}

// The packed layout holds exactly the file's codes and scales: every value reads back as the
// GGUF dequantization gives it.
TEST(QuantPack, EveryValueReadsBackAsDequantized) {
  const int64_t rows = 37, cols = 64;  // a partial last group
  auto w = random_floats(rows * cols, 9);
  for (QuantFormat f : kFormats) {
    auto blocks = quantized(f, w, rows, cols);
    std::vector<float> want(w.size());
    dequantize_blocks(f, blocks.data(), want.data(), rows, cols);
    PackedMatrix p = pack_blocks(f, blocks.data(), rows, cols);
    EXPECT_EQ(p.groups(), 3);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        int q;
        float d, offset;
        p.code(r, c, &q, &d, &offset);
        EXPECT_NEAR(d * float(q) + offset, want[r * cols + c], 1e-6f * std::fabs(d) * 16)
            << quant_format_name(f) << " (" << r << ", " << c << ")";
      }
  }
}

// Matrices stacked by rows (q, k, v as one) read back as each one alone, groups straddling the
// seams included.
TEST(QuantPack, StackedMatricesKeepTheirRowsInOrder) {
  const int64_t cols = 64, rows_a = 20, rows_b = 24;
  auto wa = random_floats(rows_a * cols, 31), wb = random_floats(rows_b * cols, 32);
  for (QuantFormat f : kFormats) {
    auto ba = quantized(f, wa, rows_a, cols), bb = quantized(f, wb, rows_b, cols);
    PackedMatrix a = pack_blocks(f, ba.data(), rows_a, cols);
    PackedMatrix b = pack_blocks(f, bb.data(), rows_b, cols);
    PackedMatrix ab = pack_blocks({QuantView{f, ba.data(), rows_a, cols},
                                   QuantView{f, bb.data(), rows_b, cols}});
    ASSERT_EQ(ab.rows(), rows_a + rows_b);
    for (int64_t r = 0; r < ab.rows(); ++r)
      for (int64_t c = 0; c < cols; ++c) {
        int q1, q2;
        float d1, d2, o1, o2;
        ab.code(r, c, &q1, &d1, &o1);
        (r < rows_a ? a : b).code(r < rows_a ? r : r - rows_a, c, &q2, &d2, &o2);
        ASSERT_EQ(q1, q2);
        ASSERT_EQ(d1, d2);
        ASSERT_EQ(o1, o2);
      }
  }
  std::vector<uint8_t> other(size_t(rows_b) * 2 * sizeof(BlockQ8_0));
  EXPECT_THROW(pack_blocks({QuantView{QuantFormat::q4_0, other.data(), rows_b, cols},
                            QuantView{QuantFormat::q8_0, other.data(), rows_b, cols}}),
               ValueError);
}

TEST(QuantPack, RejectsColumnsThatAreNotWholeBlocks) {
  std::vector<float> w(4 * 40, 1.0f);
  std::vector<uint8_t> out(1024);
  EXPECT_THROW(quantize_blocks(QuantFormat::q8_0, w.data(), out.data(), 4, 40), ValueError);
  EXPECT_THROW(PackedMatrix(QuantFormat::q4_0, 4, 40), ValueError);
}

struct Case {
  QuantFormat format;
  int64_t m, rows, cols;
  int threads;
};

std::string describe(const Case& c) {
  return std::string(quant_format_name(c.format)) + " m=" + std::to_string(c.m) +
         " rows=" + std::to_string(c.rows) + " cols=" + std::to_string(c.cols) +
         " threads=" + std::to_string(c.threads);
}

std::vector<float> run(Isa isa, const Case& c, const PackedMatrix& p, const std::vector<float>& a) {
  ScopedIsa scoped(isa);
  std::vector<float> out(size_t(c.m * c.rows), -7.0f);
  Tensor at = Tensor::borrow(const_cast<float*>(a.data()), DType::f32, {c.m, c.cols});
  Tensor ot = Tensor::borrow(out.data(), DType::f32, {c.m, c.rows});
  matmul(at, p, ot, c.threads);
  return out;
}

std::vector<Case> cases() {
  std::vector<Case> out;
  for (QuantFormat f : kFormats)
    for (int64_t m : {1, 2, 3, 4, 5, 9})
      for (auto [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{
               {16, 32}, {40, 64}, {96, 160}, {203, 96}})
        for (int threads : {1, 2}) out.push_back({f, m, rows, cols, threads});
  return out;
}

class QuantMatmul : public ::testing::TestWithParam<Isa> {};

// Every ISA path computes what the ref kernel computes: same codes, same integer sums, the same
// float operations per block, so only the order of nothing differs.
TEST_P(QuantMatmul, MatchesRefKernel) {
  for (const Case& c : cases()) {
    auto w = random_floats(c.rows * c.cols, uint32_t(c.rows + c.cols));
    auto a = random_floats(c.m * c.cols, uint32_t(c.m * 3 + c.cols), 2.0f);
    auto blocks = quantized(c.format, w, c.rows, c.cols);
    PackedMatrix p = pack_blocks(c.format, blocks.data(), c.rows, c.cols);
    auto want = run(Isa::ref, c, p, a);
    auto got = run(GetParam(), c, p, a);
    for (size_t i = 0; i < want.size(); ++i)
      ASSERT_NEAR(got[i], want[i], 1e-5f * (1.0f + std::fabs(want[i]))) << describe(c) << " at " << i;
  }
}

// Against float32 arithmetic on the dequantized weights: the only error is the activations'
// 8-bit rounding (half a step of each block, d = amax / 127, plus the float16 rounding of d and,
// for Q4_1, of d * sum(q)). The bound is computed per output from the data.
TEST_P(QuantMatmul, MatchesDequantizedFloatProduct) {
  ScopedIsa scoped(GetParam());
  for (QuantFormat f : kFormats) {
    const int64_t m = 5, rows = 48, cols = 256;
    auto w = random_floats(rows * cols, 21);
    auto a = random_floats(m * cols, 22, 3.0f);
    auto blocks = quantized(f, w, rows, cols);
    std::vector<float> deq(w.size());
    dequantize_blocks(f, blocks.data(), deq.data(), rows, cols);
    PackedMatrix p = pack_blocks(f, blocks.data(), rows, cols);
    std::vector<float> out(size_t(m * rows));
    Tensor at = Tensor::borrow(a.data(), DType::f32, {m, cols});
    Tensor ot = Tensor::borrow(out.data(), DType::f32, {m, rows});
    matmul(at, p, ot, 2);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t r = 0; r < rows; ++r) {
        double want = 0, bound = 1e-5;
        for (int64_t b = 0; b < cols / 32; ++b) {
          double amax = 0, wabs = 0;
          for (int k = 0; k < 32; ++k) {
            const int64_t col = b * 32 + k;
            want += double(a[i * cols + col]) * deq[r * cols + col];
            amax = std::max(amax, std::fabs(double(a[i * cols + col])));
            wabs += std::fabs(deq[r * cols + col]);
          }
          const double d = amax / 127;
          bound += wabs * (0.5 * d + 127 * d * std::ldexp(1.0, -11));
          if (f == QuantFormat::q4_1) bound += 32 * 4.0 * amax * std::ldexp(1.0, -10);
        }
        EXPECT_NEAR(out[i * rows + r], want, bound) << quant_format_name(f) << " row " << i << " col " << r;
      }
  }
}

TEST_P(QuantMatmul, WarmDecodeTakesNothingFromTheHeap) {
  ScopedIsa scoped(GetParam());
  const int64_t rows = 64, cols = 128;
  auto w = random_floats(rows * cols, 3);
  auto blocks = quantized(QuantFormat::q4_1, w, rows, cols);
  PackedMatrix p = pack_blocks(QuantFormat::q4_1, blocks.data(), rows, cols);
  auto a = random_floats(cols, 4);
  std::vector<float> out(rows);
  Tensor at = Tensor::borrow(a.data(), DType::f32, {1, cols});
  Tensor ot = Tensor::borrow(out.data(), DType::f32, {1, rows});
  InferenceMode guard;
  matmul(at, p, ot, 2);
  reset_memory_stats();
  matmul(at, p, ot, 2);
  EXPECT_EQ(memory_stats().heap_allocations, 0u);
}

INSTANTIATE_TEST_SUITE_P(Isas, QuantMatmul, ::testing::ValuesIn(testing::supported_isas()),
                         testing::isa_param_name);

TEST(QuantMatmulOp, ChecksShapes) {
  std::vector<float> w(32 * 64, 0.5f), a(3 * 64), out(3 * 32);
  auto blocks = quantized(QuantFormat::q8_0, w, 32, 64);
  PackedMatrix p = pack_blocks(QuantFormat::q8_0, blocks.data(), 32, 64);
  Tensor wrong_k = Tensor::borrow(a.data(), DType::f32, {2, 32});
  Tensor good_a = Tensor::borrow(a.data(), DType::f32, {3, 64});
  Tensor ot = Tensor::borrow(out.data(), DType::f32, {3, 32});
  Tensor wrong_out = Tensor::borrow(out.data(), DType::f32, {3, 16});
  EXPECT_THROW(matmul(wrong_k, p, ot), ValueError);
  EXPECT_THROW(matmul(good_a, p, wrong_out), ValueError);
  EXPECT_THROW(matmul(good_a, PackedMatrix(), ot), ValueError);
}

}  // namespace
}  // namespace infermode
