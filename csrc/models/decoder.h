#pragma once
// The decoder-only transformer of the Llama family (Llama 2/3, SmolLM2) and Qwen2 (q/k/v bias).
// Activations are float32; weight matrices float32 or bfloat16 (widened as they are read), or
// GGUF-quantized (Q8_0, Q4_0, Q4_1: repacked at load for the integer kernels).
// Config and Weights are kept apart; the model owns no weight memory: it borrows the caller's
// buffers (memory-mapped checkpoint files), named as in the Hugging Face checkpoint.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/quant_blocks.h"
#include "core/tensor.h"
#include "models/hidden_state_sink.h"
#include "models/kv_cache.h"
#include "models/linear.h"
#include "models/rope_angles.h"

namespace infermode {

class LoraAdapter;

struct DecoderConfig {
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t layers = 0;
  int64_t heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_positions = 0;
  float rms_norm_eps = 1e-6f;
  RopeConfig rope;
  bool attention_bias = false;  // Qwen2: q/k/v projections have biases
  bool tie_word_embeddings = false;
};

struct LayerWeights {
  Tensor input_norm;  // (hidden)
  Linear q, k, v;     // (heads*head_dim, hidden), (kv_heads*head_dim, hidden) x2
  Tensor q_bias, k_bias, v_bias;  // (heads*head_dim), (kv_heads*head_dim) x2, or undefined
  Linear o;           // (hidden, heads*head_dim)
  Tensor post_norm;   // (hidden)
  Linear gate, up;    // (intermediate, hidden)
  Linear down;        // (hidden, intermediate)
  // When q, k and v (gate and up) are quantized alike, they are packed stacked into one matrix
  // ((heads + 2 kv_heads) * head_dim, hidden), ((2 intermediate, hidden)) and q/k/v (gate/up)
  // above stay empty: one product and one parallel region instead of three (two).
  Linear qkv, gate_up;
};

struct DecoderWeights {
  Tensor embed;             // (vocab, hidden), or undefined when quantized:
  QuantView embed_blocks;   //   the GGUF blocks, looked up row by row
  std::vector<LayerWeights> layers;
  Tensor final_norm;  // (hidden)
  Linear lm_head;     // (vocab, hidden); the embedding when tied
};

class Decoder {
 public:
  // Checks every name, shape and dtype; ValueError naming the tensor otherwise. A weight matrix
  // may come in `quantized` (borrowed GGUF blocks) instead of `tensors`; the embedding's blocks
  // must outlive the model, the others are repacked here. stack: pack q/k/v and gate/up
  // stacked when they are quantized alike (false keeps them apart: for tests and benchmarks).
  Decoder(const DecoderConfig& config, const std::map<std::string, Tensor>& tensors,
          const std::map<std::string, QuantView>& quantized = {}, bool stack = true);

  const DecoderConfig& config() const { return config_; }

  // One forward pass over the concatenated tokens of `segments` (ids: int32, one per row). Writes
  // each segment's keys and values into `cache` at its positions and attends over the cache.
  // Logits (float32 (logit_rows.size(), vocab)) are computed for the listed rows only.
  // `lora`: an adapter (built for this config) applied on top of the base weights, or null.
  void forward(const int32_t* ids, const std::vector<Segment>& segments, KvCache& cache,
               const std::vector<int64_t>& logit_rows, float* logits, HiddenStateSink* sink,
               int threads, const LoraAdapter* lora = nullptr) const;

 private:
  // forward's work, once its arguments are checked (rows: the segments' tokens).
  void run_pass(const int32_t* ids, const std::vector<Segment>& segments, int64_t rows,
                KvCache& cache, const std::vector<int64_t>& logit_rows, float* logits,
                HiddenStateSink* sink, int threads, const LoraAdapter* lora) const;

  DecoderConfig config_;
  DecoderWeights weights_;
  std::vector<float> inv_freq_;  // (head_dim / 2)
};

// The names and shapes a checkpoint must provide for `config`, in load order.
std::vector<std::pair<std::string, Shape>> decoder_tensor_names(const DecoderConfig& config);

}  // namespace infermode
