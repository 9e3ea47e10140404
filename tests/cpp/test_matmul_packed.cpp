#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "isa_params.h"
#include "kernels/matmul.h"
#include "kernels/matmul_packed.h"

namespace infermode {
namespace {

using testing::random_floats;
using testing::ScopedIsa;

// x @ w^T through the packed weight and through the plain one, same ISA, same threads.
std::pair<std::vector<float>, std::vector<float>> both(const PackedF32Matrix& packed,
                                                       std::vector<float>& x, int64_t m,
                                                       int threads) {
  const int64_t n = packed.weight().size(0), k = packed.weight().size(1);
  std::vector<float> got(m * n, -1.0f), want(m * n, -2.0f);
  Tensor xt = Tensor::borrow(x.data(), DType::f32, {m, k});
  Tensor gt = Tensor::borrow(got.data(), DType::f32, {m, n});
  Tensor wt = Tensor::borrow(want.data(), DType::f32, {m, n});
  matmul(xt, packed, gt, threads);
  matmul(xt, packed.weight().transpose(0, 1), wt, threads);
  return {got, want};
}

class PackedMatmulIsa : public ::testing::TestWithParam<Isa> {};

// The packed panels are what the blocked GEMM would have packed itself: the products are the
// same to the bit, for few rows (streamed unpacked), ragged rows and columns, several K slices
// and column blocks, any threads.
TEST_P(PackedMatmulIsa, SameBitsAsThePlainWeight) {
  ScopedIsa scoped(GetParam());
  const struct { int64_t n, k; } weights[] = {{33, 17}, {131, 259}, {70, 600}, {4133, 9}};
  for (const auto& shape : weights) {
    auto w = random_floats(shape.n * shape.k, uint32_t(shape.n + shape.k));
    const PackedF32Matrix packed(Tensor::borrow(w.data(), DType::f32, {shape.n, shape.k}));
    EXPECT_EQ(packed.packed_for(GetParam()), GetParam() != Isa::ref);
    for (int64_t m : {1, 5, 17, 37, 150})
      for (int threads : {1, 2, 3}) {
        auto x = random_floats(m * shape.k, uint32_t(m * 7 + shape.k));
        const auto [got, want] = both(packed, x, m, threads);
        ASSERT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0)
            << isa_name(GetParam()) << " m=" << m << " n=" << shape.n << " k=" << shape.k
            << " threads=" << threads;
      }
  }
}

INSTANTIATE_TEST_SUITE_P(Isa, PackedMatmulIsa, ::testing::ValuesIn(testing::supported_isas()),
                         testing::isa_param_name);

// Packed for one ISA and run under another (INFERMODE_ISA, set_isa): the plain weight serves.
TEST(PackedMatmul, AnotherIsaUsesThePlainWeight) {
  const auto isas = testing::supported_isas();
  auto w = random_floats(64 * 96, 3);
  const PackedF32Matrix packed(Tensor::borrow(w.data(), DType::f32, {64, 96}));
  for (Isa isa : isas) {
    ScopedIsa scoped(isa);
    auto x = random_floats(40 * 96, 4);
    const auto [got, want] = both(packed, x, 40, 2);
    ASSERT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0)
        << isa_name(isa);
  }
}

TEST(PackedMatmul, ChecksItsArguments) {
  std::vector<float> w(12 * 8), x(3 * 7), out(3 * 12);
  const PackedF32Matrix packed(Tensor::borrow(w.data(), DType::f32, {12, 8}));
  Tensor xt = Tensor::borrow(x.data(), DType::f32, {3, 7});
  Tensor ot = Tensor::borrow(out.data(), DType::f32, {3, 12});
  EXPECT_THROW(matmul(xt, packed, ot), ValueError);  // k 7 against the weight's 8
  std::vector<float> cube(2 * 3 * 4);
  EXPECT_THROW(PackedF32Matrix(Tensor::borrow(cube.data(), DType::f32, {2, 3, 4})), ValueError);
}

}  // namespace
}  // namespace infermode
