#include "runtime/generator.h"

#include <algorithm>

#include "core/error.h"
#include "core/inference_mode.h"
#include "core/tensor.h"

namespace infermode {

void check_generate(const Decoder& model, const std::vector<std::vector<int32_t>>& prompts,
                    const GenerateOptions& options) {
  const DecoderConfig& c = model.config();
  IM_CHECK(!prompts.empty(), "generate: no prompts given");
  IM_CHECK(options.max_new_tokens >= 1, "max_new_tokens must be >= 1, got {}",
           options.max_new_tokens);
  check_sampling(options.sampling);
  int64_t longest = 0;
  for (size_t b = 0; b < prompts.size(); ++b) {
    IM_CHECK(!prompts[b].empty(), "prompt {} is empty: every prompt needs at least one token", b);
    for (int32_t id : prompts[b])
      IM_CHECK(0 <= id && id < c.vocab_size, "prompt {} has token id {}, outside [0, {})", b, id,
               c.vocab_size);
    longest = std::max<int64_t>(longest, int64_t(prompts[b].size()));
  }
  // Subtracted, not added: max_new_tokens may be near INT64_MAX.
  IM_CHECK(longest <= c.max_positions && options.max_new_tokens <= c.max_positions - longest,
           "a prompt of {} tokens plus max_new_tokens={} exceeds the model's context of {} "
           "positions; shorten the prompt or lower max_new_tokens",
           longest, options.max_new_tokens, c.max_positions);
}

std::vector<std::vector<int32_t>> generate(const Decoder& model,
                                           const std::vector<std::vector<int32_t>>& prompts,
                                           const GenerateOptions& options, HiddenStateSink* sink,
                                           const StopCheck& should_stop,
                                           const TokenCallback& on_token) {
  check_generate(model, prompts, options);
  const DecoderConfig& c = model.config();
  int64_t longest = 0;
  for (const auto& prompt : prompts) longest = std::max<int64_t>(longest, int64_t(prompt.size()));

  const int64_t batch = int64_t(prompts.size());
  // Everything below, the KV cache included, lives in this thread's arena until we return.
  InferenceMode guard;
  KvCache cache(c.layers, batch, c.kv_heads, longest + options.max_new_tokens, c.head_dim);
  std::vector<Sampler> samplers;
  for (int64_t b = 0; b < batch; ++b)
    samplers.emplace_back(options.sampling, options.seed, options.first_stream + uint64_t(b),
                          c.vocab_size);
  std::vector<std::vector<int32_t>> out(batch);
  std::vector<char> done(batch, 0);
  Tensor logits = Tensor::empty({batch, c.vocab_size}, DType::f32);
  float* lp = logits.data<float>();

  auto emit = [&](int64_t b, const float* row) {
    const int32_t token = samplers[b].next(row);
    out[b].push_back(token);
    if (on_token) on_token(b, token);
    if (int64_t(out[b].size()) >= options.max_new_tokens ||
        std::find(options.stop_ids.begin(), options.stop_ids.end(), token) !=
            options.stop_ids.end())
      done[b] = 1;
  };

  // Prefill, one prompt at a time: its logits are needed at its last position only.
  for (int64_t b = 0; b < batch; ++b) {
    if (should_stop && should_stop()) throw Interrupted("generation interrupted");
    const int64_t n = int64_t(prompts[b].size());
    model.forward(prompts[b].data(), {Segment{b, 0, n, 0}}, cache, {n - 1}, lp, sink,
                  options.threads, options.lora);
    emit(b, lp);
  }
  // Decode: the unfinished sequences, one new token each per step, in one forward pass.
  std::vector<int32_t> ids;
  std::vector<Segment> segments;
  std::vector<int64_t> rows, owners;
  while (true) {
    ids.clear();
    segments.clear();
    rows.clear();
    owners.clear();
    for (int64_t b = 0; b < batch; ++b) {
      if (done[b]) continue;
      const int64_t row = int64_t(ids.size());
      const int64_t pos = int64_t(prompts[b].size() + out[b].size()) - 1;
      ids.push_back(out[b].back());
      segments.push_back(Segment{b, pos, 1, row});
      rows.push_back(row);
      owners.push_back(b);
    }
    if (ids.empty()) break;
    if (should_stop && should_stop()) throw Interrupted("generation interrupted");
    model.forward(ids.data(), segments, cache, rows, lp, sink, options.threads,
                  options.lora);
    for (size_t i = 0; i < owners.size(); ++i) emit(owners[i], lp + int64_t(i) * c.vocab_size);
  }
  return out;
}

}  // namespace infermode
