#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/inference_mode.h"
#include "core/memory_stats.h"
#include "core/tensor.h"
#include "isa_params.h"
#include "models/lora.h"

namespace infermode {
namespace {

DecoderConfig tiny_config() {
  DecoderConfig c;
  c.vocab_size = 50;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.layers = 2;
  c.heads = 4;
  c.kv_heads = 2;
  c.head_dim = 8;
  c.max_positions = 64;
  c.attention_bias = true;
  c.rope.head_dim = 8;
  return c;
}

Tensor tensor_of(std::vector<float>& v, const Shape& shape) {
  return Tensor::borrow(v.data(), DType::f32, shape);
}

class LoraIsa : public ::testing::TestWithParam<Isa> {};

// add_lora adds x @ (scale B A)^T: checked against that product formed densely in double.
TEST_P(LoraIsa, AddsTheScaledLowRankProduct) {
  testing::ScopedIsa isa(GetParam());
  const DecoderConfig c = tiny_config();
  const int64_t in = c.hidden_size, out = c.intermediate_size, rank = 3;
  auto a = testing::random_floats(size_t(rank * in), 1);
  auto b = testing::random_floats(size_t(out * rank), 2);
  const float scale = 0.75f;
  LoraAdapter adapter(c, {{"model.layers.1.mlp.up_proj.weight",
                           LoraFactors{tensor_of(a, {rank, in}), tensor_of(b, {out, rank}),
                                       scale}}});
  EXPECT_FALSE(adapter.layer(0).up.defined());
  ASSERT_TRUE(adapter.layer(1).up.defined());
  for (int64_t rows : {1, 5, 70}) {
    auto x = testing::random_floats(size_t(rows * in), 3);
    auto y = testing::random_floats(size_t(rows * out), 4);
    std::vector<float> got = y;
    Tensor yt = tensor_of(got, {rows, out});
    add_lora(tensor_of(x, {rows, in}), adapter.layer(1).up, yt, 2);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t o = 0; o < out; ++o) {
        double want = y[r * out + o];
        for (int64_t k = 0; k < rank; ++k) {
          double ax = 0;
          for (int64_t i = 0; i < in; ++i) ax += double(a[k * in + i]) * x[r * in + i];
          want += scale * double(b[o * rank + k]) * ax;
        }
        ASSERT_NEAR(got[r * out + o], want, 1e-4 * (1 + std::fabs(want)))
            << isa_name(GetParam()) << " rows=" << rows;
      }
  }
  // The adapter owns copies: the caller's factors may change or go.
  a.assign(a.size(), 0.0f);
  EXPECT_NE(adapter.layer(1).up.a.data<float>()[0], 0.0f);
}

INSTANTIATE_TEST_SUITE_P(Isa, LoraIsa, ::testing::ValuesIn(testing::supported_isas()),
                         testing::isa_param_name);

TEST(LoraAdapter, RejectsWhatDoesNotFitTheModel) {
  const DecoderConfig c = tiny_config();
  std::vector<float> a(3 * 32), b(32 * 3), bias(16);
  auto factors = [&](int64_t in, int64_t out) {
    return LoraFactors{tensor_of(a, {3, in}), tensor_of(b, {out, 3}), 1.0f};
  };
  // Not a matrix of the model; a layer past the last; shapes that do not fit; a bias that is
  // not a q/k/v bias.
  EXPECT_THROW(LoraAdapter(c, {{"model.layers.0.self_attn.q_proj", factors(32, 32)}}),
               ValueError);
  EXPECT_THROW(LoraAdapter(c, {{"model.layers.2.self_attn.q_proj.weight", factors(32, 32)}}),
               ValueError);
  EXPECT_THROW(LoraAdapter(c, {{"model.layers.0.self_attn.k_proj.weight", factors(32, 32)}}),
               ValueError);
  EXPECT_THROW(LoraAdapter(c, {{"model.norm.weight", factors(32, 32)}}), ValueError);
  EXPECT_THROW(LoraAdapter(c, {}, {{"model.layers.0.self_attn.o_proj.bias",
                                    tensor_of(bias, {16})}}),
               ValueError);
  EXPECT_THROW(LoraAdapter(c, {}, {{"model.layers.0.self_attn.q_proj.bias",
                                    tensor_of(bias, {16})}}),
               ValueError);  // q_proj's bias is (heads * head_dim) = 32
  LoraAdapter ok(c, {{"lm_head.weight", LoraFactors{tensor_of(a, {3, 32}),
                                                    Tensor::zeros({50, 3}, DType::f32), 2.0f}}},
                 {{"model.layers.1.self_attn.k_proj.bias", tensor_of(bias, {16})}});
  EXPECT_TRUE(ok.lm_head().defined());
  EXPECT_TRUE(ok.layer(1).k_bias.defined());
  EXPECT_EQ(ok.bytes(), (3 * 32 + 50 * 3 + 16) * 4);
}

TEST(LoraAdapter, WarmApplicationTakesNothingFromTheHeap) {
  const DecoderConfig c = tiny_config();
  auto a = testing::random_floats(4 * 32, 5), b = testing::random_floats(32 * 4, 6);
  LoraAdapter adapter(c, {{"model.layers.0.self_attn.o_proj.weight",
                           LoraFactors{tensor_of(a, {4, 32}), tensor_of(b, {32, 4}), 1.0f}}});
  auto x = testing::random_floats(32, 7);
  std::vector<float> y(32);
  Tensor yt = tensor_of(y, {1, 32});
  auto run = [&] {
    InferenceMode guard;
    add_lora(tensor_of(x, {1, 32}), adapter.layer(0).o, yt, 1);
  };
  run();
  const auto before = memory_stats();
  run();
  EXPECT_EQ(memory_stats().heap_allocations, before.heap_allocations);
}

}  // namespace
}  // namespace infermode
