// Ops on NumPy arrays. Python's infermode.ops turns torch tensors into NumPy views first.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "bindings/convert.h"
#include "kernels/matmul.h"
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
      "sum",
      [](const py::array& x, int threads) {
        Tensor xt = borrow_array(x, "x");
        py::gil_scoped_release release;
        return sum(xt, threads);
      },
      py::arg("x"), py::arg("threads") = 0);
}

}  // namespace infermode::bindings
