// CPU features, the dispatch table, threads, memory counters and the native inference mode.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <thread>

#include "core/arena.h"
#include "core/build_info.h"
#include "core/cpu_features.h"
#include "core/error.h"
#include "core/inference_mode.h"
#include "core/memory_stats.h"
#include "core/thread_pool.h"
#include "kernels/dispatch.h"

namespace py = pybind11;

namespace infermode::bindings {
namespace {

py::dict features_dict() {
  const CpuFeatures& f = cpu_features();
  py::dict d;
  d["vendor"] = f.vendor;
  d["brand"] = f.brand;
  d["x86"] = f.x86;
  py::dict flags;
  flags["avx"] = f.avx;
  flags["avx2"] = f.avx2;
  flags["fma"] = f.fma;
  flags["f16c"] = f.f16c;
  flags["avx512f"] = f.avx512f;
  flags["avx512bw"] = f.avx512bw;
  flags["avx512vl"] = f.avx512vl;
  flags["avx512dq"] = f.avx512dq;
  flags["avx512cd"] = f.avx512cd;
  flags["avx512_vnni"] = f.avx512_vnni;
  flags["avx512_bf16"] = f.avx512_bf16;
  flags["avx512_fp16"] = f.avx512_fp16;
  flags["avx_vnni"] = f.avx_vnni;
  flags["amx_tile"] = f.amx_tile;
  flags["amx_int8"] = f.amx_int8;
  flags["amx_bf16"] = f.amx_bf16;
  d["flags"] = flags;
  py::dict os;
  os["ymm"] = f.os_ymm;
  os["zmm"] = f.os_zmm;
  os["amx_tiles"] = f.os_amx;
  os["amx_permitted"] = f.amx_permitted;
  d["os"] = os;
  d["amx_note"] = f.amx_note;
  return d;
}

py::list supported_isas() {
  py::list out;
  for (int i = 0; i < kIsaCount; ++i)
    if (cpu_features().supports(Isa(i))) out.append(isa_name(Isa(i)));
  return out;
}

py::dict kernel_isas(const std::string& cap) {
  const KernelTable& t = cap.empty() ? kernels() : kernels_for(parse_isa(cap));
  py::dict d;
  d["rms_norm"] = isa_name(t.rms_norm.isa);
  d["matmul_f32"] = isa_name(t.matmul_f32.isa);
  d["matmul_bf16"] = isa_name(t.matmul_bf16.isa);
  d["sum_f32"] = isa_name(t.sum_f32.isa);
  d["rope"] = isa_name(t.rope.isa);
  d["attention"] = isa_name(t.attention.isa);
  d["swiglu"] = isa_name(t.swiglu.isa);
  d["add"] = isa_name(t.add.isa);
  d["matmul_quant"] = isa_name(t.matmul_quant.isa);
  return d;
}

py::dict memory_dict() {
  const MemoryStats s = memory_stats();
  const Arena& a = thread_arena();
  py::dict d;
  d["heap_allocations"] = s.heap_allocations;
  d["heap_bytes"] = s.heap_bytes;
  d["heap_live_bytes"] = s.heap_live_bytes;
  d["arena_used"] = a.used();
  d["arena_capacity"] = a.capacity();
  d["arena_high_water"] = a.high_water();
  return d;
}

// The C++ guard behind infermode.inference_mode(). A guard is thread-local, so it must be left
// on the thread that entered it.
class PyInferenceMode {
 public:
  PyInferenceMode() = default;
  PyInferenceMode(const PyInferenceMode&) = delete;
  PyInferenceMode& operator=(const PyInferenceMode&) = delete;
  // A guard still open when Python collects its object is closed here, but only on its own
  // thread: closing it elsewhere would pop another thread's arena.
  ~PyInferenceMode() {
    if (guard_ && owner_ != std::this_thread::get_id()) (void)guard_.release();
  }

  void enter() {
    IM_CHECK_RUNTIME(!guard_, "this inference_mode object is already active; make a new one");
    owner_ = std::this_thread::get_id();
    guard_ = std::make_unique<InferenceMode>();
  }
  void exit() {
    IM_CHECK_RUNTIME(guard_ != nullptr, "inference_mode exited without being entered");
    IM_CHECK_RUNTIME(owner_ == std::this_thread::get_id(),
                     "inference_mode entered on one thread and exited on another; enter and "
                     "leave it on the same thread");
    guard_.reset();
  }
  bool active() const { return guard_ != nullptr; }

 private:
  std::unique_ptr<InferenceMode> guard_;
  std::thread::id owner_;
};

}  // namespace

void register_core(py::module_& m) {
  m.def("cpu_features", &features_dict, "CPU features found by cpuid and the OS checks.");
  m.def("supported_isas", &supported_isas, "ISA paths this CPU can run, lowest first.");
  m.def("best_isa", [] { return std::string(isa_name(cpu_features().best())); });
  m.def("active_isa", [] { return std::string(isa_name(active_isa())); });
  m.def("set_isa", [](const std::string& name) { set_isa(parse_isa(name)); }, py::arg("isa"),
        "Cap the kernels at this ISA for the whole process (ValueError if the CPU lacks it).");
  m.def("kernel_isas", &kernel_isas, py::arg("cap") = "",
        "Which implementation each kernel uses under the active cap (or `cap`).");
  m.def("physical_cores", &physical_cores);
  m.def("default_threads", &default_threads);
  m.def("set_num_threads", &set_num_threads, py::arg("n"),
        "Default thread count for calls with threads=0; n <= 0 restores physical cores.");
  m.def("memory_stats", &memory_dict,
        "Core heap counters (process-wide) and the calling thread's arena.");
  m.def("reset_memory_stats", &reset_memory_stats);
  m.def("inference_mode_enabled", &InferenceMode::is_enabled,
        "Whether a native inference-mode guard is open on this thread.");
  m.def("build_info", [] { return std::string(build_info()); });

  py::class_<PyInferenceMode>(m, "InferenceModeGuard")
      .def(py::init<>())
      .def("enter", &PyInferenceMode::enter)
      .def("exit", &PyInferenceMode::exit)
      .def_property_readonly("active", &PyInferenceMode::active);
}

}  // namespace infermode::bindings
