#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "isa_params.h"
#include "kernels/group_attention.h"
#include "kernels/relu.h"

namespace infermode {
namespace {

using testing::random_floats;
using testing::ScopedIsa;

constexpr float kTol = 2e-5f;  // as the attention kernels' own tests

// The definition in group_attention.h, in double.
std::vector<float> oracle(const std::vector<float>& q, const std::vector<float>& k,
                          const std::vector<float>& v, const std::vector<int64_t>& group,
                          const std::vector<float>* bias, int64_t tokens, int64_t heads,
                          int64_t dim, float scale) {
  const int64_t sequences = int64_t(group.size());
  std::vector<float> out(q.size(), 0.0f);
  auto at = [&](int64_t s, int64_t t, int64_t h) { return ((s * tokens + t) * heads + h) * dim; };
  for (int64_t s = 0; s < sequences; ++s)
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t h = 0; h < heads; ++h) {
        std::vector<double> score(sequences, -INFINITY);
        double peak = -INFINITY;
        for (int64_t r = 0; r < sequences; ++r) {
          const float b = bias ? (*bias)[r * tokens + t] : 0.0f;
          if (group[r] != group[s] || b == -INFINITY) continue;
          double dot = 0.0;
          for (int64_t d = 0; d < dim; ++d) dot += double(q[at(s, t, h) + d]) * k[at(r, t, h) + d];
          score[r] = dot * scale + b;
          peak = std::max(peak, score[r]);
        }
        if (peak == -INFINITY) continue;  // sees no key: zero
        double total = 0.0;
        for (double& e : score) total += (e = std::exp(e - peak));
        for (int64_t d = 0; d < dim; ++d) {
          double acc = 0.0;
          for (int64_t r = 0; r < sequences; ++r) acc += score[r] * v[at(r, t, h) + d];
          out[at(s, t, h) + d] = float(acc / total);
        }
      }
  return out;
}

class GroupAttentionIsa : public ::testing::TestWithParam<Isa> {};

TEST_P(GroupAttentionIsa, MatchesTheDefinitionForScatteredGroupsAndMaskedKeys) {
  const int64_t tokens = 5, heads = 3, dim = 20;
  // Members not adjacent, a singleton group, ids that are not 0..n-1, and a group of eleven
  // (enough members for the attention kernels' many-token path).
  const std::vector<int64_t> group = {5, 2, 5, 5, 9, 2, -1, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4};
  const int64_t sequences = int64_t(group.size()), n = sequences * tokens * heads * dim;
  auto q = random_floats(n, 21, 1.5f), k = random_floats(n, 22, 1.5f), v = random_floats(n, 23);
  std::vector<float> bias(sequences * tokens);
  for (size_t i = 0; i < bias.size(); ++i) bias[i] = i % 4 == 1 ? -INFINITY : 0.1f * float(i % 5);
  // Token 2 of group 2 (sequences 1 and 5) sees no key at all: it must come out zero.
  bias[1 * tokens + 2] = bias[5 * tokens + 2] = -INFINITY;
  const Shape shape{sequences, tokens, heads, dim};
  for (std::vector<float>* b : {static_cast<std::vector<float>*>(nullptr), &bias}) {
    const auto want = oracle(q, k, v, group, b, tokens, heads, dim, 0.7f);
    for (int threads : {1, 3}) {
      ScopedIsa scoped(GetParam());
      std::vector<float> out(n, -7.0f);
      Tensor ot = Tensor::borrow(out.data(), DType::f32, shape);
      group_attention(Tensor::borrow(q.data(), DType::f32, shape),
                      Tensor::borrow(k.data(), DType::f32, shape),
                      Tensor::borrow(v.data(), DType::f32, shape),
                      Tensor::borrow(const_cast<int64_t*>(group.data()), DType::i64, {sequences}),
                      0.7f, b ? Tensor::borrow(b->data(), DType::f32, {sequences, tokens}) : Tensor(),
                      ot, threads);
      for (int64_t i = 0; i < n; ++i)
        ASSERT_NEAR(out[i], want[i], kTol * (1.0f + std::fabs(want[i])))
            << isa_name(GetParam()) << " bias=" << (b != nullptr) << " threads=" << threads
            << " at " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Isa, GroupAttentionIsa, ::testing::ValuesIn(testing::supported_isas()),
                         testing::isa_param_name);

TEST(GroupAttentionOp, RejectsBadArgumentsNamingThem) {
  std::vector<float> buf(2 * 3 * 2 * 4);
  std::vector<int64_t> group = {0, 1};
  const Shape shape{2, 3, 2, 4};
  Tensor x = Tensor::borrow(buf.data(), DType::f32, shape);
  Tensor out = Tensor::borrow(buf.data(), DType::f32, shape);
  Tensor g = Tensor::borrow(group.data(), DType::i64, {2});
  Tensor short_group = Tensor::borrow(group.data(), DType::i64, {1});
  EXPECT_THROW(group_attention(x, x, x, short_group, 1.0f, Tensor(), out), ValueError);
  Tensor float_group = Tensor::borrow(buf.data(), DType::f32, {2});
  EXPECT_THROW(group_attention(x, x, x, float_group, 1.0f, Tensor(), out), TypeError);
  Tensor bias = Tensor::borrow(buf.data(), DType::f32, {3, 2});  // [tokens, sequences]
  EXPECT_THROW(group_attention(x, x, x, g, 1.0f, bias, out), ValueError);
  Tensor flat = Tensor::borrow(buf.data(), DType::f32, {6, 2, 4});
  EXPECT_THROW(group_attention(flat, flat, flat, g, 1.0f, Tensor(), flat), ValueError);
}

TEST(Relu, ZeroesNegativesKeepsNaN) {
  std::vector<float> x = {-1.5f, 0.0f, 2.0f, -0.0f, NAN, -INFINITY, INFINITY};
  std::vector<float> big = random_floats(100000, 5);  // the threaded split
  Tensor t = Tensor::borrow(x.data(), DType::f32, {7});
  relu(t);
  EXPECT_EQ(x[0], 0.0f);
  EXPECT_EQ(x[2], 2.0f);
  EXPECT_TRUE(std::isnan(x[4]));
  EXPECT_EQ(x[5], 0.0f);
  EXPECT_EQ(x[6], INFINITY);
  const std::vector<float> before = big;
  Tensor bt = Tensor::borrow(big.data(), DType::f32, {100, 1000});
  relu(bt, 3);
  for (size_t i = 0; i < big.size(); ++i) ASSERT_EQ(big[i], before[i] < 0 ? 0.0f : before[i]);
}

}  // namespace
}  // namespace infermode
