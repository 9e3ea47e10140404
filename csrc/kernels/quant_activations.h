#pragma once
// Activations quantized once per matmul for the integer kernels, the way llama.cpp quantizes
// them for its Q8_0/Q4_0 (block_q8_0) and Q4_1 (block_q8_1) dot products, so both engines round
// alike: per 32-value block, d = amax / 127 (kept as float16), q = round-half-even(x * 127 / amax),
// s = d * sum(q) (kept as float16). Every ISA path produces the same codes and scales.
#include <cstddef>
#include <cstdint>

#include "core/f16.h"

namespace infermode {

struct QuantizedRows {
  int8_t* q = nullptr;      // rows x cols codes
  float* d = nullptr;       // rows x blocks: the scale, rounded to float16 and widened
  float* s = nullptr;       // rows x blocks: d * sum(q), rounded to float16 and widened
  int32_t* sum = nullptr;   // rows x blocks: sum(q)
  int64_t cols = 0, blocks = 0;
};

inline size_t align64(size_t n) { return (n + 63) / 64 * 64; }

inline size_t quantized_rows_bytes(int64_t rows, int64_t cols) {
  const size_t blocks = size_t(rows) * size_t(cols / 32);
  return align64(size_t(rows) * size_t(cols)) + 3 * align64(blocks * 4);
}

// Records block k's terms from its unrounded scale d and the sum of its codes.
inline void set_block_scale(const QuantizedRows& x, int64_t k, float d, int32_t sum) {
  x.d[k] = f16_to_float(float_to_f16(d));
  x.s[k] = f16_to_float(float_to_f16(d * float(sum)));
  x.sum[k] = sum;
}

// Carves the buffers out of `work` (quantized_rows_bytes(rows, cols), 64-byte aligned).
inline QuantizedRows quantized_rows(void* work, int64_t rows, int64_t cols) {
  QuantizedRows x;
  uint8_t* p = static_cast<uint8_t*>(work);
  const size_t blocks = size_t(rows) * size_t(cols / 32);
  x.cols = cols;
  x.blocks = cols / 32;
  x.q = reinterpret_cast<int8_t*>(p);
  p += align64(size_t(rows) * size_t(cols));
  x.d = reinterpret_cast<float*>(p);
  p += align64(blocks * 4);
  x.s = reinterpret_cast<float*>(p);
  p += align64(blocks * 4);
  x.sum = reinterpret_cast<int32_t*>(p);
  return x;
}

}  // namespace infermode
