#include "kernels/embedding.h"

#include <cstring>

#include "core/bf16.h"
#include "kernels/validate.h"

namespace infermode {

// A row copy per token: no arithmetic, so no ISA variants and no dispatch.
void embedding(const Tensor& table, const Tensor& ids, Tensor& out) {
  IM_CHECK_TYPE(table.dtype() == DType::f32 || table.dtype() == DType::bf16,
                "embedding: table has dtype {}, expected float32 or bfloat16",
                dtype_name(table.dtype()));
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
  float* dst = static_cast<float*>(out.raw());
  if (table.dtype() == DType::bf16) {
    const uint16_t* src = static_cast<const uint16_t*>(table.raw());
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t d = 0; d < hidden; ++d)
        dst[t * hidden + d] = bf16_to_float(src[int64_t(id[t]) * hidden + d]);
    return;
  }
  const float* src = static_cast<const float*>(table.raw());
  for (int64_t t = 0; t < tokens; ++t)
    std::memcpy(dst + t * hidden, src + int64_t(id[t]) * hidden, size_t(hidden) * sizeof(float));
}

}  // namespace infermode
