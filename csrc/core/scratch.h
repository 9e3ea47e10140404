#pragma once
// Temporary working memory for one op (packed GEMM panels, partial sums). Inside the inference
// mode it comes from the thread's arena and goes back when the op returns; outside it is a
// counted heap allocation. Either way it is 64-byte aligned and lives on the caller's stack frame.
#include <cstddef>

#include "core/arena.h"

namespace infermode {

class Scratch {
 public:
  explicit Scratch(size_t bytes);
  ~Scratch();
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;

  template <typename T>
  T* as() const { return static_cast<T*>(data_); }
  size_t bytes() const { return bytes_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  bool from_arena_ = false;
  Arena::Mark mark_ = {0, 0};
};

}  // namespace infermode
