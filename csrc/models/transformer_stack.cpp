#include "models/transformer_stack.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "core/error.h"
#include "core/inference_mode.h"
#include "core/thread_pool.h"
#include "kernels/add.h"
#include "kernels/attention.h"
#include "kernels/group_attention.h"
#include "kernels/matmul.h"
#include "kernels/relu.h"
#include "kernels/rms_norm.h"
#include "kernels/rope.h"
#include "kernels/rope_interleaved.h"
#include "kernels/swiglu.h"
#include "models/rope_angles.h"

namespace infermode {
namespace {

std::string block_name(size_t i, const char* rest) { return fmt::format("blocks.{}.{}", i, rest); }

void check_config(const StackConfig& c) {
  IM_CHECK(c.hidden > 0 && c.heads > 0 && c.head_dim > 0 && c.intermediate > 0,
           "transformer stack config: every size must be positive (hidden {}, heads {}, "
           "head_dim {}, intermediate {})", c.hidden, c.heads, c.head_dim, c.intermediate);
  IM_CHECK(!c.blocks.empty(), "transformer stack config: no blocks");
  // Checked here, not at the first forward: a stack that builds must run.
  IM_CHECK(std::isfinite(c.norm_eps) && c.norm_eps >= 0,
           "transformer stack config: norm_eps must be finite and >= 0, got {}", c.norm_eps);
  for (size_t i = 0; i < c.blocks.size(); ++i) {
    const StackBlockConfig& b = c.blocks[i];
    IM_CHECK(b.time_attention || b.group_attention,
             "transformer stack config: block {} has neither time nor group attention", i);
    IM_CHECK(!b.time_attention || b.rope == StackRope::none || c.head_dim % 2 == 0,
             "transformer stack config: block {} uses RoPE, which needs an even head_dim, got {}",
             i, c.head_dim);
    IM_CHECK(b.rope == StackRope::none || (std::isfinite(b.rope_theta) && b.rope_theta > 0),
             "transformer stack config: block {} has rope_theta {}; it must be positive", i,
             b.rope_theta);
    IM_CHECK(b.rope != StackRope::interleaved_xpos ||
                 (std::isfinite(b.xpos_scale_base) && b.xpos_scale_base > 0),
             "transformer stack config: block {} has xpos_scale_base {}; it must be positive",
             i, b.xpos_scale_base);
  }
}

// Toto's xPos scales (rotary-embedding-torch's, with the centre of the pass):
// scale[t, i] = zeta_i^((p_t - c) / base), zeta_i = (2i + 0.4 d) / (1.4 d), c = floor(p_last / 2),
// in float32 as upstream computes them.
void xpos_scales(int64_t head_dim, double base, int64_t first_pos, int64_t tokens, float* out) {
  const int64_t half = head_dim / 2;
  const float centre = std::floor(float(first_pos + tokens - 1) / 2.0f);
  for (int64_t t = 0; t < tokens; ++t) {
    const float power = (float(first_pos + t) - centre) / float(base);
    for (int64_t i = 0; i < half; ++i) {
      const float zeta = (float(2 * i) + 0.4f * float(head_dim)) / (1.4f * float(head_dim));
      out[t * half + i] = std::pow(zeta, power);
    }
  }
}

// Whether every sequence is the only one of its group: group attention then reduces to o(v(x)).
bool all_alone(const Tensor& group) {
  const int64_t* ids = group.data<int64_t>();
  std::vector<int64_t> sorted(ids, ids + group.size(0));
  std::sort(sorted.begin(), sorted.end());
  return std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end();
}

}  // namespace

std::vector<std::pair<std::string, Shape>> stack_tensor_names(const StackConfig& c) {
  const int64_t inner = c.heads * c.head_dim;
  std::vector<std::pair<std::string, Shape>> names;
  auto dense = [&](size_t i, const char* what, int64_t out, int64_t in, bool bias) {
    names.push_back({block_name(i, fmt::format("{}.weight", what).c_str()), {out, in}});
    if (bias) names.push_back({block_name(i, fmt::format("{}.bias", what).c_str()), {out}});
  };
  for (size_t i = 0; i < c.blocks.size(); ++i) {
    const StackBlockConfig& b = c.blocks[i];
    auto attention = [&](const char* norm, const char* prefix) {
      names.push_back({block_name(i, fmt::format("{}.weight", norm).c_str()), {c.hidden}});
      for (const char* p : {"q", "k", "v"})
        dense(i, fmt::format("{}.{}", prefix, p).c_str(), inner, c.hidden, b.attention_bias);
      dense(i, fmt::format("{}.o", prefix).c_str(), c.hidden, inner, b.attention_bias);
    };
    if (b.time_attention) attention("norm1", "attention");
    if (b.group_attention) attention("group_norm", "group_attention");
    names.push_back({block_name(i, "norm2.weight"), {c.hidden}});
    if (b.mlp == StackMlp::swiglu) dense(i, "mlp.gate", c.intermediate, c.hidden, b.mlp_bias);
    dense(i, "mlp.up", c.intermediate, c.hidden, b.mlp_bias);
    dense(i, "mlp.down", c.hidden, c.intermediate, b.mlp_bias);
  }
  if (c.final_norm) names.push_back({"final_norm.weight", {c.hidden}});
  return names;
}

TransformerStack::Dense TransformerStack::o_after_v(const Dense& v, const Dense& o) {
  // o(v(x)) = (W_o W_v) x + (W_o b_v + b_o). Float32 products, as the two projections are: the
  // fused result differs from the two-step one by rounding only.
  const Tensor& wv = v.weight.dense;  // (inner, hidden): as a [k, n] matrix for W_o @ W_v
  const Tensor& wo = o.weight.dense;  // (hidden, inner)
  Tensor product = Tensor::owned({wo.size(0), wv.size(1)}, DType::f32);
  matmul(wo, wv, product);
  Dense fused{Linear::borrow_packed(product), Tensor()};
  if (v.bias.defined()) {
    fused.bias = Tensor::owned({wo.size(0)}, DType::f32);
    Tensor row = fused.bias.view({1, wo.size(0)});
    matmul(v.bias.view({1, wv.size(0)}), wo.transpose(0, 1), row);
    add(o.bias, row);
  }
  return fused;
}

TransformerStack::TransformerStack(const StackConfig& config,
                                   const std::map<std::string, Tensor>& tensors)
    : config_(config) {
  check_config(config_);
  const auto expected = stack_tensor_names(config_);
  std::set<std::string> known;
  for (const auto& [name, shape] : expected) {
    known.insert(name);
    auto it = tensors.find(name);
    IM_CHECK(it != tensors.end(), "transformer stack: no tensor '{}' (expected shape {})", name,
             shape.str());
    const Tensor& t = it->second;
    IM_CHECK_TYPE(t.dtype() == DType::f32, "transformer stack: tensor '{}' has dtype {}; "
                  "expected float32", name, dtype_name(t.dtype()));
    IM_CHECK(t.shape() == shape, "transformer stack: tensor '{}' has shape {}, expected {}", name,
             t.shape().str(), shape.str());
    IM_CHECK(t.is_contiguous(), "transformer stack: tensor '{}' is not contiguous", name);
  }
  for (const auto& [name, t] : tensors)
    IM_CHECK(known.count(name), "transformer stack: tensor '{}' is not part of this configuration",
             name);
  auto tensor = [&](size_t i, const char* rest) { return tensors.at(block_name(i, rest)); };
  auto dense = [&](size_t i, const char* what, bool bias) {
    // Packed once for the GEMM: the stack's products are prefill-shaped (whole windows).
    Dense d{Linear::borrow_packed(
                tensors.at(block_name(i, fmt::format("{}.weight", what).c_str()))),
            Tensor()};
    if (bias) d.bias = tensors.at(block_name(i, fmt::format("{}.bias", what).c_str()));
    return d;
  };
  for (size_t i = 0; i < config_.blocks.size(); ++i) {
    const StackBlockConfig& b = config_.blocks[i];
    Block w;
    auto attention = [&](const char* norm, const char* prefix) {
      auto part = [&](const char* p) {
        return dense(i, fmt::format("{}.{}", prefix, p).c_str(), b.attention_bias);
      };
      return Attention{tensor(i, fmt::format("{}.weight", norm).c_str()), part("q"), part("k"),
                       part("v"), part("o")};
    };
    if (b.time_attention) w.time = attention("norm1", "attention");
    if (b.group_attention) {
      w.group = attention("group_norm", "group_attention");
      w.group_ov = o_after_v(w.group.v, w.group.o);
    }
    w.norm2 = tensor(i, "norm2.weight");
    if (b.mlp == StackMlp::swiglu) w.gate = dense(i, "mlp.gate", b.mlp_bias);
    w.up = dense(i, "mlp.up", b.mlp_bias);
    w.down = dense(i, "mlp.down", b.mlp_bias);
    if (b.time_attention && b.rope != StackRope::none) {
      RopeConfig rope;
      rope.head_dim = config_.head_dim;
      rope.theta = b.rope_theta;
      w.inv_freq = rope_inverse_frequencies(rope);
    }
    blocks_.push_back(std::move(w));
  }
  if (config_.final_norm) final_norm_ = tensors.at("final_norm.weight");
}

KvCache TransformerStack::make_cache(int64_t sequences, int64_t capacity) const {
  for (size_t i = 0; i < config_.blocks.size(); ++i)
    IM_CHECK(!config_.blocks[i].time_attention || config_.blocks[i].causal,
             "transformer stack: block {} is bidirectional; a KV cache only serves causal "
             "stacks (run whole sequences instead)", i);
  return KvCache(int64_t(config_.blocks.size()), sequences, config_.heads, capacity,
                 config_.head_dim, /*owned=*/true);
}

void TransformerStack::forward(Tensor& x, int64_t first_pos, KvCache* cache, int threads,
                               const Tensor& key_bias, const Tensor& group,
                               const StopCheck& should_stop) const {
  const StackConfig& c = config_;
  IM_CHECK_TYPE(x.dtype() == DType::f32, "transformer stack: x has dtype {}; expected float32",
                dtype_name(x.dtype()));
  IM_CHECK(x.ndim() == 3 && x.size(2) == c.hidden && x.is_contiguous(),
           "transformer stack: x must be a contiguous float32 [sequences, tokens, {}], got {}",
           c.hidden, x.shape().str());
  const int64_t sequences = x.size(0), tokens = x.size(1), rows = sequences * tokens;
  if (cache) {
    IM_CHECK(cache->sequences() == sequences,
             "transformer stack: the cache holds {} sequences, x has {}", cache->sequences(),
             sequences);
    IM_CHECK(first_pos >= 0 && first_pos + tokens <= cache->capacity(),
             "transformer stack: positions [{}, {}) do not fit the cache's {}", first_pos,
             first_pos + tokens, cache->capacity());
  } else {
    IM_CHECK(first_pos == 0, "transformer stack: first_pos {} needs the cache of the earlier "
             "positions", first_pos);
  }
  bool grouped = false;
  for (size_t l = 0; l < c.blocks.size(); ++l) {
    const StackBlockConfig& b = c.blocks[l];
    grouped = grouped || b.group_attention;
    IM_CHECK(!b.time_attention || b.causal || !cache, "transformer stack: block {} is "
             "bidirectional and cannot run over a KV cache", l);
    IM_CHECK(!b.time_attention || !b.causal || !key_bias.defined(), "transformer stack: "
             "block {} is causal; key_bias serves bidirectional and group attention only", l);
  }
  if (key_bias.defined()) {
    IM_CHECK_TYPE(key_bias.dtype() == DType::f32, "transformer stack: key_bias has dtype {}; "
                  "expected float32", dtype_name(key_bias.dtype()));
    IM_CHECK(key_bias.shape() == Shape({sequences, tokens}) && key_bias.is_contiguous(),
             "transformer stack: key_bias must be a contiguous float32 [{}, {}], got {}",
             sequences, tokens, key_bias.shape().str());
  }
  IM_CHECK(!grouped || group.defined(), "transformer stack: blocks with group attention need "
           "each sequence's group");
  if (rows == 0) return;
  const bool alone = grouped && all_alone(group);
  // One parallel region for the pass: the ops below hand their shares to its waiting threads.
  with_team(resolve_threads(threads), [&] {
    run_pass(x, first_pos, cache, threads, key_bias, group, should_stop, alone);
  });
}

void TransformerStack::run_pass(Tensor& x, int64_t first_pos, KvCache* cache, int threads,
                                const Tensor& key_bias, const Tensor& group,
                                const StopCheck& should_stop, bool alone) const {
  const StackConfig& c = config_;
  const int64_t sequences = x.size(0), tokens = x.size(1), rows = sequences * tokens;
  // Every activation below comes from this thread's arena and goes back when the pass ends.
  InferenceMode guard;
  const int64_t inner = c.heads * c.head_dim, half = c.head_dim / 2;
  Tensor x2 = x.view({rows, c.hidden});
  Tensor h = Tensor::empty({rows, c.hidden}, DType::f32);
  Tensor q = Tensor::empty({rows, c.heads, c.head_dim}, DType::f32);
  Tensor k = Tensor::empty({rows, inner}, DType::f32);
  Tensor v = Tensor::empty({rows, inner}, DType::f32);
  Tensor attn = Tensor::empty({rows, c.heads, c.head_dim}, DType::f32);
  Tensor proj = Tensor::empty({rows, c.hidden}, DType::f32);
  Tensor up = Tensor::empty({rows, c.intermediate}, DType::f32);
  Tensor gate;
  for (const StackBlockConfig& b : c.blocks)
    if (b.mlp == StackMlp::swiglu && !gate.defined())
      gate = Tensor::empty({rows, c.intermediate}, DType::f32);
  Tensor q2 = q.view({rows, inner}), k3 = k.view({rows, c.heads, c.head_dim});
  Tensor attn2 = attn.view({rows, inner});
  const Shape by_sequence{sequences, tokens, c.heads, c.head_dim};
  Tensor q4 = q.view(by_sequence), k4 = k.view(by_sequence), v4 = v.view(by_sequence);
  Tensor attn4 = attn.view(by_sequence);
  // Without a cache, one sequence's keys and values at a time.
  Tensor local_k, local_v;
  if (!cache) {
    local_k = Tensor::empty({c.heads, tokens, c.head_dim}, DType::f32);
    local_v = Tensor::empty({c.heads, tokens, c.head_dim}, DType::f32);
  }
  Tensor positions = Tensor::empty({tokens}, DType::i64);
  for (int64_t t = 0; t < tokens; ++t) positions.data<int64_t>()[t] = first_pos + t;
  Tensor cos = Tensor::empty({tokens, half}, DType::f32);
  Tensor sin = Tensor::empty({tokens, half}, DType::f32);
  Tensor xpos;  // [tokens, half], made for the first block that uses it
  double xpos_base = 0.0;
  const Tensor no_bias;
  const std::vector<float> no_table;
  const std::vector<float>* angles_of = &no_table;  // the table cos/sin now hold

  auto dense = [&](const Tensor& in, const Dense& d, Tensor& out) {
    linear(in, d.weight, out, threads);
    if (d.bias.defined()) add(d.bias, out, threads);
  };
  for (size_t l = 0; l < blocks_.size(); ++l) {
    if (should_stop && should_stop()) throw Interrupted("transformer stack interrupted");
    const Block& w = blocks_[l];
    const StackBlockConfig& b = c.blocks[l];
    const float scale = b.scaled ? 1.0f / std::sqrt(float(c.head_dim)) : 1.0f;
    if (b.time_attention) {
      rms_norm(x2, w.time.norm, c.norm_eps, h, threads);
      dense(h, w.time.q, q2);
      dense(h, w.time.k, k);
      dense(h, w.time.v, v);
      // Blocks that share a frequency table (the usual case) share the angles of this pass.
      if (b.rope != StackRope::none && w.inv_freq != *angles_of) {
        rope_angles(w.inv_freq, positions.data<int64_t>(), tokens, cos.data<float>(),
                    sin.data<float>());
        angles_of = &w.inv_freq;
      }
      if (b.rope == StackRope::interleaved_xpos && b.xpos_scale_base != xpos_base) {
        if (!xpos.defined()) xpos = Tensor::empty({tokens, half}, DType::f32);
        xpos_scales(c.head_dim, b.xpos_scale_base, first_pos, tokens, xpos.data<float>());
        xpos_base = b.xpos_scale_base;
      }
      for (int64_t s = 0; s < sequences; ++s) {
        Tensor qs = q.slice(0, s * tokens, (s + 1) * tokens);
        Tensor ks = k3.slice(0, s * tokens, (s + 1) * tokens);
        if (b.rope == StackRope::half_split) {
          rope(qs, cos, sin, threads);
          rope(ks, cos, sin, threads);
        } else if (b.rope == StackRope::interleaved_xpos) {
          rope_interleaved(qs, cos, sin, xpos, false, threads);
          rope_interleaved(ks, cos, sin, xpos, true, threads);
        }
        const Tensor keys = cache ? cache->keys(int64_t(l), s) : local_k;
        const Tensor values = cache ? cache->values(int64_t(l), s) : local_v;
        store_kv(k, s * tokens, tokens, first_pos, keys);
        store_kv(v, s * tokens, tokens, first_pos, values);
        Tensor out = attn.slice(0, s * tokens, (s + 1) * tokens);
        if (b.causal) {
          attention(qs, keys, values, first_pos, scale, out, threads);
        } else {
          const Tensor bias = key_bias.defined() ? key_bias.select(0, s) : no_bias;
          attention_bidirectional(qs, keys, values, tokens, scale, bias, out, threads);
        }
      }
      dense(attn2, w.time.o, proj);
      add(proj, x2, threads);
    }
    if (b.group_attention && alone) {
      rms_norm(x2, w.group.norm, c.norm_eps, h, threads);
      add_singleton_group_attention(w, h, key_bias, proj, x2, threads);
    } else if (b.group_attention) {
      rms_norm(x2, w.group.norm, c.norm_eps, h, threads);
      dense(h, w.group.q, q2);
      dense(h, w.group.k, k);
      dense(h, w.group.v, v);
      group_attention(q4, k4, v4, group, scale, key_bias, attn4, threads);
      dense(attn2, w.group.o, proj);
      add(proj, x2, threads);
    }
    rms_norm(x2, w.norm2, c.norm_eps, h, threads);
    dense(h, w.up, up);
    if (b.mlp == StackMlp::swiglu) {
      dense(h, w.gate, gate);
      swiglu(gate, up, up, threads);
    } else {
      relu(up, threads);
    }
    dense(up, w.down, proj);
    add(proj, x2, threads);
  }
  if (c.final_norm) rms_norm(x2, final_norm_, c.norm_eps, x2, threads);
}

void TransformerStack::add_singleton_group_attention(const Block& w, const Tensor& h,
                                                     const Tensor& key_bias, Tensor& proj,
                                                     Tensor& x2, int threads) const {
  linear(h, w.group_ov.weight, proj, threads);
  if (w.group_ov.bias.defined()) add(w.group_ov.bias, proj, threads);
  if (key_bias.defined()) {
    // A token whose own key is hidden sees no key: its attention is zero, o(0) = b_o.
    const float* bias = key_bias.data<float>();
    const int64_t hidden = config_.hidden;
    const float* b_o = w.group.o.bias.defined() ? w.group.o.bias.data<float>() : nullptr;
    for (int64_t r = 0; r < proj.size(0); ++r) {
      if (bias[r] > -INFINITY) continue;
      float* row = proj.data<float>() + r * hidden;
      for (int64_t i = 0; i < hidden; ++i) row[i] = b_o ? b_o[i] : 0.0f;
    }
  }
  add(proj, x2, threads);
}

}  // namespace infermode
