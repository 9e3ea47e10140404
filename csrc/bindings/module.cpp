// infermode._core: the native core. Bindings convert, release the GIL around the call, and
// convert back; the logic lives in csrc/.
#include <pybind11/pybind11.h>

#include "core/error.h"
#include "kernels/dispatch.h"

namespace py = pybind11;

namespace infermode::bindings {
void register_core(py::module_& m);
void register_kernels(py::module_& m);
void register_models(py::module_& m);
void register_stack(py::module_& m);
}  // namespace infermode::bindings

PYBIND11_MODULE(_core, m) {
  m.doc() = "infermode's native core (C++). Use the public API in `infermode` instead.";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const infermode::ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const infermode::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const infermode::RuntimeError& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    } catch (const infermode::Interrupted& e) {
      PyErr_SetString(PyExc_KeyboardInterrupt, e.what());
    }
  });
  // Reads INFERMODE_ISA now, so a bad value fails the import with its message, not a later call.
  infermode::kernels();
  infermode::bindings::register_core(m);
  infermode::bindings::register_kernels(m);
  infermode::bindings::register_models(m);
  infermode::bindings::register_stack(m);
}
