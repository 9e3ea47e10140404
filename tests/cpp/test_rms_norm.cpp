#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "isa_params.h"
#include "kernels/rms_norm.h"

namespace infermode {
namespace {

using testing::kTolF32Elementwise;
using testing::random_floats;

class RmsNormIsa : public ::testing::TestWithParam<Isa> {};

TEST_P(RmsNormIsa, MatchesRefOnOddSizes) {
  const KernelTable& ref = kernels_for(Isa::ref);
  const KernelTable& isa = kernels_for(GetParam());
  for (int64_t dim : {1, 7, 15, 16, 17, 33, 100, 257, 896, 1001}) {
    const int64_t rows = 5;
    auto x = random_floats(rows * dim, 11 + uint32_t(dim), 3.0f);
    auto w = random_floats(dim, 23 + uint32_t(dim));
    std::vector<float> want(x.size()), got(x.size());
    ref.rms_norm.fn(x.data(), w.data(), want.data(), rows, dim, 1e-6f);
    isa.rms_norm.fn(x.data(), w.data(), got.data(), rows, dim, 1e-6f);
    for (size_t i = 0; i < x.size(); ++i)
      ASSERT_NEAR(got[i], want[i], kTolF32Elementwise * (1.0f + std::fabs(want[i])) * 4)
          << "dim " << dim << " at " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Isa, RmsNormIsa, ::testing::ValuesIn(testing::supported_isas()),
                         testing::isa_param_name);

TEST(RmsNormRef, NormalisesToUnitRms) {
  std::vector<float> x = {3.0f, 4.0f}, w = {1.0f, 2.0f}, y(2);
  kernels_for(Isa::ref).rms_norm.fn(x.data(), w.data(), y.data(), 1, 2, 0.0f);
  const float rms = std::sqrt((9.0f + 16.0f) / 2.0f);
  EXPECT_FLOAT_EQ(y[0], 3.0f / rms);
  EXPECT_FLOAT_EQ(y[1], 2.0f * 4.0f / rms);
}

TEST(RmsNormOp, ThreadedEqualsSingleThreadedInPlace) {
  const int64_t rows = 64, dim = 1027;
  auto x = random_floats(rows * dim, 5);
  auto w = random_floats(dim, 6);
  std::vector<float> y1(x.size()), y2 = x;
  Tensor xt = Tensor::borrow(x.data(), DType::f32, {rows, dim});
  Tensor wt = Tensor::borrow(w.data(), DType::f32, {dim});
  Tensor yt1 = Tensor::borrow(y1.data(), DType::f32, {rows, dim});
  Tensor yt2 = Tensor::borrow(y2.data(), DType::f32, {rows, dim});
  rms_norm(xt, wt, 1e-5f, yt1, 1);
  rms_norm(yt2, wt, 1e-5f, yt2, 2);  // in place, two threads
  EXPECT_EQ(y1, y2);
}

TEST(RmsNormOp, RejectsBadArgumentsNamingThem) {
  std::vector<float> x(12), w(5), y(12);
  std::vector<int32_t> xi(12);
  Tensor xt = Tensor::borrow(x.data(), DType::f32, {3, 4});
  Tensor yt = Tensor::borrow(y.data(), DType::f32, {3, 4});
  Tensor w5 = Tensor::borrow(w.data(), DType::f32, {5});
  Tensor w4 = Tensor::borrow(w.data(), DType::f32, {4});
  try {
    rms_norm(xt, w5, 1e-6f, yt);
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("weight has shape [5]"), std::string::npos) << e.what();
  }
  Tensor xint = Tensor::borrow(xi.data(), DType::i32, {3, 4});
  EXPECT_THROW(rms_norm(xint, w4, 1e-6f, yt), TypeError);
  Tensor xT = xt.transpose(0, 1);
  Tensor yT = Tensor::borrow(y.data(), DType::f32, {4, 3});
  Tensor w3 = Tensor::borrow(w.data(), DType::f32, {3});
  EXPECT_THROW(rms_norm(xT, w3, 1e-6f, yT), ValueError);
  EXPECT_THROW(rms_norm(xt, w4, -1.0f, yt), ValueError);
}

}  // namespace
}  // namespace infermode
