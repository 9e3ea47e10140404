#pragma once
// Picks the next token from a row of logits: greedy (temperature 0), or sampled at a temperature
// from the top-k and/or top-p (nucleus) candidates, with a seeded generator. Each sequence has
// its own sampler, so a sequence draws the same tokens alone or in a batch.
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

namespace infermode {

struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy
  int64_t top_k = 0;         // 0: no limit
  float top_p = 1.0f;        // 1: no limit
};

// ValueError naming the parameter when one is out of range.
void check_sampling(const SamplingParams& p);

class Sampler {
 public:
  Sampler(const SamplingParams& params, uint64_t seed, uint64_t stream, int64_t vocab);
  int32_t next(const float* logits);

 private:
  SamplingParams params_;
  int64_t vocab_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> candidates_;  // reused: no allocation per token
};

}  // namespace infermode
