// Multi-rank tests of GradientBucketer; run at 1, 2 and 4 ranks and over TCP.
//
// Gradients hold small integers scaled by (rank + 1), so every sum is exact in float and
// the expected value is known in closed form. The bf16 tests at the end use values that
// are not exact in bf16 and check the error against a bound derived there.
#include "epochal/dist/gradient_bucketer.h"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "epochal/core/bf16.h"
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

// ---------------------------------------------------------------------------------------
// The bf16 wire.

// A value of gradient scale that bf16 cannot hold exactly: rank r's element j of
// parameter p, in [-1, 1) times a per-parameter scale from 1e-4 to 10 (no subnormals,
// no overflow), the same on every rank that computes it.
float GradientLike(int rank, size_t p, size_t j) {
  uint64_t z = (uint64_t{static_cast<uint32_t>(rank)} << 48) ^ (uint64_t{p} << 32) ^ j;
  z += 0x9e3779b97f4a7c15ull;  // splitmix64
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  const double unit = static_cast<double>(z >> 11) * 0x1.0p-53 * 2.0 - 1.0;
  static constexpr double kScales[] = {1e-4, 3e-3, 0.1, 10.0};
  return static_cast<float>(unit * kScales[p % 4]);
}

bool IsBf16(float v) { return (std::bit_cast<uint32_t>(v) & 0xffffu) == 0; }

// The bound. bf16 keeps 8 significant bits (7 stored, 1 implicit): in [2^e, 2^(e+1)) its
// values are 2^(e-7) apart, so rounding a normal number to nearest is off by at most
// 2^(e-8), that is at most u = 2^-8 of it: fl(x) = x (1 + d), |d| <= u. (u is 2^-8, not
// 2^-9: 2^-9 would need a 9th bit; with u = 2^-9 this test fails, the worst sums reaching
// 1.9 times that bound, as 1 + 2^-8 rounding to 1 shows on its own.) With N ranks the op sees N
// rounded inputs and makes N - 1 additions, each rounded once more (the float sum of two
// bf16 values is rounded to float and then to bf16; the float rounding, 2^-24, is folded
// into the slack below). Whatever tree MPI uses, each input x_r reaches the result through
// its own rounding and at most N - 1 partial-sum roundings, so
//   result = sum_r x_r * prod_{k <= N} (1 + d_rk)
// and |result - sum_r x_r| <= ((1 + u)^N - 1) * sum_r |x_r|   (about N u sum |x_r|).
// With mixed signs the bound is relative to sum |x|, not to |sum x|: cancellation can
// leave a sum far smaller than its rounding errors.
double Bf16SumBound(int ranks, double abs_sum) {
  const double u = std::ldexp(1.0, -8);
  const double slack = 1.0 + std::ldexp(1.0, -20);  // the intermediate float roundings
  return (std::pow(1.0 + u, ranks) * slack - 1.0) * abs_sum;
}

// What the bf16 sums of GradientLike(rank + step, ...) look like against the exact sums.
struct Bf16Check {
  size_t elements = 0;
  size_t outside = 0;   // error above Bf16SumBound
  size_t not_bf16 = 0;  // low 16 bits set: the value did not come through bf16
  size_t inexact = 0;   // differs from the exact sum rounded to float
  double worst = 0;     // largest error as a fraction of its bound
};

Bf16Check CheckBf16Sums(const std::vector<std::span<float>>& grads, int size, int step) {
  Bf16Check c;
  for (size_t p = 0; p < grads.size(); ++p) {
    for (size_t j = 0; j < grads[p].size(); ++j) {
      double exact = 0, abs_sum = 0;
      for (int r = 0; r < size; ++r) {
        const double x = GradientLike(r + step, p, j);
        exact += x;
        abs_sum += std::fabs(x);
      }
      const float got = grads[p][j];
      const double error = std::fabs(static_cast<double>(got) - exact);
      const double bound = Bf16SumBound(size, abs_sum);
      if (!(error <= bound)) ++c.outside;
      if (bound > 0) c.worst = std::max(c.worst, error / bound);
      if (!IsBf16(got)) ++c.not_bf16;
      if (got != static_cast<float>(exact)) ++c.inexact;
      ++c.elements;
    }
  }
  return c;
}

void FillGradientLike(std::vector<std::span<float>>& grads, int rank, int step) {
  for (size_t p = 0; p < grads.size(); ++p) {
    for (size_t j = 0; j < grads[p].size(); ++j) grads[p][j] = GradientLike(rank + step, p, j);
  }
}

class Bf16BucketerTest : public GradientBucketerModeTest {};

TEST_P(Bf16BucketerTest, SumsStayWithinTheRoundingBound) {
  Communicator world;
  Model model;  // Sizes(): five buckets at 1 MiB
  std::vector<std::span<float>> grads = model.Grads();
  GradientBucketer bucketer(world, grads, kMiB, kNumExtras, GetParam(),
                            std::chrono::microseconds(200), WirePrecision::kBf16);
  const bool active = world.size() > 1;
  EXPECT_EQ(bucketer.wire_precision(), active ? WirePrecision::kBf16 : WirePrecision::kF32);
  for (int step = 0; step < 2; ++step) {
    bucketer.BeginStep();
    FillGradientLike(grads, world.rank(), step);
    WriteExtras(bucketer, world.rank());
    for (size_t p = grads.size(); p-- > 0;) {
      bucketer.MarkReady(p);
      bucketer.Poll();
    }
    bucketer.Wait();
    ExpectReducedExtras(bucketer, world.size());
    const Bf16Check c = CheckBf16Sums(grads, world.size(), step);
    EXPECT_EQ(c.outside, 0u) << "step " << step << ": worst error " << c.worst << " of the bound";
    if (active) {
      // Every sum came through the wire as bf16; skipping the conversion (or summing
      // the f32 gradients) leaves almost every value with low bits set.
      EXPECT_EQ(c.not_bf16, 0u) << "step " << step;
      EXPECT_GT(c.inexact, c.elements / 2) << "step " << step << ": the sums look unrounded";
      // The bound is not loose by orders of magnitude: some sum uses a good part of it.
      EXPECT_GT(c.worst, 0.05) << "step " << step;
    } else {
      // One rank converts nothing: every gradient keeps its f32 value bit for bit.
      EXPECT_EQ(c.inexact, 0u);
      EXPECT_GT(c.not_bf16, c.elements / 2);
    }
  }
}

// Two ranks: the op makes exactly one addition, bf16(float(bf16(x0)) + float(bf16(x1))),
// whichever rank's value comes first, so every sum is known to the bit.
TEST_P(Bf16BucketerTest, TwoRanksAddOnceAndRoundToNearestEven) {
  Communicator world;
  if (world.size() != 2) GTEST_SKIP() << "needs exactly 2 ranks";
  Model model;
  std::vector<std::span<float>> grads = model.Grads();
  GradientBucketer bucketer(world, grads, kMiB, kNumExtras, GetParam(),
                            std::chrono::microseconds(200), WirePrecision::kBf16);
  bucketer.BeginStep();
  FillGradientLike(grads, world.rank(), 0);
  WriteExtras(bucketer, world.rank());
  for (size_t p = grads.size(); p-- > 0;) bucketer.MarkReady(p);
  bucketer.Wait();
  size_t mismatches = 0;
  std::string first;
  for (size_t p = 0; p < grads.size(); ++p) {
    for (size_t j = 0; j < grads[p].size(); ++j) {
      const float expected =
          RoundToBf16(RoundToBf16(GradientLike(0, p, j)) + RoundToBf16(GradientLike(1, p, j)));
      if (std::bit_cast<uint32_t>(grads[p][j]) != std::bit_cast<uint32_t>(expected)) {
        if (mismatches++ == 0) {
          first = "param " + std::to_string(p) + " element " + std::to_string(j) + ": " +
                  std::to_string(grads[p][j]) + " != " + std::to_string(expected);
        }
      }
    }
  }
  EXPECT_EQ(mismatches, 0u) << first;
  ExpectReducedExtras(bucketer, world.size());
}

// Values bf16 holds exactly whose sums it also holds: the result must be exact, at any
// rank count. An op that added the bit patterns as integers, kept one operand, or lost a
// rank's contribution fails here.
TEST_P(Bf16BucketerTest, RepresentableValuesSumExactly) {
  Communicator world;
  Model model;
  std::vector<std::span<float>> grads = model.Grads();
  GradientBucketer bucketer(world, grads, kMiB, kNumExtras, GetParam(),
                            std::chrono::microseconds(200), WirePrecision::kBf16);
  // (rank + 1) * m * 2^e with m in [-7, 7] and e in [-12, 3]: every input and every
  // partial sum over up to 4 ranks is an integer of magnitude at most (1+2+3+4) * 7 = 70
  // times 2^e, so at most 7 significant bits, exact in bf16 whatever the order of the
  // additions.
  auto value = [](int rank, size_t p, size_t j) {
    const int m = static_cast<int>((j * 7 + p) % 15) - 7;
    const int e = static_cast<int>((j / 15 + p) % 16) - 12;
    return std::ldexp(static_cast<float>((rank + 1) * m), e);
  };
  bucketer.BeginStep();
  for (size_t p = 0; p < grads.size(); ++p) {
    for (size_t j = 0; j < grads[p].size(); ++j) grads[p][j] = value(world.rank(), p, j);
  }
  WriteExtras(bucketer, world.rank());
  for (size_t p = 0; p < grads.size(); ++p) bucketer.MarkReady(p);
  bucketer.Wait();
  const auto weight = static_cast<float>(RankWeightSum(world.size()));
  size_t mismatches = 0;
  for (size_t p = 0; p < grads.size(); ++p) {
    for (size_t j = 0; j < grads[p].size(); ++j) {
      if (grads[p][j] != weight * value(0, p, j)) ++mismatches;
    }
  }
  EXPECT_EQ(mismatches, 0u);
  ExpectReducedExtras(bucketer, world.size());
}

// The extras are exact f32 sums, also where bf16 would round them: counts of 17 bits and
// more, a loss sum with 21 significant bits. They travel on their own, even with no
// gradient bucket before them, and the wire carries half the gradient bytes.
TEST_P(Bf16BucketerTest, ExtrasStayExactAndGradientsTakeHalfTheBytes) {
  Communicator world;
  Model model;
  std::vector<std::span<float>> grads = model.Grads();
  GradientBucketer bf16(world, grads, kMiB, kNumExtras, GetParam(), std::chrono::microseconds(200),
                        WirePrecision::kBf16);
  GradientBucketer f32(world, grads, kMiB, kNumExtras, GetParam());
  GradientBucketer extras_only(world, {}, kMiB, kNumExtras, GetParam(),
                               std::chrono::microseconds(200), WirePrecision::kBf16);
  const int r = world.rank();
  // 1 + (r + 1) 2^-20: bf16 would make it 1.
  const float loss = 1.0f + std::ldexp(static_cast<float>(r + 1), -20);
  for (GradientBucketer* b : {&bf16, &extras_only}) {
    b->BeginStep();
    FillGradientLike(grads, r, 0);
    b->extras()[0] = loss;
    b->extras()[1] = static_cast<float>(100003 + r);  // 17 bits: bf16 would round it
    b->extras()[2] = 257.0f;                          // 9 bits
    for (size_t p = b->num_params(); p-- > 0;) b->MarkReady(p);
    b->Wait();
    const int n = world.size();
    float loss_sum = 0;
    for (int k = 0; k < n; ++k) loss_sum += 1.0f + std::ldexp(static_cast<float>(k + 1), -20);
    // Open MPI may sum the ranks in another order than this loop; these sums are exact
    // in float in any order: multiples of 2^-20 below 8, where float's spacing is 2^-21.
    EXPECT_EQ(b->extras()[0], loss_sum);
    EXPECT_EQ(b->extras()[1], static_cast<float>(100003 * n + n * (n - 1) / 2));
    EXPECT_EQ(b->extras()[2], 257.0f * static_cast<float>(n));
  }
  ASSERT_EQ(bf16.num_buckets(), f32.num_buckets());
  size_t bf16_bytes = 0, f32_bytes = 0;
  for (size_t b = 0; b < bf16.num_buckets(); ++b) {
    EXPECT_EQ(bf16.bucket_floats(b), f32.bucket_floats(b)) << "same layout";
    bf16_bytes += bf16.bucket_wire_bytes(b);
    f32_bytes += f32.bucket_wire_bytes(b);
  }
  size_t grad_floats = 0;
  for (size_t size : Sizes()) grad_floats += size;
  EXPECT_EQ(f32_bytes, 4 * (grad_floats + kNumExtras));
  if (world.size() > 1) {
    EXPECT_EQ(bf16_bytes, 2 * grad_floats + 4 * kNumExtras);
  } else {
    EXPECT_EQ(bf16_bytes, f32_bytes);  // nothing is sent, nothing converted
  }
}

// An exception between MarkReady and Wait leaves buckets in flight; the step can still
// be finished, as in f32, and the sums are right.
TEST_P(Bf16BucketerTest, UnmarkedParameterThrowsAndStepCanFinish) {
  Communicator world;
  Model model;
  std::vector<std::span<float>> grads = model.Grads();
  GradientBucketer bucketer(world, grads, kMiB, kNumExtras, GetParam(),
                            std::chrono::microseconds(200), WirePrecision::kBf16);
  bucketer.BeginStep();
  FillGradientLike(grads, world.rank(), 0);
  WriteExtras(bucketer, world.rank());
  // Parameter 3 (bucket 1) stays unmarked: bucket 0 starts, buckets 1..4 wait behind it.
  for (size_t p : {6u, 5u, 4u, 2u, 1u, 0u}) bucketer.MarkReady(p);
  EXPECT_THROW(bucketer.Wait(), Error);
  EXPECT_THROW(bucketer.BeginStep(), Error);
  bucketer.MarkReady(3);
  bucketer.Wait();
  ExpectReducedExtras(bucketer, world.size());
  const Bf16Check c = CheckBf16Sums(grads, world.size(), 0);
  EXPECT_EQ(c.outside, 0u) << "worst error " << c.worst << " of the bound";
  if (world.size() > 1) {
    EXPECT_EQ(c.not_bf16, 0u);
  }
}

INSTANTIATE_TEST_SUITE_P(Progress, Bf16BucketerTest,
                         ::testing::Values(Progress::kPolling, Progress::kThread),
                         [](const auto& param_info) {
                           return std::string(ProgressName(param_info.param));
                         });

}  // namespace
}  // namespace epochal::dist
