#pragma once

namespace infermode {

// Compiler, build type and target of this build, e.g. "GNU 12.2.0, Release, x86_64".
const char* build_info();

}  // namespace infermode
