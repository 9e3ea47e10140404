#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "isa_params.h"
#include "kernels/attention.h"

namespace infermode {
namespace {

using testing::random_floats;
using testing::ScopedIsa;

// Scores are float32 dot products in both; the ISA path sums in float32 where ref uses double,
// and its exp is a polynomial within 2e-7: outputs agree to a few float32 roundings.
constexpr float kTolAttention = 2e-5f;

struct AttnCase {
  int64_t tokens, first_pos, heads, kv_heads, head_dim;
};

std::vector<float> run(Isa isa, const AttnCase& c, const std::vector<float>& q,
                       const std::vector<float>& k, const std::vector<float>& v, int threads) {
  ScopedIsa scoped(isa);
  const int64_t capacity = c.first_pos + c.tokens + 3;  // spare room the kernel must not read
  std::vector<float> out(c.tokens * c.heads * c.head_dim, -7.0f);
  Tensor qt = Tensor::borrow(const_cast<float*>(q.data()), DType::f32,
                             {c.tokens, c.heads, c.head_dim});
  Tensor kt = Tensor::borrow(const_cast<float*>(k.data()), DType::f32,
                             {c.kv_heads, capacity, c.head_dim});
  Tensor vt = Tensor::borrow(const_cast<float*>(v.data()), DType::f32,
                             {c.kv_heads, capacity, c.head_dim});
  Tensor ot = Tensor::borrow(out.data(), DType::f32, {c.tokens, c.heads, c.head_dim});
  attention(qt, kt, vt, c.first_pos, 1.0f / std::sqrt(float(c.head_dim)), ot, threads);
  return out;
}

class AttentionIsa : public ::testing::TestWithParam<Isa> {};

TEST_P(AttentionIsa, MatchesRefOnPrefillAndDecodeShapes) {
  const AttnCase cases[] = {
      {1, 0, 4, 4, 16},  {1, 37, 6, 2, 48}, {5, 0, 6, 2, 48},   {7, 11, 8, 2, 64},
      {3, 20, 2, 1, 80}, {1, 100, 14, 2, 64}, {9, 3, 4, 1, 128}, {2, 5, 3, 3, 17},
      // Prompts: blocks of tokens and score rows with tails, head_dim past one 64-float pass.
      {40, 0, 8, 8, 64}, {37, 13, 14, 2, 64}, {24, 5, 3, 3, 17}, {33, 0, 4, 1, 128},
      {19, 70, 6, 2, 80},
      // Decoding over sixteen-key blocks and a tail, head_dim not a multiple of 16.
      {1, 40, 4, 4, 17}, {4, 60, 3, 1, 100},
  };
  for (const AttnCase& c : cases) {
    const int64_t capacity = c.first_pos + c.tokens + 3;
    auto q = random_floats(c.tokens * c.heads * c.head_dim, 3, 1.5f);
    auto k = random_floats(c.kv_heads * capacity * c.head_dim, 4, 1.5f);
    auto v = random_floats(c.kv_heads * capacity * c.head_dim, 5);
    // Poison the positions past the causal window: a kernel reading them gives NaN.
    for (int64_t g = 0; g < c.kv_heads; ++g)
      for (int64_t j = c.first_pos + c.tokens; j < capacity; ++j)
        for (int64_t d = 0; d < c.head_dim; ++d)
          k[(g * capacity + j) * c.head_dim + d] = v[(g * capacity + j) * c.head_dim + d] = NAN;
    const auto want = run(Isa::ref, c, q, k, v, 1);
    const auto alone = run(GetParam(), c, q, k, v, 1);
    // 2 and 3 threads split a one-token decode by query head (heads_per_share), prefill by kv
    // head: every head is computed alike either way, so the bits do not depend on the split.
    for (int threads : {1, 2, 3}) {
      const auto got = run(GetParam(), c, q, k, v, threads);
      for (size_t i = 0; i < want.size(); ++i) {
        ASSERT_NEAR(got[i], want[i], kTolAttention * (1.0f + std::fabs(want[i])))
            << isa_name(GetParam()) << " tokens=" << c.tokens << " first_pos=" << c.first_pos
            << " heads=" << c.heads << "/" << c.kv_heads << " head_dim=" << c.head_dim
            << " threads=" << threads << " at " << i;
        ASSERT_EQ(got[i], alone[i]) << isa_name(GetParam()) << " threads=" << threads;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Isa, AttentionIsa, ::testing::ValuesIn(testing::supported_isas()),
                         testing::isa_param_name);

// Bidirectional attention over `keys` keys with an additive key bias (-inf on every third key).
std::vector<float> run_bidirectional(Isa isa, const AttnCase& c, int64_t keys,
                                     const std::vector<float>& q, const std::vector<float>& k,
                                     const std::vector<float>& v, std::vector<float>* bias,
                                     int threads) {
  ScopedIsa scoped(isa);
  const int64_t capacity = keys + 2;
  std::vector<float> out(c.tokens * c.heads * c.head_dim, -7.0f);
  Tensor ot = Tensor::borrow(out.data(), DType::f32, {c.tokens, c.heads, c.head_dim});
  const Tensor bt = bias ? Tensor::borrow(bias->data(), DType::f32, {keys}) : Tensor();
  attention_bidirectional(
      Tensor::borrow(const_cast<float*>(q.data()), DType::f32, {c.tokens, c.heads, c.head_dim}),
      Tensor::borrow(const_cast<float*>(k.data()), DType::f32, {c.kv_heads, capacity, c.head_dim}),
      Tensor::borrow(const_cast<float*>(v.data()), DType::f32, {c.kv_heads, capacity, c.head_dim}),
      keys, 0.3f, bt, ot, threads);
  return out;
}

TEST_P(AttentionIsa, BidirectionalMatchesRefWithAndWithoutKeyBias) {
  const AttnCase cases[] = {{1, 0, 4, 4, 16}, {7, 0, 6, 2, 48}, {12, 0, 3, 3, 17},
                            {37, 0, 4, 2, 64}, {20, 0, 2, 1, 100}};
  for (const AttnCase& c : cases) {
    for (int64_t keys : {int64_t(1), c.tokens, c.tokens + 9, c.tokens + 40}) {
      const int64_t capacity = keys + 2;
      auto q = random_floats(c.tokens * c.heads * c.head_dim, 6, 1.5f);
      auto k = random_floats(c.kv_heads * capacity * c.head_dim, 7, 1.5f);
      auto v = random_floats(c.kv_heads * capacity * c.head_dim, 8);
      for (int64_t g = 0; g < c.kv_heads; ++g)  // past `keys`: must never be read
        for (int64_t j = keys; j < capacity; ++j)
          for (int64_t d = 0; d < c.head_dim; ++d)
            k[(g * capacity + j) * c.head_dim + d] = v[(g * capacity + j) * c.head_dim + d] = NAN;
      std::vector<float> bias(keys);
      for (int64_t j = 0; j < keys; ++j) bias[j] = j % 3 == 1 ? -INFINITY : 0.25f * float(j % 4);
      for (std::vector<float>* b : {static_cast<std::vector<float>*>(nullptr), &bias}) {
        const auto want = run_bidirectional(Isa::ref, c, keys, q, k, v, b, 1);
        for (int threads : {1, 3}) {
          const auto got = run_bidirectional(GetParam(), c, keys, q, k, v, b, threads);
          for (size_t i = 0; i < want.size(); ++i)
            ASSERT_NEAR(got[i], want[i], kTolAttention * (1.0f + std::fabs(want[i])))
                << isa_name(GetParam()) << " tokens=" << c.tokens << " keys=" << keys
                << " bias=" << (b != nullptr) << " threads=" << threads << " at " << i;
        }
      }
    }
  }
}

TEST_P(AttentionIsa, BidirectionalRowSeeingNoKeyIsZero) {
  std::vector<float> q(2 * 4, 1.0f), k(2 * 3 * 4, 0.5f), v(2 * 3 * 4, 2.0f), out(2 * 2 * 4, 9.0f);
  std::vector<float> hidden(3, -INFINITY);
  ScopedIsa scoped(GetParam());
  Tensor ot = Tensor::borrow(out.data(), DType::f32, {2, 1, 4});
  attention_bidirectional(Tensor::borrow(q.data(), DType::f32, {2, 1, 4}),
                          Tensor::borrow(k.data(), DType::f32, {1, 3, 4}),
                          Tensor::borrow(v.data(), DType::f32, {1, 3, 4}), 3, 1.0f,
                          Tensor::borrow(hidden.data(), DType::f32, {3}), ot);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(out[i], 0.0f) << isa_name(GetParam());
}

TEST(AttentionRef, OneKeyGivesItsValue) {
  // A single cached position: softmax is 1, the output is that value row.
  std::vector<float> q = {1, 2}, k = {3, 4}, v = {5, -6}, out(2);
  Tensor ot = Tensor::borrow(out.data(), DType::f32, {1, 1, 2});
  ScopedIsa scoped(Isa::ref);
  attention(Tensor::borrow(q.data(), DType::f32, {1, 1, 2}),
            Tensor::borrow(k.data(), DType::f32, {1, 1, 2}),
            Tensor::borrow(v.data(), DType::f32, {1, 1, 2}), 0, 0.5f, ot);
  EXPECT_FLOAT_EQ(out[0], 5.0f);
  EXPECT_FLOAT_EQ(out[1], -6.0f);
}

TEST(AttentionOp, RejectsBadShapesNamingThem) {
  std::vector<float> buf(1024);
  Tensor q = Tensor::borrow(buf.data(), DType::f32, {2, 6, 8});
  Tensor k = Tensor::borrow(buf.data(), DType::f32, {4, 10, 8});
  Tensor out = Tensor::borrow(buf.data() + 512, DType::f32, {2, 6, 8});
  EXPECT_THROW(attention(q, k, k, 0, 1.0f, out), ValueError);  // 6 heads over 4 kv heads
  Tensor k2 = Tensor::borrow(buf.data(), DType::f32, {2, 10, 8});
  EXPECT_THROW(attention(q, k2, k2, 9, 1.0f, out), ValueError);  // positions 9..10 past 10
  EXPECT_THROW(attention_bidirectional(q, k2, k2, 11, 1.0f, Tensor(), out), ValueError);
  std::vector<float> bias(3);
  EXPECT_THROW(attention_bidirectional(q, k2, k2, 4, 1.0f,
                                       Tensor::borrow(bias.data(), DType::f32, {3}), out),
               ValueError);  // 3 biases for 4 keys
}

}  // namespace
}  // namespace infermode
