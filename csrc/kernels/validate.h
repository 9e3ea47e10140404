#pragma once
// Argument checks shared by the ops; every message names the op and the argument.
#include "core/error.h"
#include "core/tensor.h"

namespace infermode {

inline void check_dtype(const char* op, const char* name, const Tensor& t, DType expected) {
  IM_CHECK(t.defined(), "{}: {} is missing", op, name);
  IM_CHECK_TYPE(t.dtype() == expected, "{}: {} has dtype {}, expected {}", op, name,
                dtype_name(t.dtype()), dtype_name(expected));
}

inline void check_contiguous(const char* op, const char* name, const Tensor& t) {
  IM_CHECK(t.is_contiguous(),
           "{}: {} with shape {} and strides {} (in elements) is not contiguous; pass a "
           "contiguous copy (numpy.ascontiguousarray / Tensor.contiguous())",
           op, name, t.shape().str(), t.strides().str());
}

// True when the byte ranges spanned by a and b overlap (a conservative test on extents).
bool overlaps(const Tensor& a, const Tensor& b);

}  // namespace infermode
