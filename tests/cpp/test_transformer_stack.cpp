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

// Chronos-2's block: bidirectional unscaled time attention with RoPE, then group attention,
// then a ReLU MLP without biases.
StackConfig grouped_config() {
  StackConfig c;
  c.hidden = 24;
  c.heads = 3;
  c.head_dim = 8;
  c.intermediate = 40;
  StackBlockConfig b;
  b.causal = false;
  b.scaled = false;
  b.group_attention = true;
  b.mlp = StackMlp::relu;
  c.blocks = {b, b};
  c.final_norm = true;
  return c;
}

std::vector<float> run_grouped(const TransformerStack& stack, std::vector<float> x,
                               int64_t sequences, int64_t tokens, std::vector<int64_t> group,
                               std::vector<float>* bias) {
  Tensor xt = Tensor::borrow(x.data(), DType::f32, {sequences, tokens, 24});
  stack.forward(xt, 0, nullptr, 2,
                bias ? Tensor::borrow(bias->data(), DType::f32, {sequences, tokens}) : Tensor(),
                Tensor::borrow(group.data(), DType::i64, {sequences}));
  return x;
}

TEST(TransformerStack, GroupsAttendWithinThemselvesOnly) {
  StackFixture f(grouped_config());
  TransformerStack stack(f.config, f.tensors);
  const int64_t tokens = 6, row = tokens * 24;
  auto input = random_floats(4 * row, 31);
  std::vector<float> bias(4 * tokens, 0.0f);
  bias[0] = bias[1] = bias[2 * tokens] = -INFINITY;  // padding at the start of sequences 0, 2
  // Groups {0, 2} and {1, 3}, interleaved: the same as running each group on its own.
  const auto together = run_grouped(stack, input, 4, tokens, {7, 3, 7, 3}, &bias);
  for (int g = 0; g < 2; ++g) {
    std::vector<float> part(input.begin() + g * row, input.begin() + (g + 1) * row);
    part.insert(part.end(), input.begin() + (g + 2) * row, input.begin() + (g + 3) * row);
    std::vector<float> part_bias(bias.begin() + g * tokens, bias.begin() + (g + 1) * tokens);
    part_bias.insert(part_bias.end(), bias.begin() + (g + 2) * tokens,
                     bias.begin() + (g + 3) * tokens);
    const auto alone = run_grouped(stack, part, 2, tokens, {0, 0}, &part_bias);
    for (int m = 0; m < 2; ++m)
      for (int64_t i = 0; i < row; ++i) {
        // Padded tokens (key_bias -inf) are not compared: nothing reads them.
        if (part_bias[m * tokens + i / 24] == -INFINITY) continue;
        const float want = alone[m * row + i], got = together[(g + 2 * m) * row + i];
        ASSERT_NEAR(got, want, 2e-5f * (1.0f + std::fabs(want))) << "group " << g << " at " << i;
      }
  }
  // Each sequence alone differs from the grouped result: the group attention mixes them.
  const auto apart = run_grouped(stack, input, 4, tokens, {0, 1, 2, 3}, &bias);
  double differ = 0.0;
  for (int64_t i = 3 * 24; i < row; ++i) differ += std::fabs(apart[i] - together[i]);
  EXPECT_GT(differ, 1e-2);
}

// A sequence alone in its group takes the fused o-after-v path; the same sequence beside a
// second member whose keys are all hidden attends only to itself through the general kernel.
TEST(TransformerStack, ASequenceAloneInItsGroupMatchesTheGeneralKernel) {
  StackConfig config = grouped_config();
  for (StackBlockConfig& b : config.blocks) b.attention_bias = true;  // fused bias too
  StackFixture f(config);
  TransformerStack stack(f.config, f.tensors);
  const int64_t tokens = 5, row = tokens * 24;
  auto input = random_floats(2 * row, 43);
  std::vector<float> bias(2 * tokens, 0.0f);
  bias[0] = -INFINITY;  // sequence 0's first token is padding: it sees no key at all
  for (int64_t t = 0; t < tokens; ++t) bias[tokens + t] = -INFINITY;  // sequence 1: all hidden
  const auto general = run_grouped(stack, input, 2, tokens, {4, 4}, &bias);
  std::vector<float> first(input.begin(), input.begin() + row);
  std::vector<float> first_bias(bias.begin(), bias.begin() + tokens);
  const auto fused = run_grouped(stack, first, 1, tokens, {9}, &first_bias);
  for (int64_t i = 0; i < row; ++i)
    ASSERT_NEAR(fused[i], general[i], 2e-5f * (1.0f + std::fabs(general[i]))) << "at " << i;
  // And the fused path is not the identity: sequences alone still differ from their input.
  double moved = 0.0;
  for (int64_t i = 24; i < row; ++i) moved += std::fabs(fused[i] - first[i]);
  EXPECT_GT(moved, 1e-2);
}

TEST(TransformerStack, PaddedKeysChangeNothingElsewhere) {
  StackFixture f(grouped_config());
  TransformerStack stack(f.config, f.tensors);
  const int64_t tokens = 5;
  auto input = random_floats(2 * tokens * 24, 41);
  std::vector<float> bias(2 * tokens, 0.0f);
  bias[0] = -INFINITY;  // sequence 0's first token is padding
  const auto a = run_grouped(stack, input, 2, tokens, {0, 0}, &bias);
  for (int i = 0; i < 24; ++i) input[i] = 1000.0f * float(i % 3);  // whatever the padding holds
  const auto b = run_grouped(stack, input, 2, tokens, {0, 0}, &bias);
  for (size_t i = 24; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], 2e-5f * (1.0f + std::fabs(a[i])));
}

TEST(TransformerStack, GroupAttentionNeedsTheGroups) {
  StackFixture f(grouped_config());
  TransformerStack stack(f.config, f.tensors);
  std::vector<float> x(2 * 3 * 24);
  Tensor xt = Tensor::borrow(x.data(), DType::f32, {2, 3, 24});
  EXPECT_THROW(stack.forward(xt, 0, nullptr, 1), ValueError);
  StackConfig none = grouped_config();
  none.blocks[0].group_attention = none.blocks[0].time_attention = false;
  EXPECT_THROW(TransformerStack(none, f.tensors), ValueError);
  // ReLU blocks have no gate.
  for (const auto& [name, shape] : stack_tensor_names(grouped_config()))
    EXPECT_EQ(name.find("mlp.gate"), std::string::npos) << name;
}

TEST(TransformerStack, ACopiedPrefixContinuesAsTheOriginal) {
  // A prefix encoded once for one sequence, copied into two rows of a larger cache, continues
  // exactly as it would have in its own cache (Toto's sample paths share their context so).
  StackFixture f(small_config(true));
  TransformerStack stack(f.config, f.tensors);
  auto prefix = random_floats(4 * 24, 51);
  KvCache own = stack.make_cache(1, 8);
  Tensor pt = Tensor::borrow(prefix.data(), DType::f32, {1, 4, 24});
  stack.forward(pt, 0, &own, 1);
  KvCache shared = stack.make_cache(2, 8);
  shared.copy_prefix(own, 0, 0, 4);
  shared.copy_prefix(own, 0, 1, 4);
  auto next = random_floats(24, 52);
  std::vector<float> alone = next, both(2 * 24);
  std::copy(next.begin(), next.end(), both.begin());
  std::copy(next.begin(), next.end(), both.begin() + 24);
  Tensor at = Tensor::borrow(alone.data(), DType::f32, {1, 1, 24});
  Tensor bt = Tensor::borrow(both.data(), DType::f32, {2, 1, 24});
  stack.forward(at, 4, &own, 1);
  stack.forward(bt, 4, &shared, 1);
  for (int i = 0; i < 24; ++i) {  // one row vs two through the GEMM: rounding may differ
    ASSERT_NEAR(both[i], alone[i], 1e-5f * (1.0f + std::fabs(alone[i]))) << i;
    ASSERT_NEAR(both[24 + i], alone[i], 1e-5f * (1.0f + std::fabs(alone[i]))) << i;
  }
  KvCache other(3, 1, 3, 8, 8);  // another layer count
  EXPECT_THROW(shared.copy_prefix(other, 0, 0, 4), ValueError);
  EXPECT_THROW(shared.copy_prefix(own, 0, 2, 4), ValueError);  // no sequence 2
  EXPECT_THROW(shared.copy_prefix(own, 0, 0, 9), ValueError);  // past the capacity
}

}  // namespace
}  // namespace infermode
