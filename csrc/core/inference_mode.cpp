#include "core/inference_mode.h"

namespace infermode {
namespace {
thread_local int t_depth = 0;
}  // namespace

InferenceMode::InferenceMode() : mark_(thread_arena().mark()) { ++t_depth; }

InferenceMode::~InferenceMode() {
  --t_depth;
  thread_arena().release(mark_);
}

bool InferenceMode::is_enabled() { return t_depth > 0; }
int InferenceMode::depth() { return t_depth; }

}  // namespace infermode
