#pragma once
// Errors raised by the core. Library code never aborts or exits: a bad input becomes a typed C++
// exception with an fmt message, and the bindings turn it into the matching Python exception.
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace infermode {

// A value is wrong (shape, size, range): Python ValueError.
struct ValueError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A type is wrong (dtype, kind of object): Python TypeError.
struct TypeError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The machine or the state cannot do it (unsupported CPU, out of memory): Python RuntimeError.
struct RuntimeError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A long loop stopped because the user asked (Ctrl-C): Python KeyboardInterrupt.
struct Interrupted : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace infermode

// IM_CHECK(cond, "what was expected {}, what came {}", a, b) throws ValueError; the _TYPE and
// _RUNTIME variants throw the other two. The message is formatted only when the check fails.
#define IM_CHECK_AS(kind, cond, ...)                                 \
  do {                                                               \
    if (!(cond)) throw ::infermode::kind(fmt::format(__VA_ARGS__));  \
  } while (0)
#define IM_CHECK(cond, ...) IM_CHECK_AS(ValueError, cond, __VA_ARGS__)
#define IM_CHECK_TYPE(cond, ...) IM_CHECK_AS(TypeError, cond, __VA_ARGS__)
#define IM_CHECK_RUNTIME(cond, ...) IM_CHECK_AS(RuntimeError, cond, __VA_ARGS__)
