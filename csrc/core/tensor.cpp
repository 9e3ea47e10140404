#include "core/tensor.h"

#include <cstring>
#include <limits>

#include "core/arena.h"
#include "core/error.h"
#include "core/inference_mode.h"
#include "core/memory_stats.h"

namespace infermode {
namespace {

Shape contiguous_strides(const Shape& shape) {
  Shape s;
  s.ndim = shape.ndim;
  int64_t step = 1;
  for (int i = shape.ndim - 1; i >= 0; --i) {
    s[i] = step;
    step *= shape[i];
  }
  return s;
}

// The most elements a tensor may have: its bytes (at 8 per element) must fit int64 and size_t.
constexpr int64_t kMaxElements = std::numeric_limits<int64_t>::max() / 8;

void check_shape(const Shape& shape) {
  bool empty = false;
  for (int i = 0; i < shape.ndim; ++i) {
    IM_CHECK(shape[i] >= 0, "tensor shape {} has a negative size in dim {}", shape.str(), i);
    empty = empty || shape[i] == 0;
  }
  if (empty) return;
  // Checked one factor at a time: the product itself could overflow, and a wrapped size would
  // allocate a small buffer that the tensor's users then overrun.
  int64_t n = 1;
  for (int i = 0; i < shape.ndim; ++i) {
    IM_CHECK(n <= kMaxElements / shape[i], "tensor shape {} has more elements than memory can "
             "address", shape.str());
    n *= shape[i];
  }
}

}  // namespace

Shape::Shape(std::initializer_list<int64_t> dims) : Shape(dims.begin(), int(dims.size())) {}

Shape::Shape(const int64_t* dims, int n) {
  IM_CHECK(n >= 0 && n <= kMaxDims, "a tensor has at most {} dims, got {}", kMaxDims, n);
  ndim = n;
  for (int i = 0; i < n; ++i) d[i] = dims[i];
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= d[i];
  return n;
}

bool Shape::operator==(const Shape& o) const {
  if (ndim != o.ndim) return false;
  for (int i = 0; i < ndim; ++i)
    if (d[i] != o.d[i]) return false;
  return true;
}

std::string Shape::str() const {
  std::string s = "[";
  for (int i = 0; i < ndim; ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

Tensor Tensor::empty(const Shape& shape, DType dtype) {
  if (!InferenceMode::is_enabled()) return owned(shape, dtype);
  check_shape(shape);
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.data_ = thread_arena().allocate(t.nbytes());
  t.storage_ = Storage::arena;
  return t;
}

Tensor Tensor::owned(const Shape& shape, DType dtype) {
  check_shape(shape);
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  const size_t bytes = t.nbytes();
  t.data_ = heap_alloc(bytes);
  t.owner_ = std::shared_ptr<void>(t.data_, [bytes](void* p) { heap_free(p, bytes); });
  t.storage_ = Storage::heap;
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype) {
  Tensor t = empty(shape, dtype);
  std::memset(t.data_, 0, t.nbytes());
  return t;
}

Tensor Tensor::borrow(void* data, DType dtype, const Shape& shape) {
  return borrow(data, dtype, shape, contiguous_strides(shape));
}

Tensor Tensor::borrow(void* data, DType dtype, const Shape& shape, const Shape& strides) {
  check_shape(shape);
  IM_CHECK(strides.ndim == shape.ndim, "tensor with shape {} given {} strides", shape.str(),
           strides.ndim);
  IM_CHECK(data != nullptr || shape.numel() == 0, "tensor with shape {} has no data",
           shape.str());
  Tensor t;
  t.data_ = data;
  t.dtype_ = dtype;
  t.shape_ = shape;
  t.strides_ = strides;
  t.storage_ = Storage::borrowed;
  return t;
}

bool Tensor::is_contiguous() const {
  int64_t step = 1;
  for (int i = ndim() - 1; i >= 0; --i) {
    if (shape_[i] != 1 && strides_[i] != step) return false;
    step *= shape_[i];
  }
  return true;
}

int Tensor::wrap_dim(int dim) const {
  int d = dim < 0 ? dim + ndim() : dim;
  IM_CHECK(d >= 0 && d < ndim(), "dim {} is out of range for a tensor of shape {}", dim,
           shape_.str());
  return d;
}

void Tensor::check_dtype(DType expected) const {
  IM_CHECK_TYPE(dtype_ == expected, "tensor {} accessed as {}", describe(),
                dtype_name(expected));
}

Tensor Tensor::view(const Shape& shape) const {
  IM_CHECK(is_contiguous(), "view of non-contiguous tensor {}", describe());
  Shape s = shape;
  int infer = -1;
  int64_t known = 1;
  for (int i = 0; i < s.ndim; ++i) {
    if (s[i] == -1) {
      IM_CHECK(infer < 0, "view shape {} has more than one -1", shape.str());
      infer = i;
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0 && known > 0) s[infer] = numel() / known;
  IM_CHECK(s.numel() == numel(), "cannot view tensor {} as shape {}", describe(), shape.str());
  Tensor t = *this;
  t.shape_ = s;
  t.strides_ = contiguous_strides(s);
  return t;
}

Tensor Tensor::transpose(int dim0, int dim1) const {
  int a = wrap_dim(dim0), b = wrap_dim(dim1);
  Tensor t = *this;
  std::swap(t.shape_[a], t.shape_[b]);
  std::swap(t.strides_[a], t.strides_[b]);
  return t;
}

Tensor Tensor::slice(int dim, int64_t start, int64_t stop) const {
  int d = wrap_dim(dim);
  IM_CHECK(0 <= start && start <= stop && stop <= shape_[d],
           "slice [{}, {}) is out of range for dim {} of tensor {}", start, stop, dim, describe());
  Tensor t = *this;
  t.data_ = static_cast<char*>(data_) + start * strides_[d] * int64_t(dtype_size(dtype_));
  t.shape_[d] = stop - start;
  return t;
}

Tensor Tensor::select(int dim, int64_t index) const {
  int d = wrap_dim(dim);
  IM_CHECK(0 <= index && index < shape_[d], "index {} is out of range for dim {} of tensor {}",
           index, dim, describe());
  Tensor t = slice(d, index, index + 1);
  for (int i = d; i + 1 < t.shape_.ndim; ++i) {
    t.shape_[i] = t.shape_[i + 1];
    t.strides_[i] = t.strides_[i + 1];
  }
  --t.shape_.ndim;
  --t.strides_.ndim;
  return t;
}

std::string Tensor::describe() const { return dtype_name(dtype_) + shape_.str(); }

}  // namespace infermode
