#include "core/cpu_features.h"

#include <cstdint>
#include <cstring>

#include "core/error.h"

#if defined(INFERMODE_X86)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace infermode {
namespace {

#if defined(INFERMODE_X86)
struct Regs {
  unsigned a = 0, b = 0, c = 0, d = 0;
};

Regs cpuid(unsigned leaf, unsigned sub = 0) {
  Regs r;
  __cpuid_count(leaf, sub, r.a, r.b, r.c, r.d);
  return r;
}

bool bit(unsigned reg, int n) { return (reg >> n) & 1u; }

// xgetbv without -mxsave, so this file builds with the baseline flags.
uint64_t xcr0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (uint64_t(hi) << 32) | lo;
}

// Linux >= 5.16 keeps AMX tile data off until a process asks (arch_prctl ARCH_REQ_XCOMP_PERM);
// the first tile instruction without it is a SIGILL.
bool request_amx_permission(std::string& note) {
  constexpr int kArchGetXcompPerm = 0x1022;
  constexpr int kArchReqXcompPerm = 0x1023;
  constexpr int kXfeatureXtiledata = 18;
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) {
    note = "Linux refused ARCH_REQ_XCOMP_PERM for AMX tile data (kernel older than 5.16?)";
    return false;
  }
  unsigned long mask = 0;
  if (syscall(SYS_arch_prctl, kArchGetXcompPerm, &mask) != 0 ||
      !(mask & (1ul << kXfeatureXtiledata))) {
    note = "AMX tile data permission was not granted";
    return false;
  }
  return true;
}

CpuFeatures detect() {
  CpuFeatures f;
  f.x86 = true;
  Regs r0 = cpuid(0);
  char vendor[13] = {};
  std::memcpy(vendor, &r0.b, 4);
  std::memcpy(vendor + 4, &r0.d, 4);
  std::memcpy(vendor + 8, &r0.c, 4);
  f.vendor = vendor;
  unsigned max_leaf = r0.a;

  if (cpuid(0x80000000).a >= 0x80000004) {
    char brand[49] = {};
    for (unsigned i = 0; i < 3; ++i) {
      Regs r = cpuid(0x80000002 + i);
      std::memcpy(brand + 16 * i, &r, 16);
    }
    f.brand = brand;
    size_t start = f.brand.find_first_not_of(' ');
    size_t end = f.brand.find_last_not_of(' ');
    f.brand = start == std::string::npos ? "" : f.brand.substr(start, end - start + 1);
  }

  Regs r1 = cpuid(1);
  bool osxsave = bit(r1.c, 27);
  f.fma = bit(r1.c, 12);
  f.avx = bit(r1.c, 28);
  f.f16c = bit(r1.c, 29);
  if (osxsave) {
    uint64_t x = xcr0();
    f.os_ymm = (x & 0x6) == 0x6;           // SSE + AVX state
    f.os_zmm = f.os_ymm && (x & 0xe0) == 0xe0;  // opmask, ZMM_Hi256, Hi16_ZMM
    f.os_amx = (x & 0x60000) == 0x60000;   // XTILECFG + XTILEDATA
  }
  if (max_leaf >= 7) {
    Regs r7 = cpuid(7, 0);
    f.avx2 = bit(r7.b, 5);
    f.avx512f = bit(r7.b, 16);
    f.avx512dq = bit(r7.b, 17);
    f.avx512cd = bit(r7.b, 28);
    f.avx512bw = bit(r7.b, 30);
    f.avx512vl = bit(r7.b, 31);
    f.avx512_vnni = bit(r7.c, 11);
    f.avx512_fp16 = bit(r7.d, 23);
    f.amx_bf16 = bit(r7.d, 22);
    f.amx_tile = bit(r7.d, 24);
    f.amx_int8 = bit(r7.d, 25);
    if (r7.a >= 1) {
      Regs r71 = cpuid(7, 1);
      f.avx_vnni = bit(r71.a, 4);
      f.avx512_bf16 = bit(r71.a, 5);
    }
  }
  if (f.amx_tile) {
    if (!f.os_amx) {
      f.amx_note = "the OS does not enable AMX tile state (XCR0)";
    } else {
      f.amx_permitted = request_amx_permission(f.amx_note);
    }
  }
  return f;
}
#else
CpuFeatures detect() { return CpuFeatures{}; }
#endif

}  // namespace

bool CpuFeatures::supports(Isa isa) const {
  bool avx2_ok = os_ymm && avx && avx2 && fma && f16c;
  bool avx512_ok = avx2_ok && os_zmm && avx512f && avx512bw && avx512vl && avx512dq && avx512cd;
  switch (isa) {
    case Isa::ref: return true;
    case Isa::avx2: return avx2_ok;
    case Isa::avx512: return avx512_ok;
    case Isa::amx:
      return avx512_ok && avx512_vnni && avx512_bf16 && amx_tile && amx_int8 && amx_bf16 &&
             os_amx && amx_permitted;
  }
  return false;
}

Isa CpuFeatures::best() const {
  for (int i = kIsaCount - 1; i > 0; --i)
    if (supports(Isa(i))) return Isa(i);
  return Isa::ref;
}

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::ref: return "ref";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
    case Isa::amx: return "amx";
  }
  return "unknown";
}

Isa parse_isa(const std::string& name) {
  for (int i = 0; i < kIsaCount; ++i)
    if (name == isa_name(Isa(i))) return Isa(i);
  throw ValueError(fmt::format("unknown ISA '{}': expected one of ref, avx2, avx512, amx", name));
}

}  // namespace infermode
