#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "core/cpu_features.h"
#include "core/error.h"
#include "core/thread_pool.h"

namespace infermode {
namespace {

// The flags the Linux kernel reports for the first CPU.
std::set<std::string> proc_cpuinfo_flags() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("flags", 0) == 0) {
      std::istringstream words(line.substr(line.find(':') + 1));
      std::set<std::string> flags;
      std::string w;
      while (words >> w) flags.insert(w);
      return flags;
    }
  }
  return {};
}

TEST(CpuFeatures, AgreeWithProcCpuinfo) {
  const std::set<std::string> flags = proc_cpuinfo_flags();
  if (flags.empty()) GTEST_SKIP() << "no /proc/cpuinfo flags on this system";
  const CpuFeatures& f = cpu_features();
  const std::pair<const char*, bool> expected[] = {
      {"avx", f.avx},           {"avx2", f.avx2},               {"fma", f.fma},
      {"f16c", f.f16c},         {"avx512f", f.avx512f},         {"avx512bw", f.avx512bw},
      {"avx512vl", f.avx512vl}, {"avx512dq", f.avx512dq},       {"avx512cd", f.avx512cd},
      {"avx512_vnni", f.avx512_vnni}, {"avx512_bf16", f.avx512_bf16},
      {"avx512_fp16", f.avx512_fp16}, {"avx_vnni", f.avx_vnni}, {"amx_tile", f.amx_tile},
      {"amx_int8", f.amx_int8}, {"amx_bf16", f.amx_bf16},
  };
  for (const auto& [name, found] : expected)
    EXPECT_EQ(flags.count(name) == 1, found) << "cpuid and /proc/cpuinfo disagree on " << name;
}

TEST(CpuFeatures, IsaLevelsAreNested) {
  const CpuFeatures& f = cpu_features();
  EXPECT_TRUE(f.supports(Isa::ref));
  for (int i = 1; i < kIsaCount; ++i)
    if (f.supports(Isa(i))) EXPECT_TRUE(f.supports(Isa(i - 1))) << isa_name(Isa(i));
  EXPECT_TRUE(f.supports(f.best()));
  if (f.amx_tile && f.os_amx) EXPECT_TRUE(f.amx_permitted) << f.amx_note;
}

TEST(CpuFeatures, ParseIsaNamesTheChoices) {
  EXPECT_EQ(parse_isa("avx2"), Isa::avx2);
  try {
    parse_isa("sse9");
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("ref, avx2, avx512, amx"), std::string::npos);
  }
}

TEST(Threads, DefaultsAndSplits) {
  EXPECT_GE(physical_cores(), 1);
  set_num_threads(3);
  EXPECT_EQ(default_threads(), 3);
  EXPECT_EQ(resolve_threads(5), 5);
  EXPECT_EQ(resolve_threads(0), 3);
  set_num_threads(0);
  EXPECT_EQ(default_threads(), physical_cores());
  // 10 items in pieces aligned to 4, over 3 threads: every item exactly once.
  int64_t covered = 0;
  for (int i = 0; i < 3; ++i) {
    Range r = split_range(10, i, 3, 4);
    EXPECT_EQ(r.begin % 4, 0);
    EXPECT_EQ(r.begin, covered);
    covered = r.end;
  }
  EXPECT_EQ(covered, 10);
}

}  // namespace
}  // namespace infermode
