#pragma once
// One parallel region for a whole forward pass (DESIGN.md "Threads"). A decode step runs a few
// hundred small ops; opening an OpenMP region for each costs ~0.5 us of fork and join, and a
// region's end is a full barrier. Inside with_team(threads, body) the calling thread runs `body`
// alone while the other threads of one region wait, spinning, for work; each parallel_run
// inside `body` hands its fn(ith, nth) to them (~0.1 us) and waits, spinning, until all are done.
// The threads a kernel meets at barrier() are the job's, on a spinning barrier of the team.
//
// Waiting threads spin with `pause` for a few tens of microseconds, then yield the core between
// polls: on a machine busier than its cores a spinning thread must not take the time slice the
// thread it waits for needs.
#include <atomic>
#include <cstdint>
#include <exception>
#include <type_traits>
#include <utility>

namespace infermode {

// fn(ith, nth) without its type, for handing to other threads.
struct TeamJob {
  void (*call)(void* fn, int ith, int nth) = nullptr;
  void* fn = nullptr;
  int nth = 1;
};

class Team {
 public:
  // Called by the thread that runs the body, before the workers get work: the region's size.
  void open(int size);
  int size() const { return size_; }
  // Runs job on threads [0, job.nth) of the team, the calling thread as thread 0; returns when
  // all have finished. An exception thrown by a worker's share is rethrown here.
  void run(const TeamJob& job);
  // Workers (ith >= 1) loop here until close().
  void work(int ith);
  void close();
  // The barrier of the running job's threads.
  void barrier(int nth);

 private:
  static void run_share(const TeamJob& job, Team* team, int ith);

  alignas(64) std::atomic<uint64_t> generation_{0};  // bumped once per job, and by close()
  alignas(64) std::atomic<uint64_t> done_{0};        // shares finished, over all jobs
  alignas(64) std::atomic<int> arrived_{0};          // barrier: threads arrived this phase
  alignas(64) std::atomic<int> phase_{0};
  alignas(64) TeamJob job_;
  std::exception_ptr error_;
  std::atomic<bool> failed_{false};
  bool closed_ = false;
  int size_ = 1;
};

// The team the calling thread runs the body of, if any; null inside a job's share (where
// parallel_run runs inline).
Team* current_team();
// barrier() for a thread of a team: the barrier of the job it runs a share of, nothing for the
// body's thread outside a job (a one-thread kernel); false when the thread has no team.
bool team_barrier();

namespace detail {
// Opens the region and runs body on its first thread; rethrows what body threw.
void run_team(int nth, void (*body)(void*), void* ctx);
}  // namespace detail

// Runs body() with a team of `nth` threads waiting for its parallel_run calls. Inline (no team)
// for one thread, or when the calling thread already has a team or is inside a parallel region.
template <typename Body>
void with_team(int nth, Body&& body) {
  detail::run_team(
      nth, [](void* ctx) { (*static_cast<std::remove_reference_t<Body>*>(ctx))(); }, &body);
}

}  // namespace infermode
