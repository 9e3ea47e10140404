#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/bf16.h"
#include "core/error.h"
#include "core/inference_mode.h"
#include "core/memory_stats.h"
#include "core/tensor.h"

namespace infermode {
namespace {

TEST(Tensor, BorrowedIsContiguousWithRowMajorStrides) {
  std::vector<float> buf(24);
  Tensor t = Tensor::borrow(buf.data(), DType::f32, {2, 3, 4});
  EXPECT_EQ(t.storage(), Storage::borrowed);
  EXPECT_EQ(t.ndim(), 3);
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.nbytes(), 96u);
  EXPECT_EQ(t.stride(0), 12);
  EXPECT_EQ(t.stride(1), 4);
  EXPECT_EQ(t.stride(-1), 1);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.data<float>(), buf.data());
}

TEST(Tensor, TransposeSwapsShapeAndStridesWithoutCopy) {
  std::vector<float> buf(6);
  for (int i = 0; i < 6; ++i) buf[i] = float(i);
  Tensor t = Tensor::borrow(buf.data(), DType::f32, {2, 3}).transpose(0, 1);
  EXPECT_EQ(t.shape(), Shape({3, 2}));
  EXPECT_EQ(t.stride(0), 1);
  EXPECT_EQ(t.stride(1), 3);
  EXPECT_FALSE(t.is_contiguous());
  EXPECT_EQ(t.raw(), buf.data());
  // element (i, j) of the transpose is buf[j * 3 + i]
  const float* p = t.data<float>();
  EXPECT_EQ(p[2 * t.stride(0) + 1 * t.stride(1)], buf[1 * 3 + 2]);
}

TEST(Tensor, SliceAndSelectOffsetTheData) {
  std::vector<float> buf(4 * 5);
  Tensor t = Tensor::borrow(buf.data(), DType::f32, {4, 5});
  Tensor rows = t.slice(0, 1, 3);
  EXPECT_EQ(rows.shape(), Shape({2, 5}));
  EXPECT_EQ(rows.data<float>(), buf.data() + 5);
  Tensor cols = t.slice(1, 2, 5);
  EXPECT_EQ(cols.shape(), Shape({4, 3}));
  EXPECT_EQ(cols.data<float>(), buf.data() + 2);
  EXPECT_FALSE(cols.is_contiguous());
  Tensor row = t.select(0, 3);
  EXPECT_EQ(row.shape(), Shape({5}));
  EXPECT_EQ(row.data<float>(), buf.data() + 15);
  Tensor col = t.select(1, 4);
  EXPECT_EQ(col.shape(), Shape({4}));
  EXPECT_EQ(col.stride(0), 5);
}

TEST(Tensor, ViewReshapesContiguousAndInfersOneDim) {
  std::vector<float> buf(12);
  Tensor t = Tensor::borrow(buf.data(), DType::f32, {3, 4});
  Tensor v = t.view({2, -1});
  EXPECT_EQ(v.shape(), Shape({2, 6}));
  EXPECT_THROW(t.view({5, -1}), ValueError);
  EXPECT_THROW(t.transpose(0, 1).view({12}), ValueError);
}

TEST(Tensor, BadArgumentsThrowWithTheirValues) {
  std::vector<float> buf(12);
  Tensor t = Tensor::borrow(buf.data(), DType::f32, {3, 4});
  EXPECT_THROW(t.size(2), ValueError);
  EXPECT_THROW(t.slice(0, 2, 5), ValueError);
  EXPECT_THROW(t.data<int32_t>(), TypeError);
  try {
    t.select(1, 7);
    FAIL() << "select out of range did not throw";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("index 7"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Tensor::empty({2, -1}, DType::f32), ValueError);
  // Sizes whose product wraps around 64 bits would allocate a small buffer to be overrun
  // (a KV cache of 2**62 sequences did, found fuzzing the stack's bindings).
  EXPECT_THROW(Tensor::empty({int64_t(1) << 62, 3, 2}, DType::f32), ValueError);
  EXPECT_THROW(Tensor::empty({int64_t(1) << 31, int64_t(1) << 31, 4}, DType::f32), ValueError);
  EXPECT_EQ(Tensor::empty({int64_t(1) << 62, 0}, DType::f32).numel(), 0);  // empty is fine
}

TEST(Tensor, EmptyOwnsHeapOutsideTheModeAndViewsKeepItAlive) {
  reset_memory_stats();
  Tensor view;
  {
    Tensor t = Tensor::empty({16, 16}, DType::f32);
    EXPECT_EQ(t.storage(), Storage::heap);
    t.data<float>()[17] = 3.0f;
    view = t.slice(0, 1, 2);
  }
  EXPECT_EQ(memory_stats().heap_allocations, 1u);
  EXPECT_EQ(view.data<float>()[1], 3.0f);  // still alive through the view
}

TEST(Tensor, EmptyInsideTheModeComesFromTheArena) {
  InferenceMode guard;
  Tensor t = Tensor::zeros({7, 9}, DType::f32);
  EXPECT_EQ(t.storage(), Storage::arena);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % 64, 0u);
  for (int64_t i = 0; i < t.numel(); ++i) EXPECT_EQ(t.data<float>()[i], 0.0f);
}

}  // namespace
}  // namespace infermode

namespace infermode {
namespace {

TEST(Bf16, RoundsToNearestEvenAndWidensExactly) {
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f)), 1.0f);
  EXPECT_EQ(float_to_bf16(1.0f), 0x3f80);
  // 1 + 2^-8 is halfway between two bf16 values: ties go to the even one (1.0).
  EXPECT_EQ(float_to_bf16(1.00390625f), 0x3f80);
  EXPECT_EQ(float_to_bf16(1.01171875f), 0x3f82);  // 1 + 3 * 2^-8: up to the even 1 + 2^-6
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::nanf("")))));
  EXPECT_EQ(bf16_to_float(float_to_bf16(-3.5f)), -3.5f);
}

}  // namespace
}  // namespace infermode
