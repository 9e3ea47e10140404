#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "core/bf16.h"
#include "core/error.h"
#include "core/inference_mode.h"
#include "core/memory_stats.h"
#include "core/tensor.h"
#include "isa_params.h"
#include "kernels/matmul.h"

namespace infermode {
namespace {

using testing::kTolBf16ActivationDot;
using testing::kTolF32Dot;
using testing::random_floats;
using testing::ScopedIsa;

struct Case {
  int64_t m, k, n;
  bool b_nk;     // B stored as [n, k] rows (a Linear weight), passed as its transpose
  int64_t pad;   // extra elements at the end of each row of A and B (lda > k, ldb > n/k)
};

std::string describe(const Case& c) {
  return "m=" + std::to_string(c.m) + " k=" + std::to_string(c.k) + " n=" +
         std::to_string(c.n) + (c.b_nk ? " b=[n,k]^T" : " b=[k,n]") +
         (c.pad ? " padded" : "");
}

// B's element as stored (float32 or bfloat16 bits) and as the reference reads it.
float widen_b(float v) { return v; }
float widen_b(uint16_t v) { return bf16_to_float(v); }
template <typename W> constexpr DType dtype_b();
template <> constexpr DType dtype_b<float>() { return DType::f32; }
template <> constexpr DType dtype_b<uint16_t>() { return DType::bf16; }

// Runs the op under the given ISA and checks every element against a double-precision sum of the
// values B really holds (bfloat16 widened exactly), with a tolerance scaled by
// sum_p |a_ip * b_pj| (the size of what was added up). W: float, or uint16_t for bfloat16 B.
template <typename W>
void check_case(Isa isa, const Case& c, int threads) {
  ScopedIsa scoped(isa);
  constexpr bool kBf16 = std::is_same_v<W, uint16_t>;
  const int64_t lda = c.k + c.pad;
  const int64_t ldb = (c.b_nk ? c.k : c.n) + c.pad;
  auto a = random_floats(c.m * lda, uint32_t(c.m * (kBf16 ? 13 : 31) + c.k));
  auto bf = random_floats((c.b_nk ? c.n : c.k) * ldb, uint32_t(c.n * (kBf16 ? 7 : 17) + c.k));
  std::vector<W> b(bf.size());
  for (size_t i = 0; i < bf.size(); ++i) {
    if constexpr (kBf16) {
      b[i] = float_to_bf16(bf[i]);
    } else {
      b[i] = bf[i];
    }
  }
  std::vector<float> out(c.m * c.n, -1.0f);

  Tensor at = Tensor::borrow(a.data(), DType::f32, {c.m, c.k}, {lda, 1});
  Tensor bt = c.b_nk ? Tensor::borrow(b.data(), dtype_b<W>(), {c.k, c.n}, {1, ldb})
                     : Tensor::borrow(b.data(), dtype_b<W>(), {c.k, c.n}, {ldb, 1});
  Tensor ot = Tensor::borrow(out.data(), DType::f32, {c.m, c.n});
  matmul(at, bt, ot, threads);

  // A bfloat16 dot-product kernel also rounds A to bfloat16 (relative error 2^-9 per product),
  // beyond the skinny path (up to 16 rows of a [n, k] weight, 8 of a [k, n] one), which stays
  // exact in float32.
  const bool rounds_a = kBf16 && kernels().matmul_bf16.fn.rounds_a && c.m > (c.b_nk ? 16 : 8);
  const double tol_per_sqrt_k = rounds_a ? kTolBf16ActivationDot : kTolF32Dot;
  for (int64_t i = 0; i < c.m; ++i) {
    for (int64_t j = 0; j < c.n; ++j) {
      double want = 0.0, scale = 0.0;
      for (int64_t p = 0; p < c.k; ++p) {
        const double bv = widen_b(c.b_nk ? b[j * ldb + p] : b[p * ldb + j]);
        want += double(a[i * lda + p]) * bv;
        scale += std::fabs(double(a[i * lda + p]) * bv);
      }
      const double tol = tol_per_sqrt_k * std::sqrt(double(c.k)) * scale + 1e-30;
      ASSERT_NEAR(out[i * c.n + j], want, tol)
          << isa_name(isa) << (kBf16 ? (rounds_a ? " bf16 (A rounded) " : " bf16 ") : " ")
          << describe(c) << " threads=" << threads << " at (" << i << ", " << j << ")";
    }
  }
}

class MatmulIsa : public ::testing::TestWithParam<Isa> {};

TEST_P(MatmulIsa, Bfloat16WeightsAllPaths) {
  for (bool nk : {true, false}) {
    for (int64_t m : {1, 3, 8, 16}) check_case<uint16_t>(GetParam(), {m, 67, 131, nk, 3}, 2);
    check_case<uint16_t>(GetParam(), {1, 896, 37, nk, 0}, 2);
    check_case<uint16_t>(GetParam(), {13, 259, 131, nk, 5}, 2);
    check_case<uint16_t>(GetParam(), {131, 77, 45, nk, 0}, 2);
    check_case<uint16_t>(GetParam(), {50, 600, 70, nk, 1}, 3);
    check_case<uint16_t>(GetParam(), {37, 1025, 99, nk, 0}, 2);  // odd k, three K slices
    check_case<uint16_t>(GetParam(), {20, 9, 4133, nk, 0}, 2);   // two NC panels
    // Even row strides: a [n, k] weight's pairs are whole 32-bit words, packed by transposes.
    check_case<uint16_t>(GetParam(), {40, 258, 100, nk, 2}, 2);
    check_case<uint16_t>(GetParam(), {33, 1040, 70, nk, 0}, 3);
  }
}

TEST_P(MatmulIsa, SkinnyDecodeShapes) {
  for (bool nk : {true, false})
    for (int64_t m : {1, 2, 3, 5, 8})
      for (int64_t pad : {0, 3})
        check_case<float>(GetParam(), {m, 67, 131, nk, pad}, 2);
  check_case<float>(GetParam(), {1, 1, 1, true, 0}, 1);
  check_case<float>(GetParam(), {1, 896, 37, true, 0}, 2);
  check_case<float>(GetParam(), {4, 15, 301, false, 0}, 2);
}

TEST_P(MatmulIsa, BlockedGemmShapes) {
  for (bool nk : {true, false}) {
    check_case<float>(GetParam(), {9, 17, 33, nk, 0}, 1);
    check_case<float>(GetParam(), {13, 259, 131, nk, 5}, 2);   // two K slices
    check_case<float>(GetParam(), {131, 77, 45, nk, 0}, 2);    // rows split over threads
    check_case<float>(GetParam(), {50, 600, 70, nk, 1}, 3);    // three K slices, three threads
    check_case<float>(GetParam(), {20, 9, 4133, nk, 0}, 2);    // two NC panels
  }
}

INSTANTIATE_TEST_SUITE_P(Isa, MatmulIsa, ::testing::ValuesIn(testing::supported_isas()),
                         testing::isa_param_name);

TEST(MatmulOp, BatchedInputFlattensLeadingDims) {
  auto a = random_floats(2 * 3 * 5, 1);
  auto b = random_floats(5 * 4, 2);
  std::vector<float> out(2 * 3 * 4), flat(6 * 4);
  Tensor bt = Tensor::borrow(b.data(), DType::f32, {5, 4});
  Tensor o3 = Tensor::borrow(out.data(), DType::f32, {2, 3, 4});
  Tensor o2 = Tensor::borrow(flat.data(), DType::f32, {6, 4});
  matmul(Tensor::borrow(a.data(), DType::f32, {2, 3, 5}), bt, o3);
  matmul(Tensor::borrow(a.data(), DType::f32, {6, 5}), bt, o2);
  EXPECT_EQ(out, flat);
}

TEST(MatmulOp, EmptyKGivesZeros) {
  std::vector<float> a(1), b(1), out(6, 7.0f);
  Tensor ot = Tensor::borrow(out.data(), DType::f32, {2, 3});
  matmul(Tensor::borrow(a.data(), DType::f32, {2, 0}), Tensor::borrow(b.data(), DType::f32, {0, 3}),
         ot);
  for (float v : out) EXPECT_EQ(v, 0.0f);
}

TEST(MatmulOp, WarmCallsInsideTheModeTakeNothingFromTheHeap) {
  auto a = random_floats(64 * 96, 1);
  auto b = random_floats(96 * 80, 2);
  std::vector<float> out(64 * 80);
  Tensor at = Tensor::borrow(a.data(), DType::f32, {64, 96});
  Tensor bt = Tensor::borrow(b.data(), DType::f32, {96, 80});
  Tensor ot = Tensor::borrow(out.data(), DType::f32, {64, 80});
  reset_memory_stats();
  matmul(at, bt, ot, 2);
  EXPECT_GE(memory_stats().heap_allocations, 1u) << "the blocked GEMM packs into scratch memory";
  InferenceMode guard;
  matmul(at, bt, ot, 2);  // warm-up: the arena grows once
  reset_memory_stats();
  for (int i = 0; i < 5; ++i) matmul(at, bt, ot, 2);
  EXPECT_EQ(memory_stats().heap_allocations, 0u);
}

TEST(MatmulOp, RejectsBadArgumentsNamingThem) {
  std::vector<float> a(12), b(20), out(15);
  Tensor at = Tensor::borrow(a.data(), DType::f32, {3, 4});
  Tensor ot = Tensor::borrow(out.data(), DType::f32, {3, 5});
  auto message = [](auto&& fn) {
    try {
      fn();
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("no exception");
  };
  Tensor b55 = Tensor::borrow(b.data(), DType::f32, {5, 4});
  EXPECT_NE(message([&] { matmul(at, b55, ot); }).find("must equal the first dim of b"),
            std::string::npos);
  Tensor bad_strides = Tensor::borrow(b.data(), DType::f32, {4, 5}, {10, 2});
  EXPECT_NE(message([&] { matmul(at, bad_strides, ot); }).find("neither row- nor column-"),
            std::string::npos);
  Tensor b45 = Tensor::borrow(b.data(), DType::f32, {4, 5});
  Tensor wrong_out = Tensor::borrow(out.data(), DType::f32, {5, 3});
  EXPECT_NE(message([&] { matmul(at, b45, wrong_out); }).find("out has shape [5, 3]"),
            std::string::npos);
  Tensor aliased = Tensor::borrow(b.data(), DType::f32, {3, 5});
  EXPECT_NE(message([&] { matmul(at, b45, aliased); }).find("shares memory with b"),
            std::string::npos);
  std::vector<double> ad(12);
  EXPECT_THROW(matmul(Tensor::borrow(ad.data(), DType::f64, {3, 4}), b45, ot), TypeError);
}

}  // namespace
}  // namespace infermode
