// The team of a forward pass: parallel_run inside with_team hands work to the region's waiting
// threads, kernels meet at barrier() among the job's threads only, and errors come out whole.
#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"

namespace infermode {
namespace {

// Two phases split by barrier(), as the quantized matmul runs: each thread writes its slot,
// meets the others, then reads all of them. A barrier that lets a thread through early, or a
// share that runs twice, gives a wrong total.
std::vector<int64_t> two_phase_totals(int nth, int rounds) {
  std::vector<int64_t> totals;
  std::vector<int64_t> slots(size_t(nth) + 1, 0);
  for (int r = 0; r < rounds; ++r) {
    std::vector<int64_t> seen(size_t(nth), -1);
    parallel_run(nth, [&](int ith, int n) {
      slots[size_t(ith)] = int64_t(r) * 100 + ith;
      barrier();
      int64_t sum = 0;
      for (int j = 0; j < n; ++j) sum += slots[size_t(j)];
      seen[size_t(ith)] = sum;
      barrier();  // nobody may write the next round's slot while another thread still reads
    });
    for (int64_t s : seen) totals.push_back(s);
  }
  return totals;
}

TEST(Team, ParallelRunInsideATeamComputesWhatItComputesAlone) {
  for (int nth : {2, 3, 4}) {
    const std::vector<int64_t> alone = two_phase_totals(nth, 50);
    std::vector<int64_t> in_team;
    with_team(nth, [&] { in_team = two_phase_totals(nth, 50); });
    EXPECT_EQ(in_team, alone) << "nth " << nth;
  }
}

TEST(Team, AJobOfFewerThreadsThanTheTeamMeetsOnlyItsOwn) {
  // A 4-thread team runs 2- and 3-thread jobs with barriers: the idle threads must not be
  // counted at the barrier (the job would pass it early or hang).
  with_team(4, [&] {
    for (int nth : {2, 3, 4, 3, 2}) {
      const std::vector<int64_t> got = two_phase_totals(nth, 20);
      for (int r = 0; r < 20; ++r)
        for (int i = 0; i < nth; ++i)
          ASSERT_EQ(got[size_t(r * nth + i)], int64_t(r) * 100 * nth + nth * (nth - 1) / 2)
              << "nth " << nth << " round " << r;
    }
  });
}

TEST(Team, EveryShareRunsOnceOnItsOwnThread) {
  with_team(3, [&] {
    EXPECT_EQ(resolve_threads(0) <= 3, true);
    EXPECT_EQ(resolve_threads(8), 3);  // a job never asks for more threads than the team has
    for (int round = 0; round < 200; ++round) {
      std::vector<std::atomic<int>> runs(3);
      std::atomic<int> team_seen{0};
      parallel_run(3, [&](int ith, int n) {
        runs[size_t(ith)]++;
        team_seen = n;
        // Inside a share, nested work runs inline on this thread.
        EXPECT_EQ(resolve_threads(4), 1);
        int inner = 0;
        parallel_run(4, [&](int j, int m) { inner += (j == 0 && m == 1); });
        EXPECT_EQ(inner, 1);
      });
      for (auto& r : runs) ASSERT_EQ(r.load(), 1);
      ASSERT_EQ(team_seen.load(), 3);
    }
  });
}

TEST(Team, AOneThreadKernelMeetingAtABarrierDoesNotWaitForTheTeam) {
  // parallel_run(1, fn) runs fn on the body's thread; a kernel's barrier() there has nobody to
  // meet (it hung: OpenMP's barrier waited for the team's threads, which waited for a job).
  int phases = 0;
  with_team(2, [&] {
    parallel_run(1, [&](int, int) {
      ++phases;
      barrier();
      ++phases;
    });
    barrier();
  });
  EXPECT_EQ(phases, 2);
}

TEST(Team, AnErrorInTheBodyComesOutAndTheTeamEnds) {
  EXPECT_THROW(with_team(2, [&] {
                 parallel_run(2, [](int, int) {});
                 IM_CHECK(false, "the body failed");
               }),
               ValueError);
  // The threads were released: a new team and a plain region still run.
  std::vector<int64_t> after;
  with_team(2, [&] { after = two_phase_totals(2, 3); });
  EXPECT_EQ(after, two_phase_totals(2, 3));
}

TEST(Team, AnErrorInAShareIsRethrownByTheCall) {
  with_team(2, [&] {
    EXPECT_THROW(parallel_run(2, [](int ith, int) {
                   if (ith == 1) throw std::runtime_error("share 1 failed");
                 }),
                 std::runtime_error);
    // The team keeps working after it.
    std::atomic<int> ran{0};
    parallel_run(2, [&](int, int) { ran++; });
    EXPECT_EQ(ran.load(), 2);
  });
}

TEST(Team, NestedTeamsAndOneThreadRunInline) {
  int calls = 0;
  with_team(1, [&] {
    ++calls;
    EXPECT_EQ(resolve_threads(1), 1);
  });
  with_team(2, [&] {
    with_team(2, [&] { ++calls; });  // the outer team serves the inner body's work
    std::atomic<int> ran{0};
    parallel_run(2, [&](int, int) { ran++; });
    EXPECT_EQ(ran.load(), 2);
  });
  EXPECT_EQ(calls, 2);
}

}  // namespace
}  // namespace infermode
