// The first samples of the installed Fashion-MNIST splits, for the train module's tests.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <string>

#include "epochal/data/idx.h"

namespace epochal::train::testing {

inline constexpr char kFashionMnistDir[] = "/usr/share/datasets/fashion-mnist";

inline bool HaveFashionMnist() {
  return std::filesystem::exists(std::string(kFashionMnistDir) + "/train-images-idx3-ubyte.gz");
}

// The first `limit` samples of the training (`train`) or test split, 10 classes.
inline data::Dataset LoadFashionMnist(bool train, int64_t limit) {
  const std::string d = kFashionMnistDir;
  return data::LoadIdxDataset(
      d + (train ? "/train-images-idx3-ubyte.gz" : "/t10k-images-idx3-ubyte.gz"),
      d + (train ? "/train-labels-idx1-ubyte.gz" : "/t10k-labels-idx1-ubyte.gz"), 10, limit);
}

}  // namespace epochal::train::testing

#define EPOCHAL_REQUIRE_FASHION_MNIST()               \
  if (!::epochal::train::testing::HaveFashionMnist()) \
  GTEST_SKIP() << "dataset-fashion-mnist is not installed"
