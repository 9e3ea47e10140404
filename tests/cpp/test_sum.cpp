#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/tensor.h"
#include "isa_params.h"
#include "kernels/sum.h"

namespace infermode {
namespace {

class SumIsa : public ::testing::TestWithParam<Isa> {};

TEST_P(SumIsa, MatchesRefOnOddSizes) {
  const KernelTable& isa = kernels_for(GetParam());
  for (int64_t n : {0, 1, 15, 17, 31, 33, 127, 129, 1000, 4099, 20001}) {
    auto x = testing::random_floats(size_t(n), uint32_t(n) + 3);
    double want = kernels_for(Isa::ref).sum_f32.fn(x.data(), n);
    double scale = 0.0;
    for (float v : x) scale += std::fabs(v);
    EXPECT_NEAR(isa.sum_f32.fn(x.data(), n), want, testing::kTolF32BlockSum * (scale + 1.0))
        << "n=" << n;
  }
}

INSTANTIATE_TEST_SUITE_P(Isa, SumIsa, ::testing::ValuesIn(testing::supported_isas()),
                         testing::isa_param_name);

TEST(SumOp, ThreadedSumIsExact) {
  // Integers stay exact in float and in double: any thread split must give the same total.
  std::vector<float> x(1 << 20);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(i % 7);
  double want = 0.0;
  for (float v : x) want += v;
  Tensor t = Tensor::borrow(x.data(), DType::f32, {int64_t(x.size())});
  EXPECT_EQ(sum(t, 1), want);
  EXPECT_EQ(sum(t, 2), want);
  EXPECT_EQ(sum(t, 3), want);
}

}  // namespace
}  // namespace infermode
