#include "core/build_info.h"

namespace infermode {

const char* build_info() { return INFERMODE_BUILD_INFO; }

}  // namespace infermode
