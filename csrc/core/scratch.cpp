#include "core/scratch.h"

#include "core/inference_mode.h"
#include "core/memory_stats.h"

namespace infermode {

Scratch::Scratch(size_t bytes) : bytes_(bytes) {
  if (bytes == 0) return;
  if (InferenceMode::is_enabled()) {
    Arena& arena = thread_arena();
    mark_ = arena.mark();
    data_ = arena.allocate(bytes);
    from_arena_ = true;
  } else {
    data_ = heap_alloc(bytes);
  }
}

Scratch::~Scratch() {
  if (data_ == nullptr) return;
  if (from_arena_) {
    thread_arena().release(mark_);
  } else {
    heap_free(data_, bytes_);
  }
}

}  // namespace infermode
