// The decoder model and its generation loop.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bindings/config_value.h"
#include "bindings/convert.h"
#include "bindings/interrupt.h"
#include "core/error.h"
#include "kernels/quant_pack.h"
#include "models/decoder.h"
#include "models/lora.h"
#include "runtime/activation_taps.h"
#include "runtime/generator.h"

namespace py = pybind11;

namespace infermode::bindings {
namespace {

constexpr const char* kWhere = "model config";

DecoderConfig decoder_config(const py::dict& d) {
  DecoderConfig c;
  c.vocab_size = config_value<int64_t>(d, "vocab_size", kWhere);
  c.hidden_size = config_value<int64_t>(d, "hidden_size", kWhere);
  c.intermediate_size = config_value<int64_t>(d, "intermediate_size", kWhere);
  c.layers = config_value<int64_t>(d, "num_hidden_layers", kWhere);
  c.heads = config_value<int64_t>(d, "num_attention_heads", kWhere);
  c.kv_heads = config_value<int64_t>(d, "num_key_value_heads", kWhere);
  c.head_dim = config_value<int64_t>(d, "head_dim", kWhere);
  c.max_positions = config_value<int64_t>(d, "max_position_embeddings", kWhere);
  c.rms_norm_eps = config_value<float>(d, "rms_norm_eps", kWhere);
  c.attention_bias = config_value<bool>(d, "attention_bias", kWhere);
  c.tie_word_embeddings = config_value<bool>(d, "tie_word_embeddings", kWhere);
  c.rope.head_dim = c.head_dim;
  c.rope.theta = config_value<double>(d, "rope_theta", kWhere);
  if (d.contains("rope_scaling") && !d["rope_scaling"].is_none()) {
    py::dict s = d["rope_scaling"].cast<py::dict>();
    const char* scaling = "model config's rope_scaling";
    const std::string type = config_value<std::string>(s, "rope_type", scaling);
    IM_CHECK(type == "llama3", "rope_type '{}' is not supported (supported: default, llama3)",
             type);
    c.rope.factor = config_value<double>(s, "factor", scaling);
    c.rope.low_freq_factor = config_value<double>(s, "low_freq_factor", scaling);
    c.rope.high_freq_factor = config_value<double>(s, "high_freq_factor", scaling);
    c.rope.original_max_positions =
        config_value<int64_t>(s, "original_max_position_embeddings", scaling);
  }
  return c;
}

// A GGUF-block array for `name`: a uint8 array is taken as it is; a float32 (rows, cols) one is
// quantized into a new array (llama.cpp's reference rounding).
py::array quantized_blocks(const py::array& arr, QuantFormat format, const std::string& name) {
  if (!py::isinstance<py::array_t<float>>(arr)) return arr;
  IM_CHECK_TYPE(arr.ndim() == 2, "tensor '{}' has {} dims; only weight matrices (2-d) can be "
                "quantized to {}: leave it out of quantized=", name, arr.ndim(),
                quant_format_name(format));
  const int64_t rows = arr.shape(0), cols = arr.shape(1);
  IM_CHECK(cols % kQuantBlock == 0, "tensor '{}' has {} columns; quantizing to {} needs a "
           "multiple of {}", name, cols, quant_format_name(format), kQuantBlock);
  py::array_t<float, py::array::c_style | py::array::forcecast> src(arr);
  py::array_t<uint8_t> out(
      {rows, int64_t(cols / kQuantBlock * int64_t(quant_block_bytes(format)))});
  const float* sp = src.data();
  uint8_t* dp = out.mutable_data();
  {
    py::gil_scoped_release release;
    quantize_blocks(format, sp, dp, rows, cols);
  }
  return out;
}

// The model plus the NumPy arrays it borrows, kept alive as long as it is.
struct PyDecoder {
  std::unique_ptr<Decoder> model;
  py::dict arrays;
};

// A LoRA adapter (it owns copies of its factors) and the model it was checked against.
struct PyLoraAdapter {
  std::unique_ptr<LoraAdapter> adapter;
  const Decoder* model;
};

// The adapter to pass to the core for a call on `self`: null for None.
const LoraAdapter* adapter_for(const PyDecoder& self, const py::object& adapter) {
  if (adapter.is_none()) return nullptr;
  IM_CHECK_TYPE(py::isinstance<PyLoraAdapter>(adapter),
                "adapter must be a LoraAdapter or None, got {}", type_name(adapter));
  const PyLoraAdapter& a = adapter.cast<const PyLoraAdapter&>();
  IM_CHECK(a.model == self.model.get(),
           "this LoRA adapter was built for another Decoder; build it for this one");
  return a.adapter.get();
}

std::vector<std::vector<int32_t>> run_generate(const Decoder& model,
                                               const std::vector<std::vector<int32_t>>& prompts,
                                               const GenerateOptions& options,
                                               HiddenStateSink* sink, const py::object& on_token) {
  TokenCallback callback;
  if (!on_token.is_none()) {
    callback = [&on_token](int64_t seq, int32_t token) {
      py::gil_scoped_acquire gil;
      on_token(seq, token);
    };
  }
  return run_interruptible([&](const StopCheck& should_stop) {
    return generate(model, prompts, options, sink, should_stop, callback);
  });
}

}  // namespace

void register_models(py::module_& m) {
  py::class_<PyDecoder>(m, "Decoder")
      .def(py::init([](const py::dict& config, const py::dict& tensors,
                       const std::vector<std::string>& bfloat16, const py::dict& quantized,
                       bool stack) {
             auto self = std::make_unique<PyDecoder>();
             std::map<std::string, Tensor> views;
             std::map<std::string, QuantView> blocks;
             for (auto item : tensors) {
               const std::string name = item.first.cast<std::string>();
               IM_CHECK_TYPE(py::isinstance<py::array>(item.second),
                             "tensor '{}' must be a NumPy array", name);
               py::array arr = item.second.cast<py::array>();
               if (quantized.contains(item.first)) {
                 const QuantFormat format =
                     parse_quant_format(quantized[item.first].cast<std::string>());
                 arr = quantized_blocks(arr, format, name);
                 blocks[name] = borrow_blocks(
                     arr, format,
                     fmt::format("quantized tensor '{}' (or a float32 matrix to quantize)", name));
               } else {
                 const bool bf16 =
                     std::find(bfloat16.begin(), bfloat16.end(), name) != bfloat16.end();
                 views[name] = borrow_array(arr, name.c_str(), false, bf16);
               }
               self->arrays[item.first] = arr;
             }
             for (auto item : quantized)
               IM_CHECK(tensors.contains(item.first), "quantized names tensor '{}', which is not "
                        "among the tensors", item.first.cast<std::string>());
             const DecoderConfig c = decoder_config(config);
             py::gil_scoped_release release;  // repacking a large model takes a moment
             self->model = std::make_unique<Decoder>(c, views, blocks, stack);
             return self;
           }),
           py::arg("config"), py::arg("tensors"), py::arg("bfloat16") = std::vector<std::string>{},
           py::arg("quantized") = py::dict(), py::arg("stack") = true,
           "tensors: {name: array} named as in the Hugging Face checkpoint. bfloat16: names of\n"
           "uint16 arrays holding bfloat16 bits. quantized: {name: 'q8_0' | 'q4_0' | 'q4_1'}:\n"
           "that tensor is either a uint8 array of GGUF blocks, shape (rows, cols / 32 * block\n"
           "bytes), or a float32 (rows, cols) array to quantize at load. stack: q/k/v and\n"
           "gate/up quantized alike are packed as one matrix each (False: kept apart).")
      .def(
          "forward",
          [](PyDecoder& self, const py::array& ids, int threads, bool last_only,
             const py::object& adapter) {
            const LoraAdapter* lora = adapter_for(self, adapter);
            Tensor it = borrow_array(ids, "input_ids");
            IM_CHECK_TYPE(it.dtype() == DType::i32, "input_ids must be int32, got {}",
                          dtype_name(it.dtype()));
            IM_CHECK(it.ndim() == 2 && it.is_contiguous(),
                     "input_ids must be a contiguous [batch, tokens] array, got shape {}",
                     it.shape().str());
            const int64_t batch = it.size(0), tokens = it.size(1);
            IM_CHECK(batch > 0 && tokens > 0, "input_ids is empty (shape {})", it.shape().str());
            const DecoderConfig& c = self.model->config();
            IM_CHECK(tokens <= c.max_positions,
                     "{} tokens exceed the model's context of {} positions", tokens,
                     c.max_positions);
            const int64_t kept = last_only ? 1 : tokens;
            py::array_t<float> logits({batch, kept, c.vocab_size});
            float* lp = logits.mutable_data();
            {
              py::gil_scoped_release release;
              KvCache cache(c.layers, batch, c.kv_heads, tokens, c.head_dim);
              std::vector<Segment> segments;
              std::vector<int64_t> rows;
              for (int64_t b = 0; b < batch; ++b) segments.push_back({b, 0, tokens, b * tokens});
              for (int64_t b = 0; b < batch; ++b)
                for (int64_t t = tokens - kept; t < tokens; ++t) rows.push_back(b * tokens + t);
              self.model->forward(static_cast<const int32_t*>(it.raw()), segments, cache, rows,
                                  lp, nullptr, threads, lora);
            }
            return logits;
          },
          py::arg("input_ids"), py::arg("threads") = 0, py::arg("last_only") = false,
          py::arg("adapter") = py::none())
      .def(
          "generate",
          [](PyDecoder& self, const std::vector<std::vector<int32_t>>& prompts,
             int64_t max_new_tokens, float temperature, int64_t top_k, float top_p,
             uint64_t seed, uint64_t first_stream, const std::vector<int32_t>& stop_ids,
             const std::vector<int>& capture_points, const std::string& capture_positions,
             int threads, const py::object& on_token, const py::object& adapter) {
            const DecoderConfig& c = self.model->config();
            GenerateOptions options;
            options.lora = adapter_for(self, adapter);
            options.max_new_tokens = max_new_tokens;
            options.sampling = SamplingParams{temperature, top_k, top_p};
            options.seed = seed;
            options.first_stream = first_stream;
            options.stop_ids = stop_ids;
            options.threads = threads;
            const CapturePositions mode = parse_capture_positions(capture_positions.c_str());
            // Before the capture buffers, whose size grows with max_new_tokens.
            check_generate(*self.model, prompts, options);
            int64_t longest = 0;
            std::vector<int64_t> lengths;
            for (const auto& p : prompts) {
              lengths.push_back(int64_t(p.size()));
              longest = std::max<int64_t>(longest, int64_t(p.size()));
            }
            const int64_t steps = mode == CapturePositions::generated ? max_new_tokens
                                  : mode == CapturePositions::all ? longest + max_new_tokens - 1
                                                                  : 1;
            py::dict captured;
            std::vector<float*> buffers;
            for (int point : capture_points) {
              IM_CHECK(0 <= point && point <= c.layers + 1,
                       "capture point {} is outside [0, {}] (0: embeddings, 1..{}: blocks, {}: "
                       "final norm)", point, c.layers + 1, c.layers, c.layers + 1);
              py::array_t<float> buf({int64_t(prompts.size()), std::max<int64_t>(steps, 0),
                                      c.hidden_size});
              std::fill(buf.mutable_data(), buf.mutable_data() + buf.size(), 0.0f);
              buffers.push_back(buf.mutable_data());
              captured[py::int_(point)] = buf;
            }
            std::unique_ptr<ActivationTaps> taps;
            if (!capture_points.empty())
              taps = std::make_unique<ActivationTaps>(capture_points, buffers, steps,
                                                      c.hidden_size, mode, lengths);
            auto tokens = run_generate(*self.model, prompts, options, taps.get(), on_token);
            return py::make_tuple(tokens, captured);
          },
          py::arg("prompts"), py::arg("max_new_tokens"), py::arg("temperature") = 0.0f,
          py::arg("top_k") = 0, py::arg("top_p") = 1.0f, py::arg("seed") = 0,
          py::arg("first_stream") = 0,
          py::arg("stop_ids") = std::vector<int32_t>{},
          py::arg("capture_points") = std::vector<int>{},
          py::arg("capture_positions") = "generated", py::arg("threads") = 0,
          py::arg("on_token") = py::none(), py::arg("adapter") = py::none())
      .def_property_readonly("num_layers",
                             [](const PyDecoder& self) { return self.model->config().layers; });

  py::class_<PyLoraAdapter>(m, "LoraAdapter")
      .def(py::init([](const PyDecoder& model, const py::dict& updates, const py::dict& biases) {
             std::map<std::string, LoraFactors> factors;
             std::map<std::string, Tensor> bias_views;
             py::list keep;  // the arrays borrowed until the adapter has copied them
             for (auto item : updates) {
               const std::string name = item.first.cast<std::string>();
               py::tuple t = item.second.cast<py::tuple>();
               IM_CHECK(t.size() == 3, "updates['{}'] must be (A, B, scale)", name);
               const std::string a_name = name + " lora_A", b_name = name + " lora_B";
               py::array a = t[0].cast<py::array>(), b = t[1].cast<py::array>();
               keep.append(a);
               keep.append(b);
               factors[name] = LoraFactors{borrow_array(a, a_name.c_str()),
                                           borrow_array(b, b_name.c_str()), t[2].cast<float>()};
             }
             for (auto item : biases) {
               const std::string name = item.first.cast<std::string>();
               py::array arr = item.second.cast<py::array>();
               keep.append(arr);
               bias_views[name] = borrow_array(arr, name.c_str());
             }
             auto self = std::make_unique<PyLoraAdapter>();
             self->model = model.model.get();
             self->adapter =
                 std::make_unique<LoraAdapter>(model.model->config(), factors, bias_views);
             return self;
           }),
           py::arg("model"), py::arg("updates"), py::arg("biases") = py::dict(),
           "A LoRA adapter for `model` (a Decoder), applied per call (forward/generate's\n"
           "adapter=). updates: {weight name: (A float32 (r, in), B float32 (out, r), scale)};\n"
           "biases: {q/k/v bias name: float32 replacement}. The arrays are copied.")
      .def_property_readonly("bytes",
                             [](const PyLoraAdapter& self) { return self.adapter->bytes(); });
}

}  // namespace infermode::bindings
