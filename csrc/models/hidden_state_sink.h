#pragma once
// Where a model hands its hidden states while it runs, so activations can be captured during
// generation without recomputing anything. The runtime implements it; models only call it.
#include <cstdint>

namespace infermode {

// A run of tokens of one sequence inside a forward pass: rows [row, row + n) of the batch are
// positions [pos, pos + n) of sequence `seq`.
struct Segment {
  int64_t seq;
  int64_t pos;
  int64_t n;
  int64_t row;
};

class HiddenStateSink {
 public:
  virtual ~HiddenStateSink() = default;
  // Capture points: 0 = the embeddings, 1 + i = the output of block i, layers + 1 = after the
  // final norm.
  virtual bool wants(int point) const = 0;
  // rows: float32 (total rows, hidden), the hidden states of every segment at `point`.
  virtual void write(int point, const float* rows, int64_t hidden, const Segment* segments,
                     int64_t n_segments) = 0;
};

}  // namespace infermode
