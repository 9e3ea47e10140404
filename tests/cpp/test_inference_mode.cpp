#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "core/arena.h"
#include "core/inference_mode.h"
#include "core/tensor.h"

namespace infermode {
namespace {

TEST(InferenceMode, NestsAndRestores) {
  EXPECT_FALSE(InferenceMode::is_enabled());
  {
    InferenceMode outer;
    EXPECT_EQ(InferenceMode::depth(), 1);
    {
      InferenceMode inner;
      EXPECT_EQ(InferenceMode::depth(), 2);
    }
    EXPECT_TRUE(InferenceMode::is_enabled());
  }
  EXPECT_FALSE(InferenceMode::is_enabled());
}

TEST(InferenceMode, InnerGuardReturnsOnlyItsOwnArenaMemory) {
  InferenceMode outer;
  Tensor kept = Tensor::empty({100}, DType::f32);
  const size_t used = thread_arena().used();
  {
    InferenceMode inner;
    Tensor tmp = Tensor::empty({1000}, DType::f32);
    EXPECT_GT(thread_arena().used(), used);
  }
  EXPECT_EQ(thread_arena().used(), used);
  Tensor next = Tensor::empty({10}, DType::f32);
  EXPECT_NE(next.raw(), kept.raw());
}

TEST(InferenceMode, LeavingTheOutermostGuardEmptiesTheArena) {
  {
    InferenceMode guard;
    Tensor::empty({4096}, DType::f32);
    EXPECT_GT(thread_arena().used(), 0u);
  }
  EXPECT_EQ(thread_arena().used(), 0u);
}

TEST(InferenceMode, IsPerThread) {
  InferenceMode guard;
  Tensor mine = Tensor::empty({256}, DType::f32);
  std::atomic<bool> other_enabled{true};
  std::atomic<int> other_storage{-1};
  const void* other_arena = nullptr;
  std::thread t([&] {
    other_enabled = InferenceMode::is_enabled();
    Tensor theirs = Tensor::empty({256}, DType::f32);
    other_storage = int(theirs.storage());
    other_arena = &thread_arena();
  });
  t.join();
  EXPECT_FALSE(other_enabled.load());
  EXPECT_EQ(other_storage.load(), int(Storage::heap));
  EXPECT_NE(other_arena, &thread_arena());
  EXPECT_TRUE(InferenceMode::is_enabled());
  EXPECT_EQ(mine.storage(), Storage::arena);
}

}  // namespace
}  // namespace infermode
