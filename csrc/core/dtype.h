#pragma once
// Element types the core stores. Quantized block formats are not dtypes: they live in
// quant_blocks.h and are addressed per block, not per element.
#include <cstddef>
#include <cstdint>

namespace infermode {

enum class DType : uint8_t { f32, f16, bf16, f64, i8, u8, i32, i64 };

constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f16: return 2;
    case DType::bf16: return 2;
    case DType::f64: return 8;
    case DType::i8: return 1;
    case DType::u8: return 1;
    case DType::i32: return 4;
    case DType::i64: return 8;
  }
  return 0;
}

// NumPy's spelling ("float32", "bfloat16", ...), so messages read the same on both sides.
constexpr const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "float32";
    case DType::f16: return "float16";
    case DType::bf16: return "bfloat16";
    case DType::f64: return "float64";
    case DType::i8: return "int8";
    case DType::u8: return "uint8";
    case DType::i32: return "int32";
    case DType::i64: return "int64";
  }
  return "unknown";
}

}  // namespace infermode
