#include <gtest/gtest.h>

#include "core/error.h"
#include "isa_params.h"
#include "kernels/dispatch.h"

namespace infermode {
namespace {

TEST(Dispatch, EachTableUsesTheBestImplementationUpToItsCap) {
  for (Isa isa : testing::supported_isas()) {
    const KernelTable& t = kernels_for(isa);
    EXPECT_EQ(t.cap, isa);
    for (Isa used : {t.rms_norm.isa, t.matmul_f32.isa, t.sum_f32.isa}) EXPECT_LE(used, isa);
    EXPECT_NE(t.rms_norm.fn, nullptr);
    EXPECT_NE(t.matmul_f32.fn.run, nullptr);
    EXPECT_NE(t.sum_f32.fn, nullptr);
  }
  EXPECT_EQ(kernels_for(Isa::ref).matmul_f32.isa, Isa::ref);
  if (cpu_features().supports(Isa::avx512))
    EXPECT_EQ(kernels_for(Isa::avx512).matmul_f32.isa, Isa::avx512);
}

TEST(Dispatch, SetIsaSwitchesAndRefusesWhatTheCpuLacks) {
  testing::ScopedIsa scoped(Isa::ref);
  EXPECT_EQ(active_isa(), Isa::ref);
  EXPECT_EQ(kernels().rms_norm.isa, Isa::ref);
  for (int i = 0; i < kIsaCount; ++i)
    if (!cpu_features().supports(Isa(i))) EXPECT_THROW(set_isa(Isa(i)), ValueError);
}

}  // namespace
}  // namespace infermode
