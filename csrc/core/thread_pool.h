#pragma once
// Thread control. The pool is OpenMP's: its threads persist between parallel regions. An op
// splits its work with parallel_run, and kernels receive (ith, nth) instead of opening regions of
// their own. A forward pass runs its ops inside with_team (core/team.h): one region for the pass,
// and each parallel_run hands its work to the team's waiting threads instead of opening one.
#include <cstdint>
#include <type_traits>

#include "core/team.h"

namespace infermode {

// Physical cores this process may run on (SMT siblings counted once).
int physical_cores();

// The thread count used when a call passes threads=0: set_num_threads' value, else the
// INFERMODE_NUM_THREADS environment variable, else physical_cores(); at most kMaxThreads.
int default_threads();
void set_num_threads(int n);  // n <= 0 restores the default

// The most threads one call runs on. OpenMP starts a team of any size it is asked for, and
// libgomp does not fail cleanly when that is absurd: threads=200000 segfaulted inside
// GOMP_parallel (found by fuzzing). No machine infermode runs on has this many cores.
constexpr int kMaxThreads = 1024;

// threads > 0 is taken as asked (ValueError above kMaxThreads); 0 means default_threads().
int resolve_threads(int threads);

// Splits [0, n) into nth near-equal ranges and returns the ith one, aligned to `align` items.
struct Range {
  int64_t begin, end;
};
Range split_range(int64_t n, int ith, int nth, int64_t align = 1);

// Inside parallel_run's fn: every thread running it waits here until all arrive.
void barrier();
int thread_index();
int team_size();

// Runs fn(ith, nth) on nth threads (the calling thread is one of them): on the calling thread's
// team if it has one (nth at most the team's size), else in a parallel region of its own. Nested
// calls run inline with nth = 1.
template <typename Fn>
void parallel_run(int nth, Fn&& fn) {
  if (nth <= 1) {
    fn(0, 1);
    return;
  }
  if (Team* team = current_team()) {
    using F = std::remove_reference_t<Fn>;
    team->run(TeamJob{[](void* f, int ith, int n) { (*static_cast<F*>(f))(ith, n); },
                      const_cast<void*>(static_cast<const void*>(&fn)), nth});
    return;
  }
#pragma omp parallel num_threads(nth)
  {
    fn(thread_index(), team_size());
  }
}

}  // namespace infermode
