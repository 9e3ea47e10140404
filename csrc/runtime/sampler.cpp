#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace infermode {

void check_sampling(const SamplingParams& p) {
  IM_CHECK(std::isfinite(p.temperature) && p.temperature >= 0.0f,
           "temperature must be >= 0 (0 is greedy), got {}", p.temperature);
  IM_CHECK(p.top_k >= 0, "top_k must be >= 0 (0 keeps every token), got {}", p.top_k);
  IM_CHECK(p.top_p > 0.0f && p.top_p <= 1.0f, "top_p must be in (0, 1], got {}", p.top_p);
}

Sampler::Sampler(const SamplingParams& params, uint64_t seed, uint64_t stream, int64_t vocab)
    : params_(params), vocab_(vocab) {
  std::seed_seq seq{uint32_t(seed), uint32_t(seed >> 32), uint32_t(stream), uint32_t(stream >> 32)};
  rng_.seed(seq);
  if (params_.temperature > 0.0f) candidates_.reserve(size_t(vocab));
}

int32_t Sampler::next(const float* logits) {
  if (params_.temperature == 0.0f) {
    // The first maximum, as torch.argmax picks it.
    int64_t best = 0;
    for (int64_t i = 1; i < vocab_; ++i)
      if (logits[i] > logits[best]) best = i;
    return int32_t(best);
  }
  candidates_.clear();
  for (int64_t i = 0; i < vocab_; ++i)
    candidates_.push_back({logits[i] / params_.temperature, int32_t(i)});
  auto by_logit = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  size_t keep = candidates_.size();
  if (params_.top_k > 0 && size_t(params_.top_k) < keep) {
    keep = size_t(params_.top_k);
    std::partial_sort(candidates_.begin(), candidates_.begin() + keep, candidates_.end(), by_logit);
  } else {
    std::sort(candidates_.begin(), candidates_.end(), by_logit);
  }
  // Softmax over the kept candidates (largest first), in double.
  const double peak = candidates_[0].first;
  double total = 0.0;
  for (size_t i = 0; i < keep; ++i) total += std::exp(double(candidates_[i].first) - peak);
  if (params_.top_p < 1.0f) {
    // The smallest prefix whose probability reaches top_p (the first token always stays).
    double cumulative = 0.0;
    size_t cut = keep;
    for (size_t i = 0; i < keep; ++i) {
      cumulative += std::exp(double(candidates_[i].first) - peak) / total;
      if (cumulative >= double(params_.top_p)) {
        cut = i + 1;
        break;
      }
    }
    keep = cut;
    total = 0.0;
    for (size_t i = 0; i < keep; ++i) total += std::exp(double(candidates_[i].first) - peak);
  }
  const double draw = std::uniform_real_distribution<double>(0.0, total)(rng_);
  double cumulative = 0.0;
  for (size_t i = 0; i < keep; ++i) {
    cumulative += std::exp(double(candidates_[i].first) - peak);
    if (draw < cumulative) return candidates_[i].second;
  }
  return candidates_[keep - 1].second;
}

}  // namespace infermode
