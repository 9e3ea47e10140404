#include "kernels/embedding.h"

#include <cstring>

#include "core/bf16.h"
#include "kernels/quant_pack.h"
#include "kernels/validate.h"

namespace infermode {

namespace {

// ids must index rows of a (vocab, hidden) table; out must be (tokens, hidden) float32.
void check_lookup(int64_t vocab, int64_t hidden, const Tensor& ids, const Tensor& out) {
  check_dtype("embedding", "ids", ids, DType::i32);
  check_dtype("embedding", "out", out, DType::f32);
  check_contiguous("embedding", "ids", ids);
  check_contiguous("embedding", "out", out);
  const int64_t tokens = ids.numel();
  IM_CHECK(out.ndim() == 2 && out.size(0) == tokens && out.size(1) == hidden,
           "embedding: out has shape {}, expected [{}, {}]", out.shape().str(), tokens, hidden);
  const int32_t* id = static_cast<const int32_t*>(ids.raw());
  for (int64_t t = 0; t < tokens; ++t)
    IM_CHECK(0 <= id[t] && id[t] < vocab, "embedding: token id {} at {} is outside [0, {})",
             id[t], t, vocab);
}

}  // namespace

void embedding(const QuantView& table, const Tensor& ids, Tensor& out) {
  IM_CHECK(table.blocks != nullptr, "embedding: the quantized table is missing");
  check_lookup(table.rows, table.cols, ids, out);
  const int32_t* id = static_cast<const int32_t*>(ids.raw());
  const uint8_t* rows = static_cast<const uint8_t*>(table.blocks);
  float* dst = static_cast<float*>(out.raw());
  for (int64_t t = 0; t < ids.numel(); ++t)
    dequantize_blocks(table.format, rows + int64_t(id[t]) * table.row_bytes(),
                      dst + t * table.cols, 1, table.cols);
}

// A row copy per token: no arithmetic, so no ISA variants and no dispatch.
void embedding(const Tensor& table, const Tensor& ids, Tensor& out) {
  IM_CHECK_TYPE(table.dtype() == DType::f32 || table.dtype() == DType::bf16,
                "embedding: table has dtype {}, expected float32 or bfloat16",
                dtype_name(table.dtype()));
  check_contiguous("embedding", "table", table);
  IM_CHECK(table.ndim() == 2, "embedding: table must be [vocab, hidden], got {}",
           table.shape().str());
  const int64_t hidden = table.size(1), tokens = ids.numel();
  check_lookup(table.size(0), hidden, ids, out);
  const int32_t* id = static_cast<const int32_t*>(ids.raw());
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
