#include "bindings/convert.h"

#include <vector>

#include "core/error.h"

namespace infermode::bindings {
namespace {

// NumPy's byte-order mark for the order this machine does not use: such an array has the kind
// and size of a dtype the core takes, but read as it lies its values are other numbers.
constexpr char kSwappedOrder = __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? '>' : '<';

DType to_dtype(const py::dtype& dt, const char* name) {
  const char kind = dt.kind();
  const auto size = dt.itemsize();
  if (kind == 'f' && size == 4) return DType::f32;
  if (kind == 'f' && size == 8) return DType::f64;
  if (kind == 'f' && size == 2) return DType::f16;
  if (kind == 'i' && size == 1) return DType::i8;
  if (kind == 'i' && size == 4) return DType::i32;
  if (kind == 'i' && size == 8) return DType::i64;
  if (kind == 'u' && size == 1) return DType::u8;
  throw TypeError(fmt::format("{} has dtype {}, which infermode does not take",
                              name, std::string(py::str(dt))));
}

}  // namespace

Tensor borrow_array(const py::array& arr, const char* name, bool writable, bool bfloat16) {
  IM_CHECK(!writable || arr.writeable(), "{} is read-only; pass a writable array", name);
  IM_CHECK_TYPE(arr.dtype().byteorder() != kSwappedOrder,
                "{} has dtype {}, in the byte order this machine does not use; pass "
                "{}.astype({}.dtype.newbyteorder('='))", name, std::string(py::str(arr.dtype())),
                name, name);
  IM_CHECK_TYPE(!bfloat16 || (arr.dtype().kind() == 'u' && arr.itemsize() == 2),
                "{} is marked bfloat16 but has dtype {}; pass its bits as uint16", name,
                std::string(py::str(arr.dtype())));
  const DType dt = bfloat16 ? DType::bf16 : to_dtype(arr.dtype(), name);
  IM_CHECK(arr.ndim() <= Shape::kMaxDims, "{} has {} dims; infermode takes at most {}", name,
           arr.ndim(), Shape::kMaxDims);
  Shape shape, strides;
  shape.ndim = strides.ndim = int(arr.ndim());
  const auto item = arr.itemsize();
  for (int i = 0; i < shape.ndim; ++i) {
    shape[i] = arr.shape(i);
    IM_CHECK(arr.strides(i) % item == 0,
             "{} has a stride of {} bytes in dim {}, not a multiple of its {}-byte items", name,
             arr.strides(i), i, item);
    strides[i] = arr.strides(i) / item;
  }
  return Tensor::borrow(const_cast<void*>(arr.data()), dt, shape, strides);
}

QuantView borrow_blocks(const py::array& arr, QuantFormat format, const std::string& what) {
  const int64_t bytes = int64_t(quant_block_bytes(format));
  IM_CHECK_TYPE(py::isinstance<py::array_t<uint8_t>>(arr), "{} must be a uint8 array of {} "
                "blocks, got dtype {}", what, quant_format_name(format),
                py::str(arr.dtype()).cast<std::string>());
  IM_CHECK(arr.ndim() == 2 && arr.shape(1) > 0 && arr.shape(1) % bytes == 0,
           "{} must be 2-d (rows, blocks per row * {} bytes) for {}, got shape {}", what, bytes,
           quant_format_name(format),
           py::str(arr.attr("shape")).cast<std::string>());
  IM_CHECK(arr.flags() & py::array::c_style, "{} is not C-contiguous", what);
  return QuantView{format, arr.data(), arr.shape(0), arr.shape(1) / bytes * kQuantBlock};
}

py::array_t<float> new_float_array(const Shape& shape, Tensor& view) {
  std::vector<py::ssize_t> dims(shape.d, shape.d + shape.ndim);
  py::array_t<float> arr(dims);
  view = Tensor::borrow(arr.mutable_data(), DType::f32, shape);
  return arr;
}

py::array resolve_out(const py::object& out, const Shape& shape, Tensor& view) {
  if (out.is_none()) return new_float_array(shape, view);
  IM_CHECK_TYPE(py::isinstance<py::array>(out), "out must be a NumPy array or None, got {}",
                std::string(py::str(py::type::of(out))));
  py::array arr = out.cast<py::array>();
  view = borrow_array(arr, "out", /*writable=*/true);
  return arr;
}

std::string type_name(const py::handle& obj) {
  return py::str(py::type::of(obj).attr("__name__")).cast<std::string>();
}

}  // namespace infermode::bindings
