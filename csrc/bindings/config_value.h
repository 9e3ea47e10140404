#pragma once
// One field of a config passed from Python as a dict (the decoder's, the transformer stack's).
// The Python side builds these dicts, so a missing key or a wrong type is a bug there or a config
// bent by hand; either way the message names the config and the key.
#include <pybind11/pybind11.h>

#include <fmt/format.h>

#include <string>

#include "bindings/convert.h"
#include "core/error.h"

namespace infermode::bindings {

namespace py = pybind11;

// d[key] cast to T; ValueError when the key is absent, TypeError when it does not cast.
// `where` names the config ("model config", "transformer stack block config").
template <typename T>
T config_value(const py::dict& d, const char* key, const char* where) {
  IM_CHECK(d.contains(key), "{} has no '{}'", where, key);
  try {
    return d[key].cast<T>();
  } catch (const py::cast_error&) {
    throw TypeError(
        fmt::format("{}: '{}' has the wrong type ({})", where, key, type_name(d[key])));
  }
}

}  // namespace infermode::bindings
