#include "core/quant_blocks.h"

#include "core/error.h"

namespace infermode {

QuantFormat parse_quant_format(const std::string& name) {
  for (QuantFormat f : {QuantFormat::q8_0, QuantFormat::q4_0, QuantFormat::q4_1})
    if (name == quant_format_name(f)) return f;
  throw ValueError(
      fmt::format("unknown quantized format '{}': expected one of q8_0, q4_0, q4_1", name));
}

}  // namespace infermode
