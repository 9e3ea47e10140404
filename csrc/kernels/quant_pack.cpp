#include "kernels/quant_pack.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "core/error.h"
#include "core/f16.h"

namespace infermode {
namespace {

constexpr size_t round_up(size_t n, size_t align) { return (n + align - 1) / align * align; }

// Code of value i of a Q4 block: low nibbles hold values 0..15, high nibbles 16..31.
inline int q4_code(const uint8_t* qs, int i) {
  return i < 16 ? (qs[i] & 0x0f) : (qs[i - 16] >> 4);
}

// Writes one row's GGUF blocks into the group layout (row r of its group).
template <typename Block>
void pack_row(PackedMatrix& p, const Block* src, int64_t row) {
  const int64_t g = row / kPackRows, r = row % kPackRows, blocks = p.blocks();
  uint8_t* base = p.mutable_group(g);
  uint16_t* scales = reinterpret_cast<uint16_t*>(base);
  uint8_t* quants = base + (p.quants(g) - reinterpret_cast<const uint8_t*>(p.scales(g)));
  const int vectors = p.vectors();
  for (int64_t b = 0; b < blocks; ++b) {
    const Block& blk = src[b];
    scales[b * kPackRows + r] = blk.d;
    uint8_t* v = quants + b * vectors * 64;
    if constexpr (std::is_same_v<Block, BlockQ8_0>) {
      for (int j = 0; j < 8; ++j)
        for (int i = 0; i < 4; ++i) v[j * 64 + r * 4 + i] = uint8_t(blk.qs[4 * j + i]);
    } else {
      if constexpr (std::is_same_v<Block, BlockQ4_1>) scales[(blocks + b) * kPackRows + r] = blk.m;
      for (int j = 0; j < 4; ++j)
        for (int i = 0; i < 4; ++i)
          v[j * 64 + r * 4 + i] =
              uint8_t(q4_code(blk.qs, 8 * j + i) | q4_code(blk.qs, 8 * j + 4 + i) << 4);
    }
  }
}

// Packs `rows` rows of GGUF blocks as rows [first, first + rows) of p.
template <typename Block>
void pack_rows(PackedMatrix& p, const void* blocks, int64_t first, int64_t rows) {
  const Block* src = static_cast<const Block*>(blocks);
  for (int64_t row = 0; row < rows; ++row) pack_row(p, src + row * p.blocks(), first + row);
}

void pack_into(PackedMatrix& p, const QuantView& v, int64_t first) {
  switch (v.format) {
    case QuantFormat::q8_0: return pack_rows<BlockQ8_0>(p, v.blocks, first, v.rows);
    case QuantFormat::q4_0: return pack_rows<BlockQ4_0>(p, v.blocks, first, v.rows);
    case QuantFormat::q4_1: return pack_rows<BlockQ4_1>(p, v.blocks, first, v.rows);
  }
}

void quantize_q8_0(const float* x, BlockQ8_0& out) {
  float amax = 0.0f;
  for (int i = 0; i < kQuantBlock; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
  out.d = float_to_f16(d);
  for (int i = 0; i < kQuantBlock; ++i) out.qs[i] = int8_t(std::round(x[i] * id));
}

void quantize_q4_0(const float* x, BlockQ4_0& out) {
  float amax = 0.0f, max = 0.0f;  // max: the value of largest magnitude, with its sign
  for (int i = 0; i < kQuantBlock; ++i) {
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  }
  const float d = max / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
  out.d = float_to_f16(d);
  for (int i = 0; i < 16; ++i) {
    const int lo = std::min(15, int(int8_t(x[i] * id + 8.5f)));
    const int hi = std::min(15, int(int8_t(x[i + 16] * id + 8.5f)));
    out.qs[i] = uint8_t(lo | hi << 4);
  }
}

void quantize_q4_1(const float* x, BlockQ4_1& out) {
  float lo = x[0], hi = x[0];
  for (int i = 1; i < kQuantBlock; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  const float d = (hi - lo) / 15.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
  out.d = float_to_f16(d);
  out.m = float_to_f16(lo);
  for (int i = 0; i < 16; ++i) {
    const int a = std::min(15, int(int8_t((x[i] - lo) * id + 0.5f)));
    const int b = std::min(15, int(int8_t((x[i + 16] - lo) * id + 0.5f)));
    out.qs[i] = uint8_t(a | b << 4);
  }
}

void check_cols(const char* what, int64_t rows, int64_t cols) {
  IM_CHECK(rows > 0 && cols > 0 && cols % kQuantBlock == 0,
           "{}: a quantized matrix needs rows > 0 and a column count that is a positive "
           "multiple of {}; got {} x {}", what, kQuantBlock, rows, cols);
}

}  // namespace

PackedMatrix::PackedMatrix(QuantFormat format, int64_t rows, int64_t cols)
    : format_(format), rows_(rows), cols_(cols) {
  check_cols("pack", rows, cols);
  const size_t scale_bytes = size_t(blocks()) * kPackRows * sizeof(uint16_t);
  quants_offset_ = round_up(scale_bytes * (format == QuantFormat::q4_1 ? 2 : 1), 64);
  group_bytes_ = quants_offset_ + size_t(blocks()) * vectors() * 64;
  storage_ = Tensor::zeros({int64_t(group_bytes_) * groups()}, DType::u8);
}

void PackedMatrix::code(int64_t row, int64_t col, int* q, float* d, float* offset) const {
  const int64_t g = row / kPackRows, r = row % kPackRows, b = col / kQuantBlock;
  const int i = int(col % kQuantBlock);
  const uint8_t* v = quants(g) + b * vectors() * 64;
  *d = f16_to_float(scales(g)[b * kPackRows + r]);
  if (format_ == QuantFormat::q8_0) {
    *q = int8_t(v[(i / 4) * 64 + r * 4 + i % 4]);
    *offset = 0.0f;
    return;
  }
  const uint8_t byte = v[(i / 8) * 64 + r * 4 + i % 4];
  *q = (i % 8) < 4 ? (byte & 0x0f) : (byte >> 4);
  *offset = format_ == QuantFormat::q4_0 ? -8.0f * *d : f16_to_float(offsets(g)[b * kPackRows + r]);
}

PackedMatrix pack_blocks(QuantFormat format, const void* blocks, int64_t rows, int64_t cols) {
  return pack_blocks({QuantView{format, blocks, rows, cols}});
}

PackedMatrix pack_blocks(const std::vector<QuantView>& parts) {
  IM_CHECK(!parts.empty(), "pack: no matrices given");
  int64_t rows = 0;
  for (const QuantView& v : parts) {
    IM_CHECK(v.format == parts[0].format && v.cols == parts[0].cols,
             "pack: stacked matrices must share format and columns ({} x {} {} vs {} x {} {})",
             v.rows, v.cols, quant_format_name(v.format), parts[0].rows, parts[0].cols,
             quant_format_name(parts[0].format));
    check_cols("pack", v.rows, v.cols);
    rows += v.rows;
  }
  PackedMatrix p(parts[0].format, rows, parts[0].cols);
  int64_t first = 0;
  for (const QuantView& v : parts) {
    pack_into(p, v, first);
    first += v.rows;
  }
  return p;
}

void quantize_blocks(QuantFormat format, const float* src, void* dst, int64_t rows,
                     int64_t cols) {
  check_cols("quantize", rows, cols);
  const int64_t n = rows * cols / kQuantBlock;
  for (int64_t b = 0; b < n; ++b) {
    const float* x = src + b * kQuantBlock;
    switch (format) {
      case QuantFormat::q8_0: quantize_q8_0(x, static_cast<BlockQ8_0*>(dst)[b]); break;
      case QuantFormat::q4_0: quantize_q4_0(x, static_cast<BlockQ4_0*>(dst)[b]); break;
      case QuantFormat::q4_1: quantize_q4_1(x, static_cast<BlockQ4_1*>(dst)[b]); break;
    }
  }
}

void dequantize_blocks(QuantFormat format, const void* src, float* dst, int64_t rows,
                       int64_t cols) {
  check_cols("dequantize", rows, cols);
  const int64_t n = rows * cols / kQuantBlock;
  for (int64_t b = 0; b < n; ++b) {
    float* y = dst + b * kQuantBlock;
    if (format == QuantFormat::q8_0) {
      const BlockQ8_0& blk = static_cast<const BlockQ8_0*>(src)[b];
      const float d = f16_to_float(blk.d);
      for (int i = 0; i < kQuantBlock; ++i) y[i] = d * float(blk.qs[i]);
    } else if (format == QuantFormat::q4_0) {
      const BlockQ4_0& blk = static_cast<const BlockQ4_0*>(src)[b];
      const float d = f16_to_float(blk.d);
      for (int i = 0; i < kQuantBlock; ++i) y[i] = d * float(q4_code(blk.qs, i) - 8);
    } else {
      const BlockQ4_1& blk = static_cast<const BlockQ4_1*>(src)[b];
      const float d = f16_to_float(blk.d), m = f16_to_float(blk.m);
      for (int i = 0; i < kQuantBlock; ++i) y[i] = d * float(q4_code(blk.qs, i)) + m;
    }
  }
}

}  // namespace infermode
