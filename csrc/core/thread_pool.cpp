#include "core/thread_pool.h"

#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <fstream>
#include <set>
#include <string>
#include <utility>

#include "core/error.h"

namespace infermode {
namespace {

std::atomic<int> g_threads{0};

int read_int(const std::string& path, int fallback) {
  std::ifstream f(path);
  int v;
  return (f >> v) ? v : fallback;
}

int detect_physical_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
  std::set<std::pair<int, int>> cores;  // (package, core id)
  int logical = 0;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &set)) continue;
    ++logical;
    std::string base = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
    int pkg = read_int(base + "physical_package_id", 0);
    int core = read_int(base + "core_id", cpu);
    cores.insert({pkg, core});
  }
  int n = int(cores.size());
  return n > 0 ? n : (logical > 0 ? logical : 1);
}

}  // namespace

int physical_cores() {
  static const int n = detect_physical_cores();
  return n;
}

int default_threads() {
  int n = g_threads.load();
  if (n > 0) return n;
  if (const char* env = std::getenv("INFERMODE_NUM_THREADS")) {
    int v = std::atoi(env);
    if (v > 0) return std::min(v, kMaxThreads);
  }
  return std::min(physical_cores(), kMaxThreads);
}

void set_num_threads(int n) {
  IM_CHECK(n <= kMaxThreads, "set_num_threads: n={} is more than the {} threads infermode runs "
           "at most", n, kMaxThreads);
  g_threads = n > 0 ? n : 0;
}

int resolve_threads(int threads) {
  IM_CHECK(threads <= kMaxThreads, "threads={} is more than the {} threads infermode runs at "
           "most", threads, kMaxThreads);
  int n = threads > 0 ? threads : default_threads();
  if (Team* team = current_team()) return std::min(n, team->size());
  return omp_in_parallel() ? 1 : n;
}

Range split_range(int64_t n, int ith, int nth, int64_t align) {
  int64_t blocks = (n + align - 1) / align;
  int64_t per = blocks / nth, extra = blocks % nth;
  int64_t b0 = ith * per + (ith < extra ? ith : extra);
  int64_t b1 = b0 + per + (ith < extra ? 1 : 0);
  int64_t begin = b0 * align, end = b1 * align;
  return {begin < n ? begin : n, end < n ? end : n};
}

void barrier() {
  if (team_barrier()) return;
#pragma omp barrier
}

int thread_index() { return omp_get_thread_num(); }
int team_size() { return omp_get_num_threads(); }

}  // namespace infermode
