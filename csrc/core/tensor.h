#pragma once
// A strided n-d array over a buffer it owns (heap), takes from the thread's arena (inside the
// inference mode) or borrows (NumPy arrays, torch tensors, mapped weight files). Views share the
// buffer; a view of a heap tensor keeps it alive. Shapes live inline: making a tensor never
// touches the heap unless it owns heap storage.
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>

#include "core/dtype.h"

namespace infermode {

struct Shape {
  static constexpr int kMaxDims = 6;

  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  Shape(const int64_t* dims, int ndim);

  int64_t operator[](int i) const { return d[i]; }
  int64_t& operator[](int i) { return d[i]; }
  int64_t numel() const;
  bool operator==(const Shape& o) const;
  bool operator!=(const Shape& o) const { return !(*this == o); }
  std::string str() const;  // "[2, 3]"

  int ndim = 0;
  int64_t d[kMaxDims] = {};
};

// Where a tensor's bytes come from. Borrowed and arena tensors must not outlive their source:
// the owner of the borrowed buffer, or the inference-mode guard that was open when they were made.
enum class Storage : uint8_t { none, heap, arena, borrowed };

template <typename T>
constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<double>() { return DType::f64; }
template <> constexpr DType dtype_of<int8_t>() { return DType::i8; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::u8; }
template <> constexpr DType dtype_of<int32_t>() { return DType::i32; }
template <> constexpr DType dtype_of<int64_t>() { return DType::i64; }

class Tensor {
 public:
  Tensor() = default;

  // Contiguous, uninitialised: arena memory inside the inference mode, heap memory outside it.
  static Tensor empty(const Shape& shape, DType dtype);
  // Contiguous, uninitialised, on the heap even inside the inference mode: for what outlives the
  // call that makes it (weights made at load, a cache Python holds), which the arena would take
  // back when the guard ends.
  static Tensor owned(const Shape& shape, DType dtype);
  static Tensor zeros(const Shape& shape, DType dtype);
  // Wraps memory owned elsewhere; strides in elements (contiguous when omitted).
  static Tensor borrow(void* data, DType dtype, const Shape& shape);
  static Tensor borrow(void* data, DType dtype, const Shape& shape, const Shape& strides);

  DType dtype() const { return dtype_; }
  int ndim() const { return shape_.ndim; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t size(int dim) const { return shape_[wrap_dim(dim)]; }
  int64_t stride(int dim) const { return strides_[wrap_dim(dim)]; }
  int64_t numel() const { return shape_.numel(); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }
  bool defined() const { return storage_ != Storage::none; }
  bool is_contiguous() const;
  Storage storage() const { return storage_; }

  void* raw() const { return data_; }
  template <typename T>
  T* data() const {
    check_dtype(dtype_of<T>());
    return static_cast<T*>(data_);
  }

  // Views: no copy.
  Tensor view(const Shape& shape) const;  // contiguous tensors only; one dim may be -1
  Tensor transpose(int dim0, int dim1) const;
  Tensor slice(int dim, int64_t start, int64_t stop) const;
  Tensor select(int dim, int64_t index) const;  // drops `dim`

  std::string describe() const;  // "float32[2, 3]"

 private:
  int wrap_dim(int dim) const;
  void check_dtype(DType expected) const;

  void* data_ = nullptr;
  DType dtype_ = DType::f32;
  Storage storage_ = Storage::none;
  Shape shape_;
  Shape strides_;
  std::shared_ptr<void> owner_;  // heap storage only
};

}  // namespace infermode
