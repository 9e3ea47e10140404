#pragma once
// The whole generation loop, in C++: prefill each prompt, then decode every unfinished sequence
// one token per step in one batched forward pass, until max_new_tokens or a stop token. The
// caller's callbacks are the only way out: one asks, every step, whether to stop (Ctrl-C), one
// receives each token as it is chosen (streaming).
#include <cstdint>
#include <functional>
#include <vector>

#include "core/stop_check.h"
#include "models/decoder.h"
#include "runtime/sampler.h"

namespace infermode {

struct GenerateOptions {
  int64_t max_new_tokens = 32;
  SamplingParams sampling;
  uint64_t seed = 0;
  // Sequence b samples from random stream first_stream + b of `seed`: batches of a larger set can
  // draw exactly what one call over the whole set would.
  uint64_t first_stream = 0;
  std::vector<int32_t> stop_ids;  // a sequence ends after emitting one of these
  int threads = 0;
  const LoraAdapter* lora = nullptr;  // applied on top of the base weights at every step
};

// should_stop (core/stop_check.h) is checked once per token; true throws Interrupted.
using TokenCallback = std::function<void(int64_t seq, int32_t token)>;

// Throws what generate() would throw for these arguments (no prompts, an empty one, an id outside
// the vocabulary, more tokens than the context, bad sampling settings) without running anything:
// a caller that allocates per generated token (activation buffers) checks first.
void check_generate(const Decoder& model, const std::vector<std::vector<int32_t>>& prompts,
                    const GenerateOptions& options);

// The new tokens of each prompt (stop token included), in prompt order.
std::vector<std::vector<int32_t>> generate(const Decoder& model,
                                           const std::vector<std::vector<int32_t>>& prompts,
                                           const GenerateOptions& options, HiddenStateSink* sink,
                                           const StopCheck& should_stop,
                                           const TokenCallback& on_token);

}  // namespace infermode
