#include "models/decoder.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>

#include "core/error.h"
#include "core/inference_mode.h"
#include "core/thread_pool.h"
#include "kernels/add.h"
#include "kernels/attention.h"
#include "kernels/embedding.h"
#include "kernels/rms_norm.h"
#include "kernels/rope.h"
#include "kernels/swiglu.h"
#include "models/lora.h"

namespace infermode {
namespace {

const LayerLora kNoLora;  // what a block without an adapter adds: nothing

std::string layer_name(int64_t i, const char* rest) {
  return fmt::format("model.layers.{}.{}", i, rest);
}

void check_config(const DecoderConfig& c) {
  IM_CHECK(c.vocab_size > 0 && c.hidden_size > 0 && c.intermediate_size > 0 && c.layers > 0 &&
               c.heads > 0 && c.kv_heads > 0 && c.head_dim > 0 && c.max_positions > 0,
           "decoder config: every size must be positive (vocab {}, hidden {}, intermediate {}, "
           "layers {}, heads {}, kv_heads {}, head_dim {}, max_positions {})",
           c.vocab_size, c.hidden_size, c.intermediate_size, c.layers, c.heads, c.kv_heads,
           c.head_dim, c.max_positions);
  IM_CHECK(c.heads % c.kv_heads == 0,
           "decoder config: {} attention heads cannot share {} key/value heads evenly", c.heads,
           c.kv_heads);
  IM_CHECK(c.head_dim % 2 == 0, "decoder config: head_dim must be even for RoPE, got {}",
           c.head_dim);
  // Checked here, not first by the norm in the forward pass: a model that is built must run.
  IM_CHECK(std::isfinite(c.rms_norm_eps) && c.rms_norm_eps >= 0.0f,
           "decoder config: rms_norm_eps must be finite and >= 0, got {}", c.rms_norm_eps);
  // Tensor sizes are products of these fields, and a config read from a file must not overflow
  // one into a small number that some tensor then matches: each field fits 31 bits (real models
  // are far below), so products of two fit 62; the largest matrix's is checked.
  const std::pair<const char*, int64_t> sizes[] = {
      {"vocab_size", c.vocab_size}, {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size}, {"heads", c.heads},
      {"kv_heads", c.kv_heads}, {"head_dim", c.head_dim}};
  for (const auto& [name, value] : sizes)
    IM_CHECK(value <= INT32_MAX, "decoder config: {} is {}, more than any model has (at most {})",
             name, value, INT32_MAX);
  int64_t elements;
  IM_CHECK(!__builtin_mul_overflow(c.heads * c.head_dim, c.hidden_size, &elements),
           "decoder config: the attention matrices (heads {} x head_dim {} x hidden_size {}) "
           "overflow a 64-bit size", c.heads, c.head_dim, c.hidden_size);
}

// Copies consecutive column ranges of `all` ((rows, sum of widths)) into each part ((rows, width)).
void split_columns(const Tensor& all, std::initializer_list<Tensor*> parts) {
  const int64_t rows = all.size(0), width = all.size(1);
  const float* src = static_cast<const float*>(all.raw());
  for (int64_t r = 0; r < rows; ++r) {
    int64_t col = 0;
    for (Tensor* part : parts) {
      const int64_t n = part->size(1);
      std::memcpy(static_cast<float*>(part->raw()) + r * n, src + r * width + col,
                  size_t(n) * sizeof(float));
      col += n;
    }
  }
}

}  // namespace

std::vector<std::pair<std::string, Shape>> decoder_tensor_names(const DecoderConfig& c) {
  const int64_t q_dim = c.heads * c.head_dim, kv_dim = c.kv_heads * c.head_dim;
  std::vector<std::pair<std::string, Shape>> names;
  names.push_back({"model.embed_tokens.weight", {c.vocab_size, c.hidden_size}});
  for (int64_t i = 0; i < c.layers; ++i) {
    names.push_back({layer_name(i, "input_layernorm.weight"), {c.hidden_size}});
    names.push_back({layer_name(i, "self_attn.q_proj.weight"), {q_dim, c.hidden_size}});
    names.push_back({layer_name(i, "self_attn.k_proj.weight"), {kv_dim, c.hidden_size}});
    names.push_back({layer_name(i, "self_attn.v_proj.weight"), {kv_dim, c.hidden_size}});
    if (c.attention_bias) {
      names.push_back({layer_name(i, "self_attn.q_proj.bias"), {q_dim}});
      names.push_back({layer_name(i, "self_attn.k_proj.bias"), {kv_dim}});
      names.push_back({layer_name(i, "self_attn.v_proj.bias"), {kv_dim}});
    }
    names.push_back({layer_name(i, "self_attn.o_proj.weight"), {c.hidden_size, q_dim}});
    names.push_back({layer_name(i, "post_attention_layernorm.weight"), {c.hidden_size}});
    names.push_back({layer_name(i, "mlp.gate_proj.weight"), {c.intermediate_size, c.hidden_size}});
    names.push_back({layer_name(i, "mlp.up_proj.weight"), {c.intermediate_size, c.hidden_size}});
    names.push_back({layer_name(i, "mlp.down_proj.weight"), {c.hidden_size, c.intermediate_size}});
  }
  names.push_back({"model.norm.weight", {c.hidden_size}});
  if (!c.tie_word_embeddings) names.push_back({"lm_head.weight", {c.vocab_size, c.hidden_size}});
  return names;
}

Decoder::Decoder(const DecoderConfig& config, const std::map<std::string, Tensor>& tensors,
                 const std::map<std::string, QuantView>& quantized, bool stack)
    : config_(config) {
  check_config(config_);
  // Each block has at least 9 tensors: a config claiming more blocks than there are tensors
  // would otherwise list billions of names before finding the first one missing.
  const int64_t given = int64_t(tensors.size() + quantized.size());
  IM_CHECK(config_.layers <= given / 9,
           "decoder config has {} blocks, but only {} tensors are given (each block has at "
           "least 9)", config_.layers, given);
  std::map<std::string, Tensor> dense;
  std::map<std::string, QuantView> blocks;
  for (const auto& [name, shape] : decoder_tensor_names(config_)) {
    auto it = tensors.find(name);
    auto qt = quantized.find(name);
    IM_CHECK(it != tensors.end() || qt != quantized.end(),
             "checkpoint has no tensor '{}' (expected shape {})", name, shape.str());
    IM_CHECK(it == tensors.end() || qt == quantized.end(),
             "tensor '{}' is given both dense and quantized; pass it once", name);
    const bool matrix = shape.ndim == 2;
    if (qt != quantized.end()) {
      const QuantView& q = qt->second;
      IM_CHECK_TYPE(matrix, "tensor '{}' is a vector of shape {} and cannot be quantized ({}); "
                    "pass it as float32", name, shape.str(), quant_format_name(q.format));
      IM_CHECK(q.rows == shape[0] && q.cols == shape[1],
               "tensor '{}' has shape ({}, {}), expected {} from the config", name, q.rows,
               q.cols, shape.str());
      IM_CHECK(q.cols % kQuantBlock == 0,
               "tensor '{}' ({}) has {} columns, not a multiple of the {}-value block", name,
               quant_format_name(q.format), q.cols, kQuantBlock);
      IM_CHECK(q.blocks != nullptr, "tensor '{}' has no data", name);
      blocks[name] = q;
      continue;
    }
    const Tensor& t = it->second;
    // Matrices may be bfloat16 (half the bytes to stream); vectors (norms, biases) are float32.
    IM_CHECK_TYPE(t.dtype() == DType::f32 || (matrix && t.dtype() == DType::bf16),
                  "tensor '{}' has dtype {}; expected float32{}", name, dtype_name(t.dtype()),
                  matrix ? " or bfloat16" : "");
    IM_CHECK(t.shape() == shape, "tensor '{}' has shape {}, expected {} from config.json", name,
             t.shape().str(), shape.str());
    IM_CHECK(t.is_contiguous(), "tensor '{}' is not contiguous", name);
    dense[name] = t;
  }
  // After the shape checks: head_dim now matches real tensors, so its table is a sane size.
  inv_freq_ = rope_inverse_frequencies(config_.rope);
  auto linear_of = [&](const std::string& name) {
    auto qt = blocks.find(name);
    return qt != blocks.end() ? Linear::pack({qt->second}) : Linear::borrow(dense.at(name));
  };
  // Quantized matrices of one format that read the same input are stacked into one; otherwise
  // each gets its own Linear.
  auto stacked = [&](const std::vector<std::string>& names, Linear& fused,
                     std::vector<Linear*> parts) {
    std::vector<QuantView> views;
    for (const std::string& name : names) {
      auto qt = blocks.find(name);
      if (qt == blocks.end() || qt->second.format != blocks.at(names[0]).format) break;
      views.push_back(qt->second);
    }
    if (stack && views.size() == names.size()) {
      fused = Linear::pack(views);
      return;
    }
    for (size_t i = 0; i < names.size(); ++i) *parts[i] = linear_of(names[i]);
  };
  const std::string embed = "model.embed_tokens.weight";
  if (blocks.count(embed)) {
    weights_.embed_blocks = blocks.at(embed);
  } else {
    weights_.embed = dense.at(embed);
  }
  weights_.final_norm = dense.at("model.norm.weight");
  weights_.lm_head = linear_of(config_.tie_word_embeddings ? embed : "lm_head.weight");
  for (int64_t i = 0; i < config_.layers; ++i) {
    LayerWeights w;
    w.input_norm = dense.at(layer_name(i, "input_layernorm.weight"));
    stacked({layer_name(i, "self_attn.q_proj.weight"), layer_name(i, "self_attn.k_proj.weight"),
             layer_name(i, "self_attn.v_proj.weight")},
            w.qkv, {&w.q, &w.k, &w.v});
    if (config_.attention_bias) {
      w.q_bias = dense.at(layer_name(i, "self_attn.q_proj.bias"));
      w.k_bias = dense.at(layer_name(i, "self_attn.k_proj.bias"));
      w.v_bias = dense.at(layer_name(i, "self_attn.v_proj.bias"));
    }
    w.o = linear_of(layer_name(i, "self_attn.o_proj.weight"));
    w.post_norm = dense.at(layer_name(i, "post_attention_layernorm.weight"));
    stacked({layer_name(i, "mlp.gate_proj.weight"), layer_name(i, "mlp.up_proj.weight")},
            w.gate_up, {&w.gate, &w.up});
    w.down = linear_of(layer_name(i, "mlp.down_proj.weight"));
    weights_.layers.push_back(std::move(w));
  }
}

void Decoder::forward(const int32_t* ids, const std::vector<Segment>& segments, KvCache& cache,
                      const std::vector<int64_t>& logit_rows, float* logits,
                      HiddenStateSink* sink, int threads, const LoraAdapter* lora) const {
  const DecoderConfig& c = config_;
  IM_CHECK(!lora || lora->layers() == c.layers,
           "forward: the LoRA adapter was built for {} blocks, the model has {}",
           lora ? lora->layers() : 0, c.layers);
  int64_t rows = 0;
  for (const Segment& s : segments) {
    IM_CHECK(s.row == rows && s.n > 0, "forward: segments must be non-empty and consecutive");
    IM_CHECK(0 <= s.seq && s.seq < cache.sequences(), "forward: sequence {} is not in the cache",
             s.seq);
    IM_CHECK(s.pos >= 0 && s.pos + s.n <= cache.capacity() && s.pos + s.n <= c.max_positions,
             "forward: positions [{}, {}) exceed the cache ({}) or the model's context ({})",
             s.pos, s.pos + s.n, cache.capacity(), c.max_positions);
    rows += s.n;
  }
  for (int64_t r : logit_rows)
    IM_CHECK(0 <= r && r < rows, "forward: logit row {} is outside [0, {})", r, rows);
  // One parallel region for the pass: the ops below hand their shares to its waiting threads.
  with_team(resolve_threads(threads), [&] {
    run_pass(ids, segments, rows, cache, logit_rows, logits, sink, threads, lora);
  });
}

void Decoder::run_pass(const int32_t* ids, const std::vector<Segment>& segments, int64_t rows,
                       KvCache& cache, const std::vector<int64_t>& logit_rows, float* logits,
                       HiddenStateSink* sink, int threads, const LoraAdapter* lora) const {
  const DecoderConfig& c = config_;
  // Every activation below comes from this thread's arena and goes back when the pass ends.
  InferenceMode guard;
  const int64_t hidden = c.hidden_size, q_dim = c.heads * c.head_dim;
  const int64_t kv_dim = c.kv_heads * c.head_dim, half = c.head_dim / 2;
  const float scale = 1.0f / std::sqrt(float(c.head_dim));

  Tensor x = Tensor::empty({rows, hidden}, DType::f32);  // the residual stream
  const Tensor id_tensor = Tensor::borrow(const_cast<int32_t*>(ids), DType::i32, {rows});
  if (weights_.embed.defined()) {
    embedding(weights_.embed, id_tensor, x);
  } else {
    embedding(weights_.embed_blocks, id_tensor, x);
  }
  if (sink && sink->wants(0))
    sink->write(0, x.data<float>(), hidden, segments.data(), segments.size());

  Tensor positions = Tensor::empty({rows}, DType::i64);
  for (const Segment& s : segments)
    for (int64_t t = 0; t < s.n; ++t) positions.data<int64_t>()[s.row + t] = s.pos + t;
  Tensor cos = Tensor::empty({rows, half}, DType::f32);
  Tensor sin = Tensor::empty({rows, half}, DType::f32);
  rope_angles(inv_freq_, positions.data<int64_t>(), rows, cos.data<float>(), sin.data<float>());

  Tensor h = Tensor::empty({rows, hidden}, DType::f32);
  Tensor q = Tensor::empty({rows, q_dim}, DType::f32);
  Tensor k = Tensor::empty({rows, kv_dim}, DType::f32);
  Tensor v = Tensor::empty({rows, kv_dim}, DType::f32);
  Tensor attn = Tensor::empty({rows, c.heads, c.head_dim}, DType::f32);
  Tensor proj = Tensor::empty({rows, hidden}, DType::f32);
  Tensor gate = Tensor::empty({rows, c.intermediate_size}, DType::f32);
  Tensor up = Tensor::empty({rows, c.intermediate_size}, DType::f32);
  // Outputs of the stacked products, split into q/k/v and gate/up (a copy: small next to them).
  const auto& layers = weights_.layers;
  const bool any_qkv = std::any_of(layers.begin(), layers.end(),
                                   [](const LayerWeights& w) { return bool(w.qkv.packed); });
  const bool any_gate_up = std::any_of(layers.begin(), layers.end(),
                                       [](const LayerWeights& w) { return bool(w.gate_up.packed); });
  Tensor qkv = any_qkv ? Tensor::empty({rows, q_dim + 2 * kv_dim}, DType::f32) : Tensor();
  Tensor gate_up =
      any_gate_up ? Tensor::empty({rows, 2 * c.intermediate_size}, DType::f32) : Tensor();
  Tensor q3 = q.view({rows, c.heads, c.head_dim});
  Tensor k3 = k.view({rows, c.kv_heads, c.head_dim});
  Tensor attn2 = attn.view({rows, q_dim});

  for (int64_t l = 0; l < c.layers; ++l) {
    const LayerWeights& w = weights_.layers[l];
    const LayerLora& ll = lora ? lora->layer(l) : kNoLora;
    // Attention: x += o(attention(rope(q(norm(x))), rope(k(norm(x))), v(norm(x))))
    rms_norm(x, w.input_norm, c.rms_norm_eps, h, threads);
    if (w.qkv.packed) {
      linear(h, w.qkv, qkv, threads);
      split_columns(qkv, {&q, &k, &v});
    } else {
      linear(h, w.q, q, threads);
      linear(h, w.k, k, threads);
      linear(h, w.v, v, threads);
    }
    add_lora(h, ll.q, q, threads);
    add_lora(h, ll.k, k, threads);
    add_lora(h, ll.v, v, threads);
    if (c.attention_bias) {
      add(ll.q_bias.defined() ? ll.q_bias : w.q_bias, q, threads);
      add(ll.k_bias.defined() ? ll.k_bias : w.k_bias, k, threads);
      add(ll.v_bias.defined() ? ll.v_bias : w.v_bias, v, threads);
    }
    rope(q3, cos, sin, threads);
    rope(k3, cos, sin, threads);
    for (const Segment& s : segments) {
      store_kv(k, s.row, s.n, s.pos, cache.keys(l, s.seq));
      store_kv(v, s.row, s.n, s.pos, cache.values(l, s.seq));
      Tensor out = attn.slice(0, s.row, s.row + s.n);
      attention(q3.slice(0, s.row, s.row + s.n), cache.keys(l, s.seq), cache.values(l, s.seq),
                s.pos, scale, out, threads);
    }
    linear(attn2, w.o, proj, threads);
    add_lora(attn2, ll.o, proj, threads);
    add(proj, x, threads);
    // MLP: x += down(silu(gate(norm(x))) * up(norm(x)))
    rms_norm(x, w.post_norm, c.rms_norm_eps, h, threads);
    if (w.gate_up.packed) {
      linear(h, w.gate_up, gate_up, threads);
      split_columns(gate_up, {&gate, &up});
    } else {
      linear(h, w.gate, gate, threads);
      linear(h, w.up, up, threads);
    }
    add_lora(h, ll.gate, gate, threads);
    add_lora(h, ll.up, up, threads);
    swiglu(gate, up, gate, threads);
    linear(gate, w.down, proj, threads);
    add_lora(gate, ll.down, proj, threads);
    add(proj, x, threads);
    if (sink && sink->wants(int(l) + 1))
      sink->write(int(l) + 1, x.data<float>(), hidden, segments.data(), segments.size());
  }
  rms_norm(x, weights_.final_norm, c.rms_norm_eps, h, threads);
  const int final_point = int(c.layers) + 1;
  if (sink && sink->wants(final_point))
    sink->write(final_point, h.data<float>(), hidden, segments.data(), segments.size());

  if (logit_rows.empty()) return;
  const int64_t n_logits = int64_t(logit_rows.size());
  Tensor picked = Tensor::empty({n_logits, hidden}, DType::f32);
  for (int64_t i = 0; i < n_logits; ++i)
    std::memcpy(picked.data<float>() + i * hidden, h.data<float>() + logit_rows[i] * hidden,
                size_t(hidden) * sizeof(float));
  Tensor out = Tensor::borrow(logits, DType::f32, {n_logits, c.vocab_size});
  linear(picked, weights_.lm_head, out, threads);
  if (lora) add_lora(picked, lora->lm_head(), out, threads);
}

}  // namespace infermode
