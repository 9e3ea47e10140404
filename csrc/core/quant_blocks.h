#pragma once
// GGUF's block-quantized weight formats, byte for byte (ggml's block_q8_0, block_q4_0,
// block_q4_1): 32 consecutive values of a row share one float16 scale (and, for Q4_1, an offset).
//   Q8_0: value = d * q,          q int8
//   Q4_0: value = d * (q - 8),    q in [0, 16), two per byte: qs[i] holds value i (low nibble)
//                                 and value i + 16 (high nibble)
//   Q4_1: value = d * q + m,      q in [0, 16), nibbles as Q4_0
#include <cstddef>
#include <cstdint>
#include <string>

namespace infermode {

constexpr int64_t kQuantBlock = 32;  // values per block, in every format here

enum class QuantFormat : uint8_t { q8_0, q4_0, q4_1 };

struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQuantBlock];
};
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQuantBlock / 2];
};
struct BlockQ4_1 {
  uint16_t d, m;
  uint8_t qs[kQuantBlock / 2];
};
static_assert(sizeof(BlockQ8_0) == 34, "block_q8_0 is 34 bytes in GGUF");
static_assert(sizeof(BlockQ4_0) == 18, "block_q4_0 is 18 bytes in GGUF");
static_assert(sizeof(BlockQ4_1) == 20, "block_q4_1 is 20 bytes in GGUF");

constexpr size_t quant_block_bytes(QuantFormat f) {
  switch (f) {
    case QuantFormat::q8_0: return sizeof(BlockQ8_0);
    case QuantFormat::q4_0: return sizeof(BlockQ4_0);
    case QuantFormat::q4_1: return sizeof(BlockQ4_1);
  }
  return 0;
}

// GGUF's lower-case spelling: "q8_0", "q4_0", "q4_1".
constexpr const char* quant_format_name(QuantFormat f) {
  switch (f) {
    case QuantFormat::q8_0: return "q8_0";
    case QuantFormat::q4_0: return "q4_0";
    case QuantFormat::q4_1: return "q4_1";
  }
  return "unknown";
}

// A borrowed matrix of GGUF blocks: rows x cols values, row-major, cols / 32 blocks per row (the
// layout of a GGUF file's tensor data).
struct QuantView {
  QuantFormat format = QuantFormat::q8_0;
  const void* blocks = nullptr;
  int64_t rows = 0, cols = 0;

  size_t row_bytes() const { return size_t(cols / kQuantBlock) * quant_block_bytes(format); }
  size_t nbytes() const { return size_t(rows) * row_bytes(); }
};

// ValueError listing the supported names for anything else.
QuantFormat parse_quant_format(const std::string& name);

}  // namespace infermode
