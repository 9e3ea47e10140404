#include <gtest/gtest.h>

#include <cstdint>

#include "core/arena.h"
#include "core/inference_mode.h"
#include "core/memory_stats.h"
#include "core/scratch.h"

namespace infermode {
namespace {

TEST(Arena, AllocationsAreAlignedAndDistinct) {
  Arena arena;
  char* a = static_cast<char*>(arena.allocate(10));
  char* b = static_cast<char*>(arena.allocate(100));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % 64, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b) % 64, 0u);
  EXPECT_GE(b - a, 10);
  EXPECT_EQ(arena.used(), 64u + 128u);
}

TEST(Arena, ReleaseToAMarkReusesTheSameMemory) {
  Arena arena;
  arena.allocate(1000);
  Arena::Mark m = arena.mark();
  void* first = arena.allocate(4096);
  arena.release(m);
  void* second = arena.allocate(4096);
  EXPECT_EQ(first, second);
}

TEST(Arena, GrowsThenMergesSoTheNextRunNeedsNoHeap) {
  Arena arena;
  reset_memory_stats();
  const size_t big = size_t(3) << 20;  // larger than the first chunk
  {
    ArenaScope scope(arena);
    arena.allocate(size_t(1) << 19);
    arena.allocate(big);
    arena.allocate(big);
  }
  EXPECT_EQ(arena.chunks(), 1);  // merged on the way back to the start
  const size_t capacity = arena.capacity();
  const size_t high_water = arena.high_water();
  EXPECT_GE(capacity, high_water);
  reset_memory_stats();
  for (int run = 0; run < 3; ++run) {
    ArenaScope scope(arena);
    arena.allocate(size_t(1) << 19);
    arena.allocate(big);
    arena.allocate(big);
  }
  EXPECT_EQ(memory_stats().heap_allocations, 0u);
  EXPECT_EQ(arena.capacity(), capacity);
  EXPECT_EQ(arena.high_water(), high_water);
}

TEST(Scratch, HeapOutsideTheModeArenaInsideIt) {
  reset_memory_stats();
  { Scratch s(1 << 16); }
  EXPECT_EQ(memory_stats().heap_allocations, 1u);

  InferenceMode guard;
  { Scratch warm(1 << 16); }  // may grow the arena once
  reset_memory_stats();
  for (int i = 0; i < 10; ++i) {
    Scratch s(1 << 16);
    s.as<float>()[0] = 1.0f;
  }
  EXPECT_EQ(memory_stats().heap_allocations, 0u);
  EXPECT_EQ(thread_arena().used(), 0u);
}

TEST(MemoryStats, LiveBytesFollowAllocations) {
  const uint64_t before = memory_stats().heap_live_bytes;
  void* p = heap_alloc(1000);
  EXPECT_EQ(memory_stats().heap_live_bytes, before + 1000);
  heap_free(p, 1000);
  EXPECT_EQ(memory_stats().heap_live_bytes, before);
}

}  // namespace
}  // namespace infermode
