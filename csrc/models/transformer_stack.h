#pragma once
// A stack of pre-norm transformer blocks, configured block by block, for the forecasting models
// (Kronos, Toto, Chronos-2): each block runs
//   x += o(attention(rope(q(norm1(x))), rope(k(norm1(x))), v(norm1(x))))   along each sequence
//   x += o'(group_attention(q'(n(x)), k'(n(x)), v'(n(x))))   across sequences (n: group_norm)
//   x += mlp(norm2(x))
// over activations float32 [sequences, tokens, hidden], either attention optional. The upstream
// model keeps its own
// pre- and post-processing; only the blocks run here. Weights are float32, borrowed from the
// caller (the upstream module's parameters), under generic names (stack_tensor_names), and each
// matrix is packed once for this CPU's GEMM (kernels/matmul_packed.h): the stack holds a second
// copy of the weights, which halves the time of a forward over a few dozen tokens.
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/stop_check.h"
#include "core/tensor.h"
#include "models/kv_cache.h"
#include "models/linear.h"

namespace infermode {

enum class StackRope {
  none,
  half_split,        // Hugging Face's (kernels/rope.h)
  interleaved_xpos,  // adjacent pairs with Toto's xPos scale (kernels/rope_interleaved.h)
};
enum class StackMlp {
  swiglu,  // down(silu(gate(x)) * up(x))
  relu,    // down(relu(up(x)))
};

struct StackBlockConfig {
  // Attention along each sequence's tokens ("norm1", "attention.*"), with the settings below.
  bool time_attention = true;
  // Then attention across the sequences of a group at each token ("group_norm",
  // "group_attention.*"; kernels/group_attention.h): bidirectional, no RoPE, `scaled` and
  // `attention_bias` as the time attention.
  bool group_attention = false;
  bool causal = true;
  bool scaled = true;           // scores * 1/sqrt(head_dim); false: unscaled (Chronos-2)
  bool attention_bias = false;  // q, k, v and output projections carry biases
  StackRope rope = StackRope::half_split;
  double rope_theta = 10000.0;
  // xPos (interleaved_xpos): queries scaled by zeta_i^((p - c) / base) and keys by its inverse,
  // zeta_i = (2i + 0.4 head_dim) / (1.4 head_dim), with the centre c = floor(last position of
  // the pass / 2) taken per forward pass, as Toto computes it per call: cached keys keep the
  // scale of the pass that made them.
  double xpos_scale_base = 512.0;
  StackMlp mlp = StackMlp::swiglu;
  bool mlp_bias = false;
};

struct StackConfig {
  int64_t hidden = 0;
  int64_t heads = 0;
  int64_t head_dim = 0;
  int64_t intermediate = 0;
  float norm_eps = 1e-5f;  // RMSNorm: x * rsqrt(mean(x^2) + eps) * weight
  std::vector<StackBlockConfig> blocks;
  bool final_norm = false;  // a last RMSNorm ("final_norm.weight") after the blocks
};

class TransformerStack {
 public:
  // Checks every name, shape and dtype; ValueError naming the tensor otherwise.
  TransformerStack(const StackConfig& config, const std::map<std::string, Tensor>& tensors);

  const StackConfig& config() const { return config_; }

  // x: float32 [sequences, tokens, hidden], contiguous, transformed in place. Each sequence's
  // tokens sit at positions [first_pos, first_pos + tokens). cache: the keys and values of every
  // block for `sequences` sequences (make_cache); those of positions before first_pos are read,
  // these tokens' are written. Without a cache the tokens are whole sequences (first_pos 0).
  // key_bias: float32 [sequences, tokens], added to every score of that key (-inf hides a
  // padded token) in bidirectional time attention and in group attention; undefined for none.
  // group: int64 [sequences], the group of each sequence, for blocks with group attention.
  // should_stop is checked before each block; true throws Interrupted (x is then part-way, the
  // cache's positions from first_pos on are garbage, everything before is kept).
  void forward(Tensor& x, int64_t first_pos, KvCache* cache, int threads,
               const Tensor& key_bias = Tensor(), const Tensor& group = Tensor(),
               const StopCheck& should_stop = {}) const;

  // A cache for `sequences` sequences of up to `capacity` positions; stacks whose time attention
  // is causal only (group attention needs no cache: it sees one position at a time). Heap
  // memory, whatever mode the caller is in: the caller keeps it across calls.
  KvCache make_cache(int64_t sequences, int64_t capacity) const;

 private:
  // forward's work, once its arguments are checked (alone: every group has one member).
  void run_pass(Tensor& x, int64_t first_pos, KvCache* cache, int threads,
                const Tensor& key_bias, const Tensor& group, const StopCheck& should_stop,
                bool alone) const;

  struct Dense {
    Linear weight;  // (out, in)
    Tensor bias;    // (out) or undefined
  };
  struct Attention {
    Tensor norm;
    Dense q, k, v, o;
  };
  struct Block {
    Attention time, group;  // each used when its block config asks for it
    // Group attention when every group has one member: softmax over a single key is 1, so the
    // attention is o(v(x)), and o after v is one matrix (o.weight @ v.weight, made at load).
    Dense group_ov;
    Tensor norm2;
    Dense gate, up, down;
    std::vector<float> inv_freq;  // (head_dim / 2), for RoPE
  };

  static Dense o_after_v(const Dense& v, const Dense& o);
  // x += group attention of block w (h: its normed input), for sequences that are each their own
  // group.
  void add_singleton_group_attention(const Block& w, const Tensor& h, const Tensor& key_bias,
                                     Tensor& proj, Tensor& x2, int threads) const;

  StackConfig config_;
  std::vector<Block> blocks_;
  Tensor final_norm_;
};

// The names and shapes the tensors of `config` must have, in block order.
std::vector<std::pair<std::string, Shape>> stack_tensor_names(const StackConfig& config);

}  // namespace infermode
