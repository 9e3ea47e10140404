#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "isa_params.h"
#include "kernels/rope_interleaved.h"

namespace infermode {
namespace {

using testing::random_floats;

TEST(RopeInterleaved, RotatesAdjacentPairsWithToTosScaleLayout) {
  const int64_t tokens = 5, heads = 3, dim = 12, half = dim / 2, stride = heads * dim + 4;
  auto x = random_floats(tokens * stride, 1);
  auto cos = random_floats(tokens * half, 2), sin = random_floats(tokens * half, 3);
  auto scale = random_floats(tokens * half, 4, 0.2f);
  for (float& s : scale) s += 1.0f;
  for (bool inverse : {false, true}) {
    for (bool scaled : {false, true}) {
      std::vector<float> got = x;
      Tensor xt = Tensor::borrow(got.data(), DType::f32, {tokens, heads, dim},
                                 {stride, dim, 1});
      rope_interleaved(xt, Tensor::borrow(cos.data(), DType::f32, {tokens, half}),
                       Tensor::borrow(sin.data(), DType::f32, {tokens, half}),
                       scaled ? Tensor::borrow(scale.data(), DType::f32, {tokens, half})
                              : Tensor(),
                       inverse, 2);
      for (int64_t t = 0; t < tokens; ++t)
        for (int64_t h = 0; h < heads; ++h)
          for (int64_t j = 0; j < dim; ++j) {
            const int64_t m = j / 2, at = t * stride + h * dim;
            // rotate_half of adjacent pairs: (-x[2m+1], x[2m]); the scale table repeated.
            const double rotated = j % 2 == 0 ? -double(x[at + j + 1]) : double(x[at + j - 1]);
            double s = scaled ? scale[t * half + j % half] : 1.0;
            if (inverse) s = 1.0 / s;
            const double want = (x[at + j] * cos[t * half + m] + rotated * sin[t * half + m]) * s;
            ASSERT_NEAR(got[at + j], want, 1e-5 * (1.0 + std::fabs(want)))
                << "t=" << t << " h=" << h << " j=" << j << " inverse=" << inverse;
          }
      for (int64_t t = 0; t < tokens; ++t)  // the padding past each row is left alone
        for (int64_t p = heads * dim; p < stride; ++p) ASSERT_EQ(got[t * stride + p], x[t * stride + p]);
    }
  }
}

TEST(RopeInterleaved, RejectsBadShapes) {
  std::vector<float> buf(64);
  Tensor x = Tensor::borrow(buf.data(), DType::f32, {2, 1, 6});
  Tensor table = Tensor::borrow(buf.data() + 20, DType::f32, {2, 3});
  Tensor wrong = Tensor::borrow(buf.data() + 20, DType::f32, {2, 2});
  EXPECT_THROW(rope_interleaved(x, wrong, table, Tensor(), false), ValueError);
  EXPECT_THROW(rope_interleaved(x, table, table, wrong, false), ValueError);
  Tensor odd = Tensor::borrow(buf.data(), DType::f32, {2, 1, 5});
  EXPECT_THROW(rope_interleaved(odd, table, table, Tensor(), false), ValueError);
}

}  // namespace
}  // namespace infermode
