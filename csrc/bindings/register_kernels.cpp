// Ops on NumPy arrays. Python's infermode.ops turns torch tensors into NumPy views first.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "bindings/convert.h"
#include "core/error.h"
#include "kernels/matmul.h"
#include "kernels/quant_matmul.h"
#include "kernels/quant_pack.h"
#include "kernels/rms_norm.h"
#include "kernels/sum.h"

namespace py = pybind11;

namespace infermode::bindings {

void register_kernels(py::module_& m) {
  m.def(
      "rms_norm",
      [](const py::array& x, const py::array& weight, float eps, const py::object& out,
         int threads) {
        Tensor xt = borrow_array(x, "x");
        Tensor wt = borrow_array(weight, "weight");
        Tensor yt;
        py::array result = resolve_out(out, xt.shape(), yt);
        {
          py::gil_scoped_release release;
          rms_norm(xt, wt, eps, yt, threads);
        }
        return result;
      },
      py::arg("x"), py::arg("weight"), py::arg("eps"), py::arg("out") = py::none(),
      py::arg("threads") = 0);

  m.def(
      "matmul",
      [](const py::array& a, const py::array& b, const py::object& out, int threads,
         bool b_bfloat16) {
        Tensor at = borrow_array(a, "a");
        Tensor bt = borrow_array(b, "b", false, b_bfloat16);
        Shape shape = at.shape();
        if (shape.ndim >= 1 && bt.ndim() == 2) shape[shape.ndim - 1] = bt.size(1);
        Tensor ct;
        py::array result = resolve_out(out, shape, ct);
        {
          py::gil_scoped_release release;
          matmul(at, bt, ct, threads);
        }
        return result;
      },
      py::arg("a"), py::arg("b"), py::arg("out") = py::none(), py::arg("threads") = 0,
      py::arg("b_bfloat16") = false);

  m.def(
      "quantize",
      [](const py::array& given, const std::string& format) {
        const QuantFormat f = parse_quant_format(format);
        // Checked on the array as given: the float32 copy below would otherwise be made first,
        // of any size (a broadcast array of billions of values takes no memory until copied).
        IM_CHECK_TYPE(given.dtype().kind() == 'f', "quantize: w has dtype {}; pass a float array",
                      std::string(py::str(given.dtype())));
        IM_CHECK(given.ndim() == 2, "quantize: w must be 2-d (rows, cols), got {} dims",
                 given.ndim());
        const int64_t rows = given.shape(0), cols = given.shape(1);
        IM_CHECK(cols % kQuantBlock == 0 && cols > 0,
                 "quantize: cols ({}) must be a positive multiple of {}", cols, kQuantBlock);
        const py::array_t<float, py::array::c_style | py::array::forcecast> w(given);
        py::array_t<uint8_t> out({rows, cols / kQuantBlock * int64_t(quant_block_bytes(f))});
        const float* src = w.data();
        uint8_t* dst = out.mutable_data();
        py::gil_scoped_release release;
        quantize_blocks(f, src, dst, rows, cols);
        return out;
      },
      py::arg("w"), py::arg("format"));

  m.def(
      "dequantize",
      [](const py::array& blocks, const std::string& format) {
        const QuantView v = borrow_blocks(blocks, parse_quant_format(format), "blocks");
        py::array_t<float> out({v.rows, v.cols});
        float* dst = out.mutable_data();
        py::gil_scoped_release release;
        dequantize_blocks(v.format, v.blocks, dst, v.rows, v.cols);
        return out;
      },
      py::arg("blocks"), py::arg("format"));

  py::class_<PackedMatrix>(m, "QuantizedMatrix",
                           "A GGUF-quantized weight (rows = output features) repacked for the "
                           "integer kernels.")
      .def(py::init([](const py::array& blocks, const std::string& format) {
             const QuantView v = borrow_blocks(blocks, parse_quant_format(format), "blocks");
             py::gil_scoped_release release;
             return pack_blocks(v.format, v.blocks, v.rows, v.cols);
           }),
           py::arg("blocks"), py::arg("format"))
      .def_property_readonly("rows", &PackedMatrix::rows)
      .def_property_readonly("cols", &PackedMatrix::cols)
      .def_property_readonly("nbytes", &PackedMatrix::nbytes)
      .def_property_readonly("format",
                             [](const PackedMatrix& p) { return quant_format_name(p.format()); })
      .def(
          "matmul",
          [](const PackedMatrix& w, const py::array& a, const py::object& out, int threads) {
            Tensor at = borrow_array(a, "a");
            Shape shape = at.shape();
            if (shape.ndim >= 1) shape[shape.ndim - 1] = w.rows();
            Tensor ct;
            py::array result = resolve_out(out, shape, ct);
            {
              py::gil_scoped_release release;
              matmul(at, w, ct, threads);
            }
            return result;
          },
          py::arg("a"), py::arg("out") = py::none(), py::arg("threads") = 0,
          "a @ W^T: a float32 [..., cols] -> [..., rows].");

  m.def(
      "sum",
      [](const py::array& x, int threads) {
        Tensor xt = borrow_array(x, "x");
        py::gil_scoped_release release;
        return sum(xt, threads);
      },
      py::arg("x"), py::arg("threads") = 0);
}

}  // namespace infermode::bindings
