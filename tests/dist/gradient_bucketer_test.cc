// Multi-rank tests of GradientBucketer; run at 1, 2 and 4 ranks and over TCP.
//
// Gradients hold small integers scaled by (rank + 1), so every sum is exact in float and
// the expected value is known in closed form.
#include "epochal/dist/gradient_bucketer.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "epochal/core/error.h"
#include "epochal/dist/communicator.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace epochal::dist {
namespace {

using ::epochal::dist::testing::RankWeightSum;

constexpr size_t kMiB = size_t{1} << 20;
constexpr size_t kNumExtras = 3;

// Parameter sizes in floats, forward order: small and large, some above the 1 MiB
// (262144-float) threshold, some that share a bucket.
const std::vector<size_t>& Sizes() {
  static const std::vector<size_t> sizes = {10, 300000, 7, 1600000, 64, 100, 5000};
  return sizes;
}

// The value one rank contributes to element j of parameter p in step `step`.
float Contribution(int rank, size_t p, size_t j, int step) {
  return static_cast<float>((rank + 1) * static_cast<int>((j % 1000) + 7 * p + step));
}

class Model {
 public:
  Model() : storage_(Sizes().size()) {
    for (size_t p = 0; p < Sizes().size(); ++p) storage_[p].resize(Sizes()[p]);
  }
  std::vector<std::span<float>> Grads() {
    std::vector<std::span<float>> grads;
    for (auto& g : storage_) grads.emplace_back(g);
    return grads;
  }
  void Fill(int rank, int step) {
    for (size_t p = 0; p < storage_.size(); ++p) {
      for (size_t j = 0; j < storage_[p].size(); ++j) {
        storage_[p][j] = Contribution(rank, p, j, step);
      }
    }
  }
  // First mismatch against the all-reduced values, or "" when every element matches.
  std::string CheckSums(int size, int step) const {
    const auto weight = static_cast<float>(RankWeightSum(size));
    for (size_t p = 0; p < storage_.size(); ++p) {
      for (size_t j = 0; j < storage_[p].size(); ++j) {
        const float expected = weight * Contribution(0, p, j, step);
        if (storage_[p][j] != expected) {
          return "param " + std::to_string(p) + " element " + std::to_string(j) + ": " +
                 std::to_string(storage_[p][j]) + " != " + std::to_string(expected);
        }
      }
    }
    return "";
  }

 private:
  std::vector<std::vector<float>> storage_;
};

void WriteExtras(GradientBucketer& bucketer, int rank) {
  std::span<float> extras = bucketer.extras();
  ASSERT_EQ(extras.size(), kNumExtras);
  extras[0] = 2.5f * static_cast<float>(rank + 1);  // loss sum
  extras[1] = static_cast<float>(10 * rank);        // correct count
  extras[2] = 32.0f;                                // sample count
}

void ExpectReducedExtras(GradientBucketer& bucketer, int size) {
  std::span<float> extras = bucketer.extras();
  EXPECT_EQ(extras[0], 2.5f * static_cast<float>(RankWeightSum(size)));
  EXPECT_EQ(extras[1], static_cast<float>(10 * size * (size - 1) / 2));
  EXPECT_EQ(extras[2], 32.0f * static_cast<float>(size));
}

// Every behaviour holds whether progress comes from Poll() alone or from the thread.
class GradientBucketerModeTest : public ::testing::TestWithParam<Progress> {
 protected:
  void SetUp() override {
    if (GetParam() == Progress::kThread && !ThreadProgressAvailable()) {
      GTEST_SKIP() << "MPI did not grant MPI_THREAD_MULTIPLE";
    }
  }
};

TEST_P(GradientBucketerModeTest, ReverseOrderMarkingSumsExactlyOverSteps) {
  Communicator world;
  Model model;
  GradientBucketer bucketer(world, model.Grads(), kMiB, kNumExtras, GetParam());
  for (int step = 0; step < 3; ++step) {
    bucketer.BeginStep();
    model.Fill(world.rank(), step);
    WriteExtras(bucketer, world.rank());
    for (size_t p = Sizes().size(); p-- > 0;) {
      bucketer.MarkReady(p);
      bucketer.Poll();
    }
    bucketer.Wait();
    EXPECT_EQ(model.CheckSums(world.size(), step), "") << "step " << step;
    ExpectReducedExtras(bucketer, world.size());
  }
}

TEST_P(GradientBucketerModeTest, LayoutIsReverseAndIdenticalOnAllRanks) {
  Communicator world;
  Model model;
  GradientBucketer bucketer(world, model.Grads(), kMiB, kNumExtras, GetParam());
  // 5000 + 100 + 64 floats share the first bucket; every larger parameter stands alone
  // or closes the bucket before it.
  ASSERT_EQ(bucketer.num_buckets(), 5u);
  const std::vector<std::vector<size_t>> expected = {{6, 5, 4}, {3}, {2}, {1}, {0}};
  uint64_t hash = 1469598103934665603ull;  // FNV-1a over (bucket, param, floats)
  size_t previous = Sizes().size();
  for (size_t b = 0; b < bucketer.num_buckets(); ++b) {
    std::span<const size_t> params = bucketer.bucket_params(b);
    EXPECT_EQ(std::vector<size_t>(params.begin(), params.end()), expected[b]) << "bucket " << b;
    size_t floats = 0;
    for (size_t p : params) {
      EXPECT_LT(p, previous) << "parameters must be added last to first";
      previous = p;
      EXPECT_EQ(bucketer.bucket_of(p), b);
      floats += Sizes()[p];
      for (uint64_t v : {uint64_t{b}, uint64_t{p}}) hash = (hash ^ v) * 1099511628211ull;
    }
    if (b + 1 == bucketer.num_buckets()) floats += kNumExtras;  // extras ride last
    EXPECT_EQ(bucketer.bucket_floats(b), floats) << "bucket " << b;
    if (params.size() > 1) {
      EXPECT_LE(floats * sizeof(float), kMiB);
    }
    hash = (hash ^ floats) * 1099511628211ull;
  }
  const auto signed_hash = static_cast<int64_t>(hash >> 1);
  EXPECT_EQ(world.AllreduceMax(signed_hash), signed_hash);
  EXPECT_EQ(world.AllreduceMin(signed_hash), signed_hash);
}

TEST_P(GradientBucketerModeTest, AnyMarkingOrderOnAnyRankStillSums) {
  Communicator world;
  Model model;
  GradientBucketer bucketer(world, model.Grads(), kMiB, kNumExtras, GetParam());
  // Each rank marks in its own order (forward order, then shuffles seeded by the rank),
  // so buckets fill in different orders on different ranks.
  std::vector<size_t> order(Sizes().size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::mt19937 rng(static_cast<uint32_t>(1234 + world.rank()));
  for (int step = 0; step < 4; ++step) {
    bucketer.BeginStep();
    model.Fill(world.rank(), step);
    WriteExtras(bucketer, world.rank());
    for (size_t p : order) {
      bucketer.MarkReady(p);
      if (p % 2 == 0) bucketer.Poll();
    }
    bucketer.Wait();
    EXPECT_EQ(model.CheckSums(world.size(), step), "") << "step " << step;
    ExpectReducedExtras(bucketer, world.size());
    std::shuffle(order.begin(), order.end(), rng);
  }
}

TEST_P(GradientBucketerModeTest, WaitWithUnmarkedParamThrowsAndStepCanFinish) {
  Communicator world;
  Model model;
  GradientBucketer bucketer(world, model.Grads(), kMiB, kNumExtras, GetParam());
  bucketer.BeginStep();
  model.Fill(world.rank(), 0);
  WriteExtras(bucketer, world.rank());
  // Parameter 3 (bucket 1) stays unmarked: bucket 0 starts, buckets 1..4 wait behind it.
  for (size_t p : {6u, 5u, 4u, 2u, 1u, 0u}) bucketer.MarkReady(p);
  try {
    bucketer.Wait();
    ADD_FAILURE() << "Wait did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("parameter 3 "), std::string::npos) << e.what();
  }
  EXPECT_THROW(bucketer.BeginStep(), Error);  // buckets are in flight
  bucketer.MarkReady(3);
  bucketer.Wait();
  EXPECT_EQ(model.CheckSums(world.size(), 0), "");
  ExpectReducedExtras(bucketer, world.size());
}

TEST_P(GradientBucketerModeTest, MisuseIsReported) {
  Communicator world;
  Model model;
  GradientBucketer bucketer(world, model.Grads(), kMiB, kNumExtras, GetParam());
  bucketer.BeginStep();
  EXPECT_THROW(bucketer.MarkReady(Sizes().size()), Error);
  bucketer.MarkReady(6);
  EXPECT_THROW(bucketer.MarkReady(6), Error);
  for (size_t p = Sizes().size() - 1; p-- > 0;) bucketer.MarkReady(p);
  bucketer.Wait();
  EXPECT_THROW(bucketer.Wait(), Error);
  EXPECT_THROW(bucketer.MarkReady(0), Error);
}

TEST_P(GradientBucketerModeTest, TimingsAreConsistent) {
  Communicator world;
  Model model;
  GradientBucketer bucketer(world, model.Grads(), kMiB, kNumExtras, GetParam());
  for (int step = 0; step < 3; ++step) {
    bucketer.BeginStep();
    EXPECT_EQ(bucketer.allreduce_seconds(), 0.0);
    EXPECT_EQ(bucketer.exposed_wait_seconds(), 0.0);
    model.Fill(world.rank(), step);
    WriteExtras(bucketer, world.rank());
    for (size_t p = Sizes().size(); p-- > 0;) {
      bucketer.MarkReady(p);
      bucketer.Poll();
    }
    bucketer.Wait();
    EXPECT_GE(bucketer.exposed_wait_seconds(), 0.0);
    EXPECT_GE(bucketer.allreduce_seconds(), 0.0);
    EXPECT_GE(bucketer.unpack_seconds(), 0.0);
    EXPECT_LE(bucketer.exposed_wait_seconds(), bucketer.allreduce_seconds() + 1e-6);
    EXPECT_GE(bucketer.hidden_fraction(), 0.0);
    EXPECT_LE(bucketer.hidden_fraction(), 1.0);
    if (world.size() == 1) {
      EXPECT_EQ(bucketer.allreduce_seconds(), 0.0);
      EXPECT_EQ(bucketer.hidden_fraction(), 0.0);
    } else {
      EXPECT_GT(bucketer.allreduce_seconds(), 0.0);
    }
  }
}

TEST_P(GradientBucketerModeTest, ExtrasWithoutParametersAreReduced) {
  Communicator world;
  GradientBucketer bucketer(world, {}, kMiB, kNumExtras, GetParam());
  EXPECT_EQ(bucketer.num_buckets(), 1u);
  bucketer.BeginStep();
  WriteExtras(bucketer, world.rank());
  bucketer.Wait();
  ExpectReducedExtras(bucketer, world.size());
}

INSTANTIATE_TEST_SUITE_P(Progress, GradientBucketerModeTest,
                         ::testing::Values(Progress::kPolling, Progress::kThread),
                         [](const auto& param_info) {
                           return std::string(ProgressName(param_info.param));
                         });

// The point of the thread: started all-reduces complete while the caller never enters
// MPI (no Poll, no Wait), as they would during a long convolution backward pass.
TEST(GradientBucketerTest, ProgressThreadCompletesBucketsWithoutPolls) {
  if (!ThreadProgressAvailable()) GTEST_SKIP() << "MPI did not grant MPI_THREAD_MULTIPLE";
  Communicator world;
  Model model;
  GradientBucketer bucketer(world, model.Grads(), kMiB, kNumExtras, Progress::kThread,
                            std::chrono::microseconds(100));
  EXPECT_EQ(bucketer.progress(), world.size() > 1 ? Progress::kThread : Progress::kPolling);
  bucketer.BeginStep();
  model.Fill(world.rank(), 0);
  WriteExtras(bucketer, world.rank());
  for (size_t p = Sizes().size(); p-- > 0;) bucketer.MarkReady(p);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (bucketer.completed_buckets() < bucketer.num_buckets() &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(bucketer.completed_buckets(), bucketer.num_buckets())
      << "buckets still in flight 20 s after the last was started";
  bucketer.Wait();
  EXPECT_EQ(bucketer.exposed_wait_seconds(), 0.0) << "Wait blocked although all had completed";
  EXPECT_EQ(model.CheckSums(world.size(), 0), "");
  ExpectReducedExtras(bucketer, world.size());
}

TEST(GradientBucketerTest, DefaultThresholdPacksSmallModelInOneBucket) {
  Communicator world;
  std::vector<float> a(1000, static_cast<float>(world.rank() + 1));
  std::vector<float> b(3, 1.0f);
  GradientBucketer bucketer(world, {std::span<float>(a), std::span<float>(b)});
  EXPECT_EQ(bucketer.num_buckets(), 1u);
  EXPECT_TRUE(bucketer.extras().empty());
  bucketer.BeginStep();
  bucketer.MarkReady(1);
  bucketer.MarkReady(0);
  bucketer.Wait();
  EXPECT_EQ(a, std::vector<float>(1000, static_cast<float>(RankWeightSum(world.size()))));
  EXPECT_EQ(b, std::vector<float>(3, static_cast<float>(world.size())));
}

}  // namespace
}  // namespace epochal::dist
