#pragma once
// NumPy <-> Tensor conversion for the bindings. Arrays are borrowed, never copied: the caller's
// array must stay alive for the call, which the binding's own reference guarantees.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "core/quant_blocks.h"
#include "core/tensor.h"

namespace infermode::bindings {

namespace py = pybind11;

// `name` is the Python argument's name, for error messages. `writable` for outputs.
// `bfloat16`: the array holds bfloat16 bit patterns as uint16 (NumPy has no bfloat16).
Tensor borrow_array(const py::array& arr, const char* name, bool writable = false,
                    bool bfloat16 = false);

// GGUF blocks of `format` held in a C-contiguous uint8 array (rows, blocks per row * block bytes),
// borrowed. `what` names the argument in errors.
QuantView borrow_blocks(const py::array& arr, QuantFormat format, const std::string& what);

// The name of obj's Python type ("int", "ndarray"), for messages that say what came instead.
std::string type_name(const py::handle& obj);

// A new float32 NumPy array (owning its memory) of the given shape, borrowed as a Tensor.
py::array_t<float> new_float_array(const Shape& shape, Tensor& view);

// The caller's `out=` array, checked and borrowed, or a new array of `shape`.
py::array resolve_out(const py::object& out, const Shape& shape, Tensor& view);

}  // namespace infermode::bindings
