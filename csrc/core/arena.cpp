#include "core/arena.h"

#include <algorithm>

#include "core/error.h"
#include "core/memory_stats.h"

namespace infermode {
namespace {
constexpr size_t kAlign = 64;
size_t round_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }
}  // namespace

Arena::~Arena() {
  for (int i = 0; i < n_chunks_; ++i) heap_free(chunks_[i].data, chunks_[i].size);
}

void* Arena::allocate(size_t bytes) {
  bytes = round_up(std::max<size_t>(bytes, 1));
  while (true) {
    if (cur_ < n_chunks_ && offset_ + bytes <= chunks_[cur_].size) {
      void* p = chunks_[cur_].data + offset_;
      offset_ += bytes;
      high_water_ = std::max(high_water_, used());
      return p;
    }
    if (cur_ + 1 < n_chunks_) {  // a later chunk kept from an earlier use
      ++cur_;
      offset_ = 0;
      continue;
    }
    IM_CHECK_RUNTIME(n_chunks_ < kMaxChunks,
                     "arena: {} chunks in use ({} bytes); cannot grow for {} more bytes",
                     n_chunks_, capacity(), bytes);
    size_t size = round_up(std::max({bytes, capacity(), kMinChunk}));
    chunks_[n_chunks_] = {static_cast<char*>(heap_alloc(size)), size};
    ++n_chunks_;
    cur_ = n_chunks_ - 1;
    offset_ = 0;
  }
}

void Arena::release(Mark m) {
  cur_ = m.chunk;
  offset_ = m.offset;
  if (cur_ == 0 && offset_ == 0 && n_chunks_ > 1) merge_chunks();
}

void Arena::merge_chunks() {
  size_t total = capacity();
  for (int i = 0; i < n_chunks_; ++i) heap_free(chunks_[i].data, chunks_[i].size);
  chunks_[0] = {static_cast<char*>(heap_alloc(total)), total};
  n_chunks_ = 1;
}

size_t Arena::used() const {
  size_t n = offset_;
  for (int i = 0; i < cur_ && i < n_chunks_; ++i) n += chunks_[i].size;
  return n;
}

size_t Arena::capacity() const {
  size_t n = 0;
  for (int i = 0; i < n_chunks_; ++i) n += chunks_[i].size;
  return n;
}

Arena& thread_arena() {
  thread_local Arena arena;
  return arena;
}

}  // namespace infermode
