#pragma once
// A LoRA adapter (PEFT's format) held apart from the base weights, so that adapters switch per
// call without touching the base. An adapted matrix W (out, in) acts as W + scale * B @ A and
// the update is applied on the fly, out += ((x @ A^T) * scale) @ B^T: two thin products of rank
// r beside the base product. (Merging into W costs nothing per token; that is done at load, in
// Python, when no switching is wanted.)
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "models/decoder.h"

namespace infermode {

// One adapted matrix's factors as the checkpoint holds them.
struct LoraFactors {
  Tensor a;     // (r, in) float32: PEFT's lora_A.weight
  Tensor b;     // (out, r) float32: PEFT's lora_B.weight
  float scale;  // lora_alpha / r, or lora_alpha / sqrt(r) with rsLoRA
};

// The update of one matrix, owned: A as given, B multiplied by the scale.
struct LoraUpdate {
  Tensor a;  // (r, in)
  Tensor b;  // (out, r)
  bool defined() const { return a.defined(); }
};

struct LayerLora {
  LoraUpdate q, k, v, o, gate, up, down;
  // Replacements for the base's q/k/v biases (Qwen2; PEFT's bias="all" or "lora_only"), or
  // undefined to keep the base's.
  Tensor q_bias, k_bias, v_bias;
};

class LoraAdapter {
 public:
  // updates: {weight name as in the checkpoint ("model.layers.0.self_attn.q_proj.weight"):
  // factors}; the projections of every block and lm_head.weight can be adapted. biases:
  // {"model.layers.{i}.self_attn.{q,k,v}_proj.bias": replacement}. Every name, shape and dtype
  // is checked against `config`; the tensors are copied, so the caller's arrays may go.
  LoraAdapter(const DecoderConfig& config, const std::map<std::string, LoraFactors>& updates,
              const std::map<std::string, Tensor>& biases = {});

  const LayerLora& layer(int64_t i) const { return layers_[size_t(i)]; }
  const LoraUpdate& lm_head() const { return lm_head_; }
  int64_t layers() const { return int64_t(layers_.size()); }
  // Factor bytes held (A and B of every adapted matrix, and the biases).
  int64_t bytes() const { return bytes_; }

 private:
  std::vector<LayerLora> layers_;
  LoraUpdate lm_head_;
  int64_t bytes_ = 0;
};

// out += x @ (B @ A)^T for the update of one matrix (nothing when it is undefined): x float32
// (rows, in), out float32 (rows, out), both contiguous. Its intermediates come from scratch.
void add_lora(const Tensor& x, const LoraUpdate& update, Tensor& out, int threads);

}  // namespace infermode
