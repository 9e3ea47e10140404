#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "isa_params.h"
#include "kernels/swiglu.h"

namespace infermode {
namespace {

// The ISA paths use a polynomial exp within 2e-7 relative; silu adds one division.
constexpr float kTolSwiglu = 1e-6f;

class SwigluIsa : public ::testing::TestWithParam<Isa> {};

TEST_P(SwigluIsa, MatchesRefFromDeepNegativeToLargePositive) {
  for (int64_t n : {1, 7, 15, 16, 17, 33, 1001}) {
    auto g = testing::random_floats(size_t(n), uint32_t(n), 6.0f);
    auto u = testing::random_floats(size_t(n), uint32_t(n) + 1);
    if (n > 4) g[0] = -100.0f, g[1] = 100.0f, g[2] = -87.5f, g[3] = 0.0f;  // the clamps' edges
    std::vector<float> want(n), got(n);
    kernels_for(Isa::ref).swiglu.fn(g.data(), u.data(), want.data(), n);
    kernels_for(GetParam()).swiglu.fn(g.data(), u.data(), got.data(), n);
    for (int64_t i = 0; i < n; ++i)
      ASSERT_NEAR(got[i], want[i], kTolSwiglu * (1.0f + std::fabs(want[i])))
          << isa_name(GetParam()) << " n=" << n << " g=" << g[i];
  }
}

INSTANTIATE_TEST_SUITE_P(Isa, SwigluIsa, ::testing::ValuesIn(testing::supported_isas()),
                         testing::isa_param_name);

TEST(SwigluOp, InPlaceAndShapeChecks) {
  std::vector<float> g = {0.0f, 1.0f, -1.0f}, u = {2.0f, 2.0f, 2.0f};
  Tensor gt = Tensor::borrow(g.data(), DType::f32, {3});
  swiglu(gt, Tensor::borrow(u.data(), DType::f32, {3}), gt);
  EXPECT_FLOAT_EQ(g[0], 0.0f);
  EXPECT_NEAR(g[1], 2.0f / (1.0f + std::exp(-1.0f)), 1e-6f);
  EXPECT_NEAR(g[2], -2.0f / (1.0f + std::exp(1.0f)), 1e-6f);
  std::vector<float> u2(4);
  EXPECT_THROW(swiglu(gt, Tensor::borrow(u2.data(), DType::f32, {4}), gt), ValueError);
}

}  // namespace
}  // namespace infermode
