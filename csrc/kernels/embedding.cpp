#include "kernels/embedding.h"

#include <cstring>

#include "kernels/validate.h"

namespace infermode {

// A row copy per token: no arithmetic, so no ISA variants and no dispatch.
void embedding(const Tensor& table, const Tensor& ids, Tensor& out) {
  check_dtype("embedding", "table", table, DType::f32);
  check_dtype("embedding", "ids", ids, DType::i32);
  check_dtype("embedding", "out", out, DType::f32);
  check_contiguous("embedding", "table", table);
  check_contiguous("embedding", "ids", ids);
  check_contiguous("embedding", "out", out);
  IM_CHECK(table.ndim() == 2, "embedding: table must be [vocab, hidden], got {}",
           table.shape().str());
  const int64_t vocab = table.size(0), hidden = table.size(1), tokens = ids.numel();
  IM_CHECK(out.ndim() == 2 && out.size(0) == tokens && out.size(1) == hidden,
           "embedding: out has shape {}, expected [{}, {}]", out.shape().str(), tokens, hidden);
  const int32_t* id = static_cast<const int32_t*>(ids.raw());
  for (int64_t t = 0; t < tokens; ++t)
    IM_CHECK(0 <= id[t] && id[t] < vocab, "embedding: token id {} at {} is outside [0, {})",
             id[t], t, vocab);
  const float* src = static_cast<const float*>(table.raw());
  float* dst = static_cast<float*>(out.raw());
  for (int64_t t = 0; t < tokens; ++t)
    std::memcpy(dst + t * hidden, src + int64_t(id[t]) * hidden, size_t(hidden) * sizeof(float));
}

}  // namespace infermode
