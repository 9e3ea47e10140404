#pragma once
// Ctrl-C for native loops run with the GIL released: the stop check takes the GIL and asks Python
// whether a signal is pending; when the loop then throws Interrupted, the pending exception
// (KeyboardInterrupt, or a signal handler's own) is what Python sees.
#include <pybind11/pybind11.h>

#include <utility>

#include "core/error.h"
#include "core/stop_check.h"

namespace infermode::bindings {

namespace py = pybind11;

inline StopCheck python_stop_check() {
  return [] {
    py::gil_scoped_acquire gil;
    return PyErr_CheckSignals() != 0;
  };
}

// Runs fn() with the GIL released and python_stop_check() as its stop check; an Interrupted
// becomes the Python exception PyErr_CheckSignals left pending.
template <typename Fn>
auto run_interruptible(Fn&& fn) {
  const StopCheck should_stop = python_stop_check();
  try {
    py::gil_scoped_release release;
    return std::forward<Fn>(fn)(should_stop);
  } catch (const Interrupted&) {
    if (PyErr_Occurred()) throw py::error_already_set();
    throw;
  }
}

}  // namespace infermode::bindings
