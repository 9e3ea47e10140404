#include "runtime/activation_taps.h"

#include <cstring>
#include <string>

#include "core/error.h"

namespace infermode {

CapturePositions parse_capture_positions(const char* name) {
  const std::string n = name;
  if (n == "generated") return CapturePositions::generated;
  if (n == "all") return CapturePositions::all;
  if (n == "prompt_mean") return CapturePositions::prompt_mean;
  throw ValueError(fmt::format(
      "capture positions '{}' is not one of 'generated', 'all', 'prompt_mean'", n));
}

ActivationTaps::ActivationTaps(std::vector<int> points, std::vector<float*> buffers,
                               int64_t steps, int64_t hidden, CapturePositions mode,
                               std::vector<int64_t> prompt_lengths)
    : points_(std::move(points)), buffers_(std::move(buffers)), steps_(steps), hidden_(hidden),
      mode_(mode), prompt_lengths_(std::move(prompt_lengths)) {
  IM_CHECK(points_.size() == buffers_.size(), "activation taps: {} points but {} buffers",
           points_.size(), buffers_.size());
}

bool ActivationTaps::wants(int point) const {
  for (int p : points_)
    if (p == point) return true;
  return false;
}

void ActivationTaps::write(int point, const float* rows, int64_t hidden, const Segment* segments,
                           int64_t n_segments) {
  for (size_t i = 0; i < points_.size(); ++i) {
    if (points_[i] != point) continue;
    for (int64_t si = 0; si < n_segments; ++si) {
      const Segment& s = segments[si];
      const int64_t prompt = prompt_lengths_[s.seq];
      float* base = buffers_[i] + s.seq * steps_ * hidden_;
      for (int64_t t = 0; t < s.n; ++t) {
        const float* row = rows + (s.row + t) * hidden;
        const int64_t position = s.pos + t;
        if (mode_ == CapturePositions::prompt_mean) {
          if (position >= prompt) continue;
          const float w = 1.0f / float(prompt);
          for (int64_t d = 0; d < hidden; ++d) base[d] += row[d] * w;
          continue;
        }
        const int64_t step =
            mode_ == CapturePositions::all ? position : position - (prompt - 1);
        if (0 <= step && step < steps_)
          std::memcpy(base + step * hidden_, row, size_t(hidden) * sizeof(float));
      }
    }
  }
}

}  // namespace infermode
