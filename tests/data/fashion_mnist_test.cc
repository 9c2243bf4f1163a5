// The real Fashion-MNIST files from the dataset-fashion-mnist package. Skipped when the
// package is not installed.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <vector>

#include "epochal/data/idx.h"

namespace epochal::data {
namespace {

bool HaveFashionMnist() {
  const FashionMnistFiles f = FashionMnistPaths(DefaultFashionMnistDir());
  for (const std::string& p : {f.train_images, f.train_labels, f.test_images, f.test_labels}) {
    if (!std::filesystem::exists(p)) return false;
  }
  return true;
}

class FashionMnistTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HaveFashionMnist()) GTEST_SKIP() << "no Fashion-MNIST under " << DefaultFashionMnistDir();
  }
};

std::array<int64_t, 10> Histogram(const Dataset& ds) {
  std::array<int64_t, 10> h{};
  for (uint8_t label : ds.labels) ++h.at(label);
  return h;
}

TEST(FashionMnistNamesTest, NamesAndPaths) {
  EXPECT_EQ(DefaultFashionMnistDir(), "/usr/share/datasets/fashion-mnist");
  const FashionMnistFiles names = FashionMnistFileNames();
  EXPECT_EQ(names.train_images, "train-images-idx3-ubyte.gz");
  EXPECT_EQ(names.train_labels, "train-labels-idx1-ubyte.gz");
  EXPECT_EQ(names.test_images, "t10k-images-idx3-ubyte.gz");
  EXPECT_EQ(names.test_labels, "t10k-labels-idx1-ubyte.gz");
  EXPECT_EQ(FashionMnistPaths("/d").test_labels, "/d/t10k-labels-idx1-ubyte.gz");
  const std::vector<std::string> classes = FashionMnistClassNames();
  ASSERT_EQ(classes.size(), static_cast<size_t>(kFashionMnistClasses));
  EXPECT_EQ(classes.front(), "top");
  EXPECT_EQ(classes[6], "shirt");
  EXPECT_EQ(classes.back(), "ankle boot");
}

TEST_F(FashionMnistTest, LoadsTrainSplit) {
  const Dataset ds = LoadFashionMnist(DefaultFashionMnistDir(), Split::kTrain);
  EXPECT_EQ(ds.name, "fashion-mnist/train");
  EXPECT_EQ(ds.size(), 60000);
  EXPECT_EQ(ds.channels, 1);
  EXPECT_EQ(ds.height, 28);
  EXPECT_EQ(ds.width, 28);
  EXPECT_EQ(ds.num_classes, 10);
  EXPECT_EQ(ds.pixels.size(), 60000u * 28 * 28);
  EXPECT_EQ(ds.labels[0], 9);
  EXPECT_EQ(FashionMnistClassNames()[ds.labels[0]], "ankle boot");
  std::array<int64_t, 10> expected;
  expected.fill(6000);
  EXPECT_EQ(Histogram(ds), expected);
  EXPECT_EQ(*std::max_element(ds.pixels.begin(), ds.pixels.end()), 255);
}

TEST_F(FashionMnistTest, LoadsTestSplit) {
  const Dataset ds = LoadFashionMnist(DefaultFashionMnistDir(), Split::kTest);
  EXPECT_EQ(ds.name, "fashion-mnist/test");
  EXPECT_EQ(ds.size(), 10000);
  EXPECT_EQ(ds.height, 28);
  EXPECT_EQ(ds.width, 28);
  std::array<int64_t, 10> expected;
  expected.fill(1000);
  EXPECT_EQ(Histogram(ds), expected);
}

TEST_F(FashionMnistTest, LimitAndGatherBatch) {
  const Dataset ds = LoadFashionMnist(DefaultFashionMnistDir(), Split::kTrain, 256);
  ASSERT_EQ(ds.size(), 256);
  std::vector<int64_t> indices(ds.size());
  for (int64_t i = 0; i < ds.size(); ++i) indices[static_cast<size_t>(i)] = ds.size() - 1 - i;
  std::vector<float> images(indices.size() * 28 * 28);
  std::vector<int32_t> labels(indices.size());
  GatherBatch(ds, indices, images.data(), labels.data());
  float lo = 1.0f, hi = 0.0f;
  for (float v : images) lo = std::min(lo, v), hi = std::max(hi, v);
  EXPECT_EQ(lo, 0.0f);
  EXPECT_LE(hi, 1.0f);
  EXPECT_GT(hi, 0.5f);
  EXPECT_EQ(labels.back(), 9);  // indices.back() is sample 0, an ankle boot
  for (int32_t label : labels) {
    EXPECT_GE(label, 0);
    EXPECT_LT(label, 10);
  }
}

}  // namespace
}  // namespace epochal::data
