#pragma once
// Kernel tests run once per ISA path this CPU supports, each against the ref kernel.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "core/cpu_features.h"
#include "kernels/dispatch.h"

namespace infermode::testing {

// Named tolerances, relative to the size of the values involved.
constexpr float kTolF32Elementwise = 2e-6f;  // one rounding per op, float32 accumulation
constexpr float kTolF32Dot = 2e-6f;          // per sqrt(k): float32 FMA chains vs double
constexpr double kTolF32BlockSum = 1e-6;     // float32 sums over blocks, then double
constexpr double kTolBf16ActivationDot = 4e-3;  // per sqrt(k): A rounded to bfloat16 (2^-9)

inline std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (int i = 0; i < kIsaCount; ++i)
    if (cpu_features().supports(Isa(i))) out.push_back(Isa(i));
  return out;
}

inline std::string isa_param_name(const ::testing::TestParamInfo<Isa>& info) {
  return isa_name(info.param);
}

inline std::vector<float> random_floats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// Sets the active ISA for one test and restores the previous one afterwards.
class ScopedIsa {
 public:
  explicit ScopedIsa(Isa isa) : previous_(active_isa()) { set_isa(isa); }
  ~ScopedIsa() { set_isa(previous_); }

 private:
  Isa previous_;
};

}  // namespace infermode::testing
