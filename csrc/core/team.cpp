#include "core/team.h"

#include <omp.h>
#include <sched.h>

#include <algorithm>

namespace infermode {
namespace {

// ~40-120 us of `pause` (its latency is 60-140 cycles depending on the core), then sched_yield
// between polls.
constexpr int kSpinPauses = 2048;

thread_local Team* t_team = nullptr;      // the team whose body this thread runs
thread_local Team* t_job_team = nullptr;  // the team whose job this thread runs a share of
thread_local int t_job_nth = 1;

inline void pause() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

template <typename Ready>
void spin_until(Ready ready) {
  for (int i = 0; !ready(); ++i) {
    if (i < kSpinPauses) {
      pause();
    } else {
      sched_yield();
    }
  }
}

}  // namespace

Team* current_team() { return t_job_team ? nullptr : t_team; }

bool team_barrier() {
  if (t_job_team) {
    t_job_team->barrier(t_job_nth);
    return true;
  }
  // The body's thread outside a job is alone in its work (a one-thread kernel meeting nobody):
  // OpenMP's barrier there would wait for the team's threads, which wait for a job.
  return t_team != nullptr;
}

void Team::open(int size) { size_ = std::max(1, size); }

void Team::run_share(const TeamJob& job, Team* team, int ith) {
  t_job_team = team;
  t_job_nth = job.nth;
  try {
    job.call(job.fn, ith, job.nth);
  } catch (...) {
    // Kernels do not throw; this keeps an exception from crossing the OpenMP region.
    if (!team->failed_.exchange(true)) team->error_ = std::current_exception();
  }
  t_job_team = nullptr;
}

void Team::run(const TeamJob& job) {
  TeamJob mine = job;
  mine.nth = std::min(job.nth, size_);
  if (mine.nth <= 1) {
    mine.nth = 1;
    run_share(mine, this, 0);
  } else {
    job_ = mine;
    const uint64_t g = generation_.load(std::memory_order_relaxed) + 1;
    generation_.store(g, std::memory_order_release);
    run_share(mine, this, 0);
    const uint64_t want = g * uint64_t(size_ - 1);
    spin_until([&] { return done_.load(std::memory_order_acquire) >= want; });
  }
  if (failed_.load(std::memory_order_acquire)) {
    failed_ = false;
    std::rethrow_exception(std::exchange(error_, nullptr));
  }
}

void Team::work(int ith) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t g = seen;
    spin_until([&] { return (g = generation_.load(std::memory_order_acquire)) != seen; });
    seen = g;
    if (closed_) return;
    const TeamJob job = job_;
    if (ith < job.nth) run_share(job, this, ith);
    done_.fetch_add(1, std::memory_order_release);
  }
}

void Team::close() {
  closed_ = true;
  generation_.store(generation_.load(std::memory_order_relaxed) + 1, std::memory_order_release);
}

void Team::barrier(int nth) {
  if (nth <= 1) return;
  const int p = phase_.load(std::memory_order_acquire);
  if (arrived_.fetch_add(1, std::memory_order_acq_rel) == nth - 1) {
    arrived_.store(0, std::memory_order_relaxed);
    phase_.store(p + 1, std::memory_order_release);
  } else {
    spin_until([&] { return phase_.load(std::memory_order_acquire) != p; });
  }
}

namespace detail {

void run_team(int nth, void (*body)(void*), void* ctx) {
  if (nth <= 1 || omp_in_parallel()) {  // a team's threads are inside its region
    body(ctx);
    return;
  }
  Team team;
  std::exception_ptr error;
#pragma omp parallel num_threads(nth)
  {
    if (omp_get_thread_num() == 0) {
      team.open(omp_get_num_threads());
      t_team = &team;
      try {
        body(ctx);
      } catch (...) {
        error = std::current_exception();
      }
      t_team = nullptr;
      team.close();
    } else {
      team.work(omp_get_thread_num());
    }
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace detail
}  // namespace infermode
