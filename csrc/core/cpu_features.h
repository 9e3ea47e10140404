#pragma once
// What the CPU can run, read once from cpuid and checked against what the OS saves on a context
// switch (XCR0): a CPU with AVX-512 under an OS that does not save zmm state cannot use it.
// AMX also needs a per-process permission from Linux, requested here once.
#include <string>

namespace infermode {

// Kernel families, lowest to highest. Each is a superset of the one before it.
enum class Isa : int { ref = 0, avx2 = 1, avx512 = 2, amx = 3 };
constexpr int kIsaCount = 4;

struct CpuFeatures {
  std::string vendor;  // "GenuineIntel", "AuthenticAMD"
  std::string brand;   // "AMD EPYC 9R45 ..."
  bool x86 = false;
  // Instruction-set bits from cpuid.
  bool avx = false, avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false, avx512cd = false;
  bool avx512_vnni = false, avx512_bf16 = false, avx512_fp16 = false, avx_vnni = false;
  bool amx_tile = false, amx_int8 = false, amx_bf16 = false;
  // Register state the OS saves (XCR0), and Linux's permission to use AMX tile data.
  bool os_ymm = false, os_zmm = false, os_amx = false;
  bool amx_permitted = false;
  std::string amx_note;  // why AMX is unusable, when the CPU has it but the OS does not allow it

  bool supports(Isa isa) const;
  Isa best() const;  // the highest Isa this machine can run
};

// Detected on first use, then cached for the process.
const CpuFeatures& cpu_features();

const char* isa_name(Isa isa);
// "ref" | "avx2" | "avx512" | "amx"; throws ValueError naming the valid choices otherwise.
Isa parse_isa(const std::string& name);

}  // namespace infermode
