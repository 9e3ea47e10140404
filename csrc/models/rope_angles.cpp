#include "models/rope_angles.h"

#include <cmath>

#include "core/error.h"

namespace infermode {

std::vector<float> rope_inverse_frequencies(const RopeConfig& c) {
  IM_CHECK(c.head_dim > 0 && c.head_dim % 2 == 0,
           "rope: head_dim must be positive and even, got {}", c.head_dim);
  IM_CHECK(c.theta > 0.0, "rope: rope_theta must be positive, got {}", c.theta);
  const int64_t half = c.head_dim / 2;
  // 1 / theta^(2i / head_dim) in float32, as transformers computes it.
  std::vector<float> inv(half);
  for (int64_t i = 0; i < half; ++i)
    inv[i] = 1.0f / std::pow(float(c.theta), float(2 * i) / float(c.head_dim));
  if (c.factor == 0.0) return inv;
  IM_CHECK(c.factor > 0.0 && c.high_freq_factor > c.low_freq_factor && c.low_freq_factor > 0.0,
           "rope: llama3 scaling needs factor > 0 and high_freq_factor > low_freq_factor > 0, got "
           "factor {}, low_freq_factor {}, high_freq_factor {}", c.factor, c.low_freq_factor,
           c.high_freq_factor);
  // Llama 3.1's scaling: long wavelengths are slowed by `factor`, short ones kept, and the band
  // between them blended smoothly (transformers' _compute_llama3_parameters, in float32).
  const float factor = float(c.factor);
  const float low = float(c.low_freq_factor), high = float(c.high_freq_factor);
  const float old_len = float(c.original_max_positions);
  const float low_wavelen = old_len / low, high_wavelen = old_len / high;
  for (int64_t i = 0; i < half; ++i) {
    const float wavelen = 2.0f * float(M_PI) / inv[i];
    float scaled = wavelen > low_wavelen ? inv[i] / factor : inv[i];
    if (!(wavelen < high_wavelen) && !(wavelen > low_wavelen)) {
      const float smooth = (old_len / wavelen - low) / (high - low);
      scaled = (1.0f - smooth) * scaled / factor + smooth * scaled;
    }
    inv[i] = scaled;
  }
  return inv;
}

void rope_angles(const std::vector<float>& inv_freq, const int64_t* positions, int64_t tokens,
                 float* cos, float* sin) {
  const int64_t half = int64_t(inv_freq.size());
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t i = 0; i < half; ++i) {
      const float angle = float(positions[t]) * inv_freq[i];
      cos[t * half + i] = std::cos(angle);
      sin[t * half + i] = std::sin(angle);
    }
  }
}

}  // namespace infermode
