#pragma once
// Counters of the core's own heap traffic, so tests can prove that warm calls inside the
// inference mode allocate nothing. Every heap buffer the core makes goes through heap_alloc.
#include <cstddef>
#include <cstdint>

namespace infermode {

struct MemoryStats {
  uint64_t heap_allocations;  // calls to heap_alloc since the last reset
  uint64_t heap_bytes;        // bytes those calls asked for
  uint64_t heap_live_bytes;   // bytes allocated and not yet freed (not reset)
};

MemoryStats memory_stats();
void reset_memory_stats();

// 64-byte aligned (a cache line, a full zmm register); throws RuntimeError when memory runs out.
void* heap_alloc(size_t bytes);
void heap_free(void* p, size_t bytes);

}  // namespace infermode
