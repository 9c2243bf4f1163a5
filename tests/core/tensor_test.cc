#include "epochal/core/tensor.h"

#include <gtest/gtest.h>

#include <cstdint>

#include "epochal/core/error.h"

namespace epochal {
namespace {

TEST(TensorTest, AlignedAndZeroed) {
  Tensor t(Shape{3, 5, 7});
  EXPECT_EQ(t.size(), 105);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data()) % Tensor::kAlignment, 0u);
  for (float v : t.span()) EXPECT_EQ(v, 0.0f);
  EXPECT_EQ(t.shape().SampleSize(), 35);
  EXPECT_EQ(t.shape().ToString(), "[3, 5, 7]");
}

TEST(TensorTest, CloneIsDeepAndReshapeKeepsData) {
  Tensor t(Shape{2, 2}, {1, 2, 3, 4});
  Tensor c = t.Clone();
  c[0] = 9;
  EXPECT_EQ(t[0], 1);
  t.Reshape(Shape{4});
  EXPECT_EQ(t.shape(), (Shape{4}));
  EXPECT_EQ(t[3], 4);
  EXPECT_THROW(t.Reshape(Shape{3}), Error);
}

TEST(TensorTest, EmptyTensorIsValid) {
  Tensor t(Shape{0, 4});
  EXPECT_EQ(t.size(), 0);
  EXPECT_NE(t.data(), nullptr);
}

}  // namespace
}  // namespace epochal
