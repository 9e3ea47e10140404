// The transformer stack of the forecasting models and its KV cache.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <string>

#include "bindings/config_value.h"
#include "bindings/convert.h"
#include "bindings/interrupt.h"
#include "core/error.h"
#include "models/transformer_stack.h"

namespace py = pybind11;

namespace infermode::bindings {
namespace {

StackBlockConfig block_config(const py::dict& d) {
  const char* where = "transformer stack block config";
  StackBlockConfig b;
  b.time_attention = config_value<bool>(d, "time_attention", where);
  b.group_attention = config_value<bool>(d, "group_attention", where);
  b.causal = config_value<bool>(d, "causal", where);
  b.scaled = config_value<bool>(d, "scaled", where);
  b.attention_bias = config_value<bool>(d, "attention_bias", where);
  const std::string rope = config_value<std::string>(d, "rope", where);
  IM_CHECK(rope == "none" || rope == "half_split" || rope == "interleaved_xpos",
           "{}: rope '{}' is not supported (supported: none, half_split, interleaved_xpos)",
           where, rope);
  b.rope = rope == "none"         ? StackRope::none
           : rope == "half_split" ? StackRope::half_split
                                  : StackRope::interleaved_xpos;
  if (b.rope != StackRope::none) b.rope_theta = config_value<double>(d, "rope_theta", where);
  if (b.rope == StackRope::interleaved_xpos)
    b.xpos_scale_base = config_value<double>(d, "xpos_scale_base", where);
  const std::string mlp = config_value<std::string>(d, "mlp", where);
  IM_CHECK(mlp == "swiglu" || mlp == "relu",
           "{}: mlp '{}' is not supported (supported: swiglu, relu)", where, mlp);
  b.mlp = mlp == "relu" ? StackMlp::relu : StackMlp::swiglu;
  b.mlp_bias = config_value<bool>(d, "mlp_bias", where);
  return b;
}

StackConfig stack_config(const py::dict& d) {
  const char* where = "transformer stack config";
  StackConfig c;
  c.hidden = config_value<int64_t>(d, "hidden", where);
  c.heads = config_value<int64_t>(d, "heads", where);
  c.head_dim = config_value<int64_t>(d, "head_dim", where);
  c.intermediate = config_value<int64_t>(d, "intermediate", where);
  c.norm_eps = config_value<float>(d, "norm_eps", where);
  c.final_norm = config_value<bool>(d, "final_norm", where);
  IM_CHECK(d.contains("blocks"), "{} has no 'blocks'", where);
  const py::object blocks = d["blocks"];
  IM_CHECK_TYPE(py::isinstance<py::list>(blocks), "{}: 'blocks' must be a list of dicts, got {}",
                where, type_name(blocks));
  size_t i = 0;
  for (const py::handle& b : blocks.cast<py::list>()) {
    IM_CHECK_TYPE(py::isinstance<py::dict>(b), "{}: blocks[{}] must be a dict, got {}", where, i,
                  type_name(b));
    c.blocks.push_back(block_config(b.cast<py::dict>()));
    ++i;
  }
  return c;
}

Tensor optional_array(const py::object& obj, const char* name) {
  if (obj.is_none()) return Tensor();
  IM_CHECK_TYPE(py::isinstance<py::array>(obj), "{} must be a NumPy array or None, got {}", name,
                type_name(obj));
  return borrow_array(obj.cast<py::array>(), name);
}

struct PyStack {
  std::unique_ptr<TransformerStack> stack;
  py::dict arrays;  // the borrowed weights, kept alive as long as the stack
};

struct PyStackCache {
  std::unique_ptr<KvCache> cache;
  const TransformerStack* stack;
  int64_t length = 0;  // positions filled, the same for every sequence
};

}  // namespace

void register_stack(py::module_& m) {
  py::class_<PyStackCache>(m, "StackCache",
                           "Keys and values of a TransformerStack's blocks for a batch of "
                           "sequences (TransformerStack.new_cache).")
      .def_property_readonly("sequences",
                             [](const PyStackCache& self) { return self.cache->sequences(); })
      .def_property_readonly("capacity",
                             [](const PyStackCache& self) { return self.cache->capacity(); })
      .def_readonly("length", &PyStackCache::length,
                    "Positions filled so far: the next forward's first position.")
      .def(
          "repeat",
          [](const PyStackCache& self, int64_t times) {
            const int64_t sequences = self.cache->sequences();
            IM_CHECK(times > 0 && times <= std::numeric_limits<int64_t>::max() / sequences,
                     "repeat: times must be positive and times x {} sequences must fit 64 bits, "
                     "got {}", sequences, times);
            PyStackCache c;
            c.cache = std::make_unique<KvCache>(
                self.stack->make_cache(sequences * times, self.cache->capacity()));
            c.stack = self.stack;
            c.length = self.length;
            {
              py::gil_scoped_release release;
              for (int64_t r = 0; r < sequences * times; ++r)
                c.cache->copy_prefix(*self.cache, r % sequences, r, self.length);
            }
            return c;
          },
          py::arg("times"),
          "A new cache of sequences * times sequences, row r holding row r % sequences of this\n"
          "one (repeated whole: [a, b, a, b, ...]), its filled positions copied; the same length.");

  py::class_<PyStack>(m, "TransformerStack")
      .def(py::init([](const py::dict& config, const py::dict& tensors) {
             auto self = std::make_unique<PyStack>();
             std::map<std::string, Tensor> views;
             for (auto item : tensors) {
               const std::string name = item.first.cast<std::string>();
               IM_CHECK_TYPE(py::isinstance<py::array>(item.second),
                             "tensor '{}' must be a NumPy array", name);
               py::array arr = item.second.cast<py::array>();
               views[name] = borrow_array(arr, name.c_str());
               self->arrays[item.first] = arr;
             }
             self->stack = std::make_unique<TransformerStack>(stack_config(config), views);
             return self;
           }),
           py::arg("config"), py::arg("tensors"),
           "config: {hidden, heads, head_dim, intermediate, norm_eps, final_norm, blocks:\n"
           "[{time_attention, group_attention, causal, scaled, attention_bias, rope: 'none' |\n"
           "'half_split' | 'interleaved_xpos', rope_theta, xpos_scale_base (interleaved_xpos),\n"
           "mlp: 'swiglu' | 'relu', mlp_bias}]}. tensors: {name: float32 array} under the names\n"
           "of tensor_names().")
      .def(
          "forward",
          [](PyStack& self, const py::array& x, py::object cache, int threads,
             py::object key_bias, py::object group) {
            // The copy below needs contiguous float32; the stack checks the rest.
            Tensor in = borrow_array(x, "x");
            IM_CHECK_TYPE(in.dtype() == DType::f32, "x must be float32, got {}",
                          dtype_name(in.dtype()));
            IM_CHECK(in.is_contiguous(), "x must be a contiguous array");
            Tensor out_view;
            py::array_t<float> out = new_float_array(in.shape(), out_view);
            std::memcpy(out_view.raw(), in.raw(), size_t(in.numel()) * sizeof(float));
            IM_CHECK_TYPE(cache.is_none() || py::isinstance<PyStackCache>(cache),
                          "cache must be a StackCache (TransformerStack.new_cache) or None, got {}",
                          type_name(cache));
            PyStackCache* c = cache.is_none() ? nullptr : &cache.cast<PyStackCache&>();
            IM_CHECK(!c || c->stack == self.stack.get(),
                     "this StackCache was made by another TransformerStack");
            // Borrowed; the stack and the group attention kernel check dtype and shape.
            const Tensor bias = optional_array(key_bias, "key_bias");
            const Tensor groups = optional_array(group, "group");
            run_interruptible([&](const StopCheck& should_stop) {
              self.stack->forward(out_view, c ? c->length : 0, c ? c->cache.get() : nullptr,
                                  threads, bias, groups, should_stop);
            });
            if (c) c->length += in.size(1);
            return out;
          },
          py::arg("x"), py::arg("cache") = py::none(), py::arg("threads") = 0,
          py::arg("key_bias") = py::none(), py::arg("group") = py::none(),
          "Runs the blocks over x (float32 [sequences, tokens, hidden]) and returns a new array.\n"
          "With a cache the tokens continue its sequences (positions cache.length onward) and\n"
          "are added to it; without one they are whole sequences. key_bias: float32\n"
          "[sequences, tokens] added to the scores of each key (-inf hides it) in bidirectional\n"
          "and group attention. group: int64 [sequences], each sequence's group for blocks with\n"
          "group attention. Ctrl-C stops it between blocks (KeyboardInterrupt); the cache keeps\n"
          "what it held before the call.")
      .def(
          "new_cache",
          [](PyStack& self, int64_t sequences, int64_t capacity) {
            PyStackCache c;
            c.cache = std::make_unique<KvCache>(self.stack->make_cache(sequences, capacity));
            c.stack = self.stack.get();
            return c;
          },
          py::arg("sequences"), py::arg("capacity"))
      .def_static(
          "tensor_names",
          [](const py::dict& config) {
            py::list names;
            for (const auto& [name, shape] : stack_tensor_names(stack_config(config)))
              names.append(py::make_tuple(
                  name, py::tuple(py::cast(std::vector<int64_t>(shape.d, shape.d + shape.ndim)))));
            return names;
          },
          py::arg("config"), "[(name, shape)] the tensors of `config` must have.");
}

}  // namespace infermode::bindings
