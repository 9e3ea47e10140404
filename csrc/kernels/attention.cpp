#include "kernels/attention.h"

#include "core/scratch.h"
#include "core/thread_pool.h"
#include "kernels/dispatch.h"
#include "kernels/validate.h"

namespace infermode {
namespace {

// Checks the tensors of either kind of attention and fills in the shape.
AttentionShape check_shapes(const char* op, const Tensor& q, const Tensor& k, const Tensor& v,
                            const Tensor& out, float scale) {
  for (auto [name, t] : {std::pair{"q", &q}, {"k", &k}, {"v", &v}, {"out", &out}})
    check_dtype(op, name, *t, DType::f32);
  IM_CHECK(q.ndim() == 3 && k.ndim() == 3,
           "{}: q must be [tokens, heads, head_dim] and k [kv_heads, capacity, head_dim], "
           "got {} and {}", op, q.shape().str(), k.shape().str());
  AttentionShape s{};
  s.tokens = q.size(0);
  s.heads = q.size(1);
  s.head_dim = q.size(2);
  s.kv_heads = k.size(0);
  s.capacity = k.size(1);
  s.scale = scale;
  IM_CHECK(k.size(2) == s.head_dim && v.shape() == k.shape(),
           "{}: k {} and v {} must both be [kv_heads, capacity, {}]", op, k.shape().str(),
           v.shape().str(), s.head_dim);
  IM_CHECK(s.kv_heads > 0 && s.heads % s.kv_heads == 0,
           "{}: {} query heads cannot share {} kv heads evenly", op, s.heads, s.kv_heads);
  IM_CHECK(q.stride(2) == 1 && q.stride(1) == s.head_dim && q.stride(0) >= s.heads * s.head_dim,
           "{}: q rows must be contiguous [heads, head_dim] blocks, got strides {}", op,
           q.strides().str());
  s.q_stride = q.stride(0);
  check_contiguous(op, "k", k);
  check_contiguous(op, "v", v);
  check_contiguous(op, "out", out);
  IM_CHECK(out.shape() == Shape({s.tokens, s.heads, s.head_dim}),
           "{}: out has shape {}, expected [{}, {}, {}]", op, out.shape().str(), s.tokens,
           s.heads, s.head_dim);
  return s;
}

void run(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionShape& s, Tensor& out,
         int threads) {
  if (s.tokens == 0) return;
  int nth = resolve_threads(threads);
  if (nth > s.tokens * s.heads) nth = int(s.tokens * s.heads);
  Scratch scores(size_t(nth) * size_t(s.scratch_floats()) * sizeof(float));
  auto kernel = kernels().attention.fn;
  const float* qp = static_cast<const float*>(q.raw());
  const float* kp = static_cast<const float*>(k.raw());
  const float* vp = static_cast<const float*>(v.raw());
  float* op = static_cast<float*>(out.raw());
  float* sp = scores.as<float>();
  parallel_run(nth, [&](int ith, int team) { kernel(qp, kp, vp, op, s, sp, ith, team); });
}

}  // namespace

void attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t first_pos, float scale,
               Tensor& out, int threads) {
  AttentionShape s = check_shapes("attention", q, k, v, out, scale);
  s.first_pos = first_pos;
  IM_CHECK(first_pos >= 0 && first_pos + s.tokens <= s.capacity,
           "attention: positions [{}, {}) do not fit a cache of capacity {}", first_pos,
           first_pos + s.tokens, s.capacity);
  run(q, k, v, s, out, threads);
}

void attention_bidirectional(const Tensor& q, const Tensor& k, const Tensor& v, int64_t keys,
                             float scale, const Tensor& key_bias, Tensor& out, int threads) {
  AttentionShape s = check_shapes("attention_bidirectional", q, k, v, out, scale);
  s.causal = false;
  s.keys = keys;
  IM_CHECK(keys > 0 && keys <= s.capacity,
           "attention_bidirectional: {} keys do not fit a block of capacity {}", keys,
           s.capacity);
  if (key_bias.defined()) {
    check_dtype("attention_bidirectional", "key_bias", key_bias, DType::f32);
    check_contiguous("attention_bidirectional", "key_bias", key_bias);
    IM_CHECK(key_bias.ndim() == 1 && key_bias.size(0) == keys,
             "attention_bidirectional: key_bias has shape {}, expected [{}]",
             key_bias.shape().str(), keys);
    s.key_bias = static_cast<const float*>(key_bias.raw());
  }
  run(q, k, v, s, out, threads);
}

}  // namespace infermode
