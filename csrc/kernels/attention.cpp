#include "kernels/attention.h"

#include "core/scratch.h"
#include "core/thread_pool.h"
#include "kernels/dispatch.h"
#include "kernels/validate.h"

namespace infermode {

void attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t first_pos, float scale,
               Tensor& out, int threads) {
  for (auto [name, t] : {std::pair{"q", &q}, {"k", &k}, {"v", &v}, {"out", &out}})
    check_dtype("attention", name, *t, DType::f32);
  IM_CHECK(q.ndim() == 3 && k.ndim() == 3,
           "attention: q must be [tokens, heads, head_dim] and k [kv_heads, capacity, head_dim], "
           "got {} and {}", q.shape().str(), k.shape().str());
  AttentionShape s{};
  s.tokens = q.size(0);
  s.heads = q.size(1);
  s.head_dim = q.size(2);
  s.kv_heads = k.size(0);
  s.capacity = k.size(1);
  s.first_pos = first_pos;
  s.scale = scale;
  IM_CHECK(k.size(2) == s.head_dim && v.shape() == k.shape(),
           "attention: k {} and v {} must both be [kv_heads, capacity, {}]", k.shape().str(),
           v.shape().str(), s.head_dim);
  IM_CHECK(s.kv_heads > 0 && s.heads % s.kv_heads == 0,
           "attention: {} query heads cannot share {} kv heads evenly", s.heads, s.kv_heads);
  IM_CHECK(q.stride(2) == 1 && q.stride(1) == s.head_dim && q.stride(0) >= s.heads * s.head_dim,
           "attention: q rows must be contiguous [heads, head_dim] blocks, got strides {}",
           q.strides().str());
  s.q_stride = q.stride(0);
  check_contiguous("attention", "k", k);
  check_contiguous("attention", "v", v);
  check_contiguous("attention", "out", out);
  IM_CHECK(out.shape() == Shape({s.tokens, s.heads, s.head_dim}),
           "attention: out has shape {}, expected [{}, {}, {}]", out.shape().str(), s.tokens,
           s.heads, s.head_dim);
  IM_CHECK(first_pos >= 0 && first_pos + s.tokens <= s.capacity,
           "attention: positions [{}, {}) do not fit a cache of capacity {}", first_pos,
           first_pos + s.tokens, s.capacity);
  if (s.tokens == 0) return;

  const int64_t pairs = s.tokens * s.kv_heads;
  int nth = resolve_threads(threads);
  if (nth > pairs) nth = int(pairs);
  const int64_t context = first_pos + s.tokens;
  Scratch scores(size_t(nth) * size_t(s.heads / s.kv_heads) * size_t(context) * sizeof(float));
  auto kernel = kernels().attention.fn;
  const float* qp = static_cast<const float*>(q.raw());
  const float* kp = static_cast<const float*>(k.raw());
  const float* vp = static_cast<const float*>(v.raw());
  float* op = static_cast<float*>(out.raw());
  float* sp = scores.as<float>();
  parallel_run(nth, [&](int ith, int team) { kernel(qp, kp, vp, op, s, sp, ith, team); });
}

}  // namespace infermode
