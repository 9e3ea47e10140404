#pragma once
// Captures hidden states into preallocated buffers while a model generates, at prefill and every
// decode step: no recomputation, and nothing kept that was not asked for.
#include <cstdint>
#include <vector>

#include "models/hidden_state_sink.h"

namespace infermode {

enum class CapturePositions {
  // Step j holds the state whose logits chose new token j: the last prompt token for j = 0, then
  // each generated token as it is fed back. steps = max_new_tokens.
  generated,
  // Every position, prompt and generated: step = position. steps = longest prompt + max_new - 1.
  all,
  // The mean over the prompt's positions. steps = 1.
  prompt_mean,
};

// "generated" | "all" | "prompt_mean"; ValueError naming the choices otherwise.
CapturePositions parse_capture_positions(const char* name);

class ActivationTaps : public HiddenStateSink {
 public:
  // One float32 (batch, steps, hidden) buffer per capture point, zero-filled by the caller.
  ActivationTaps(std::vector<int> points, std::vector<float*> buffers, int64_t steps,
                 int64_t hidden, CapturePositions mode, std::vector<int64_t> prompt_lengths);

  bool wants(int point) const override;
  void write(int point, const float* rows, int64_t hidden, const Segment* segments,
             int64_t n_segments) override;

 private:
  std::vector<int> points_;
  std::vector<float*> buffers_;
  int64_t steps_, hidden_;
  CapturePositions mode_;
  std::vector<int64_t> prompt_lengths_;
};

}  // namespace infermode
