#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "isa_params.h"
#include "models/transformer_stack.h"

namespace infermode {
namespace {

using testing::random_floats;

// Random weights for every tensor `config` names, kept alive by the fixture.
struct StackFixture {
  explicit StackFixture(const StackConfig& c) : config(c) {
    uint32_t seed = 11;
    for (const auto& [name, shape] : stack_tensor_names(config)) {
      const bool norm = name.find("norm") != std::string::npos;
      storage.push_back(random_floats(shape.numel(), seed++, norm ? 0.1f : 0.3f));
      if (norm)
        for (float& w : storage.back()) w += 1.0f;
      tensors[name] = Tensor::borrow(storage.back().data(), DType::f32, shape);
    }
  }
  StackConfig config;
  std::vector<std::vector<float>> storage;
  std::map<std::string, Tensor> tensors;
};

StackConfig small_config(bool causal) {
  StackConfig c;
  c.hidden = 24;
  c.heads = 3;
  c.head_dim = 8;
  c.intermediate = 40;
  StackBlockConfig b;
  b.causal = causal;
  b.attention_bias = true;
  c.blocks = {b, b};
  c.blocks[1].rope = StackRope::none;
  c.blocks[1].scaled = false;
  c.blocks[1].mlp_bias = true;
  c.final_norm = true;
  return c;
}

TEST(TransformerStack, CachedStepsEqualTheWholeSequence) {
  StackFixture f(small_config(true));
  TransformerStack stack(f.config, f.tensors);
  const int64_t sequences = 2, tokens = 9;
  auto input = random_floats(sequences * tokens * 24, 3);
  std::vector<float> whole = input;
  Tensor wt = Tensor::borrow(whole.data(), DType::f32, {sequences, tokens, 24});
  stack.forward(wt, 0, nullptr, 2);

  KvCache cache = stack.make_cache(sequences, 16);
  const int64_t splits[] = {0, 5, 6, 9};  // a prompt of 5, then one token, then three
  for (int part = 0; part < 3; ++part) {
    const int64_t a = splits[part], b = splits[part + 1];
    std::vector<float> chunk;
    for (int64_t s = 0; s < sequences; ++s)
      chunk.insert(chunk.end(), input.begin() + (s * tokens + a) * 24,
                   input.begin() + (s * tokens + b) * 24);
    Tensor ct = Tensor::borrow(chunk.data(), DType::f32, {sequences, b - a, 24});
    stack.forward(ct, a, &cache, 2);
    for (int64_t s = 0; s < sequences; ++s)
      for (int64_t i = 0; i < (b - a) * 24; ++i)
        ASSERT_NEAR(chunk[s * (b - a) * 24 + i], whole[(s * tokens + a) * 24 + i],
                    2e-5f * (1.0f + std::fabs(whole[(s * tokens + a) * 24 + i])))
            << "part " << part << " sequence " << s << " at " << i;
  }
}

TEST(TransformerStack, BidirectionalBlocksSeeLaterTokensAndRefuseACache) {
  StackFixture causal_f(small_config(true)), bidir_f(small_config(false));
  TransformerStack causal(causal_f.config, causal_f.tensors);
  TransformerStack bidir(bidir_f.config, bidir_f.tensors);  // same seeds: same weights
  // Token 0 sees the later tokens only when the blocks are bidirectional; a one-token sequence
  // is the same either way.
  for (int64_t tokens : {4, 1}) {
    auto input = random_floats(tokens * 24, 5);
    std::vector<float> a = input, b = input;
    Tensor at = Tensor::borrow(a.data(), DType::f32, {1, tokens, 24});
    Tensor bt = Tensor::borrow(b.data(), DType::f32, {1, tokens, 24});
    causal.forward(at, 0, nullptr, 1);
    bidir.forward(bt, 0, nullptr, 1);
    float diff = 0.0f;
    for (int i = 0; i < 24; ++i) diff = std::max(diff, std::fabs(a[i] - b[i]));
    if (tokens > 1) {
      EXPECT_GT(diff, 1e-3f);
    } else {
      EXPECT_LT(diff, 1e-6f);
    }
  }
  EXPECT_THROW(bidir.make_cache(1, 8), ValueError);
}

TEST(TransformerStack, RejectsMissingMisshapenAndUnknownTensorsNamingThem) {
  StackFixture f(small_config(true));
  auto missing = f.tensors;
  missing.erase("blocks.1.mlp.down.bias");
  try {
    TransformerStack stack(f.config, missing);
    FAIL() << "a missing tensor was accepted";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("blocks.1.mlp.down.bias"), std::string::npos) << e.what();
  }
  auto misshapen = f.tensors;
  misshapen["blocks.0.attention.q.weight"] =
      f.tensors.at("blocks.0.attention.q.weight").view({12, 48});
  EXPECT_THROW(TransformerStack(f.config, misshapen), ValueError);
  auto extra = f.tensors;
  extra["blocks.0.attention.q_norm.weight"] = f.tensors.at("blocks.0.norm1.weight");
  EXPECT_THROW(TransformerStack(f.config, extra), ValueError);
  TransformerStack stack(f.config, f.tensors);
  std::vector<float> x(2 * 24);
  Tensor xt = Tensor::borrow(x.data(), DType::f32, {1, 2, 24});
  EXPECT_THROW(stack.forward(xt, 3, nullptr, 1), ValueError);  // later positions need a cache
  KvCache cache = stack.make_cache(1, 4);
  EXPECT_THROW(stack.forward(xt, 3, &cache, 1), ValueError);  // positions 3..4 past 4
}

}  // namespace
}  // namespace infermode
