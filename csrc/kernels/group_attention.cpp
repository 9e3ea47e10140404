#include "kernels/group_attention.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <vector>

#include "core/scratch.h"
#include "core/thread_pool.h"
#include "kernels/dispatch.h"
#include "kernels/validate.h"

namespace infermode {
namespace {

constexpr const char* kOp = "group_attention";

// The attention kernel's shape for the n members of one group at one time step, gathered.
AttentionShape members_shape(int64_t n, int64_t heads, int64_t dim, float scale) {
  AttentionShape s{};
  s.tokens = n;
  s.first_pos = 0;
  s.heads = heads;
  s.kv_heads = heads;
  s.head_dim = dim;
  s.capacity = n;
  s.q_stride = heads * dim;
  s.scale = scale;
  s.causal = false;
  s.keys = n;
  return s;
}

// The members of each group, in sequence order; groups ordered by their first member.
std::vector<std::vector<int64_t>> members_of(const Tensor& group) {
  const int64_t* ids = group.data<int64_t>();
  std::map<int64_t, size_t> index;
  std::vector<std::vector<int64_t>> groups;
  for (int64_t s = 0; s < group.size(0); ++s) {
    auto [it, fresh] = index.emplace(ids[s], groups.size());
    if (fresh) groups.emplace_back();
    groups[it->second].push_back(s);
  }
  return groups;
}

}  // namespace

void group_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& group,
                     float scale, const Tensor& key_bias, Tensor& out, int threads) {
  for (auto [name, t] : {std::pair{"q", &q}, {"k", &k}, {"v", &v}, {"out", &out}}) {
    check_dtype(kOp, name, *t, DType::f32);
    check_contiguous(kOp, name, *t);
  }
  IM_CHECK(q.ndim() == 4, "{}: q must be [sequences, tokens, heads, head_dim], got {}", kOp,
           q.shape().str());
  for (auto [name, t] : {std::pair{"k", &k}, {"v", &v}, {"out", &out}})
    IM_CHECK(t->shape() == q.shape(), "{}: {} has shape {}, expected q's {}", kOp, name,
             t->shape().str(), q.shape().str());
  const int64_t sequences = q.size(0), tokens = q.size(1), heads = q.size(2), dim = q.size(3);
  check_dtype(kOp, "group", group, DType::i64);
  check_contiguous(kOp, "group", group);
  IM_CHECK(group.ndim() == 1 && group.size(0) == sequences,
           "{}: group has shape {}, expected [{}]", kOp, group.shape().str(), sequences);
  const float* bias = nullptr;
  if (key_bias.defined()) {
    check_dtype(kOp, "key_bias", key_bias, DType::f32);
    check_contiguous(kOp, "key_bias", key_bias);
    IM_CHECK(key_bias.shape() == Shape({sequences, tokens}),
             "{}: key_bias has shape {}, expected [{}, {}]", kOp, key_bias.shape().str(),
             sequences, tokens);
    bias = key_bias.data<float>();
  }
  if (sequences == 0 || tokens == 0) return;

  const auto groups = members_of(group);
  size_t largest = 0;
  for (const auto& g : groups) largest = std::max(largest, g.size());
  const int64_t row = heads * dim;  // one (sequence, token)
  const int64_t items = tokens * int64_t(groups.size());
  int nth = resolve_threads(threads);
  if (nth > items) nth = int(items);
  // Per thread: one group's q, k, v and out gathered, its key biases and the kernel's scratch.
  const size_t per_thread = 4 * largest * size_t(row) + largest +
      size_t(members_shape(int64_t(largest), heads, dim, scale).scratch_floats());
  Scratch scratch(size_t(nth) * per_thread * sizeof(float));
  auto kernel = kernels().attention.fn;
  const float* qp = q.data<float>();
  const float* kp = k.data<float>();
  const float* vp = v.data<float>();
  float* op = out.data<float>();
  parallel_run(nth, [&](int ith, int team) {
    float* gq = scratch.as<float>() + size_t(ith) * per_thread;
    float* gk = gq + largest * row;
    float* gv = gk + largest * row;
    float* go = gv + largest * row;
    float* gb = go + largest * row;
    float* scores = gb + largest;
    const Range mine = split_range(items, ith, team);
    for (int64_t item = mine.begin; item < mine.end; ++item) {
      const int64_t t = item / int64_t(groups.size());
      const std::vector<int64_t>& members = groups[size_t(item % int64_t(groups.size()))];
      const int64_t n = int64_t(members.size());
      // q and out as [n, heads, dim]; k and v as the kernel's [heads, n, dim].
      for (int64_t j = 0; j < n; ++j) {
        const int64_t at = (members[j] * tokens + t) * row;
        std::memcpy(gq + j * row, qp + at, size_t(row) * sizeof(float));
        for (int64_t h = 0; h < heads; ++h) {
          std::memcpy(gk + (h * n + j) * dim, kp + at + h * dim, size_t(dim) * sizeof(float));
          std::memcpy(gv + (h * n + j) * dim, vp + at + h * dim, size_t(dim) * sizeof(float));
        }
        if (bias) gb[j] = bias[members[j] * tokens + t];
      }
      AttentionShape s = members_shape(n, heads, dim, scale);
      s.key_bias = bias ? gb : nullptr;
      kernel(gq, gk, gv, go, s, scores, 0, 1);
      for (int64_t j = 0; j < n; ++j)
        std::memcpy(op + (members[j] * tokens + t) * row, go + j * row,
                    size_t(row) * sizeof(float));
    }
  });
}

}  // namespace infermode
