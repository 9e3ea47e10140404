#pragma once
// A per-thread bump allocator for activations and scratch space. Allocation is a pointer bump;
// release is LIFO to a saved mark. Memory is kept between uses, so once a workload has run once
// (the warm-up), running it again takes nothing from the heap.
#include <cstddef>
#include <cstdint>

namespace infermode {

class Arena {
 public:
  struct Mark {
    int chunk;
    size_t offset;
  };

  Arena() = default;
  ~Arena();
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  // 64-byte aligned; grows by a new chunk (a counted heap allocation) when the current one is full.
  void* allocate(size_t bytes);
  Mark mark() const { return {cur_, offset_}; }
  // Frees everything allocated after `m`. Back at the start, chunks merge into one, so a workload
  // that needed several chunks once needs a single one (and no heap) from then on.
  void release(Mark m);

  size_t used() const;            // bytes from the start to the current position
  size_t capacity() const;        // bytes held, in all chunks
  size_t high_water() const { return high_water_; }
  int chunks() const { return n_chunks_; }

 private:
  struct Chunk {
    char* data;
    size_t size;
  };
  static constexpr int kMaxChunks = 48;
  static constexpr size_t kMinChunk = size_t(1) << 20;

  void merge_chunks();

  Chunk chunks_[kMaxChunks] = {};
  int n_chunks_ = 0;
  int cur_ = 0;
  size_t offset_ = 0;
  size_t high_water_ = 0;
};

// The calling thread's arena.
Arena& thread_arena();

// Releases everything allocated in its lifetime when it goes out of scope.
class ArenaScope {
 public:
  explicit ArenaScope(Arena& arena) : arena_(arena), mark_(arena.mark()) {}
  ~ArenaScope() { arena_.release(mark_); }
  ArenaScope(const ArenaScope&) = delete;
  ArenaScope& operator=(const ArenaScope&) = delete;

 private:
  Arena& arena_;
  Arena::Mark mark_;
};

}  // namespace infermode
