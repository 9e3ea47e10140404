#pragma once
// Quantized weight matrices repacked for integer dot products. A GGUF file stores a Linear
// weight (rows = output features, cols = input features) row by row in 32-value blocks; the
// kernels want one 64-byte load to feed sixteen output rows at once. So at load the rows are
// interleaved in groups of 16:
//
//   group g (rows 16g .. 16g+15), 64-byte aligned, `group_bytes()` apart:
//     scales   blocks x 16 float16    d of (block b, row r) at [b * 16 + r]
//     offsets  blocks x 16 float16    Q4_1's m, same order (absent for Q8_0 and Q4_0)
//     quants   blocks x vectors x 64 bytes, from a 64-byte boundary; in vector j of block b,
//              bytes 4r .. 4r+3 belong to row r:
//                Q8_0 (8 vectors): q[r][32b + 4j + i], i = 0..3 (int8)
//                Q4_*  (4 vectors): q[r][32b + 8j + i] | q[r][32b + 8j + 4 + i] << 4
//
// Each 32-bit lane then holds four consecutive values of one row: a VNNI dot product (or AVX2's
// maddubs + madd) against four broadcast activation bytes sums them into that row's lane. AVX2
// reads a 64-byte vector as two halves of eight rows. Rows past the end of the last group are
// zero. The byte count equals the GGUF file's (plus alignment): nothing is widened.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/quant_blocks.h"
#include "core/tensor.h"

namespace infermode {

constexpr int64_t kPackRows = 16;

class PackedMatrix {
 public:
  PackedMatrix() = default;
  // Zero-filled storage for a rows x cols matrix (cols a multiple of 32).
  PackedMatrix(QuantFormat format, int64_t rows, int64_t cols);

  QuantFormat format() const { return format_; }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int64_t blocks() const { return cols_ / kQuantBlock; }
  int64_t groups() const { return (rows_ + kPackRows - 1) / kPackRows; }
  bool defined() const { return storage_.defined(); }
  size_t nbytes() const { return storage_.nbytes(); }

  // 64-byte vectors per block: 8 for Q8_0, 4 for Q4_0/Q4_1.
  int vectors() const { return format_ == QuantFormat::q8_0 ? 8 : 4; }
  size_t group_bytes() const { return group_bytes_; }
  const uint16_t* scales(int64_t g) const { return reinterpret_cast<const uint16_t*>(group(g)); }
  const uint16_t* offsets(int64_t g) const { return scales(g) + blocks() * kPackRows; }
  const uint8_t* quants(int64_t g) const { return group(g) + quants_offset_; }
  uint8_t* mutable_group(int64_t g) { return static_cast<uint8_t*>(storage_.raw()) + g * group_bytes_; }

  // Value (row, col) as the kernels see it: the integer code and its block's scale and offset
  // (offset = -8 d for Q4_0, 0 for Q8_0), so value = d * q + offset.
  void code(int64_t row, int64_t col, int* q, float* d, float* offset) const;

 private:
  const uint8_t* group(int64_t g) const {
    return static_cast<const uint8_t*>(storage_.raw()) + g * group_bytes_;
  }

  QuantFormat format_ = QuantFormat::q8_0;
  int64_t rows_ = 0, cols_ = 0;
  size_t group_bytes_ = 0, quants_offset_ = 0;
  Tensor storage_;  // uint8, heap
};

// Repacks rows x cols values stored as GGUF blocks (row-major, cols / 32 blocks per row).
PackedMatrix pack_blocks(QuantFormat format, const void* blocks, int64_t rows, int64_t cols);

// The rows of several matrices of one format and column count, stacked in order into one packed
// matrix (q, k and v projections packed as one qkv matrix: one product instead of three).
PackedMatrix pack_blocks(const std::vector<QuantView>& parts);

// Quantizes float32 rows to GGUF blocks as llama.cpp's reference quantizer does (nearest code;
// Q4_0 scales by the value of largest magnitude / -8, Q4_1 spans [min, max]).
void quantize_blocks(QuantFormat format, const float* src, void* dst, int64_t rows, int64_t cols);
// GGUF blocks back to float32.
void dequantize_blocks(QuantFormat format, const void* src, float* dst, int64_t rows,
                       int64_t cols);

}  // namespace infermode
