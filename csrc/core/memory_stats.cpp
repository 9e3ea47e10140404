#include "core/memory_stats.h"

#include <atomic>
#include <cstdlib>

#include "core/error.h"

namespace infermode {
namespace {
std::atomic<uint64_t> g_allocations{0};
std::atomic<uint64_t> g_bytes{0};
std::atomic<uint64_t> g_live{0};
constexpr size_t kAlign = 64;
}  // namespace

MemoryStats memory_stats() { return {g_allocations.load(), g_bytes.load(), g_live.load()}; }

void reset_memory_stats() {
  g_allocations = 0;
  g_bytes = 0;
}

void* heap_alloc(size_t bytes) {
  size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
  if (rounded == 0) rounded = kAlign;
  void* p = std::aligned_alloc(kAlign, rounded);
  IM_CHECK_RUNTIME(p != nullptr, "out of memory: could not allocate {} bytes", bytes);
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  g_bytes.fetch_add(bytes, std::memory_order_relaxed);
  g_live.fetch_add(bytes, std::memory_order_relaxed);
  return p;
}

void heap_free(void* p, size_t bytes) {
  if (p == nullptr) return;
  std::free(p);
  g_live.fetch_sub(bytes, std::memory_order_relaxed);
}

}  // namespace infermode
