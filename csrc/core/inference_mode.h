#pragma once
// The native inference mode: a thread-local RAII guard. Inside it, kernels and the runtime take
// activations and scratch space from the thread's arena (no heap traffic once warm) and keep no
// ownership bookkeeping; leaving the outermost guard hands the arena back in one step.
// Nothing here knows about PyTorch: the guard cannot create an "inference tensor" because the
// core never creates torch tensors at all.
#include "core/arena.h"

namespace infermode {

class InferenceMode {
 public:
  InferenceMode();
  ~InferenceMode();
  InferenceMode(const InferenceMode&) = delete;
  InferenceMode& operator=(const InferenceMode&) = delete;

  // True on this thread while at least one guard is alive on it.
  static bool is_enabled();
  // How many guards are alive on this thread.
  static int depth();

 private:
  Arena::Mark mark_;
};

}  // namespace infermode
