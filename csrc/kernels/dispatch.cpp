#include "kernels/dispatch.h"

#include <atomic>
#include <cstdlib>
#include <string>

#include "core/error.h"

namespace infermode {
namespace {

KernelTable build(Isa cap) {
  KernelTable t;
  t.cap = cap;
  ref::fill_table(t);
#if defined(INFERMODE_X86)
  if (cap >= Isa::avx2) avx2::fill_table(t);
  if (cap >= Isa::avx512) avx512::fill_table(t);
#endif
  return t;
}

struct Tables {
  KernelTable by_isa[kIsaCount];
  Tables() {
    for (int i = 0; i < kIsaCount; ++i)
      if (cpu_features().supports(Isa(i))) by_isa[i] = build(Isa(i));
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

// INFERMODE_ISA caps the choice; a cap above what the CPU has is no cap at all.
Isa initial_isa() {
  Isa best = cpu_features().best();
  const char* env = std::getenv("INFERMODE_ISA");
  if (env == nullptr || *env == '\0') return best;
  Isa cap;
  try {
    cap = parse_isa(env);
  } catch (const ValueError& e) {
    throw ValueError(fmt::format("environment variable INFERMODE_ISA: {}", e.what()));
  }
  return cap < best ? cap : best;
}

std::atomic<const KernelTable*>& active() {
  static std::atomic<const KernelTable*> table{&tables().by_isa[int(initial_isa())]};
  return table;
}

}  // namespace

const KernelTable& kernels() { return *active().load(std::memory_order_acquire); }

const KernelTable& kernels_for(Isa isa) {
  IM_CHECK(cpu_features().supports(isa), "this CPU ({}) cannot run the {} kernels; best is {}",
           cpu_features().brand, isa_name(isa), isa_name(cpu_features().best()));
  return tables().by_isa[int(isa)];
}

void set_isa(Isa isa) { active().store(&kernels_for(isa), std::memory_order_release); }

Isa active_isa() { return kernels().cap; }

}  // namespace infermode
