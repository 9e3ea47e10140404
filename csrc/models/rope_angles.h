#pragma once
// The angles of rotary position embeddings, computed as Hugging Face computes them (float32),
// with the llama3 frequency scaling when the checkpoint asks for it. Angles are made per forward
// pass for the positions in it (a few sin/cos per token), so no table sized by the model's
// context (131072 positions for Llama 3.1) is ever held.
#include <cstdint>
#include <vector>

namespace infermode {

struct RopeConfig {
  int64_t head_dim = 0;
  double theta = 10000.0;
  // llama3 scaling (Llama 3.1+): off when factor == 0.
  double factor = 0.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_positions = 8192;
};

// inv_freq[i], i < head_dim / 2: the rotation speed of each pair of dimensions.
std::vector<float> rope_inverse_frequencies(const RopeConfig& config);

// cos/sin[t, i] = cos/sin(positions[t] * inv_freq[i]), each (tokens, half).
void rope_angles(const std::vector<float>& inv_freq, const int64_t* positions, int64_t tokens,
                 float* cos, float* sin);

}  // namespace infermode
