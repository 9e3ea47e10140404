#pragma once
// How a long native loop learns that the user wants it to stop (Ctrl-C): the loop calls the check
// between units of work (a token, a block of a transformer stack) and throws Interrupted
// (core/error.h) when it returns true, leaving its model as it found it.
#include <functional>

namespace infermode {

using StopCheck = std::function<bool()>;

}  // namespace infermode
