#include "models/lora.h"

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/scratch.h"
#include "kernels/add.h"
#include "kernels/matmul.h"

namespace infermode {
namespace {

// The expected shape of every weight of `config` by name, lm_head.weight included when tied
// (an adapter may adapt the output layer of a model whose base ties it to the embedding).
std::map<std::string, Shape> expected_shapes(const DecoderConfig& config) {
  std::map<std::string, Shape> shapes;
  for (const auto& [name, shape] : decoder_tensor_names(config)) shapes[name] = shape;
  shapes["lm_head.weight"] = Shape{config.vocab_size, config.hidden_size};
  return shapes;
}

// "model.layers.{i}.{rest}" -> (i, rest); (-1, name) for names outside the blocks.
std::pair<int64_t, std::string> split_layer(const std::string& name) {
  const std::string prefix = "model.layers.";
  if (name.rfind(prefix, 0) != 0) return {-1, name};
  const size_t dot = name.find('.', prefix.size());
  if (dot == std::string::npos) return {-1, name};
  const std::string index = name.substr(prefix.size(), dot - prefix.size());
  // Past 18 digits stoll would throw std::out_of_range (an IndexError in Python): no model has
  // that many blocks, so such a name is outside the blocks like any other.
  if (index.empty() || index.size() > 18 ||
      index.find_first_not_of("0123456789") != std::string::npos)
    return {-1, name};
  return {std::stoll(index), name.substr(dot + 1)};
}

Tensor copy_of(const Tensor& t) {
  Tensor out = Tensor::owned(t.shape(), DType::f32);  // the adapter outlives any guard
  std::memcpy(out.raw(), t.raw(), size_t(t.nbytes()));
  return out;
}

LoraUpdate make_update(const std::string& name, const LoraFactors& f, const Shape& weight) {
  IM_CHECK_TYPE(f.a.dtype() == DType::f32 && f.b.dtype() == DType::f32,
                "LoRA factors of '{}' must be float32, got A {} and B {}", name,
                dtype_name(f.a.dtype()), dtype_name(f.b.dtype()));
  IM_CHECK(f.a.ndim() == 2 && f.b.ndim() == 2 && f.a.is_contiguous() && f.b.is_contiguous(),
           "LoRA factors of '{}' must be contiguous matrices, got A {} and B {}", name,
           f.a.shape().str(), f.b.shape().str());
  const int64_t rank = f.a.size(0);
  IM_CHECK(rank > 0 && f.a.size(1) == weight[1] && f.b.size(0) == weight[0] &&
               f.b.size(1) == rank,
           "LoRA factors of '{}' do not fit its weight {}: A is {} (expected (r, {})) and B is {} "
           "(expected ({}, r)) with one rank r",
           name, weight.str(), f.a.shape().str(), weight[1], f.b.shape().str(), weight[0]);
  IM_CHECK(std::isfinite(f.scale), "LoRA scale of '{}' is {}, not a finite number", name,
           f.scale);
  LoraUpdate u{copy_of(f.a), copy_of(f.b)};
  float* b = u.b.data<float>();
  for (int64_t i = 0; i < u.b.numel(); ++i) b[i] *= f.scale;
  return u;
}

}  // namespace

LoraAdapter::LoraAdapter(const DecoderConfig& config,
                         const std::map<std::string, LoraFactors>& updates,
                         const std::map<std::string, Tensor>& biases)
    : layers_(size_t(config.layers)) {
  const std::map<std::string, Shape> shapes = expected_shapes(config);
  for (const auto& [name, factors] : updates) {
    auto shape = shapes.find(name);
    IM_CHECK(shape != shapes.end() && shape->second.ndim == 2,
             "LoRA adapter adapts '{}', which is not a weight matrix of this model", name);
    LoraUpdate u = make_update(name, factors, shape->second);
    bytes_ += u.a.nbytes() + u.b.nbytes();
    if (name == "lm_head.weight") {
      lm_head_ = std::move(u);
      continue;
    }
    const auto [i, rest] = split_layer(name);
    LayerLora& l = layers_[size_t(i)];
    LoraUpdate* slot = rest == "self_attn.q_proj.weight" ? &l.q
                       : rest == "self_attn.k_proj.weight" ? &l.k
                       : rest == "self_attn.v_proj.weight" ? &l.v
                       : rest == "self_attn.o_proj.weight" ? &l.o
                       : rest == "mlp.gate_proj.weight"    ? &l.gate
                       : rest == "mlp.up_proj.weight"      ? &l.up
                       : rest == "mlp.down_proj.weight"    ? &l.down
                                                           : nullptr;
    IM_CHECK(slot != nullptr && i >= 0,
             "LoRA adapter adapts '{}'; only the attention and MLP projections and lm_head can "
             "be adapted unmerged (merge the adapter into the weights instead)", name);
    *slot = std::move(u);
  }
  for (const auto& [name, bias] : biases) {
    auto shape = shapes.find(name);
    const auto [i, rest] = split_layer(name);
    Tensor* slot = i < 0 || shape == shapes.end()   ? nullptr
                   : rest == "self_attn.q_proj.bias" ? &layers_[size_t(i)].q_bias
                   : rest == "self_attn.k_proj.bias" ? &layers_[size_t(i)].k_bias
                   : rest == "self_attn.v_proj.bias" ? &layers_[size_t(i)].v_bias
                                                     : nullptr;
    IM_CHECK(slot != nullptr,
             "LoRA adapter replaces the bias '{}', which this model does not have (only the "
             "q/k/v biases of a model with attention_bias can be replaced)", name);
    IM_CHECK_TYPE(bias.dtype() == DType::f32, "bias '{}' must be float32, got {}", name,
                  dtype_name(bias.dtype()));
    IM_CHECK(bias.shape() == shape->second && bias.is_contiguous(),
             "bias '{}' has shape {}, expected {}", name, bias.shape().str(),
             shape->second.str());
    *slot = copy_of(bias);
    bytes_ += bias.nbytes();
  }
}

void add_lora(const Tensor& x, const LoraUpdate& update, Tensor& out, int threads) {
  if (!update.defined()) return;
  const int64_t rows = x.size(0), rank = update.a.size(0), width = update.b.size(0);
  IM_CHECK(x.ndim() == 2 && x.size(1) == update.a.size(1) && out.ndim() == 2 &&
               out.size(0) == rows && out.size(1) == width,
           "add_lora: x {} and out {} do not fit A {} and B {}", x.shape().str(),
           out.shape().str(), update.a.shape().str(), update.b.shape().str());
  Scratch low(size_t(rows * rank) * sizeof(float));
  Scratch delta(size_t(rows * width) * sizeof(float));
  Tensor t = Tensor::borrow(low.as<float>(), DType::f32, {rows, rank});
  Tensor d = Tensor::borrow(delta.as<float>(), DType::f32, {rows, width});
  matmul(x, update.a.transpose(0, 1), t, threads);
  matmul(t, update.b.transpose(0, 1), d, threads);
  add(d, out, threads);
}

}  // namespace infermode
